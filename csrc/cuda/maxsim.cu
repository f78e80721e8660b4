// Fused MaxSim on CUDA: one block per (document, query). The block streams the document's
// tokens through shared memory in tiles; each thread owns query tokens and keeps their
// running max (from -inf) in registers; a block reduction sums the maxima.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>

#include "common/maxsim.h"
#include "cuda/check.cuh"

namespace ce {
namespace {

constexpr int kThreads = 128;
constexpr int kTileTokens = 16;

__device__ __forceinline__ float load_elem(const void* base, int64_t i, DType dtype) {
  switch (dtype) {
    case DType::F16: return __half2float(static_cast<const __half*>(base)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

__global__ void __launch_bounds__(kThreads)
maxsim_kernel(MaxSimParams p, int64_t n_out) {
  extern __shared__ float tile[];  // [kTileTokens, dim]
  __shared__ float partial[kThreads];
  const int64_t out = blockIdx.x;
  const int64_t q = blockIdx.y;
  const int64_t d = p.doc_subset ? p.doc_subset[out] : out;
  const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
  const int64_t dim = p.dim, lq = p.query_len;
  const float* query = p.queries + q * lq * dim;

  // Each thread owns query tokens i = threadIdx.x, threadIdx.x + kThreads, ...
  constexpr int kMaxOwned = 4;  // query_len <= 512 is checked on the host
  float best[kMaxOwned];
#pragma unroll
  for (int r = 0; r < kMaxOwned; ++r) best[r] = -INFINITY;

  for (int64_t t0 = begin; t0 < end; t0 += kTileTokens) {
    const int64_t n_tile = min(static_cast<int64_t>(kTileTokens), end - t0);
    for (int64_t e = threadIdx.x; e < n_tile * dim; e += kThreads)
      tile[e] = load_elem(p.doc_emb, t0 * dim + e, p.doc_dtype);
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kMaxOwned; ++r) {
      const int64_t i = threadIdx.x + r * kThreads;
      if (i < lq) {
        const float* qi = query + i * dim;
        for (int64_t t = 0; t < n_tile; ++t) {
          float dot = 0.f;
          for (int64_t k = 0; k < dim; ++k) dot = fmaf(qi[k], tile[t * dim + k], dot);
          best[r] = fmaxf(best[r], dot);
        }
      }
    }
    __syncthreads();
  }
  float sum = 0.f;
#pragma unroll
  for (int r = 0; r < kMaxOwned; ++r)
    if (threadIdx.x + r * kThreads < lq) sum += best[r];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) p.scores[q * n_out + out] = (end == begin) ? -INFINITY : partial[0];
}

}  // namespace

int maxsim_cuda(const MaxSimParams& p, Stream stream) {
  const int64_t n_out = p.doc_subset ? p.n_subset : p.n_docs;
  if (n_out == 0 || p.n_queries == 0) return 0;
  const dim3 grid(static_cast<unsigned>(n_out), static_cast<unsigned>(p.n_queries));
  const size_t smem = sizeof(float) * kTileTokens * p.dim;
  maxsim_kernel<<<grid, kThreads, smem, stream>>>(p, n_out);
  CE_CUDA_RETURN_LAUNCH_ERROR();
}

}  // namespace ce
