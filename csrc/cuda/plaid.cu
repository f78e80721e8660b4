// PLAID candidate generation and centroid interaction on CUDA (contract: common/plaid.h).
// Results equal the CPU kernels' exactly: the same picks (ties by lower centroid id), the
// same bitmaps and counts, the same approximate scores (max is exact; the sum over query
// tokens runs in token order as on the CPU) and the same (score desc, doc id asc) order.
//
// candidates_mark: one block per query. Top-nprobe cells per query token by nprobe rounds
//   of a block-wide arg-max over "strictly worse than the previous pick" (warps stride over
//   centroid rows, lanes over query tokens: coalesced row reads). Picks sit in shared memory,
//   so query_len * min(nprobe, K) <= kMaxPicks (nprobe >= K probes every cell, no picks);
//   duplicates across tokens are dropped when there are at most kMaxDedupPicks picks. Then
//   warps mark their cells' inverted lists with atomicOr; a doc counts once, for the thread
//   whose atomicOr set its bit. Cost: nprobe scans of the query's K x Lq scores on one SM,
//   so batches of queries fill the device and a single query does not.
// candidates_collect: one block per query; a block-wide exclusive scan of per-word
//   popcounts places each word's ids.
// centroid_interaction: keep mask (pruning) -> one warp per candidate -> one block per
//   query selects the best min(ndocs, m_q) by 64-bit keys (order-preserving score bits,
//   then inverted doc id): all m_q keys bitonic-sorted in shared memory when
//   m_q <= kSortCap, else a radix select of the ndocs-th key first; so ndocs <= kSortCap.
#include <cub/block/block_scan.cuh>

#include <climits>
#include <cstdint>

#include "common/plaid.h"
#include "cuda/check.cuh"

