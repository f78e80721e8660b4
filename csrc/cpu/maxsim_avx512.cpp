// Fused MaxSim, AVX-512 path (compiled with -mavx512f/bw/vl/dq; called only when cpu_isa()
// reports AVX-512). Blocking and threading: maxsim_impl.h.
#include <immintrin.h>

#include "cpu/maxsim_impl.h"

namespace ce {
namespace {

struct Avx512Kernel {
  static constexpr int kLanes = 16;
  static constexpr int kMaxQv = 2;   // 32 query rows per chunk: ColBERT's query length
  static constexpr int kTokens = 8;  // 16 accumulators + 2 query vectors in 32 registers

  // best[0 .. QV*16) = max(best, max over the kTokens rows of <query row, token row>);
  // check[0 .. 16) += acc - acc, which stays 0 unless a similarity is NaN or infinite.
  template <int QV>
  static inline void block(const float* qt, const float* rows, int64_t stride, int64_t dim,
                           float* best, float* check, const char* pf, int64_t pf_row_bytes,
                           int64_t pf_elem_bytes) {
    __m512 acc[kTokens][QV];
    for (int j = 0; j < kTokens; ++j)
      for (int v = 0; v < QV; ++v) acc[j][v] = _mm512_setzero_ps();
    const float* row[kTokens];
    for (int j = 0; j < kTokens; ++j) row[j] = rows + j * stride;
    for (int64_t k0 = 0; k0 < dim; k0 += 16) {
      // Rows the next blocks will need (maxsim_impl.h chooses them) are fetched while this
      // block computes: one 64-byte line (16 fp32 / 32 fp16 elements) per row per step.
      for (int j = 0; j < kTokens; ++j)
        _mm_prefetch(pf + j * pf_row_bytes + k0 * pf_elem_bytes, _MM_HINT_T0);
      const int64_t k1 = k0 + 16 < dim ? k0 + 16 : dim;
      for (int64_t k = k0; k < k1; ++k) {
        __m512 q[QV];
        for (int v = 0; v < QV; ++v) q[v] = _mm512_load_ps(qt + (k * QV + v) * kLanes);
        for (int j = 0; j < kTokens; ++j) {
          const __m512 x = _mm512_set1_ps(row[j][k]);
          for (int v = 0; v < QV; ++v) acc[j][v] = _mm512_fmadd_ps(q[v], x, acc[j][v]);
        }
      }
    }
    __m512 bad = _mm512_loadu_ps(check);
    for (int v = 0; v < QV; ++v) {
      __m512 m = acc[0][v];
      bad = _mm512_add_ps(bad, _mm512_sub_ps(acc[0][v], acc[0][v]));
      for (int j = 1; j < kTokens; ++j) {
        m = _mm512_max_ps(m, acc[j][v]);
        bad = _mm512_add_ps(bad, _mm512_sub_ps(acc[j][v], acc[j][v]));
      }
      _mm512_storeu_ps(best + v * kLanes, _mm512_max_ps(m, _mm512_loadu_ps(best + v * kLanes)));
    }
    _mm512_storeu_ps(check, bad);
  }

  // n_rows rows of dim fp16/bf16 values -> fp32 (row-major, stride dim), 16 at a time with
  // a masked tail: dim need not be a multiple of 16 and no byte past a row is read.
  static void convert_rows(const uint16_t* src, DType dtype, int64_t n_rows, int64_t dim,
                           float* dst) {
    const int64_t n = n_rows * dim;  // rows are back to back on both sides
    const int64_t full = n / kLanes * kLanes;
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - full)) - 1u);
    if (dtype == DType::F16) {
      for (int64_t e = 0; e < full; e += kLanes) {
        _mm512_storeu_ps(dst + e, _mm512_cvtph_ps(_mm256_loadu_si256(
                                      reinterpret_cast<const __m256i*>(src + e))));
      }
      if (tail)
        _mm512_mask_storeu_ps(dst + full, tail,
                              _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, src + full)));
    } else {  // bf16: the upper half of an fp32
      for (int64_t e = 0; e < full; e += kLanes)
        _mm512_storeu_ps(dst + e, widen_bf16(_mm256_loadu_si256(
                                      reinterpret_cast<const __m256i*>(src + e))));
      if (tail)
        _mm512_mask_storeu_ps(dst + full, tail,
                              widen_bf16(_mm256_maskz_loadu_epi16(tail, src + full)));
    }
  }

  static inline __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
};

}  // namespace

int maxsim_avx512(const MaxSimParams& p) { return run_maxsim<Avx512Kernel>(p); }
int maxsim_topk_avx512(const MaxSimTopkParams& p) { return run_maxsim_topk<Avx512Kernel>(p); }

}  // namespace ce
