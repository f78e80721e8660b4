// centroid_scores_impl.h compiled with avx512 flags (CMakeLists.txt sets them for *_avx512.cpp).
#include "cpu/centroid_scores_impl.h"

namespace ce {
void centroid_scores_avx512(const CentroidScoresParams& p, int threads) { centroid_scores_impl(p, threads); }
}  // namespace ce
