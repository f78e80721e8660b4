// codec_argmax_impl.h, codec_nearest_impl.h and codec_probe_impl.h compiled with avx512 flags (CMakeLists.txt sets them for *_avx512.cpp).
#include "cpu/codec_argmax_impl.h"
#include "cpu/codec_nearest_impl.h"
#include "cpu/codec_probe.h"

#ifdef CE_HAVE_OPENMP
#include <omp.h>
#endif
#include "cpu/codec_probe_impl.h"

namespace ce {
void argmax_rows_avx512(const float* sims, int64_t rows, int64_t cols, int32_t* out) {
  argmax_rows_impl(sims, rows, cols, out);
}
void probed_argmax_avx512(const ProbedArgmaxParams& p, const ProbeScratch* scratch, int n_scratch) {
  probed_argmax_impl(p, scratch, n_scratch);
}
void nearest_codewords_avx512(const float* residual, int64_t rows, const float* codebook_t, int64_t positions,
                            int per_byte, uint8_t* out) {
  nearest_codewords_impl(residual, rows, codebook_t, positions, per_byte, out);
}
}  // namespace ce
