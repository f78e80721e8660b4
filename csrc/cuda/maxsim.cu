// Fused MaxSim on CUDA (contract: csrc/common/maxsim.h).
//
// Which shapes go where (chosen in maxsim_cuda, the launcher at the bottom):
//   fast paths   dim % 16 == 0, dim <= 256, query_len <= 64, doc_emb 16-byte aligned:
//     - fp16 / bf16 documents: tensor cores (nvcuda::wmma 16x16x16, fp32 accumulate). The
//       queries are rounded to the documents' dtype for the products (a product of two
//       16-bit floats is exact in fp32, so the only differences from fp32 math are that
//       rounding and the summation order).
//     - fp32 documents: register-tiled fp32 FMA (no TF32: results match the CPU to float
//       rounding).
//   fallback     everything else (dim 7, 100, 512, ...; query_len 65..512; unaligned views):
//     one block per (document, query), tokens staged through shared memory, fp32 FMA on
//     the same values (queries rounded to 16-bit documents' dtype, like the fast path).
//
// Fast-path work decomposition: a block owns `kBlockRows` = 64 query-token rows (as many
// whole queries as fit: 2 queries of 32 tokens, 1 of 33..64) and one document. The query
// rows sit in shared memory for the whole document; the document's tokens stream through
// shared memory in tiles of `kDocTile` tokens (a cp.async pipeline kStages deep on the
// 16-bit path). Each thread keeps running maxima (from -inf) for its rows; at the end one
// thread per query sums its rows' maxima in token order. Work items are (document, query group)
// pairs, query group fastest so the blocks working on one document run together and read
// it once from DRAM; a grid-stride loop over work items keeps grids within limits and,
// because the grid is a multiple of the number of query groups, each block keeps one query
// group for its whole life (loaded once).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <mma.h>

#include <cstdint>

#include "common/maxsim.h"
#include "cuda/check.cuh"

