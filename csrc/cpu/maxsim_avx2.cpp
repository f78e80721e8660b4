// Fused MaxSim, AVX2 + FMA + F16C path (compiled with -mavx2 -mfma -mf16c; called only when
// cpu_isa() reports AVX2). Blocking and threading: maxsim_impl.h.
#include <immintrin.h>

#include <cstring>

#include "cpu/maxsim_impl.h"

namespace ce {
namespace {

struct Avx2Kernel {
  static constexpr int kLanes = 8;
  static constexpr int kMaxQv = 2;   // 16 query rows per chunk
  static constexpr int kTokens = 6;  // 12 accumulators + 2 query vectors + 1 broadcast <= 16

  // As Avx512Kernel::block: tile max into best[0 .. QV*8), NaN/inf detector into check[0 .. 8).
  template <int QV>
  static inline void block(const float* qt, const float* rows, int64_t stride, int64_t dim,
                           float* best, float* check, const char* pf, int64_t pf_row_bytes,
                           int64_t pf_elem_bytes) {
    __m256 acc[kTokens][QV];
    for (int j = 0; j < kTokens; ++j)
      for (int v = 0; v < QV; ++v) acc[j][v] = _mm256_setzero_ps();
    const float* row[kTokens];
    for (int j = 0; j < kTokens; ++j) row[j] = rows + j * stride;
    for (int64_t k0 = 0; k0 < dim; k0 += 16) {
      for (int j = 0; j < kTokens; ++j)
        _mm_prefetch(pf + j * pf_row_bytes + k0 * pf_elem_bytes, _MM_HINT_T0);
      const int64_t k1 = k0 + 16 < dim ? k0 + 16 : dim;
      for (int64_t k = k0; k < k1; ++k) {
        __m256 q[QV];
        for (int v = 0; v < QV; ++v) q[v] = _mm256_load_ps(qt + (k * QV + v) * kLanes);
        for (int j = 0; j < kTokens; ++j) {
          const __m256 x = _mm256_broadcast_ss(row[j] + k);
          for (int v = 0; v < QV; ++v) acc[j][v] = _mm256_fmadd_ps(q[v], x, acc[j][v]);
        }
      }
    }
    __m256 bad = _mm256_loadu_ps(check);
    for (int v = 0; v < QV; ++v) {
      __m256 m = acc[0][v];
      bad = _mm256_add_ps(bad, _mm256_sub_ps(acc[0][v], acc[0][v]));
      for (int j = 1; j < kTokens; ++j) {
        m = _mm256_max_ps(m, acc[j][v]);
        bad = _mm256_add_ps(bad, _mm256_sub_ps(acc[j][v], acc[j][v]));
      }
      _mm256_storeu_ps(best + v * kLanes, _mm256_max_ps(m, _mm256_loadu_ps(best + v * kLanes)));
    }
    _mm256_storeu_ps(check, bad);
  }

  // fp16/bf16 -> fp32, 8 at a time; the tail (n_rows*dim not a multiple of 8) one by one so
  // no byte past the last row is read.
  static void convert_rows(const uint16_t* src, DType dtype, int64_t n_rows, int64_t dim,
                           float* dst) {
    const int64_t n = n_rows * dim;
    const int64_t full = n / kLanes * kLanes;
    if (dtype == DType::F16) {
      for (int64_t e = 0; e < full; e += kLanes)
        _mm256_storeu_ps(dst + e, _mm256_cvtph_ps(_mm_loadu_si128(
                                      reinterpret_cast<const __m128i*>(src + e))));
      for (int64_t e = full; e < n; ++e) dst[e] = _cvtsh_ss(src[e]);
    } else {
      for (int64_t e = 0; e < full; e += kLanes) {
        const __m256i wide = _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + e)));
        _mm256_storeu_ps(dst + e, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
      }
      for (int64_t e = full; e < n; ++e) {
        const uint32_t bits = static_cast<uint32_t>(src[e]) << 16;
        std::memcpy(dst + e, &bits, sizeof(float));
      }
    }
  }
};

}  // namespace

int maxsim_avx2(const MaxSimParams& p) { return run_maxsim<Avx2Kernel>(p); }
int maxsim_topk_avx2(const MaxSimTopkParams& p) { return run_maxsim_topk<Avx2Kernel>(p); }

}  // namespace ce
