// lut_maxsim on CPU: the baseline (scalar / SSE2) build of lut_maxsim_impl.h, the run-time
// choice between it and the AVX2 / AVX-512 builds of the same code, and the table layout.
#include "common/isa.h"
#include "cpu/lut_maxsim_impl.h"

namespace ce {

void lut_maxsim_avx2(const LutMaxSimParams& p, int unit_bits);
void lut_maxsim_avx512(const LutMaxSimParams& p, int unit_bits);

// Bits of residual stream per table lookup: a byte (256 entries). Nibbles (16 entries,
// twice the lookups into tables 16x smaller, L1/L2-resident) measured slower: at nbits 4,
// dim 128, Lq 32 on one AVX-512 core 14.5 ms vs 10.7 ms per 100k tokens (CPU time), and
// no better at nbits 2; so the byte tables are used throughout.
static int unit_bits(int /*nbits*/) { return 8; }

int64_t lut_workspace_floats_cpu(int64_t dim, int nbits, int64_t query_len) {
  const int64_t units = dim * nbits / unit_bits(nbits);
  return units * (unit_bits(nbits) == 4 ? table_stride<4>(query_len) : table_stride<8>(query_len));
}

void lut_maxsim_cpu(const LutMaxSimParams& p) {
  const int u = unit_bits(p.nbits);
  switch (cpu_isa()) {
    case Isa::AVX512: lut_maxsim_avx512(p, u); return;
    case Isa::AVX2: lut_maxsim_avx2(p, u); return;
    case Isa::Scalar: break;
  }
  lut_maxsim_dispatch(p, u);
}

}  // namespace ce
