// codec_argmax_impl.h compiled with avx512 flags (CMakeLists.txt sets them for *_avx512.cpp).
#include "cpu/codec_argmax_impl.h"

namespace ce {
void argmax_rows_avx512(const float* sims, int64_t rows, int64_t cols, int32_t* out) {
  argmax_rows_impl(sims, rows, cols, out);
}
}  // namespace ce
