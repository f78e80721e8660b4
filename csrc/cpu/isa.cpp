#include "common/isa.h"

#include <cstdlib>
#include <cstring>

#ifdef CE_HAVE_OPENMP
#include <omp.h>
#endif

namespace ce {

static Isa detect() {
  Isa best = Isa::Scalar;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    best = Isa::AVX2;
  if (best == Isa::AVX2 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    best = Isa::AVX512;
#endif
  if (const char* cap = std::getenv("CE_ISA")) {
    Isa wanted = best;
    if (!std::strcmp(cap, "scalar")) wanted = Isa::Scalar;
    else if (!std::strcmp(cap, "avx2")) wanted = Isa::AVX2;
    else if (!std::strcmp(cap, "avx512")) wanted = Isa::AVX512;
    if (static_cast<int>(wanted) < static_cast<int>(best)) best = wanted;
  }
  return best;
}

Isa cpu_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::AVX2: return "avx2";
    case Isa::AVX512: return "avx512";
  }
  return "unknown";
}

int max_threads() {
#ifdef CE_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_num_threads(int n) {
#ifdef CE_HAVE_OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

}  // namespace ce