namespace ce {
namespace {

namespace wmma = nvcuda::wmma;

// ---------------------------------------------------------------- fast-path constants
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;    // 128
constexpr int kBlockRows = kWarps * 16;  // query-token rows per block: 16 per warp
constexpr int kDocTile = 32;             // document tokens per shared-memory tile
// cp.async stages of document tiles on the 16-bit path: two tiles in flight per block while
// one is multiplied; 3 stages (49 KB of shared memory) keep 4 blocks per SM on H200, where
// 4 stages (58 KB, 3 blocks) measured no faster (benchmarks/RESULTS.md).
constexpr int kStages = 3;
constexpr int kMaxFastDim = 256;
constexpr int kMaxFastQueryLen = kBlockRows;
// 16-bit rows are padded by 8 elements (16 bytes): rows stay 16-byte aligned for cp.async
// and WMMA (ldm a multiple of 8), and consecutive rows start in different banks.
constexpr int kHalfPad = 8;

__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char ce_maxsim_smem[];
  return ce_maxsim_smem;
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }

// Shapes of the fast-path grid, computed once on the host.
struct FastGrid {
  int64_t n_out;              // columns of `scores`
  int64_t queries_per_block;  // whole queries per block: kBlockRows / query_len
  int64_t n_groups;           // ceil(n_queries / queries_per_block)
  int64_t n_work;             // n_out * n_groups
};

// Copies the query rows of group `group` into shared memory as T with row stride `ld`,
// zero-filling the rows past the group's last query token. Returns the number of rows.
template <typename T>
__device__ int load_query_group(const MaxSimParams& p, const FastGrid& g, int64_t group,
                                T* q_tile, int ld) {
  const int64_t q0 = group * g.queries_per_block;
  const int64_t n_here = min(g.queries_per_block, p.n_queries - q0);
  const int rows = static_cast<int>(n_here * p.query_len);
  const int dim = static_cast<int>(p.dim);
  const float* src = p.queries + q0 * p.query_len * p.dim;  // rows are contiguous
  for (int e = threadIdx.x; e < kBlockRows * dim; e += kThreads) {
    const int r = e / dim, k = e - r * dim;
    q_tile[r * ld + k] = from_float<T>(r < rows ? src[static_cast<int64_t>(r) * dim + k] : 0.f);
  }
  return rows;
}

// True when the caller's device-side checks flagged the arguments: the block does nothing.
__device__ __forceinline__ bool bad_input(const MaxSimParams& p) {
  return p.status != nullptr && (*reinterpret_cast<const volatile int*>(p.status) & kMaxSimBadInput);
}

// Reports a NaN/inf similarity seen by this thread (rare: one atomic per offending thread).
__device__ __forceinline__ void report_non_finite(const MaxSimParams& p, bool non_finite) {
  if (non_finite && p.status != nullptr) atomicOr(p.status, kMaxSimNonFinite);
}

// One thread per query of the group sums its rows' maxima (in token order, like the CPU).
__device__ __forceinline__ void write_scores(const MaxSimParams& p, const FastGrid& g,
                                             int64_t group, int64_t out, bool empty_doc,
                                             const float* row_max) {
  const int64_t q0 = group * g.queries_per_block;
  const int64_t n_here = min(g.queries_per_block, p.n_queries - q0);
  if (threadIdx.x < n_here) {
    const int lq = static_cast<int>(p.query_len);
    float total = 0.f;
    for (int i = 0; i < lq; ++i) total += row_max[threadIdx.x * lq + i];
    p.scores[(q0 + threadIdx.x) * g.n_out + out] = empty_doc ? -INFINITY : total;
  }
}

// ---------------------------------------------------------------- fp16 / bf16: WMMA
// Shared memory: q_tile [kBlockRows][ld] T | doc_tile[kStages] [kDocTile][ld] T |
//                row_max [kBlockRows] f32,
// ld = dim + kHalfPad. Every section size is a multiple of 128 bytes for dim % 16 == 0
// (see half_smem_bytes), so every WMMA pointer is 32-byte aligned.
template <typename T>
__global__ void __launch_bounds__(kThreads)
maxsim_wmma_kernel(MaxSimParams p, FastGrid g) {
  const int dim = static_cast<int>(p.dim);
  const int ld = dim + kHalfPad;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* smem = dynamic_smem();
  T* q_tile = reinterpret_cast<T*>(smem);
  T* doc_tiles = q_tile + kBlockRows * ld;  // kStages stages of kDocTile * ld
  float* row_max = reinterpret_cast<float*>(doc_tiles + kStages * kDocTile * ld);
  const T* doc = static_cast<const T*>(p.doc_emb);
  const int chunks_per_row = dim / 8;  // 16-byte chunks of 8 elements
  if (bad_input(p)) return;  // block-uniform

  bool non_finite = false;
  int64_t loaded_group = -1;
  int rows = 0;
  for (int64_t work = blockIdx.x; work < g.n_work; work += gridDim.x) {
    const int64_t out = work / g.n_groups;
    const int64_t group = work - out * g.n_groups;
    if (group != loaded_group) {  // block-uniform; the trailing barrier protects q_tile
      rows = load_query_group<T>(p, g, group, q_tile, ld);
      loaded_group = group;
    }
    const int64_t d = p.doc_subset ? p.doc_subset[out] : out;
    const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
    const int64_t n_tiles = (end - begin + kDocTile - 1) / kDocTile;

    // Queue the copy of tile `tile` into stage tile % kStages (rows past the document are
    // zeroed) and close a cp.async group; past the last tile the group is empty, so that
    // "all but the newest kStages - 1 groups have landed" always means "tile t has landed".
    auto issue_tile = [&](int64_t tile) {
      if (tile < n_tiles) {
        const int64_t t0 = begin + tile * kDocTile;
        const int n_valid = static_cast<int>(min(static_cast<int64_t>(kDocTile), end - t0));
        T* stage = doc_tiles + (tile % kStages) * kDocTile * ld;
        for (int e = threadIdx.x; e < kDocTile * chunks_per_row; e += kThreads) {
          const int r = e / chunks_per_row, c = e - r * chunks_per_row;
          T* dst = stage + r * ld + c * 8;
          if (r < n_valid)
            __pipeline_memcpy_async(dst, doc + (t0 + r) * dim + c * 8, 16);
          else
            *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
        }
      }
      __pipeline_commit();
    };

    // Accumulator fragments follow mma.m16n8k16's layout on sm_80+: element i of lane l is
    // row l / 4 + 8 * ((i / 2) % 2), column (l % 4) * 2 + i % 2 + 8 * (i / 4). Each lane keeps
    // the running max of its two rows over its columns; the 4 lanes of a row combine at the
    // end. (tests/ops/test_cuda_parity.py checks every path against the reference.)
    float best_lo = -INFINITY, best_hi = -INFINITY;  // rows lane / 4 and lane / 4 + 8
    const bool warp_active = warp * 16 < rows;       // warp-uniform: WMMA needs the whole warp
    for (int s = 0; s < kStages - 1; ++s) issue_tile(s);
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      issue_tile(tile + kStages - 1);
      __pipeline_wait_prior(kStages - 1);  // this thread's copies of `tile` have landed
      __syncthreads();                     // everyone's copies (and the query tile) are visible
      const int n_valid =
          static_cast<int>(min(static_cast<int64_t>(kDocTile), end - (begin + tile * kDocTile)));
      const T* stage = doc_tiles + (tile % kStages) * kDocTile * ld;
      if (warp_active) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kDocTile / 16];
#pragma unroll
        for (int c = 0; c < kDocTile / 16; ++c) wmma::fill_fragment(acc[c], 0.f);
        for (int k0 = 0; k0 < dim; k0 += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
          wmma::load_matrix_sync(a, q_tile + warp * 16 * ld + k0, ld);
#pragma unroll
          for (int c = 0; c < kDocTile / 16; ++c) {
            // B(k, n) = token n's coordinate k: the row-major token tile read column-major.
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::load_matrix_sync(b, stage + c * 16 * ld + k0, ld);
            wmma::mma_sync(acc[c], a, b, acc[c]);
          }
        }
#pragma unroll
        for (int c = 0; c < kDocTile / 16; ++c) {
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int col = c * 16 + (lane % 4) * 2 + (i % 2) + 8 * (i / 4);
            if (col < n_valid) {
              const float v = acc[c].x[i];
              non_finite |= !isfinite(v);
              if ((i / 2) % 2) best_hi = fmaxf(best_hi, v); else best_lo = fmaxf(best_lo, v);
            }
          }
        }
      }
      __syncthreads();  // this stage is read; a later issue_tile may overwrite it
    }
    __pipeline_wait_prior(0);  // drain the empty trailing groups before the next document
    best_lo = fmaxf(best_lo, __shfl_xor_sync(0xffffffffu, best_lo, 1));
    best_lo = fmaxf(best_lo, __shfl_xor_sync(0xffffffffu, best_lo, 2));
    best_hi = fmaxf(best_hi, __shfl_xor_sync(0xffffffffu, best_hi, 1));
    best_hi = fmaxf(best_hi, __shfl_xor_sync(0xffffffffu, best_hi, 2));
    if (lane % 4 == 0) {
      row_max[warp * 16 + lane / 4] = best_lo;
      row_max[warp * 16 + lane / 4 + 8] = best_hi;
    }
    __syncthreads();
    write_scores(p, g, group, out, end == begin, row_max);
    __syncthreads();  // row_max and q_tile are free for the next work item
  }
  report_non_finite(p, non_finite);
}

