// Turns a kernel contract's returned cudaError_t into a Python RuntimeError.
#pragma once
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/cuda_stream.h"

inline void ce_raise_on_cuda_error(int code, const char* op) {
  if (code != 0)
    throw std::runtime_error(std::string("colbert_engine._cuda.") + op + ": " +
                             cudaGetErrorString(static_cast<cudaError_t>(code)));
}

// Queues `kernel(p, stream)` with the GIL released, then raises if it returned an error.
template <class Params>
void ce_launch_cuda(int (*kernel)(const Params&, ce::Stream), const Params& p, uintptr_t stream,
                    const char* op) {
  int err;
  {
    pybind11::gil_scoped_release release;
    err = kernel(p, reinterpret_cast<ce::Stream>(stream));
  }
  ce_raise_on_cuda_error(err, op);
}
