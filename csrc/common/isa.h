// Run-time choice of the CPU SIMD path. Each variant lives in its own translation unit
// (*_avx2.cpp, *_avx512.cpp) compiled with its own flags; the scalar path always exists.
#pragma once

namespace ce {

enum class Isa : int { Scalar = 0, AVX2 = 1, AVX512 = 2 };

// Best ISA this CPU supports, capped by the environment variable CE_ISA
// ("scalar", "avx2", "avx512") so tests and benchmarks can force a path.
Isa cpu_isa();
const char* isa_name(Isa isa);

// OpenMP thread control (1 when built without OpenMP).
int max_threads();
void set_num_threads(int n);

}  // namespace ce
