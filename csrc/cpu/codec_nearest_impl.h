// Nearest byte codeword (product-quantized residuals, common/codec.h), compiled once per ISA
// (codec.cpp: baseline, codec_avx2.cpp, codec_avx512.cpp) with that file's flags. 16-lane
// GCC vectors over the 256 codewords of a byte position; internal linkage and no shared
// inline functions or std:: templates, so the builds never collide at link time (see
// lut_maxsim_impl.h). Include only from those files.
#pragma once
#include <cstdint>

#pragma GCC diagnostic ignored "-Wpsabi"
// Distances are summed as (a - b)^2 in j order with no fused multiply-add in any build, so
// every ISA (and CUDA's __fmul_rn / __fadd_rn) picks the same codeword on near-ties. Clang
// ignores this pragma; it only contracts within one expression, which the code avoids.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

namespace ce {
namespace {

typedef float nearest_f16 __attribute__((vector_size(64)));
typedef int32_t nearest_i16 __attribute__((vector_size(64)));

// out[p] = argmin_v sum_j (residual[p*K + j] - codebook_t[(p*K + j)*256 + v])^2 for every
// byte position p < positions (ties -> lowest v). codebook_t is the codebook transposed to
// [positions][K][256], so the 256 codewords of one dimension are contiguous.
template <int K>
inline void nearest_codewords_fixed(const float* residual, const float* codebook_t, int64_t positions,
                                    uint8_t* out) {
  for (int64_t p = 0; p < positions; ++p) {
    const float* table = codebook_t + p * K * 256;
    float r[K];
    for (int j = 0; j < K; ++j) r[j] = residual[p * K + j];
    nearest_f16 best_d;
    nearest_i16 best_i = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    nearest_i16 index = best_i;
    for (int chunk = 0; chunk < 16; ++chunk) {
      nearest_f16 dist = {};
      for (int j = 0; j < K; ++j) {
        nearest_f16 c;
        __builtin_memcpy(&c, table + j * 256 + chunk * 16, sizeof c);
        const nearest_f16 diff = r[j] - c;
        const nearest_f16 square = diff * diff;
        dist += square;
      }
      if (chunk == 0) {
        best_d = dist;
      } else {
        index += 16;
        const nearest_i16 better = dist < best_d;  // strict: a lane keeps its earliest minimum
        best_d = better ? dist : best_d;
        best_i = better ? index : best_i;
      }
    }
    float best = best_d[0];
    int best_v = best_i[0];
    for (int l = 1; l < 16; ++l) {
      if (best_d[l] < best || (best_d[l] == best && best_i[l] < best_v)) {
        best = best_d[l];
        best_v = best_i[l];
      }
    }
    out[p] = static_cast<uint8_t>(best_v);
  }
}

inline void nearest_codewords_impl(const float* residual, const float* codebook_t, int64_t positions, int per_byte,
                                   uint8_t* out) {
  switch (per_byte) {
    case 8: nearest_codewords_fixed<8>(residual, codebook_t, positions, out); break;
    case 4: nearest_codewords_fixed<4>(residual, codebook_t, positions, out); break;
    default: nearest_codewords_fixed<2>(residual, codebook_t, positions, out); break;
  }
}

}  // namespace
}  // namespace ce

#pragma GCC pop_options
