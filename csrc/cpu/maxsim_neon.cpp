// Fused MaxSim, NEON (Advanced SIMD) path for aarch64, where it is part of the baseline ISA
// (no flags; CMakeLists.txt compiles this file only for aarch64 targets, and cpu_isa()
// chooses it unless CE_ISA=scalar). Blocking and threading: maxsim_impl.h.
#include <arm_neon.h>

#include <cstring>

#include "cpu/maxsim_impl.h"

namespace ce {
namespace {

struct NeonKernel {
  static constexpr int kLanes = 4;
  static constexpr int kMaxQv = 4;   // 16 query rows per chunk
  static constexpr int kTokens = 6;  // 24 accumulators + 4 query vectors + broadcasts <= 32

  // As Avx512Kernel::block: tile max into best[0 .. QV*4), NaN/inf detector into check[0 .. 4).
  template <int QV>
  static inline void block(const float* qt, const float* rows, int64_t stride, int64_t dim,
                           float* best, float* check, const char* pf, int64_t pf_row_bytes,
                           int64_t pf_elem_bytes) {
    float32x4_t acc[kTokens][QV];
    for (int j = 0; j < kTokens; ++j)
      for (int v = 0; v < QV; ++v) acc[j][v] = vdupq_n_f32(0.f);
    const float* row[kTokens];
    for (int j = 0; j < kTokens; ++j) row[j] = rows + j * stride;
    for (int64_t k0 = 0; k0 < dim; k0 += 16) {
      for (int j = 0; j < kTokens; ++j)
        __builtin_prefetch(pf + j * pf_row_bytes + k0 * pf_elem_bytes, 0, 3);
      const int64_t k1 = k0 + 16 < dim ? k0 + 16 : dim;
      for (int64_t k = k0; k < k1; ++k) {
        float32x4_t q[QV];
        for (int v = 0; v < QV; ++v) q[v] = vld1q_f32(qt + (k * QV + v) * kLanes);
        for (int j = 0; j < kTokens; ++j) {
          const float x = row[j][k];
          for (int v = 0; v < QV; ++v) acc[j][v] = vfmaq_n_f32(acc[j][v], q[v], x);
        }
      }
    }
    float32x4_t bad = vld1q_f32(check);
    for (int v = 0; v < QV; ++v) {
      float32x4_t m = acc[0][v];
      bad = vaddq_f32(bad, vsubq_f32(acc[0][v], acc[0][v]));
      for (int j = 1; j < kTokens; ++j) {
        m = vmaxq_f32(m, acc[j][v]);
        bad = vaddq_f32(bad, vsubq_f32(acc[j][v], acc[j][v]));
      }
      vst1q_f32(best + v * kLanes, vmaxq_f32(m, vld1q_f32(best + v * kLanes)));
    }
    vst1q_f32(check, bad);
  }

  // fp16/bf16 -> fp32, 4 at a time; the tail one by one so no byte past the last row is read.
  static void convert_rows(const uint16_t* src, DType dtype, int64_t n_rows, int64_t dim,
                           float* dst) {
    const int64_t n = n_rows * dim;
    const int64_t full = n / kLanes * kLanes;
    if (dtype == DType::F16) {
      for (int64_t e = 0; e < full; e += kLanes)
        vst1q_f32(dst + e, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + e))));
    } else {
      for (int64_t e = 0; e < full; e += kLanes)
        vst1q_f32(dst + e, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(src + e), 16)));
    }
    for (int64_t e = full; e < n; ++e) dst[e] = load_as_float(src, e, dtype);
  }
};

}  // namespace

int maxsim_neon(const MaxSimParams& p) { return run_maxsim<NeonKernel>(p); }
int maxsim_topk_neon(const MaxSimTopkParams& p) { return run_maxsim_topk<NeonKernel>(p); }

}  // namespace ce
