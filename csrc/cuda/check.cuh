// Error plumbing for launchers: every launch is checked and the code returned to the
// binding, which raises in Python. No exceptions, no c10.
#pragma once
#include <cuda_runtime.h>

#define CE_CUDA_RETURN_IF_ERROR(expr)          \
  do {                                         \
    cudaError_t ce_err_ = (expr);              \
    if (ce_err_ != cudaSuccess) return ce_err_; \
  } while (0)

#define CE_CUDA_RETURN_LAUNCH_ERROR() return static_cast<int>(cudaGetLastError())
