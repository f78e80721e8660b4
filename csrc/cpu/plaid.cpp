// PLAID candidate generation and centroid interaction on CPU (contract: common/plaid.h).
//
// Work is cut into many small tasks under a dynamic schedule: PLAID's pid filter gave each
// pthread a fixed slice of the candidates and got 4.9x from 16 threads (load imbalance).
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "common/plaid.h"

namespace ce {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Centroids per stage-1 scan task: a few tasks per query so one query still uses all threads.
constexpr int64_t kScanChunk = 4096;
// Above this nprobe, a sorted insertion array per token costs more than a selection.
constexpr int64_t kInsertionMaxProbe = 64;

// A (score, id) pair ordered best first: higher score, then lower id. A strict total order
// on distinct ids, so every selection below is deterministic whatever the thread count.
struct Scored {
  float score;
  int32_t id;
};
inline bool better(const Scored& a, const Scored& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// ---------------------------------------------------------------- stage 1: top cells

// Top-`nprobe` centroids per query token over centroids [c_begin, c_end), written best first
// to top[i * nprobe ...]; slots a short range cannot fill keep id = INT32_MAX.
void scan_top_cells(const float* scores, int64_t query_len, int64_t nprobe, int64_t c_begin,
                    int64_t c_end, Scored* top) {
  const Scored empty{kNegInf, std::numeric_limits<int32_t>::max()};
  std::fill(top, top + query_len * nprobe, empty);
  // worst[i]: the score a centroid must beat (strictly: equal scores keep the lower id,
  // which was seen first) to enter token i's list.
  std::vector<float> worst(query_len, kNegInf);
  for (int64_t c = c_begin; c < c_end; ++c) {
    const float* row = scores + c * query_len;
    bool any = false;
    for (int64_t i = 0; i < query_len; ++i) any |= row[i] > worst[i];
    if (!any) continue;
    for (int64_t i = 0; i < query_len; ++i) {
      const float s = row[i];
      if (!(s > worst[i])) continue;
      Scored* list = top + i * nprobe;
      int64_t j = nprobe - 1;
      while (j > 0 && s > list[j - 1].score) {
        list[j] = list[j - 1];
        --j;
      }
      list[j] = Scored{s, static_cast<int32_t>(c)};
      worst[i] = list[nprobe - 1].score;
    }
  }
}

// Marks the docs of the given cells in `bitmap`; returns how many bits it newly set.
int64_t mark_cells(const CandidatesParams& p, const std::vector<int32_t>& cells,
                   uint64_t* bitmap) {
  int64_t count = 0;
  for (const int32_t c : cells) {
    for (int64_t k = p.ivf_offsets[c]; k < p.ivf_offsets[c + 1]; ++k) {
      const int32_t d = p.ivf[k];
      if (p.subset && !p.subset[d]) continue;
      const uint64_t bit = uint64_t{1} << (d & 63);
      uint64_t& word = bitmap[d >> 6];
      count += (word & bit) == 0;
      word |= bit;
    }
  }
  return count;
}

}  // namespace

void candidates_mark_cpu(const CandidatesParams& p) {
  const int64_t nq = p.n_queries, k_cells = p.n_centroids, lq = p.query_len;
  if (nq == 0) return;
  const bool all_cells = p.nprobe >= k_cells;
  const int64_t nprobe = std::min(p.nprobe, k_cells);
  const bool insertion = nprobe <= kInsertionMaxProbe;
  // Selection tasks: (query, centroid chunk) for the insertion scan, (query, token) for the
  // large-nprobe selection. Their results land in `top`, merged per query below.
  const int64_t n_chunks = insertion ? std::max<int64_t>(1, (k_cells + kScanChunk - 1) / kScanChunk) : 1;
  std::vector<Scored> top;
  if (!all_cells) top.resize(static_cast<size_t>(nq * n_chunks * lq * nprobe));

#pragma omp parallel
  {
    if (!all_cells && insertion) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < nq * n_chunks; ++task) {
        const int64_t q = task / n_chunks, chunk = task % n_chunks;
        const int64_t c_begin = chunk * kScanChunk;
        const int64_t c_end = std::min(k_cells, c_begin + kScanChunk);
        scan_top_cells(p.scores + q * k_cells * lq, lq, nprobe, c_begin, c_end,
                       top.data() + task * lq * nprobe);
      }
    } else if (!all_cells) {
      std::vector<Scored> column(static_cast<size_t>(k_cells));
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < nq * lq; ++task) {
        const int64_t q = task / lq, i = task % lq;
        const float* scores = p.scores + q * k_cells * lq;
        for (int64_t c = 0; c < k_cells; ++c)
          column[c] = Scored{scores[c * lq + i], static_cast<int32_t>(c)};
        std::nth_element(column.begin(), column.begin() + (nprobe - 1), column.end(), better);
        std::copy(column.begin(), column.begin() + nprobe, top.begin() + task * nprobe);
      }
    }

    std::vector<uint8_t> seen(static_cast<size_t>(k_cells), 0);
    std::vector<int32_t> cells;
    std::vector<Scored> merged;