size_t half_smem_bytes(int64_t dim) {
  const size_t ld = static_cast<size_t>(dim) + kHalfPad;
  return 2 * ld * (kBlockRows + kStages * kDocTile) + sizeof(float) * kBlockRows;
}

// ---------------------------------------------------------------- fp32: register-tiled FMA
// Thread t computes a 4 x 4 tile: rows (t / 8) * 4 + a, columns (t % 8) + 8 * b, so warp w
// covers rows 16w .. 16w + 15 and can skip when they are all padding. Rows are padded by
// one float (ld = dim + 1) so the 4 row reads and 8 column reads of a warp hit distinct
// banks. Shared memory: q_tile [kBlockRows][ld] | doc_tile [kDocTile][ld] | row_max.
__global__ void __launch_bounds__(kThreads)
maxsim_fp32_kernel(MaxSimParams p, FastGrid g) {
  const int dim = static_cast<int>(p.dim);
  const int ld = dim + 1;
  const int warp = threadIdx.x / 32;
  const int row_group = threadIdx.x / 8, col_lane = threadIdx.x % 8;
  float* q_tile = reinterpret_cast<float*>(dynamic_smem());
  float* doc_tile = q_tile + kBlockRows * ld;
  float* row_max = doc_tile + kDocTile * ld;
  const float* doc = static_cast<const float*>(p.doc_emb);
  const int chunks_per_row = dim / 4;  // float4 chunks
  if (bad_input(p)) return;  // block-uniform

  bool non_finite = false;
  int64_t loaded_group = -1;
  int rows = 0;
  for (int64_t work = blockIdx.x; work < g.n_work; work += gridDim.x) {
    const int64_t out = work / g.n_groups;
    const int64_t group = work - out * g.n_groups;
    if (group != loaded_group) {
      rows = load_query_group<float>(p, g, group, q_tile, ld);
      loaded_group = group;
    }
    const int64_t d = p.doc_subset ? p.doc_subset[out] : out;
    const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
    const bool warp_active = warp * 16 < rows;

    float best[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) best[a] = -INFINITY;
    for (int64_t t0 = begin; t0 < end; t0 += kDocTile) {
      const int n_valid = static_cast<int>(min(static_cast<int64_t>(kDocTile), end - t0));
      for (int e = threadIdx.x; e < kDocTile * chunks_per_row; e += kThreads) {
        const int r = e / chunks_per_row, c = e - r * chunks_per_row;
        const float4 v = r < n_valid ? *reinterpret_cast<const float4*>(doc + (t0 + r) * dim + c * 4)
                                     : make_float4(0.f, 0.f, 0.f, 0.f);
        float* dst = doc_tile + r * ld + c * 4;
        dst[0] = v.x;
        dst[1] = v.y;
        dst[2] = v.z;
        dst[3] = v.w;
      }
      __syncthreads();  // tile (and, the first time, the query rows) visible
      if (warp_active) {
        float acc[4][4];
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
          for (int b = 0; b < 4; ++b) acc[a][b] = 0.f;
        const float* q_rows = q_tile + (row_group * 4) * ld;
        const float* d_rows = doc_tile + col_lane * ld;
        for (int k = 0; k < dim; ++k) {
          float qv[4], dv[4];
#pragma unroll
          for (int a = 0; a < 4; ++a) qv[a] = q_rows[a * ld + k];
#pragma unroll
          for (int b = 0; b < 4; ++b) dv[b] = d_rows[(8 * b) * ld + k];
#pragma unroll
          for (int a = 0; a < 4; ++a)
#pragma unroll
            for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(qv[a], dv[b], acc[a][b]);
        }
#pragma unroll
        for (int b = 0; b < 4; ++b)
          if (col_lane + 8 * b < n_valid)
#pragma unroll
            for (int a = 0; a < 4; ++a) {
              non_finite |= !isfinite(acc[a][b]);
              best[a] = fmaxf(best[a], acc[a][b]);
            }
      }
      __syncthreads();  // doc_tile is read; the next tile may overwrite it
    }
    // Combine the 8 column lanes of each row group (lanes differing in their low 3 bits).
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      best[a] = fmaxf(best[a], __shfl_xor_sync(0xffffffffu, best[a], 1));
      best[a] = fmaxf(best[a], __shfl_xor_sync(0xffffffffu, best[a], 2));
      best[a] = fmaxf(best[a], __shfl_xor_sync(0xffffffffu, best[a], 4));
    }
    if (col_lane == 0)
#pragma unroll
      for (int a = 0; a < 4; ++a) row_max[row_group * 4 + a] = best[a];
    __syncthreads();
    write_scores(p, g, group, out, end == begin, row_max);
    __syncthreads();
  }
  report_non_finite(p, non_finite);
}

