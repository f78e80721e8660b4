#include "common/isa.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <thread>

#ifdef CE_HAVE_OPENMP
#include <omp.h>
#endif

namespace ce {

// Whether a CPU whose best path is `best` can run `wanted` (x86 levels nest; NEON is its
// own family).
static bool can_run(Isa best, Isa wanted) {
  switch (wanted) {
    case Isa::Scalar: return true;
    case Isa::AVX2: return best == Isa::AVX2 || best == Isa::AVX512;
    case Isa::AVX512: return best == Isa::AVX512;
    case Isa::NEON: return best == Isa::NEON;
  }
  return false;
}

static Isa detect() {
  Isa best = Isa::Scalar;
#if defined(CE_HAVE_X86_SIMD) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    best = Isa::AVX2;
  if (best == Isa::AVX2 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    best = Isa::AVX512;
#elif defined(CE_HAVE_NEON) && defined(__aarch64__)
  best = Isa::NEON;  // Advanced SIMD is mandatory in ARMv8-A
#endif
  if (const char* cap = std::getenv("CE_ISA")) {
    for (Isa wanted : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::NEON})
      if (!std::strcmp(cap, isa_name(wanted)) && can_run(best, wanted)) return wanted;
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
    case Isa::NEON: return "neon";
  }
  return "unknown";
}

// The calling thread's kernel thread count; 0 follows OpenMP's setting (which
// torch.set_num_threads also moves), as the kernels did when they all ran on OpenMP.
static thread_local int t_kernel_threads = 0;

int max_threads() {
  if (t_kernel_threads > 0) return t_kernel_threads;
#ifdef CE_HAVE_OPENMP
  return omp_get_max_threads();
#else
  const unsigned cores = std::thread::hardware_concurrency();
  return cores > 0 ? static_cast<int>(cores) : 1;
#endif
}

void set_num_threads(int n) {
  if (n <= 0) return;
  t_kernel_threads = n;
#ifdef CE_HAVE_OPENMP
  omp_set_num_threads(n);
#endif
}

int kernel_threads_setting() { return t_kernel_threads; }

void set_kernel_threads_setting(int n) { t_kernel_threads = n > 0 ? n : 0; }

}  // namespace ce
