// bf16 screening for the probed argmax (common/codec.h): the per-cell scoring of
// codec_probe_impl.h with VDPBF16PS (two bf16 products per fp32 lane: twice the fp32 FMA
// rate), then an fp32 rescoring of each token's 16 lane winners. Compiled for the whole
// file with target attributes (the run-time check is probed_bf16_available()); named
// *_avx512 so that CMake builds it for x86-64 targets only.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")
#include <immintrin.h>

#include "cpu/codec_argmax_impl.h"
#include "cpu/codec_probe.h"

#ifdef CE_HAVE_OPENMP
#include <omp.h>
#endif
#include "cpu/codec_probe_impl.h"

namespace ce {
namespace {

inline argmax_f16 to_vec(__m512 v) {
  argmax_f16 out;
  __builtin_memcpy(&out, &v, sizeof out);
  return out;
}

void probe_cell_bf16(const ProbedArgmaxParams& p, const int32_t* rows, int64_t n_rows, int64_t block_start,
                     int64_t col0, int64_t width, float* best_s, int32_t* best_i) {
  const int64_t pairs = p.dim / 2;
  const uint16_t* cell = p.cell_data_bf16 + col0 * p.dim;  // [pairs][width][2]
  const int32_t* ids = p.cell_ids + col0;
  for (int64_t r = 0; r < n_rows; r += kProbeTokens) {
    const int32_t* x[kProbeTokens];
    int64_t local[kProbeTokens];
    for (int t = 0; t < kProbeTokens; ++t) {
      local[t] = rows[r + t];
      x[t] = reinterpret_cast<const int32_t*>(p.emb_bf16 + (block_start + local[t]) * p.dim);
    }
    int64_t c = 0;
    for (; c + 32 <= width; c += 32) {
      __m512 acc[kProbeTokens][2];
      for (int t = 0; t < kProbeTokens; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
      const uint16_t* col = cell + c * 2;
      for (int64_t q = 0; q < pairs; ++q) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(col + q * width * 2);
        const __m512bh w1 = (__m512bh)_mm512_loadu_si512(col + q * width * 2 + 32);
        for (int t = 0; t < kProbeTokens; ++t) {
          const __m512bh xv = (__m512bh)_mm512_set1_epi32(x[t][q]);
          acc[t][0] = _mm512_dpbf16_ps(acc[t][0], xv, w0);
          acc[t][1] = _mm512_dpbf16_ps(acc[t][1], xv, w1);
        }
      }
      argmax_i16 id0, id1;
      __builtin_memcpy(&id0, ids + c, sizeof id0);
      __builtin_memcpy(&id1, ids + c + 16, sizeof id1);
      for (int t = 0; t < kProbeTokens; ++t) {
        probe_update(best_s + local[t] * 16, best_i + local[t] * 16, to_vec(acc[t][0]), id0);
        probe_update(best_s + local[t] * 16, best_i + local[t] * 16, to_vec(acc[t][1]), id1);
      }
    }
    for (; c < width; c += 16) {
      __m512 acc[kProbeTokens];
      for (int t = 0; t < kProbeTokens; ++t) acc[t] = _mm512_setzero_ps();
      const uint16_t* col = cell + c * 2;
      for (int64_t q = 0; q < pairs; ++q) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(col + q * width * 2);
        for (int t = 0; t < kProbeTokens; ++t)
          acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)_mm512_set1_epi32(x[t][q]), w0);
      }
      argmax_i16 id0;
      __builtin_memcpy(&id0, ids + c, sizeof id0);
      for (int t = 0; t < kProbeTokens; ++t)
        probe_update(best_s + local[t] * 16, best_i + local[t] * 16, to_vec(acc[t]), id0);
    }
  }
}

// fp32 rescoring of the 16 lane winners (lanes that saw only padding hold INT32_MAX).
void probe_finish_bf16(const ProbedArgmaxParams& p, int64_t start, int64_t n, const float* best_s,
                       const int32_t* best_i) {
  const int64_t dim = p.dim;
  for (int64_t t = 0; t < n; ++t) {
    const float* x = p.emb + (start + t) * dim;
    const int32_t* cand = best_i + t * 16;
    float best = 0.f;
    int32_t id = INT32_MAX;
    for (int l = 0; l < 16; ++l) {
      const int32_t k = cand[l];
      if (k == INT32_MAX) continue;
      const float* c = p.centroids + static_cast<int64_t>(k) * dim;
      __m512 acc = _mm512_setzero_ps();
      int64_t d = 0;
      for (; d + 16 <= dim; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + d), _mm512_loadu_ps(c + d), acc);
      float s = _mm512_reduce_add_ps(acc);
      for (; d < dim; ++d) s += x[d] * c[d];
      if (id == INT32_MAX || s > best || (s == best && k < id)) {
        best = s;
        id = k;
      }
    }
    p.out[start + t] = id;
  }
}

}  // namespace

void probed_argmax_bf16(const ProbedArgmaxParams& p, const ProbeScratch* scratch, int n_scratch) {
  probed_argmax_generic(p, scratch, n_scratch, probe_cell_bf16, probe_finish_bf16);
}

}  // namespace ce
#pragma GCC pop_options