size_t fp32_smem_bytes(int64_t dim) {
  const size_t ld = static_cast<size_t>(dim) + 1;
  return sizeof(float) * (ld * (kBlockRows + kDocTile) + kBlockRows);
}

// ---------------------------------------------------------------- fallback: any shape
// One block per (document, query) work item: the block stages `tile_tokens` document
// tokens in shared memory as fp32; thread i owns query tokens i, i + 128, ... (at most
// kMaxOwned each, so query_len <= 512) and keeps their running max; a block reduction sums.
constexpr int kFallbackThreads = 128;
constexpr int kMaxOwned = 4;
constexpr int kMaxFallbackQueryLen = kFallbackThreads * kMaxOwned;
constexpr size_t kFallbackSmemBudget = 32 * 1024;

__device__ __forceinline__ float load_elem(const void* base, int64_t i, DType dtype) {
  switch (dtype) {
    case DType::F16: return __half2float(static_cast<const __half*>(base)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

// The query value the fast paths multiply: rounded to the documents' 16-bit dtype, so every
// path gives the same numbers up to summation order.
__device__ __forceinline__ float query_as_doc_dtype(float x, DType dtype) {
  switch (dtype) {
    case DType::F16: return __half2float(__float2half_rn(x));
    case DType::BF16: return __bfloat162float(__float2bfloat16_rn(x));
    default: return x;
  }
}

__global__ void __launch_bounds__(kFallbackThreads)
maxsim_fallback_kernel(MaxSimParams p, int64_t n_out, int tile_tokens) {
  float* tile = reinterpret_cast<float*>(dynamic_smem());  // [tile_tokens, dim]
  __shared__ float partial[kFallbackThreads];
  const int64_t dim = p.dim, lq = p.query_len;
  const int64_t n_work = n_out * p.n_queries;
  if (bad_input(p)) return;  // block-uniform
  bool non_finite = false;
  for (int64_t work = blockIdx.x; work < n_work; work += gridDim.x) {
    const int64_t out = work / p.n_queries;
    const int64_t q = work - out * p.n_queries;
    const int64_t d = p.doc_subset ? p.doc_subset[out] : out;
    const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
    const float* query = p.queries + q * lq * dim;

    float best[kMaxOwned];
#pragma unroll
    for (int r = 0; r < kMaxOwned; ++r) best[r] = -INFINITY;
    for (int64_t t0 = begin; t0 < end; t0 += tile_tokens) {
      const int64_t n_tile = min(static_cast<int64_t>(tile_tokens), end - t0);
      for (int64_t e = threadIdx.x; e < n_tile * dim; e += kFallbackThreads)
        tile[e] = load_elem(p.doc_emb, t0 * dim + e, p.doc_dtype);
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kMaxOwned; ++r) {
        const int64_t i = threadIdx.x + r * kFallbackThreads;
        if (i < lq) {
          const float* qi = query + i * dim;
          for (int64_t t = 0; t < n_tile; ++t) {
            float dot = 0.f;
            for (int64_t k = 0; k < dim; ++k)
              dot = fmaf(query_as_doc_dtype(qi[k], p.doc_dtype), tile[t * dim + k], dot);
            non_finite |= !isfinite(dot);
            best[r] = fmaxf(best[r], dot);
          }
        }
      }
      __syncthreads();
    }
    float sum = 0.f;
#pragma unroll
    for (int r = 0; r < kMaxOwned; ++r)
      if (threadIdx.x + r * kFallbackThreads < lq) sum += best[r];
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int s = kFallbackThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) p.scores[q * n_out + out] = (end == begin) ? -INFINITY : partial[0];
    __syncthreads();  // partial[0] read before the next work item overwrites it
  }
  report_non_finite(p, non_finite);
}

template <typename Kernel>
cudaError_t launch_fast(Kernel kernel, size_t smem, const MaxSimParams& p, int64_t n_out,
                        Stream stream, bool* launched) {
  *launched = false;
  const void* fn = reinterpret_cast<const void*>(kernel);
  if (allow_dynamic_smem(fn, smem) != cudaSuccess) {
    (void)cudaGetLastError();  // clear a failed cudaFuncSetAttribute; the fallback runs instead
    return cudaSuccess;
  }
  FastGrid g;
  g.n_out = n_out;
  g.queries_per_block = kBlockRows / p.query_len;
  g.n_groups = (p.n_queries + g.queries_per_block - 1) / g.queries_per_block;
  g.n_work = n_out * g.n_groups;
  unsigned blocks = 0;
  // 4 waves: documents of different lengths even out.
  CE_CUDA_RETURN_IF_ERROR(grid_for(fn, kThreads, smem, g.n_work, g.n_groups, 4, &blocks));
  kernel<<<blocks, kThreads, smem, stream>>>(p, g);
  *launched = true;
  return cudaGetLastError();
}


constexpr int kCheckThreads = 256;

__global__ void __launch_bounds__(kCheckThreads)
maxsim_check_kernel(MaxSimParams p, int64_t n_rows) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  bool bad = false;
  if (first == 0) bad = p.doc_offsets[0] != 0 || p.doc_offsets[p.n_docs] != n_rows;
  for (int64_t i = first; i < p.n_docs; i += stride) bad |= p.doc_offsets[i + 1] < p.doc_offsets[i];
  if (p.doc_subset)
    for (int64_t i = first; i < p.n_subset; i += stride)
      bad |= p.doc_subset[i] < 0 || p.doc_subset[i] >= p.n_docs;
  const int64_t n_values = p.n_queries * p.query_len * p.dim;
  for (int64_t i = first; i < n_values; i += stride) bad |= !isfinite(p.queries[i]);
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x % 32) == 0) atomicOr(p.status, kMaxSimBadInput);
}
}  // namespace

