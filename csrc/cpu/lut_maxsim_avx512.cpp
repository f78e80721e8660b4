// lut_maxsim_impl.h compiled with avx512 flags (CMakeLists.txt sets them for *_avx512.cpp).
#include "cpu/lut_maxsim_impl.h"

namespace ce {
void lut_maxsim_avx512(const LutMaxSimParams& p, float* scratch, int64_t scratch_floats, int threads) {
  lut_maxsim_dispatch(p, scratch, scratch_floats, threads);
}
}  // namespace ce
