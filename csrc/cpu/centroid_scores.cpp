// Centroid scores on CPU: the baseline build of centroid_scores_impl.h and the run-time
// choice between it and the AVX2 / AVX-512 builds of the same code (x86-64).
#include "common/isa.h"
#include "cpu/centroid_scores_impl.h"

namespace ce {

void centroid_scores_avx2(const CentroidScoresParams& p, int threads);
void centroid_scores_avx512(const CentroidScoresParams& p, int threads);

void centroid_scores_cpu(const CentroidScoresParams& p) {
  const int threads = max_threads();
  switch (cpu_isa()) {
#ifdef CE_HAVE_X86_SIMD
    case Isa::AVX512: centroid_scores_avx512(p, threads); return;
    case Isa::AVX2: centroid_scores_avx2(p, threads); return;
#endif
    default: break;
  }
  centroid_scores_impl(p, threads);
}

}  // namespace ce
