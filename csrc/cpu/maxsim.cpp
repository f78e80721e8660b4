// Fused MaxSim on CPU: the run-time dispatch and the portable (scalar) path. The SIMD paths
// are maxsim_avx2.cpp and maxsim_avx512.cpp (x86-64), maxsim_neon.cpp (aarch64); the blocking shared by all is maxsim_impl.h.
// One document per OpenMP iteration, dynamic schedule: document lengths vary a lot, and
// static partitioning left threads idle in PLAID.
#include "common/isa.h"
#include "cpu/maxsim_impl.h"

namespace ce {
namespace {

// Plain C++ in the same shape as the SIMD kernels: 4 "lanes" of query rows per vector (an
// SSE register: the compiler vectorises it with the baseline ISA on x86-64), 2 vectors per
// chunk, 4 tokens per block; about 8 GFLOP/s on one Zen 4 core, vs about 100 for AVX2/512.
struct ScalarKernel {
  static constexpr int kLanes = 4;
  static constexpr int kMaxQv = 2;
  static constexpr int kTokens = 4;

  template <int QV>
  static void block(const float* qt, const float* rows, int64_t stride, int64_t dim,
                    float* best, float* check, const char*, int64_t, int64_t) {
    constexpr int width = QV * kLanes;
    float acc[kTokens][width] = {};
    for (int64_t k = 0; k < dim; ++k) {
      const float* q = qt + k * width;
      for (int j = 0; j < kTokens; ++j) {
        const float x = rows[j * stride + k];
        for (int l = 0; l < width; ++l) acc[j][l] += q[l] * x;
      }
    }
    for (int l = 0; l < width; ++l) {
      float m = acc[0][l];
      for (int j = 1; j < kTokens; ++j) m = acc[j][l] > m ? acc[j][l] : m;
      best[l] = m > best[l] ? m : best[l];
      for (int j = 0; j < kTokens; ++j) check[l % kLanes] += acc[j][l] - acc[j][l];
    }
  }

  // n_rows rows of dim 16-bit floats -> fp32, row-major with stride dim.
  static void convert_rows(const uint16_t* src, DType dtype, int64_t n_rows, int64_t dim,
                           float* dst) {
    for (int64_t e = 0; e < n_rows * dim; ++e) dst[e] = load_as_float(src, e, dtype);
  }
};

}  // namespace

int maxsim_cpu(const MaxSimParams& p) {
  switch (cpu_isa()) {
#ifdef CE_HAVE_X86_SIMD
    case Isa::AVX512: return maxsim_avx512(p);
    case Isa::AVX2: return maxsim_avx2(p);
#endif
#ifdef CE_HAVE_NEON
    case Isa::NEON: return maxsim_neon(p);
#endif
    default: break;
  }
  return run_maxsim<ScalarKernel>(p);
}

int maxsim_topk_cpu(const MaxSimTopkParams& p) {
  switch (cpu_isa()) {
#ifdef CE_HAVE_X86_SIMD
    case Isa::AVX512: return maxsim_topk_avx512(p);
    case Isa::AVX2: return maxsim_topk_avx2(p);
#endif
#ifdef CE_HAVE_NEON
    case Isa::NEON: return maxsim_topk_neon(p);
#endif
    default: break;
  }
  return run_maxsim_topk<ScalarKernel>(p);
}

}  // namespace ce
