// PLAID candidate generation and centroid interaction on CPU (contract: common/plaid.h).
//
// Work is cut into many small tasks under a dynamic schedule: PLAID's pid filter gave each
// pthread a fixed slice of the candidates and got 4.9x from 16 threads (load imbalance).
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "common/isa.h"
#include "common/plaid.h"
#include "cpu/parallel.h"

namespace ce {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Centroids per stage-1 scan task: several tasks per query (8 for K = 2^14) so a lone query
// still spreads over the threads; the per-chunk lists are merged by a total order, so the
// result does not depend on the chunking or the thread count.
constexpr int64_t kScanChunk = 2048;
// Above this nprobe, a sorted insertion array per token costs more than a selection.
constexpr int64_t kInsertionMaxProbe = 64;
// Below these sizes a call runs on the calling thread: waking the team costs more than the
// work (PLAID's stage 3 scores only ndocs / 4 documents), and every barrier of an
// oversubscribed team waits for a descheduled thread.
constexpr int64_t kParallelMinScores = int64_t{1} << 16;     // stage 1: nq * K * Lq
constexpr int64_t kParallelMinBitmapWords = int64_t{1} << 14;  // stage 1 collect: nq * words
constexpr int64_t kParallelMinCandidates = 512;              // stages 2-3: all queries' m

// A (score, id) pair ordered best first: higher score, then lower id. A strict total order
// on distinct ids, so every selection below is deterministic whatever the thread count.
struct Scored {
  float score;
  int32_t id;
};
inline bool better(const Scored& a, const Scored& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// Workspaces are allocated before each parallel loop (cpu/parallel.h), one slice per slot
// the loop may use: nothing inside a task allocates (an exception must not escape it).

// ---------------------------------------------------------------- stage 1: top cells

// Whether row[i] > worst[i] for some i, in 8 independent lanes so it compiles to vector
// compares (one flag chain would stay scalar).
inline bool any_greater(const float* __restrict row, const float* __restrict worst, int64_t n) {
  int32_t lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lane[j] |= row[i + j] > worst[i + j];
  for (; i < n; ++i) lane[0] |= row[i] > worst[i];
  return (lane[0] | lane[1] | lane[2] | lane[3] | lane[4] | lane[5] | lane[6] | lane[7]) != 0;
}

// Top-`nprobe` centroids per query token over centroids [c_begin, c_end), written best first
// to top[i * nprobe ...]; slots a short range cannot fill keep id = INT32_MAX. `worst` is
// scratch of query_len floats. Not inlined: inlined into the task loop it ran 1.5x slower.
__attribute__((noinline)) void scan_top_cells(const float* scores, int64_t query_len, int64_t nprobe, int64_t c_begin,
                    int64_t c_end, Scored* top, float* worst) {
  const Scored empty{kNegInf, std::numeric_limits<int32_t>::max()};
  std::fill(top, top + query_len * nprobe, empty);
  // worst[i]: the score a centroid must beat (strictly: equal scores keep the lower id,
  // which was seen first) to enter token i's list.
  std::fill(worst, worst + query_len, kNegInf);
  for (int64_t c = c_begin; c < c_end; ++c) {
    const float* row = scores + c * query_len;
    if (!any_greater(row, worst, query_len)) continue;
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

// Marks the docs of cells[0 .. n_cells) in `bitmap`; returns how many bits it newly set.
int64_t mark_cells(const CandidatesParams& p, const int32_t* cells, int64_t n_cells,
                   uint64_t* bitmap) {
  int64_t count = 0;
  for (int64_t k_cell = 0; k_cell < n_cells; ++k_cell) {
    const int32_t c = cells[k_cell];
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
  // Per-thread scratch: token maxes, a centroid column, the seen flags and the probed cells
  // of a query, one token's merged chunk lists.
  const int64_t threads = max_threads();
  const int64_t max_cells = all_cells ? k_cells : std::min(k_cells, lq * nprobe);
  std::vector<float> worst_all(static_cast<size_t>(threads * lq));
  std::vector<Scored> column_all(insertion || all_cells ? 0 : static_cast<size_t>(threads * k_cells));
  std::vector<uint8_t> seen_all(static_cast<size_t>(threads * k_cells), 0);
  std::vector<int32_t> cells_all(static_cast<size_t>(threads * max_cells));
  std::vector<Scored> merged_all(static_cast<size_t>(threads * n_chunks * nprobe));

  const int team = nq * k_cells * lq >= kParallelMinScores ? static_cast<int>(threads) : 1;
  if (!all_cells && insertion) {
    auto scan = [&](int64_t task, int t) {
      const int64_t q = task / n_chunks, chunk = task % n_chunks;
      const int64_t c_begin = chunk * kScanChunk;
      const int64_t c_end = std::min(k_cells, c_begin + kScanChunk);
      scan_top_cells(p.scores + q * k_cells * lq, lq, nprobe, c_begin, c_end,
                     top.data() + task * lq * nprobe, worst_all.data() + t * lq);
    };
    parallel_for(nq * n_chunks, team, scan);
  } else if (!all_cells) {
    auto select = [&](int64_t task, int t) {
      Scored* column = column_all.data() + t * k_cells;
      const int64_t q = task / lq, i = task % lq;
      const float* scores = p.scores + q * k_cells * lq;
      for (int64_t c = 0; c < k_cells; ++c)
        column[c] = Scored{scores[c * lq + i], static_cast<int32_t>(c)};
      std::nth_element(column, column + (nprobe - 1), column + k_cells, better);
      std::copy(column, column + nprobe, top.begin() + task * nprobe);
    };
    parallel_for(nq * lq, team, select);
  }

  auto mark = [&](int64_t q, int t) {
    uint8_t* seen = seen_all.data() + t * k_cells;
    int32_t* cells = cells_all.data() + t * max_cells;
    Scored* merged = merged_all.data() + t * n_chunks * nprobe;
    int64_t n_cells = 0;
    if (all_cells) {
      for (int64_t c = 0; c < k_cells; ++c) cells[n_cells++] = static_cast<int32_t>(c);
    } else {
      const Scored* query_top = top.data() + q * n_chunks * lq * nprobe;
      for (int64_t i = 0; i < lq; ++i) {
        // Token i's candidates from every chunk; the best nprobe over all of them.
        int64_t n_merged = 0;
        for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
          const Scored* list = query_top + (chunk * lq + i) * nprobe;
          for (int64_t j = 0; j < nprobe; ++j)
            if (list[j].id != std::numeric_limits<int32_t>::max()) merged[n_merged++] = list[j];
        }
        const int64_t take = std::min(nprobe, n_merged);
        std::partial_sort(merged, merged + take, merged + n_merged, better);
        for (int64_t j = 0; j < take; ++j) {
          const int32_t c = merged[j].id;
          if (!seen[c]) {
            seen[c] = 1;
            cells[n_cells++] = c;
          }
        }
      }
      for (int64_t j = 0; j < n_cells; ++j) seen[cells[j]] = 0;
    }
    p.counts[q] = mark_cells(p, cells, n_cells, p.bitmap + q * p.bitmap_words);
  };
  parallel_for(nq, team, mark);
}

void candidates_collect_cpu(const CandidatesParams& p) {
  auto collect = [&](int64_t q, int) {
    const uint64_t* bitmap = p.bitmap + q * p.bitmap_words;
    int32_t* out = p.out_ids + p.out_offsets[q];
    for (int64_t w = 0; w < p.bitmap_words; ++w) {
      uint64_t bits = bitmap[w];
      while (bits) {
        *out++ = static_cast<int32_t>(w * 64 + __builtin_ctzll(bits));
        bits &= bits - 1;
      }
    }
  };
  const bool split = p.n_queries > 1 && p.n_queries * p.bitmap_words >= kParallelMinBitmapWords;
  parallel_for(p.n_queries, split ? max_threads() : 1, collect);
}

// ---------------------------------------------------------------- stages 2-3

namespace {

// best[i] = max(best[i], row[i]) over the query tokens.
template <int LQ>
inline void max_into(float* __restrict best, const float* __restrict row, int64_t query_len) {
  const int64_t lq = LQ > 0 ? LQ : query_len;
  for (int64_t i = 0; i < lq; ++i) best[i] = best[i] < row[i] ? row[i] : best[i];
}

// max_i row[i] with 8 independent lanes: a single running max is a chain of dependent
// scalar maxes (the compiler may not reorder it without -ffast-math).
inline float row_max(const float* row, int64_t n) {
  float lane[8];
  std::fill(lane, lane + 8, kNegInf);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lane[j] = lane[j] < row[i + j] ? row[i + j] : lane[j];
  for (; i < n; ++i) lane[0] = lane[0] < row[i] ? row[i] : lane[0];
  float best = lane[0];
  for (int j = 1; j < 8; ++j) best = best < lane[j] ? lane[j] : best;
  return best;
}

// Sum over query tokens of the max over the document's kept tokens of S[code, i]; -inf
// when no token is kept. LQ > 0 fixes the query length at compile time (the common 32):
// the running maxes then live in registers; LQ == 0 reads it from `query_len` and keeps
// them in `scratch`.
template <int LQ>
float interaction_score(const float* scores, int64_t query_len, const int32_t* codes,
                        int64_t n_codes, const uint8_t* keep, float* scratch) {
  const int64_t lq = LQ > 0 ? LQ : query_len;
  float local[LQ > 0 ? LQ : 1];
  float* best = LQ > 0 ? local : scratch;
  std::fill(best, best + lq, kNegInf);
  if (!keep) {
    if (n_codes == 0) return kNegInf;
    // Every token's row is read, and S (K * Lq * 4 bytes, 2 MB for K = 2^14) does not stay
    // in L2: fetch the rows a few tokens ahead.
    constexpr int64_t kAhead = 12;
    for (int64_t t = 0; t < n_codes; ++t) {
      if (t + kAhead < n_codes) {
        const float* next = scores + static_cast<int64_t>(codes[t + kAhead]) * lq;
        __builtin_prefetch(next);
        __builtin_prefetch(next + lq - 1);
      }
      max_into<LQ>(best, scores + static_cast<int64_t>(codes[t]) * lq, lq);
    }
  } else {
    // Pruning keeps a few percent of the centroids: test 8 tokens' keep bytes at once,
    // branch-free, and skip the group when none is kept.
    bool any = false;
    int64_t t = 0;
    for (; t + 8 <= n_codes; t += 8) {
      const int32_t* group = codes + t;
      const unsigned kept = keep[group[0]] | keep[group[1]] | keep[group[2]] | keep[group[3]] |
                            keep[group[4]] | keep[group[5]] | keep[group[6]] | keep[group[7]];
      if (!kept) continue;
      any = true;
      for (int j = 0; j < 8; ++j)
        if (keep[group[j]]) max_into<LQ>(best, scores + static_cast<int64_t>(group[j]) * lq, lq);
    }
    for (; t < n_codes; ++t) {
      if (!keep[codes[t]]) continue;
      any = true;
      max_into<LQ>(best, scores + static_cast<int64_t>(codes[t]) * lq, lq);
    }
    if (!any) return kNegInf;
  }
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
// kept ndocs only. `items` is the query's own slice of a workspace of one entry per candidate.
void select_top(const CentroidInteractionParams& p, int64_t q, Scored* items) {
  const int64_t begin = p.cand_offsets[q], m = p.cand_offsets[q + 1] - begin;
  const int64_t keep_n = std::min(p.ndocs, m);
  for (int64_t j = 0; j < m; ++j) items[j] = Scored{p.approx[begin + j], p.candidates[begin + j]};
  if (keep_n < m) std::nth_element(items, items + keep_n, items + m, better);
  std::sort(items, items + keep_n, better);
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
  const int64_t first = p.cand_offsets[0];
  const int64_t total = p.cand_offsets[nq] - first;
  const int threads = max_threads();
  const int team = total >= kParallelMinCandidates ? threads : 1;
  std::vector<float> best_all(static_cast<size_t>(threads * lq));
  std::vector<Scored> items(static_cast<size_t>(total));
  if (p.prune) {
    // keep[q, c]: PLAID's t_cs test, once per query and centroid, in blocks of 1024.
    const int64_t cells = nq * k_cells, block = 1024;
    auto keep = [&](int64_t b, int) {
      for (int64_t qc = b * block; qc < std::min(cells, (b + 1) * block); ++qc)
        p.keep[qc] = row_max(p.scores + qc * lq, lq) >= p.threshold;
    };
    parallel_for((cells + block - 1) / block, team, keep);
  }
  // All candidates of all queries as one pool of small chunks: a lone query spreads over
  // every thread, and a batch needs no per-query barrier.
  auto score = [&](int64_t task, int t) {
    const int64_t j_begin = first + task * kCandidateChunk;
    const int64_t j_end = std::min(first + total, j_begin + kCandidateChunk);
    // Chunks may straddle queries: split at query boundaries.
    int64_t q = std::upper_bound(p.cand_offsets, p.cand_offsets + nq + 1, j_begin) - p.cand_offsets - 1;
    for (int64_t j = j_begin; j < j_end; ++q) {
      const int64_t stop = std::min(j_end, p.cand_offsets[q + 1]);
      score_candidates(p, q, j, stop, best_all.data() + t * lq);
      j = stop;
    }
  };
  parallel_for((total + kCandidateChunk - 1) / kCandidateChunk, team, score);
  auto select = [&](int64_t q, int) { select_top(p, q, items.data() + (p.cand_offsets[q] - first)); };
  parallel_for(nq, team, select);
}

}  // namespace ce
