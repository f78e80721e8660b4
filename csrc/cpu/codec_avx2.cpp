// codec_argmax_impl.h compiled with avx2 flags (CMakeLists.txt sets them for *_avx2.cpp).
#include "cpu/codec_argmax_impl.h"

namespace ce {
void argmax_rows_avx2(const float* sims, int64_t rows, int64_t cols, int32_t* out) {
  argmax_rows_impl(sims, rows, cols, out);
}
}  // namespace ce
