// Two-level nearest-centroid search (probed argmax), compiled once per ISA (codec.cpp:
// baseline, codec_avx2.cpp, codec_avx512.cpp) with that file's flags, like
// codec_argmax_impl.h: internal linkage, GCC vectors, no std:: templates. Include only from
// those files, after codec_argmax_impl.h (it defines the vector types).
//
// Why this shape: a token's probed cells differ from its neighbours', so a per-token gather
// of centroids would be memory-bound. Instead a block of tokens is inverted into per-cell
// token lists (counting sort) and each probed cell is scored against all of its tokens at
// once: the cell's centroids (a [dim][width] block, ~64 KB) stay in L2 while 4 tokens x
// 32 centroids are accumulated in registers. Each token keeps a 16-lane running best, so
// no (tokens, K) score matrix exists anywhere.
#pragma once
#include <cstdint>

#include "common/codec.h"

namespace ce {
namespace {

constexpr int kProbeTokens = 4;  // tokens per register tile

// Top `nprobe` cells of one row of coarse scores, best first; ties keep the lower cell
// (strict > when shifting), as a stable descending sort would. nprobe <= n_cells.
inline void probe_select(const float* scores, int64_t n_cells, int nprobe, int32_t* cells, float* best) {
  int filled = 0;
  for (int64_t c = 0; c < n_cells; ++c) {
    const float s = scores[c];
    if (filled == nprobe && !(s > best[nprobe - 1])) continue;
    int pos = filled < nprobe ? filled++ : nprobe - 1;
    while (pos > 0 && s > best[pos - 1]) {
      best[pos] = best[pos - 1];
      cells[pos] = cells[pos - 1];
      --pos;
    }
    best[pos] = s;
    cells[pos] = static_cast<int32_t>(c);
  }
}

// Update a token's 16-lane running best with 16 scores of centroids `ids` (-1: padding).
// Better = higher score, or equal score and lower id (the exact path's first maximum).
inline void probe_update(float* best_s, int32_t* best_i, argmax_f16 s, argmax_i16 ids) {
  argmax_f16 bs;
  argmax_i16 bi;
  __builtin_memcpy(&bs, best_s, sizeof bs);
  __builtin_memcpy(&bi, best_i, sizeof bi);
  const argmax_i16 better = (ids >= 0) & ((s > bs) | ((s == bs) & (ids < bi)));
  bs = better ? s : bs;
  bi = better ? ids : bi;
  __builtin_memcpy(best_s, &bs, sizeof bs);
  __builtin_memcpy(best_i, &bi, sizeof bi);
}

// Scores of tokens rows[0..n) (already tiled to a multiple of kProbeTokens by repeating
// the last) against one cell block [dim][width] (width % 16 == 0), folded into the bests.
inline void probe_cell(const ProbedArgmaxParams& p, const int32_t* rows, int64_t n_rows, int64_t block_start,
                       const float* cell, const int32_t* ids, int64_t width, float* best_s, int32_t* best_i) {
  const int64_t dim = p.dim;
  for (int64_t r = 0; r < n_rows; r += kProbeTokens) {
    const float* x[kProbeTokens];
    int64_t local[kProbeTokens];
    for (int t = 0; t < kProbeTokens; ++t) {
      local[t] = rows[r + t];
      x[t] = p.emb + (block_start + local[t]) * dim;
    }
    int64_t c = 0;
    for (; c + 32 <= width; c += 32) {
      argmax_f16 acc[kProbeTokens][2] = {};
      const float* col = cell + c;
      for (int64_t d = 0; d < dim; ++d) {
        argmax_f16 w0, w1;
        __builtin_memcpy(&w0, col + d * width, sizeof w0);
        __builtin_memcpy(&w1, col + d * width + 16, sizeof w1);
        for (int t = 0; t < kProbeTokens; ++t) {
          const float xv = x[t][d];
          acc[t][0] += xv * w0;
          acc[t][1] += xv * w1;
        }
      }
      argmax_i16 id0, id1;
      __builtin_memcpy(&id0, ids + c, sizeof id0);
      __builtin_memcpy(&id1, ids + c + 16, sizeof id1);
      for (int t = 0; t < kProbeTokens; ++t) {
        probe_update(best_s + local[t] * 16, best_i + local[t] * 16, acc[t][0], id0);
        probe_update(best_s + local[t] * 16, best_i + local[t] * 16, acc[t][1], id1);
      }
    }
    for (; c < width; c += 16) {
      argmax_f16 acc[kProbeTokens] = {};
      const float* col = cell + c;
      for (int64_t d = 0; d < dim; ++d) {
        argmax_f16 w0;
        __builtin_memcpy(&w0, col + d * width, sizeof w0);
        for (int t = 0; t < kProbeTokens; ++t) acc[t] += x[t][d] * w0;
      }
      argmax_i16 id0;
      __builtin_memcpy(&id0, ids + c, sizeof id0);
      for (int t = 0; t < kProbeTokens; ++t) probe_update(best_s + local[t] * 16, best_i + local[t] * 16, acc[t], id0);
    }
  }
}

// Lane reduction of a token's 16 running bests: the best score, ties -> lowest id.
inline int32_t probe_reduce(const float* bs, const int32_t* bi) {
  float best = bs[0];
  int32_t id = bi[0];
  for (int l = 1; l < 16; ++l)
    if (bs[l] > best || (bs[l] == best && bi[l] < id)) {
      best = bs[l];
      id = bi[l];
    }
  return id;
}

inline void probe_cell_fp32(const ProbedArgmaxParams& p, const int32_t* rows, int64_t n_rows, int64_t block_start,
                            int64_t col0, int64_t width, float* best_s, int32_t* best_i) {
  probe_cell(p, rows, n_rows, block_start, p.cell_data + col0 * p.dim, p.cell_ids + col0, width, best_s, best_i);
}

inline void probe_finish_fp32(const ProbedArgmaxParams& p, int64_t start, int64_t n, const float* best_s,
                              const int32_t* best_i) {
  for (int64_t t = 0; t < n; ++t) p.out[start + t] = probe_reduce(best_s + t * 16, best_i + t * 16);
}

// One block of tokens [start, start + n): select probes, invert them into per-cell lists,
// score cell by cell (ScoreCell), reduce the 16 lanes of every token (Finish). Scratch is
// the caller's.
template <class ScoreCell, class Finish>
inline void probe_block(const ProbedArgmaxParams& p, int64_t start, int64_t n, ProbeScratch s,
                        ScoreCell score_cell, Finish finish) {
  const int nprobe = p.nprobe;
  const int64_t n_cells = p.n_cells;
  for (int64_t c = 0; c <= n_cells; ++c) s.cell_count[c] = 0;
  for (int64_t t = 0; t < n; ++t) {
    int32_t* cells = s.probes + t * nprobe;
    probe_select(p.coarse_scores + (start + t) * n_cells, n_cells, nprobe, cells, s.probe_scores);
    for (int j = 0; j < nprobe; ++j) ++s.cell_count[cells[j] + 1];
  }
  // Lists padded to a multiple of kProbeTokens: offsets of the padded lists.
  for (int64_t c = 0; c < n_cells; ++c) {
    const int32_t len = s.cell_count[c + 1];
    s.cell_count[c + 1] = s.cell_count[c] + (len + kProbeTokens - 1) / kProbeTokens * kProbeTokens;
    s.cell_fill[c] = s.cell_count[c];
  }
  for (int64_t t = 0; t < n; ++t)
    for (int j = 0; j < nprobe; ++j) {
      const int32_t c = s.probes[t * nprobe + j];
      s.lists[s.cell_fill[c]++] = static_cast<int32_t>(t);
    }
  for (int64_t t = 0; t < n * 16; ++t) {
    s.best_s[t] = -__builtin_inff();
    s.best_i[t] = INT32_MAX;
  }
  for (int64_t c = 0; c < n_cells; ++c) {
    const int64_t begin = s.cell_count[c], filled = s.cell_fill[c], end = s.cell_count[c + 1];
    if (filled == begin) continue;
    for (int64_t i = filled; i < end; ++i) s.lists[i] = s.lists[filled - 1];  // tile padding
    const int64_t col0 = p.cell_offsets[c], width = p.cell_offsets[c + 1] - col0;
    score_cell(p, s.lists + begin, end - begin, start, col0, width, s.best_s, s.best_i);
  }
  finish(p, start, n, s.best_s, s.best_i);
}

template <class ScoreCell, class Finish>
inline void probed_argmax_generic(const ProbedArgmaxParams& p, const ProbeScratch* scratch, int n_scratch,
                                  ScoreCell score_cell, Finish finish) {
  const int64_t n_blocks = (p.rows + kProbeBlock - 1) / kProbeBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_scratch)
  for (int64_t b = 0; b < n_blocks; ++b) {
    int thread = 0;
#ifdef CE_HAVE_OPENMP
    thread = omp_get_thread_num();
#endif
    const int64_t start = b * kProbeBlock;
    const int64_t n = p.rows - start < kProbeBlock ? p.rows - start : kProbeBlock;
    probe_block(p, start, n, scratch[thread], score_cell, finish);
  }
}

inline void probed_argmax_impl(const ProbedArgmaxParams& p, const ProbeScratch* scratch, int n_scratch) {
  probed_argmax_generic(p, scratch, n_scratch, probe_cell_fp32, probe_finish_fp32);
}

}  // namespace
}  // namespace ce