namespace ce {
namespace {

// ---------------------------------------------------------------- candidates_mark
constexpr int kMarkThreads = 512;
constexpr int kMarkWarps = kMarkThreads / 32;
constexpr int64_t kMaxPicks = kCudaMaxPicks;  // common/plaid.h
constexpr int64_t kMaxDedupPicks = 1024;  // O(n^2 / threads) duplicate test below this

struct Scored {
  float score;
  int32_t id;
};
// Higher score first, then the lower id: a strict total order on distinct ids.
__device__ __forceinline__ bool better(const Scored& a, const Scored& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

__device__ __forceinline__ unsigned char* plaid_smem() {
  extern __shared__ __align__(16) unsigned char ce_plaid_smem[];
  return ce_plaid_smem;
}

// Marks list `c` of query bitmap `bitmap` with the warp's lanes; returns the bits this lane set.
__device__ __forceinline__ int64_t mark_list(const CandidatesParams& p, int64_t c, uint64_t* bitmap,
                                             int lane) {
  int64_t newly = 0;
  for (int64_t k = p.ivf_offsets[c] + lane; k < p.ivf_offsets[c + 1]; k += 32) {
    const int32_t d = p.ivf[k];
    if (p.subset && !p.subset[d]) continue;
    const unsigned long long bit = 1ull << (d & 63);
    const unsigned long long old =
        atomicOr(reinterpret_cast<unsigned long long*>(bitmap + (d >> 6)), bit);
    newly += (old & bit) == 0;
  }
  return newly;
}

__global__ void __launch_bounds__(kMarkThreads)
candidates_mark_kernel(CandidatesParams p, int64_t nprobe, bool all_cells) {
  const int lq = static_cast<int>(p.query_len);
  const int64_t k_cells = p.n_centroids;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n_picks = all_cells ? 0 : lq * nprobe;
  int32_t* picks = reinterpret_cast<int32_t*>(plaid_smem());                 // [lq][nprobe]
  uint8_t* first = reinterpret_cast<uint8_t*>(picks + n_picks);              // [lq * nprobe]
  __shared__ Scored merge[kMarkWarps][32];
  __shared__ Scored chosen[32];
  __shared__ int64_t warp_counts[kMarkWarps];

  for (int64_t q = blockIdx.x; q < p.n_queries; q += gridDim.x) {
    const float* scores = p.scores + q * k_cells * lq;
    uint64_t* bitmap = p.bitmap + q * p.bitmap_words;
    int64_t newly = 0;
    if (all_cells) {
      for (int64_t c = warp; c < k_cells; c += kMarkWarps) newly += mark_list(p, c, bitmap, lane);
    } else {
      for (int i0 = 0; i0 < lq; i0 += 32) {
        const int i = i0 + lane;
        const bool valid = i < lq;
        Scored prev{0.f, -1};
        for (int64_t r = 0; r < nprobe; ++r) {
          Scored best{-INFINITY, INT_MAX};
          if (valid) {
            for (int64_t c = warp; c < k_cells; c += kMarkWarps) {
              const Scored cand{scores[c * lq + i], static_cast<int32_t>(c)};
              if ((r == 0 || better(prev, cand)) && better(cand, best)) best = cand;
            }
          }
          merge[warp][lane] = best;
          __syncthreads();
          if (warp == 0) {
            for (int w = 1; w < kMarkWarps; ++w)
              if (better(merge[w][lane], best)) best = merge[w][lane];
            chosen[lane] = best;
            if (valid) picks[i * nprobe + r] = best.id;
          }
          __syncthreads();
          prev = chosen[lane];  // overwritten only after the next round's first barrier
        }
      }
      // Drop picks repeated across tokens (marking twice is harmless, only slower).
      for (int64_t j = threadIdx.x; j < n_picks; j += kMarkThreads) {
        bool is_first = true;
        if (n_picks <= kMaxDedupPicks)
          for (int64_t k = 0; k < j && is_first; ++k) is_first = picks[k] != picks[j];
        first[j] = is_first;
      }
      __syncthreads();
      for (int64_t j = warp; j < n_picks; j += kMarkWarps)
        if (first[j]) newly += mark_list(p, picks[j], bitmap, lane);
    }
    for (int offset = 16; offset > 0; offset /= 2) newly += __shfl_xor_sync(0xffffffffu, newly, offset);
    if (lane == 0) warp_counts[warp] = newly;
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t total = 0;
      for (int w = 0; w < kMarkWarps; ++w) total += warp_counts[w];
      p.counts[q] = total;
    }
    __syncthreads();  // picks, first and warp_counts are reused by the next query
  }
}

// ---------------------------------------------------------------- candidates_collect
constexpr int kCollectThreads = 256;

__global__ void __launch_bounds__(kCollectThreads)
candidates_collect_kernel(CandidatesParams p) {
  using Scan = cub::BlockScan<int, kCollectThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  for (int64_t q = blockIdx.x; q < p.n_queries; q += gridDim.x) {
    const uint64_t* bitmap = p.bitmap + q * p.bitmap_words;
    int32_t* out = p.out_ids + p.out_offsets[q];
    int64_t written = 0;
    for (int64_t w0 = 0; w0 < p.bitmap_words; w0 += kCollectThreads) {
      const int64_t w = w0 + threadIdx.x;
      unsigned long long bits = w < p.bitmap_words ? bitmap[w] : 0ull;
      int before = 0, chunk_total = 0;
      Scan(scan_storage).ExclusiveSum(__popcll(bits), before, chunk_total);
      int32_t* dst = out + written + before;
      while (bits) {
        *dst++ = static_cast<int32_t>(w * 64 + (__ffsll(static_cast<long long>(bits)) - 1));
        bits &= bits - 1;
      }
      written += chunk_total;
      __syncthreads();  // scan_storage is reused
    }
  }
}

// ---------------------------------------------------------------- centroid_interaction
constexpr int kKeepThreads = 256;
constexpr int kApproxThreads = 256;
constexpr int kSelectThreads = 512;
constexpr int kSortCap = static_cast<int>(kCudaMaxKeep);  // common/plaid.h

__global__ void __launch_bounds__(kKeepThreads)
keep_kernel(CentroidInteractionParams p) {
  const int64_t lq = p.query_len;
  const int64_t n = p.n_queries * p.n_centroids;
  for (int64_t qc = blockIdx.x * static_cast<int64_t>(kKeepThreads) + threadIdx.x; qc < n;
       qc += static_cast<int64_t>(gridDim.x) * kKeepThreads) {
    const float* row = p.scores + qc * lq;
    float row_max = -INFINITY;
    for (int64_t i = 0; i < lq; ++i) row_max = fmaxf(row_max, row[i]);
    p.keep[qc] = row_max >= p.threshold;
  }
}

// One warp per candidate (all queries' candidates as one pool); lanes are query tokens.
__global__ void __launch_bounds__(kApproxThreads)
approx_kernel(CentroidInteractionParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t lq = p.query_len, k_cells = p.n_centroids;
  const int64_t total = p.cand_offsets[p.n_queries];
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kApproxThreads / 32);
  for (int64_t j = blockIdx.x * static_cast<int64_t>(kApproxThreads / 32) + threadIdx.x / 32; j < total;
       j += warps) {
    // The query owning candidate j: the last q with cand_offsets[q] <= j.
    int64_t lo = 0, hi = p.n_queries;  // cand_offsets[lo] <= j < cand_offsets[hi]
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (p.cand_offsets[mid] <= j) lo = mid;
      else hi = mid;
    }
    const int64_t q = lo;
    const float* scores = p.scores + q * k_cells * lq;
    const uint8_t* keep = p.prune ? p.keep + q * k_cells : nullptr;
    const int64_t d = p.candidates[j];
    const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
    float total_score = 0.f;
    bool any = false;
    for (int64_t i0 = 0; i0 < lq; i0 += 32) {
      const int64_t i = i0 + lane;
      float best = -INFINITY;
      for (int64_t t = begin; t < end; ++t) {
        const int32_t c = p.doc_codes[t];
        if (keep && !keep[c]) continue;
        any = true;
        if (i < lq) best = fmaxf(best, scores[static_cast<int64_t>(c) * lq + i]);
      }
      // In token order, like the CPU (every lane computes the same sum).
      const int n_here = static_cast<int>(lq - i0 < 32 ? lq - i0 : 32);
      for (int l = 0; l < n_here; ++l) total_score += __shfl_sync(0xffffffffu, best, l);
    }
    if (lane == 0) p.approx[j] = any ? total_score : -INFINITY;
  }
}

