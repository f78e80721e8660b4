// PLAID funnel contracts (DESIGN.md section 5, stages 1-3), shared by csrc/cpu/plaid.cpp
// and csrc/cuda/plaid.cu.
//
// Centroid scores S come in the centroid-major layout [n_queries, n_centroids, query_len]
// (S[q, c, i] = <C[c], Q[q, i]>), so one centroid's scores over the query tokens are
// contiguous: stage 1 scans rows to pick cells, stages 2-3 gather one row per doc token.
//
// Stage 1, candidate generation, runs in two phases because the number of candidates of a
// query is known only after its inverted lists were merged, and outputs are caller-owned:
//   candidates_mark:    for every query token, its top-nprobe centroids by S[q, :, i]
//                       (ties: lower centroid id first); every doc id in those cells'
//                       inverted lists that `subset` allows sets its bit in the query's
//                       bitmap (deduplication by bitmap, no hash set, no sort); writes the
//                       number of distinct allowed docs per query.
//   candidates_collect: writes each query's set bits as ascending doc ids at its offset.
//
// Stages 2-3, centroid interaction: per candidate document d of query q,
//   approx(q, d) = sum_i max_{t in d, keep[q, code_t]} S[q, code_t, i],  max from -inf,
// keep[q, c] = (max_i S[q, c, i] >= threshold) with pruning (PLAID's t_cs), all true
// without. A document with no kept token (empty, or every token pruned) scores -inf.
// Output per query: the best min(ndocs, m_q) candidates, higher score first, ties by lower
// doc id, found by bounded selection (nth_element), never a full sort of all candidates.
//
// All pointers are caller-owned; sizes, ranges and finiteness were validated in Python
// (ops/plaid.py).
#pragma once
#include <cstdint>

namespace ce {

struct CandidatesParams {
  const float* scores;         // [n_queries, n_centroids, query_len] fp32, finite
  const int32_t* ivf;          // [ivf_size] inverted lists back to back, ids in [0, n_docs)
  const int64_t* ivf_offsets;  // [n_centroids + 1] non-decreasing, ivf_offsets[0] == 0
  const uint8_t* subset;       // [n_docs] 1 = allowed (bool bytes), or nullptr: all allowed
  uint64_t* bitmap;            // [n_queries, bitmap_words] zero-filled by the caller; mark
                               // sets the bits, collect reads them
  int64_t* counts;             // [n_queries] mark writes each query's number of candidates
  const int64_t* out_offsets;  // [n_queries + 1] collect: exclusive prefix sum of counts
  int32_t* out_ids;            // [out_offsets[n_queries]] collect writes ascending ids
  int64_t n_queries;
  int64_t n_centroids;
  int64_t query_len;
  int64_t nprobe;              // >= 1; nprobe >= n_centroids probes every cell
  int64_t n_docs;
  int64_t bitmap_words;        // (n_docs + 63) / 64
};

// CPU: the kernels' pool (cpu/parallel.h) over (query, block of centroids) scan tasks, then
// over queries for merging and marking; small calls stay on the calling thread.
void candidates_mark_cpu(const CandidatesParams& p);
void candidates_collect_cpu(const CandidatesParams& p);

struct CentroidInteractionParams {
  const float* scores;             // [n_queries, n_centroids, query_len] fp32, finite
  const int32_t* doc_codes;        // [n_tokens] centroid id of every packed token, in [0, K)
  const int64_t* doc_offsets;      // [n_docs + 1] non-decreasing, doc_offsets[0] == 0
  const int32_t* candidates;       // [cand_offsets[n_queries]] doc ids in [0, n_docs)
  const int64_t* cand_offsets;     // [n_queries + 1] query q's candidates are
                                   // candidates[cand_offsets[q] .. cand_offsets[q + 1])
  uint8_t* keep;                   // [n_queries, n_centroids] workspace (pruning only):
                                   // written with max_i S[q, c, i] >= threshold
  float* approx;                   // [cand_offsets[n_queries]] workspace: every candidate's
                                   // approximate score, in candidate order
  const int64_t* out_offsets;      // [n_queries + 1] out_offsets[q + 1] - out_offsets[q]
                                   // == min(ndocs, m_q)
  float* out_scores;               // [out_offsets[n_queries]] best first
  int32_t* out_ids;                // [out_offsets[n_queries]]
  int64_t n_queries;
  int64_t n_centroids;
  int64_t query_len;
  int64_t n_docs;
  int64_t ndocs;                   // >= 1, the number of documents kept per query
  float threshold;                 // t_cs, used when prune != 0
  int32_t prune;                   // 0: no pruning (PLAID stage 3), 1: prune with threshold
};

// CPU: the kernels' pool (cpu/parallel.h) over small chunks of all queries' candidates at
// once (a lone query uses every thread, a batch needs no per-query barrier), then one
// selection per query; small calls stay on the calling thread.
void centroid_interaction_cpu(const CentroidInteractionParams& p);

// Centroid scores S[q, c, i] = <C[c], Q[q, i]> in the layout above, fp32 (a GEMM; on CUDA
// the search uses cuBLAS through torch). On CPU it runs on the kernels' pool, not on an
// OpenMP team, like the stages that read S: the search then has no OpenMP barrier at all.
struct CentroidScoresParams {
  const float* centroids;  // [n_centroids, dim] fp32
  const float* queries;    // [n_queries, query_len, dim] fp32
  float* scores;           // [n_queries, n_centroids, query_len]
  int64_t n_queries;
  int64_t n_centroids;
  int64_t query_len;
  int64_t dim;
};
void centroid_scores_cpu(const CentroidScoresParams& p);

}  // namespace ce

#include "common/cuda_stream.h"
namespace ce {
// Limits of the CUDA kernels (shared memory), exported by the _cuda module as
// plaid_max_picks / plaid_max_keep so Python reads them from one place:
// query_len * min(nprobe, K) <= kCudaMaxPicks unless nprobe >= K, and ndocs <= kCudaMaxKeep.
constexpr int64_t kCudaMaxPicks = 8192;  // int32 picks + uint8 flags: 40 KB of shared memory
constexpr int64_t kCudaMaxKeep = 8192;   // 64-bit selection keys in shared memory: 64 KB
// Same contracts on device pointers; queued on `stream`, no host synchronisation (the
// caller reads `counts` back to size out_ids between the two candidate phases).
// Return a cudaError_t value (0 on success): no exceptions cross the CUDA boundary.
int candidates_mark_cuda(const CandidatesParams& p, Stream stream);
int candidates_collect_cuda(const CandidatesParams& p, Stream stream);
int centroid_interaction_cuda(const CentroidInteractionParams& p, Stream stream);
}  // namespace ce
