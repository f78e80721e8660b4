// Late interaction on compressed tokens without decompressing them (PLAID's stage 4 /
// WARP's idea), shared by csrc/cpu/lut_maxsim.cpp and csrc/cuda/lut_maxsim.cu.
//
// A stored token is (code c, residual bytes, inv_norm); its decoded vector is
// x = (C[c] + r~) * inv_norm with r~[p*k + j] = codebook[p, byte_p, j], k = 8 / nbits (the
// byte codebook of common/codec.h, every layout).
// So for query token i
//   <q_i, x> = (S[c, i] + sum_p LUT_i[p][byte_p]) * inv_norm,
//   S[c, i] = <C[c], q_i>                      (scores, from ops.centroid_scores),
//   LUT_i[p][b] = sum_j q_i[p*k + j] * codebook[p, b, j]   (j in order).
// score[q, m] = sum_i max_t <q_i, x_t> over the tokens t of document candidates[m], the max
// starting at -inf: an empty document scores -inf.
//
// Two layouts of the (query, candidate) pairs:
//   cand_offsets == nullptr: every query scores every candidate, out[q * n_candidates + m];
//   cand_offsets != nullptr: query q scores its own candidates
//     candidates[cand_offsets[q] .. cand_offsets[q + 1]) into out[the same positions], so a
//     batch whose queries have different survivors (PLAID's stage 4) is one call. Positions
//     are absolute: cand_offsets[0] need not be 0 (a group of queries of a larger batch
//     passes its slice of the offsets with the batch's candidates and out).
//
// Using the stored fp16 inv_norm makes this equal, to float rounding, to MaxSim over
// ops.decompress_residuals(..., inv_norms=inv_norms); decompressing with the recomputed
// fp32 norm differs by the fp16 rounding of inv_norm (relative 2^-11 at most).
#pragma once
#include <cstdint>

namespace ce {

struct LutMaxSimParams {
  const float* queries;         // [n_queries, query_len, dim] fp32, contiguous
  const float* scores;          // [n_queries, n_centroids, query_len] fp32: S = C @ q.T
  const int32_t* codes;         // [n_tokens] in [0, n_centroids)
  const uint8_t* residuals;     // [n_tokens, dim * nbits / 8]
  const uint16_t* inv_norms;    // [n_tokens] fp16 bits
  const int64_t* doc_offsets;   // [n_docs + 1], non-decreasing, doc_offsets[0] == 0
  const int64_t* candidates;    // document ids in [0, n_docs): [n_candidates], or
                                // [cand_offsets[n_queries]] with cand_offsets
  const int64_t* cand_offsets;  // nullptr, or [n_queries + 1] non-decreasing (layouts above)
  const float* codebook;        // [dim * nbits / 8, 256, 8 / nbits] byte codebook (common/codec.h)
  float* lut;                   // [n_queries, lut_workspace_floats_<backend>(dim, nbits, query_len)] fp32 workspace
  float* out;                   // [n_queries, n_candidates], or [cand_offsets[n_queries]]
  int64_t n_queries;
  int64_t query_len;
  int64_t dim;
  int64_t n_centroids;
  int64_t n_tokens;
  int64_t n_docs;
  int64_t n_candidates;         // candidates per query without cand_offsets; with them, all
                                // pairs: cand_offsets[n_queries] - cand_offsets[0] (host-known,
                                // it sizes the CUDA grid)
  int32_t nbits;                // 1, 2 or 4; dim * nbits % 8 == 0
};

// Floats of lookup-table workspace per query that lut_maxsim_cpu needs (p.lut holds
// n_queries times this). The table layout is each backend's own.
int64_t lut_workspace_floats_cpu(int64_t dim, int nbits, int64_t query_len);

// Builds the lookup tables into p.lut, then scores every (query, candidate). CPU: one
// OpenMP region (tables, one barrier, then all pairs of all queries under a dynamic
// schedule); SIMD variant chosen at run time (common/isa.h); per-thread scratch is
// allocated before the region.
void lut_maxsim_cpu(const LutMaxSimParams& p);

}  // namespace ce

#include "common/cuda_stream.h"
namespace ce {
// Same contract on device pointers; queued on `stream`, no host synchronisation.
// Returns a cudaError_t value (0 on success).
int lut_maxsim_cuda(const LutMaxSimParams& p, Stream stream);
int64_t lut_workspace_floats_cuda(int64_t dim, int nbits, int64_t query_len);
}  // namespace ce