#pragma omp for schedule(dynamic, 1)
    for (int64_t q = 0; q < nq; ++q) {
      cells.clear();
      if (all_cells) {
        for (int64_t c = 0; c < k_cells; ++c) cells.push_back(static_cast<int32_t>(c));
      } else {
        const Scored* query_top = top.data() + q * n_chunks * lq * nprobe;
        for (int64_t i = 0; i < lq; ++i) {
          // Token i's candidates from every chunk; the best nprobe over all of them.
          merged.clear();
          for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
            const Scored* list = query_top + (chunk * lq + i) * nprobe;
            for (int64_t j = 0; j < nprobe; ++j)
              if (list[j].id != std::numeric_limits<int32_t>::max()) merged.push_back(list[j]);
          }
          const int64_t take = std::min<int64_t>(nprobe, static_cast<int64_t>(merged.size()));
          std::partial_sort(merged.begin(), merged.begin() + take, merged.end(), better);
          for (int64_t j = 0; j < take; ++j) {
            const int32_t c = merged[j].id;
            if (!seen[c]) {
              seen[c] = 1;
              cells.push_back(c);
            }
          }
        }
        for (const int32_t c : cells) seen[c] = 0;
      }
      p.counts[q] = mark_cells(p, cells, p.bitmap + q * p.bitmap_words);
    }
  }
}

void candidates_collect_cpu(const CandidatesParams& p) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t q = 0; q < p.n_queries; ++q) {
    const uint64_t* bitmap = p.bitmap + q * p.bitmap_words;
    int32_t* out = p.out_ids + p.out_offsets[q];
    for (int64_t w = 0; w < p.bitmap_words; ++w) {
      uint64_t bits = bitmap[w];
      while (bits) {
        *out++ = static_cast<int32_t>(w * 64 + __builtin_ctzll(bits));
        bits &= bits - 1;
      }
    }
  }
}

// ---------------------------------------------------------------- stages 2-3

