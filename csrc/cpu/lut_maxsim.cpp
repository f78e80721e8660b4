// lut_maxsim on CPU: the baseline build of lut_maxsim_impl.h, the run-time choice between it
// and the AVX2 / AVX-512 builds of the same code (x86-64), and the table layout. The baseline
// is SSE2 on x86-64 and NEON on aarch64 (Advanced SIMD is part of ARMv8-A, and the kernel's
// 16-float vectors map onto four NEON registers), so aarch64 needs no separate build.
#include <vector>

#include "common/isa.h"
#include "cpu/lut_maxsim_impl.h"

namespace ce {

void lut_maxsim_avx2(const LutMaxSimParams& p, float* scratch, int64_t scratch_floats, int threads);
void lut_maxsim_avx512(const LutMaxSimParams& p, float* scratch, int64_t scratch_floats, int threads);

// Tables per residual byte (256 entries, from the byte codebook). Nibble tables (16 entries,
// twice the lookups into tables 16x smaller, L1/L2-resident; scalar layouts only) had
// measured slower: at nbits 4, dim 128, Lq 32 on one AVX-512 core 14.5 ms vs 10.7 ms per
// 100k tokens (CPU time), and ~1.3x slower at nbits 1 and 2 (wall clock).
int64_t lut_workspace_floats_cpu(int64_t dim, int nbits, int64_t query_len) {
  return dim * nbits / 8 * table_stride(query_len);
}

void lut_maxsim_cpu(const LutMaxSimParams& p) {
  // Scratch for every slot of the parallel loops, allocated here: nothing may throw inside
  // a task.
  const int threads = max_threads();
  const int64_t per_thread = lut_scratch_floats(p.query_len, p.nbits);
  std::vector<float> scratch(static_cast<size_t>(threads * per_thread));
  switch (cpu_isa()) {
#ifdef CE_HAVE_X86_SIMD
    case Isa::AVX512: lut_maxsim_avx512(p, scratch.data(), per_thread, threads); return;
    case Isa::AVX2: lut_maxsim_avx2(p, scratch.data(), per_thread, threads); return;
#endif
    default: break;
  }
  lut_maxsim_dispatch(p, scratch.data(), per_thread, threads);
}

}  // namespace ce