int maxsim_check_cuda(const MaxSimParams& p, int64_t n_rows, Stream stream) {
  if (p.status == nullptr || p.doc_offsets == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  CE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p.status, 0, sizeof(int), stream));
  const int64_t n_values = p.n_queries * p.query_len * p.dim;
  int64_t work = p.n_docs > n_values ? p.n_docs : n_values;
  if (p.doc_subset && p.n_subset > work) work = p.n_subset;
  int64_t blocks = (work + kCheckThreads - 1) / kCheckThreads;
  if (blocks < 1) blocks = 1;
  if (blocks > 1024) blocks = 1024;  // grid-stride beyond: one small launch
  maxsim_check_kernel<<<static_cast<unsigned>(blocks), kCheckThreads, 0, stream>>>(p, n_rows);
  CE_CUDA_RETURN_LAUNCH_ERROR();
}

int maxsim_cuda(const MaxSimParams& p, Stream stream) {
  const int64_t n_out = p.doc_subset ? p.n_subset : p.n_docs;
  if (n_out == 0 || p.n_queries == 0) return 0;
  if (p.query_len < 1 || p.dim < 1) return static_cast<int>(cudaErrorInvalidValue);

  const bool fast = p.dim % 16 == 0 && p.dim <= kMaxFastDim && p.query_len <= kMaxFastQueryLen &&
                    reinterpret_cast<uintptr_t>(p.doc_emb) % 16 == 0;
  if (fast) {
    bool launched = false;
    cudaError_t err = cudaSuccess;
    switch (p.doc_dtype) {
      case DType::F16:
        err = launch_fast(maxsim_wmma_kernel<__half>, half_smem_bytes(p.dim), p, n_out, stream, &launched);
        break;
      case DType::BF16:
        err = launch_fast(maxsim_wmma_kernel<__nv_bfloat16>, half_smem_bytes(p.dim), p, n_out, stream,
                          &launched);
        break;
      case DType::F32:
        err = launch_fast(maxsim_fp32_kernel, fp32_smem_bytes(p.dim), p, n_out, stream, &launched);
        break;
    }
    if (err != cudaSuccess) return static_cast<int>(err);
    if (launched) return 0;
  }

  if (p.query_len > kMaxFallbackQueryLen) return static_cast<int>(cudaErrorInvalidValue);
  int64_t tile_tokens = static_cast<int64_t>(kFallbackSmemBudget / (sizeof(float) * p.dim));
  if (tile_tokens > 16) tile_tokens = 16;
  if (tile_tokens < 1) tile_tokens = 1;
  const size_t smem = sizeof(float) * tile_tokens * p.dim;
  const void* fn = reinterpret_cast<const void*>(maxsim_fallback_kernel);
  CE_CUDA_RETURN_IF_ERROR(allow_dynamic_smem(fn, smem));
  unsigned blocks = 0;
  CE_CUDA_RETURN_IF_ERROR(grid_for(fn, kFallbackThreads, smem, n_out * p.n_queries, 1, 4, &blocks));
  maxsim_fallback_kernel<<<blocks, kFallbackThreads, smem, stream>>>(p, n_out, static_cast<int>(tile_tokens));
  CE_CUDA_RETURN_LAUNCH_ERROR();
}

}  // namespace ce