// Order-preserving key: larger key = better (higher score, then lower doc id). 0 is below
// every real key (doc ids < 2^31 make the low word >= 2^31), so it pads sorts.
__device__ __forceinline__ unsigned long long make_key(float score, int32_t id) {
  if (score == 0.f) score = 0.f;  // -0 and +0 tie, as on the CPU
  const unsigned u = __float_as_uint(score);
  const unsigned ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(ordered) << 32) | (0xffffffffu - static_cast<unsigned>(id));
}
__device__ __forceinline__ float key_score(unsigned long long key) {
  const unsigned ordered = static_cast<unsigned>(key >> 32);
  return __uint_as_float((ordered & 0x80000000u) ? (ordered & 0x7fffffffu) : ~ordered);
}
__device__ __forceinline__ int32_t key_id(unsigned long long key) {
  return static_cast<int32_t>(0xffffffffu - static_cast<unsigned>(key & 0xffffffffu));
}

// Sorts keys[0, n) descending, n a power of two, with the whole block.
__device__ void bitonic_sort_desc(unsigned long long* keys, int n) {
  for (int k = 2; k <= n; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int partner = i ^ j;
        if (partner > i) {
          const unsigned long long a = keys[i], b = keys[partner];
          const bool descending = (i & k) == 0;
          if (descending ? (a < b) : (a > b)) {
            keys[i] = b;
            keys[partner] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

__global__ void __launch_bounds__(kSelectThreads)
select_kernel(CentroidInteractionParams p) {
  unsigned long long* keys = reinterpret_cast<unsigned long long*>(plaid_smem());  // [kSortCap]
  __shared__ unsigned hist[256];
  __shared__ unsigned long long prefix_s;
  __shared__ int64_t remaining_s;
  __shared__ int n_kept;
  for (int64_t q = blockIdx.x; q < p.n_queries; q += gridDim.x) {
    const int64_t begin = p.cand_offsets[q];
    const int64_t m = p.cand_offsets[q + 1] - begin;
    const int64_t keep_n = m < p.ndocs ? m : p.ndocs;
    if (keep_n == 0) continue;  // block-uniform
    const float* approx = p.approx + begin;
    const int32_t* cand = p.candidates + begin;
    int64_t n_keys;  // keys[0, n_keys) hold the keep_n best (or every candidate)
    if (m <= kSortCap) {
      for (int64_t j = threadIdx.x; j < m; j += kSelectThreads) keys[j] = make_key(approx[j], cand[j]);
      n_keys = m;
    } else {
      // Radix select, most significant byte first: the keep_n-th largest key `prefix`, and
      // how many keys equal to it belong to the top keep_n (`remaining`).
      unsigned long long prefix = 0, mask = 0;
      int64_t remaining = keep_n;
      for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += kSelectThreads) hist[b] = 0;
        __syncthreads();
        for (int64_t j = threadIdx.x; j < m; j += kSelectThreads) {
          const unsigned long long key = make_key(approx[j], cand[j]);
          if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xff], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
          int digit = 255;
          for (; digit > 0; --digit) {
            if (remaining <= hist[digit]) break;
            remaining -= hist[digit];
          }
          prefix_s = prefix | (static_cast<unsigned long long>(digit) << shift);
          remaining_s = remaining;
        }
        __syncthreads();
        prefix = prefix_s;
        remaining = remaining_s;
        mask |= 0xffull << shift;
        __syncthreads();  // prefix_s / hist reused by the next pass
      }
      if (threadIdx.x == 0) n_kept = 0;
      __syncthreads();
      for (int64_t j = threadIdx.x; j < m; j += kSelectThreads) {
        const unsigned long long key = make_key(approx[j], cand[j]);
        if (key > prefix) keys[atomicAdd(&n_kept, 1)] = key;  // exactly keep_n - remaining
      }
      __syncthreads();
      for (int64_t j = keep_n - remaining + threadIdx.x; j < keep_n; j += kSelectThreads) keys[j] = prefix;
      n_keys = keep_n;
    }
    int padded = 1;
    while (padded < n_keys) padded <<= 1;
    for (int64_t j = n_keys + threadIdx.x; j < padded; j += kSelectThreads) keys[j] = 0ull;
    __syncthreads();
    bitonic_sort_desc(keys, padded);
    const int64_t out = p.out_offsets[q];
    for (int64_t j = threadIdx.x; j < keep_n; j += kSelectThreads) {
      p.out_scores[out + j] = key_score(keys[j]);
      p.out_ids[out + j] = key_id(keys[j]);
    }
    __syncthreads();  // keys reused by the next query
  }
}

unsigned blocks_for_queries(int64_t n_queries) {
  const int64_t cap = 1 << 20;  // grid-stride loops take the rest
  return static_cast<unsigned>(n_queries < cap ? n_queries : cap);
}

}  // namespace

