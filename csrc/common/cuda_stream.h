// Lets torch-free, CUDA-free contract headers name a CUDA stream.
// Identical to the runtime's own `typedef struct CUstream_st* cudaStream_t`.
#pragma once
struct CUstream_st;
namespace ce {
using Stream = CUstream_st*;
}
