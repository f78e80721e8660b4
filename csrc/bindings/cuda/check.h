// Turns a kernel contract's returned cudaError_t into a Python RuntimeError.
#pragma once
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <string>

inline void ce_raise_on_cuda_error(int code, const char* op) {
  if (code != 0)
    throw std::runtime_error(std::string("colbert_engine._cuda.") + op + ": " +
                             cudaGetErrorString(static_cast<cudaError_t>(code)));
}
