// Run-time choice of the CPU SIMD path. Each variant lives in its own translation unit
// (*_avx2.cpp, *_avx512.cpp on x86-64; *_neon.cpp on aarch64) compiled with its own flags; the
// scalar path always exists. The build defines CE_HAVE_X86_SIMD or CE_HAVE_NEON when it
// compiled that family's translation units (CMakeLists.txt), so dispatchers only name
// variants that exist on the target.
#pragma once

namespace ce {

enum class Isa : int { Scalar = 0, AVX2 = 1, AVX512 = 2, NEON = 3 };

// Best ISA this CPU supports, capped by the environment variable CE_ISA
// ("scalar", "avx2", "avx512", "neon") so tests and benchmarks can force a path; a value
// this CPU or build cannot run is ignored.
Isa cpu_isa();
const char* isa_name(Isa isa);

// Threads the calling thread's kernel calls use: the search kernels' pool (cpu/parallel.h)
// and the OpenMP regions of the codec kernels. set_num_threads sets both for the calling
// thread; until it is called the count follows OpenMP's (every core without OpenMP).
int max_threads();
void set_num_threads(int n);
// The calling thread's own setting (0: none, follow OpenMP's) and a change of it alone, so a
// caller can hold the kernels' count while it lowers torch's (torch.set_num_threads moves
// OpenMP's), then give it back.
int kernel_threads_setting();
void set_kernel_threads_setting(int n);

}  // namespace ce