namespace {

// Sum over query tokens of the max over the document's kept tokens of S[code, i]; -inf
// when no token is kept. LQ > 0 fixes the query length at compile time (the common 32),
// so the max loop unrolls into whole vectors; LQ == 0 reads it from `query_len`.
template <int LQ>
float interaction_score(const float* scores, int64_t query_len, const int32_t* codes,
                        int64_t n_codes, const uint8_t* keep, float* best) {
  const int64_t lq = LQ > 0 ? LQ : query_len;
  std::fill(best, best + lq, kNegInf);
  bool any = false;
  for (int64_t t = 0; t < n_codes; ++t) {
    const int32_t c = codes[t];
    if (keep && !keep[c]) continue;
    any = true;
    const float* row = scores + static_cast<int64_t>(c) * lq;
    for (int64_t i = 0; i < lq; ++i) best[i] = best[i] < row[i] ? row[i] : best[i];
  }
  if (!any) return kNegInf;
  float total = 0.f;
  for (int64_t i = 0; i < lq; ++i) total += best[i];
  return total;
}

void score_candidates(const CentroidInteractionParams& p, int64_t q, int64_t j_begin,
                      int64_t j_end, float* best) {
  const int64_t k_cells = p.n_centroids, lq = p.query_len;
  const float* scores = p.scores + q * k_cells * lq;
  const uint8_t* keep = p.prune ? p.keep + q * k_cells : nullptr;
  for (int64_t j = j_begin; j < j_end; ++j) {
    const int64_t d = p.candidates[j];
    const int64_t begin = p.doc_offsets[d], n = p.doc_offsets[d + 1] - begin;
    p.approx[j] = lq == 32 ? interaction_score<32>(scores, lq, p.doc_codes + begin, n, keep, best)
                           : interaction_score<0>(scores, lq, p.doc_codes + begin, n, keep, best);
  }
}

// The best min(ndocs, m) candidates of query q, best first: nth_element then a sort of the
// kept ndocs only.
void select_top(const CentroidInteractionParams& p, int64_t q, std::vector<Scored>& items) {
  const int64_t begin = p.cand_offsets[q], m = p.cand_offsets[q + 1] - begin;
  const int64_t keep_n = std::min(p.ndocs, m);
  items.resize(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) items[j] = Scored{p.approx[begin + j], p.candidates[begin + j]};
  if (keep_n < m) std::nth_element(items.begin(), items.begin() + keep_n, items.end(), better);
  std::sort(items.begin(), items.begin() + keep_n, better);
  const int64_t out = p.out_offsets[q];
  for (int64_t j = 0; j < keep_n; ++j) {
    p.out_scores[out + j] = items[j].score;
    p.out_ids[out + j] = items[j].id;
  }
}

constexpr int64_t kCandidateChunk = 32;

}  // namespace

void centroid_interaction_cpu(const CentroidInteractionParams& p) {
  const int64_t nq = p.n_queries, k_cells = p.n_centroids, lq = p.query_len;
  if (nq == 0) return;
#pragma omp parallel
  {
    if (p.prune) {
      // keep[q, c]: PLAID's t_cs test, once per query and centroid.
#pragma omp for schedule(dynamic, 1024)
      for (int64_t qc = 0; qc < nq * k_cells; ++qc) {
        const float* row = p.scores + qc * lq;
        float row_max = kNegInf;
        for (int64_t i = 0; i < lq; ++i) row_max = row_max < row[i] ? row[i] : row_max;
        p.keep[qc] = row_max >= p.threshold;
      }
    }
    std::vector<float> best(static_cast<size_t>(lq));
    // All candidates of all queries as one pool of small chunks: a lone query spreads over
    // every thread, and a batch needs no per-query barrier.
    const int64_t total = p.cand_offsets[nq];
    const int64_t n_tasks = (total + kCandidateChunk - 1) / kCandidateChunk;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t j_begin = task * kCandidateChunk;
      const int64_t j_end = std::min(total, j_begin + kCandidateChunk);
      // Chunks may straddle queries: split at query boundaries.
      int64_t q = std::upper_bound(p.cand_offsets, p.cand_offsets + nq + 1, j_begin) - p.cand_offsets - 1;
      for (int64_t j = j_begin; j < j_end; ++q) {
        const int64_t stop = std::min(j_end, p.cand_offsets[q + 1]);
        score_candidates(p, q, j, stop, best.data());
        j = stop;
      }
    }
    std::vector<Scored> items;
#pragma omp for schedule(dynamic, 1)
    for (int64_t q = 0; q < nq; ++q) select_top(p, q, items);
  }
}

}  // namespace ce
