// centroid_scores_impl.h compiled with avx2 flags (CMakeLists.txt sets them for *_avx2.cpp).
#include "cpu/centroid_scores_impl.h"

namespace ce {
void centroid_scores_avx2(const CentroidScoresParams& p, int threads) { centroid_scores_impl(p, threads); }
}  // namespace ce
