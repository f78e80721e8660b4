// The centroid-score GEMM body (contract: common/plaid.h), compiled once per ISA
// (centroid_scores.cpp: baseline; *_avx2.cpp, *_avx512.cpp): generic vector code over
// query tokens that the compiler maps to the ISA's registers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/plaid.h"
#include "cpu/parallel.h"

// The vector type below never crosses a non-inlined call boundary between builds.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ce {
namespace {

typedef float cs_v16f __attribute__((vector_size(64)));

constexpr int64_t kScoreRows = 8;        // centroids per register tile
constexpr int64_t kScoreLanes = 32;      // query tokens per register tile (two 16-float vectors)
constexpr int64_t kCentroidsPerTask = 128;  // 64 KB of centroids at dim 128: ~0.5 MFLOP per query

// Rows [c_begin, c_end) of one query's scores; qt is the query transposed, (dim, padded_len)
// with zero columns past query_len.
inline void score_rows(const CentroidScoresParams& p, const float* qt, int64_t padded_len,
                       int64_t c_begin, int64_t c_end, float* out) {
  const int64_t dim = p.dim, lq = p.query_len;
  for (int64_t i0 = 0; i0 < padded_len; i0 += kScoreLanes) {
    const int64_t width = std::min(kScoreLanes, lq - i0);
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kScoreRows) {
      const int64_t rows = std::min(kScoreRows, c_end - c0);
      cs_v16f acc[kScoreRows][2] = {};
      const float* crow[kScoreRows];
      for (int64_t r = 0; r < kScoreRows; ++r) crow[r] = p.centroids + (c0 + std::min(r, rows - 1)) * dim;
#pragma GCC unroll 4
      for (int64_t d = 0; d < dim; ++d) {
        cs_v16f q0, q1;
        std::memcpy(&q0, qt + d * padded_len + i0, sizeof q0);
        std::memcpy(&q1, qt + d * padded_len + i0 + 16, sizeof q1);
        for (int64_t r = 0; r < kScoreRows; ++r) {
          const float c = crow[r][d];
          acc[r][0] += c * q0;
          acc[r][1] += c * q1;
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        float lanes[kScoreLanes];
        std::memcpy(lanes, &acc[r][0], sizeof acc[r][0]);
        std::memcpy(lanes + 16, &acc[r][1], sizeof acc[r][1]);
        std::memcpy(out + (c0 + r) * lq + i0, lanes, sizeof(float) * width);
      }
    }
  }
}

void centroid_scores_impl(const CentroidScoresParams& p, int threads) {
  const int64_t nq = p.n_queries, k_cells = p.n_centroids, lq = p.query_len, dim = p.dim;
  if (nq == 0 || k_cells == 0 || lq == 0) return;
  const int64_t padded_len = (lq + kScoreLanes - 1) / kScoreLanes * kScoreLanes;
  std::vector<float> transposed(static_cast<size_t>(nq * dim * padded_len), 0.f);
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t i = 0; i < lq; ++i)
      for (int64_t d = 0; d < dim; ++d)
        transposed[(q * dim + d) * padded_len + i] = p.queries[(q * lq + i) * dim + d];
  // A task is a block of centroids against every query: the block stays in cache while the
  // queries stream past (one query per task read all K centroids from memory once per
  // query: a batch of 100 at dim 384 took 1.25x torch's GEMM).
  const int64_t blocks = (k_cells + kCentroidsPerTask - 1) / kCentroidsPerTask;
  auto task = [&](int64_t block, int) {
    const int64_t c_begin = block * kCentroidsPerTask, c_end = std::min(k_cells, c_begin + kCentroidsPerTask);
    for (int64_t q = 0; q < nq; ++q)
      score_rows(p, transposed.data() + q * dim * padded_len, padded_len, c_begin, c_end, p.scores + q * k_cells * lq);
  };
  parallel_for(blocks, threads, task);
}

}  // namespace
}  // namespace ce