int candidates_mark_cuda(const CandidatesParams& p, Stream stream) {
  if (p.n_queries == 0) return 0;
  if (p.n_centroids < 1 || p.query_len < 1 || p.nprobe < 1 || p.query_len > INT_MAX)
    return static_cast<int>(cudaErrorInvalidValue);
  const bool all_cells = p.nprobe >= p.n_centroids;
  const int64_t nprobe = all_cells ? p.n_centroids : p.nprobe;
  const int64_t n_picks = all_cells ? 0 : p.query_len * nprobe;
  if (n_picks > kMaxPicks) return static_cast<int>(cudaErrorInvalidValue);
  const size_t smem = static_cast<size_t>(n_picks) * (sizeof(int32_t) + sizeof(uint8_t));
  candidates_mark_kernel<<<blocks_for_queries(p.n_queries), kMarkThreads, smem, stream>>>(p, nprobe, all_cells);
  CE_CUDA_RETURN_LAUNCH_ERROR();
}

int candidates_collect_cuda(const CandidatesParams& p, Stream stream) {
  if (p.n_queries == 0 || p.bitmap_words == 0) return 0;
  candidates_collect_kernel<<<blocks_for_queries(p.n_queries), kCollectThreads, 0, stream>>>(p);
  CE_CUDA_RETURN_LAUNCH_ERROR();
}

int centroid_interaction_cuda(const CentroidInteractionParams& p, Stream stream) {
  if (p.n_queries == 0) return 0;
  if (p.query_len < 1 || p.ndocs < 1) return static_cast<int>(cudaErrorInvalidValue);
  // The selection keeps at most kSortCap keys in shared memory (ops/plaid.py passes
  // min(ndocs, largest m_q), which it knows).
  if (p.ndocs > kSortCap) return static_cast<int>(cudaErrorInvalidValue);
  if (p.prune) {
    unsigned blocks = 0;
    CE_CUDA_RETURN_IF_ERROR(grid_for(reinterpret_cast<const void*>(keep_kernel), kKeepThreads, 0,
                                     p.n_queries * p.n_centroids, 1, 2, &blocks));
    keep_kernel<<<blocks, kKeepThreads, 0, stream>>>(p);
    CE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  // The number of candidates lives on the device (cand_offsets[n_queries]): a resident grid
  // strides over them, so the host never reads it.
  unsigned blocks = 0;
  CE_CUDA_RETURN_IF_ERROR(grid_for(reinterpret_cast<const void*>(approx_kernel), kApproxThreads, 0,
                                   INT_MAX, 1, 1, &blocks));
  approx_kernel<<<blocks, kApproxThreads, 0, stream>>>(p);
  CE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const size_t smem = sizeof(unsigned long long) * kSortCap;
  CE_CUDA_RETURN_IF_ERROR(allow_dynamic_smem(reinterpret_cast<const void*>(select_kernel), smem));
  select_kernel<<<blocks_for_queries(p.n_queries), kSelectThreads, smem, stream>>>(p);
  CE_CUDA_RETURN_LAUNCH_ERROR();
}

}  // namespace ce
