// Late interaction on compressed tokens on CUDA (contract: common/lut_maxsim.h).
//
// Two kernels on the caller's stream:
//   build: one thread per lookup-table entry lut[q][pos][byte][i]
//          = sum_j q_i[pos * k + j] * codebook[pos][byte][j], summed in j order;
//   score: one warp per (query, candidate), query-major so a query's tables stay in L2;
//          lanes are query tokens (chunks of 32), so every table row read is one coalesced
//          128-byte line; the token's residual bytes are broadcasts. The sum over query
//          tokens runs in token order, like the CPU.
// Results equal the CPU's to float rounding (the CPU's SIMD builds may contract a * b + c
// into FMAs in the table build, so bit equality is not promised).
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>

#include "common/codec.h"
#include "common/lut_maxsim.h"
#include "cuda/check.cuh"

namespace ce {
namespace {

constexpr int kBuildThreads = 256;
constexpr int kScoreThreads = 256;

__global__ void __launch_bounds__(kBuildThreads)
build_lut_kernel(LutMaxSimParams p) {
  const int nbits = p.nbits, per_byte = 8 / nbits;
  const int64_t lq = p.query_len, dim = p.dim;
  const int64_t positions = dim * nbits / 8;
  const int64_t n = p.n_queries * positions * 256 * lq;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kBuildThreads) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kBuildThreads) {
    const int64_t i = e % lq;
    const int64_t rest = e / lq;
    const int byte = static_cast<int>(rest % 256);
    const int64_t qpos = rest / 256;
    const int64_t pos = qpos % positions, q = qpos / positions;
    const float* query = p.queries + (q * lq + i) * dim + pos * per_byte;
    float entry = 0.f;
    const float* word = p.codebook + (pos * 256 + byte) * per_byte;
    for (int j = 0; j < per_byte; ++j) entry += query[j] * word[j];
    p.lut[e] = entry;
  }
}

__global__ void __launch_bounds__(kScoreThreads)
score_kernel(LutMaxSimParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t lq = p.query_len;
  const int64_t positions = p.dim * p.nbits / 8;
  const int64_t first = p.cand_offsets ? p.cand_offsets[0] : 0;
  const int64_t n_work = p.cand_offsets ? p.n_candidates : p.n_queries * p.n_candidates;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kScoreThreads / 32);
  for (int64_t w = blockIdx.x * static_cast<int64_t>(kScoreThreads / 32) + threadIdx.x / 32; w < n_work;
       w += warps) {
    int64_t q, slot;
    if (p.cand_offsets) {
      // Query of flat position j: the last q with cand_offsets[q] <= j.
      slot = first + w;
      int64_t lo = 0, hi = p.n_queries;
      while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (p.cand_offsets[mid] <= slot) lo = mid; else hi = mid;
      }
      q = lo;
    } else {
      q = w / p.n_candidates;
      slot = w;
    }
    const int64_t d = p.candidates[p.cand_offsets ? slot : w - q * p.n_candidates];
    const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
    const float* scores = p.scores + q * p.n_centroids * lq;
    const float* lut = p.lut + q * positions * 256 * lq;
    float total = 0.f;
    for (int64_t i0 = 0; i0 < lq; i0 += 32) {
      const int64_t i = i0 + lane;
      const bool valid = i < lq;
      float best = -INFINITY;
      if (valid) {
        for (int64_t t = begin; t < end; ++t) {
          float acc = scores[static_cast<int64_t>(p.codes[t]) * lq + i];
          const uint8_t* packed = p.residuals + t * positions;
          for (int64_t pos = 0; pos < positions; ++pos) acc += lut[(pos * 256 + packed[pos]) * lq + i];
          best = fmaxf(best, acc * __half2float(__ushort_as_half(p.inv_norms[t])));
        }
      }
      const int n_here = static_cast<int>(lq - i0 < 32 ? lq - i0 : 32);
      for (int l = 0; l < n_here; ++l) total += __shfl_sync(0xffffffffu, best, l);
    }
    if (lane == 0) p.out[slot] = end == begin ? -INFINITY : total;
  }
}

}  // namespace

// Layout of p.lut per query: [dim * nbits / 8][256][query_len] fp32 (build_lut_kernel).
int64_t lut_workspace_floats_cuda(int64_t dim, int nbits, int64_t query_len) {
  return dim * nbits / 8 * 256 * query_len;
}

int lut_maxsim_cuda(const LutMaxSimParams& p, Stream stream) {
  if (p.n_queries == 0 || p.n_candidates == 0) return 0;
  if (!(p.nbits == 1 || p.nbits == 2 || p.nbits == 4) || p.dim < 1 || (p.dim * p.nbits) % 8 != 0 ||
      p.query_len < 1)
    return static_cast<int>(cudaErrorInvalidValue);
  const int64_t positions = p.dim * p.nbits / 8;
  unsigned blocks = 0;
  CE_CUDA_RETURN_IF_ERROR(grid_for(reinterpret_cast<const void*>(build_lut_kernel), kBuildThreads, 0,
                                   (p.n_queries * positions * 256 * p.query_len + kBuildThreads - 1) / kBuildThreads,
                                   1, 2, &blocks));
  build_lut_kernel<<<blocks, kBuildThreads, 0, stream>>>(p);
  CE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const int64_t warps_per_block = kScoreThreads / 32;
  CE_CUDA_RETURN_IF_ERROR(grid_for(reinterpret_cast<const void*>(score_kernel), kScoreThreads, 0,
                                   ((p.cand_offsets ? p.n_candidates : p.n_queries * p.n_candidates) +
                                    warps_per_block - 1) / warps_per_block,
                                   1, 4, &blocks));
  score_kernel<<<blocks, kScoreThreads, 0, stream>>>(p);
  CE_CUDA_RETURN_LAUNCH_ERROR();
}

}  // namespace ce
