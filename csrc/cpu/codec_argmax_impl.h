// Row-wise argmax of a similarity block (the nearest-centroid step of compression), compiled
// once per ISA (codec.cpp: baseline, codec_avx2.cpp, codec_avx512.cpp) with that file's
// flags. 16-lane GCC vectors: the compiler maps them to AVX-512, AVX2 or SSE registers.
// Internal linkage and no shared inline functions or std:: templates, so the builds never
// collide at link time (see lut_maxsim_impl.h). Include only from those files.
#pragma once
#include <cstdint>

#pragma GCC diagnostic ignored "-Wpsabi"

namespace ce {
namespace {

typedef float argmax_f16 __attribute__((vector_size(64)));
typedef int32_t argmax_i16 __attribute__((vector_size(64)));

// out[r] = the first k maximising sims[r * cols + k] (ties -> lowest k). Values are finite
// (checked in Python). Per lane a strict > keeps the earliest index; across lanes the
// lowest index among the maxima wins.
inline void argmax_rows_impl(const float* sims, int64_t rows, int64_t cols, int32_t* out) {
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = sims + r * cols;
    int64_t best_k = 0;
    float best = row[0];
    int64_t k = 0;
    if (cols >= 16) {
      argmax_f16 best_v;
      __builtin_memcpy(&best_v, row, sizeof best_v);
      argmax_i16 best_i = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
      argmax_i16 index = best_i;
      for (k = 16; k + 16 <= cols; k += 16) {
        argmax_f16 v;
        __builtin_memcpy(&v, row + k, sizeof v);
        index += 16;
        const argmax_i16 better = v > best_v;
        best_v = better ? v : best_v;
        best_i = better ? index : best_i;
      }
      best = best_v[0];
      best_k = best_i[0];
      for (int l = 1; l < 16; ++l) {
        if (best_v[l] > best || (best_v[l] == best && best_i[l] < best_k)) {
          best = best_v[l];
          best_k = best_i[l];
        }
      }
    }
    for (; k < cols; ++k) {  // tail (indices above every lane's): strict > keeps ties low
      if (row[k] > best) {
        best = row[k];
        best_k = k;
      }
    }
    out[r] = static_cast<int32_t>(best_k);
  }
}

}  // namespace
}  // namespace ce
