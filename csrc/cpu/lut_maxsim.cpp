// lut_maxsim on CPU: the baseline (scalar / SSE2) build of lut_maxsim_impl.h and the
// run-time choice between it and the AVX2 / AVX-512 builds of the same code.
#include "cpu/lut_maxsim_impl.h"
#include "common/isa.h"

namespace ce {

void lut_maxsim_avx2(const LutMaxSimParams& p);
void lut_maxsim_avx512(const LutMaxSimParams& p);

void lut_maxsim_cpu(const LutMaxSimParams& p) {
  switch (cpu_isa()) {
    case Isa::AVX512: lut_maxsim_avx512(p); return;
    case Isa::AVX2: lut_maxsim_avx2(p); return;
    case Isa::Scalar: break;
  }
  lut_maxsim_dispatch(p);
}

}  // namespace ce
