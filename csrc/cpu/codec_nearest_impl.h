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

// Rows of residuals scored together: each codeword vector loaded from the (L2-resident)
// codebook serves this many tokens, and their running minima stay in L1.
constexpr int kNearestRows = 16;

// Lane-wise minimum over the 16 lanes of (best_d, best_i): the lowest index among the
// lanes holding the smallest distance. A lane already holds its earliest minimum.
inline int nearest_lane_min(nearest_f16 best_d, nearest_i16 best_i) {
  nearest_f16 m = best_d;
  const nearest_i16 swaps[4] = {{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7},
                                {4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11},
                                {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13},
                                {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14}};
  for (int s = 0; s < 4; ++s) {
    const nearest_f16 other = __builtin_shuffle(m, swaps[s]);
    m = other < m ? other : m;
  }
  nearest_i16 index = best_d == m ? best_i : best_i + 256;  // lanes off the minimum lose
  for (int s = 0; s < 4; ++s) {
    const nearest_i16 other = __builtin_shuffle(index, swaps[s]);
    index = other < index ? other : index;
  }
  return index[0];
}

// out[t * positions + p] = argmin_v sum_j (residual[t * dim + p*K + j] - codebook_t[(p*K + j)*256 + v])^2
// for rows t < rows <= kNearestRows and every byte position p (ties -> lowest v), dim =
// positions * K. codebook_t is the codebook transposed to [positions][K][256], so the 256
// codewords of one dimension are contiguous.
template <int K>
inline void nearest_codewords_fixed(const float* residual, int64_t rows, const float* codebook_t,
                                    int64_t positions, uint8_t* out) {
  const int64_t dim = positions * K;
  nearest_f16 best_d[kNearestRows];
  nearest_i16 best_i[kNearestRows];
  for (int64_t p = 0; p < positions; ++p) {
    const float* table = codebook_t + p * K * 256;
    nearest_i16 index = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int chunk = 0; chunk < 16; ++chunk, index += 16) {
      nearest_f16 c[K];
      for (int j = 0; j < K; ++j) __builtin_memcpy(&c[j], table + j * 256 + chunk * 16, sizeof c[j]);
      for (int64_t t = 0; t < rows; ++t) {
        const float* r = residual + t * dim + p * K;
        nearest_f16 dist = {};
        for (int j = 0; j < K; ++j) {
          const nearest_f16 diff = r[j] - c[j];
          const nearest_f16 square = diff * diff;
          dist += square;
        }
        if (chunk == 0) {
          best_d[t] = dist;
          best_i[t] = index;
        } else {
          const nearest_i16 better = dist < best_d[t];  // strict: a lane keeps its earliest minimum
          best_d[t] = better ? dist : best_d[t];
          best_i[t] = better ? index : best_i[t];
        }
      }
    }
    for (int64_t t = 0; t < rows; ++t) out[t * positions + p] = static_cast<uint8_t>(nearest_lane_min(best_d[t], best_i[t]));
  }
}

inline void nearest_codewords_impl(const float* residual, int64_t rows, const float* codebook_t, int64_t positions,
                                   int per_byte, uint8_t* out) {
  switch (per_byte) {
    case 8: nearest_codewords_fixed<8>(residual, rows, codebook_t, positions, out); break;
    case 4: nearest_codewords_fixed<4>(residual, rows, codebook_t, positions, out); break;
    default: nearest_codewords_fixed<2>(residual, rows, codebook_t, positions, out); break;
  }
}

}  // namespace
}  // namespace ce

#pragma GCC pop_options
