// The lut_maxsim CPU kernel body, compiled once per ISA (lut_maxsim.cpp: baseline,
// lut_maxsim_avx2.cpp, lut_maxsim_avx512.cpp) with that file's flags. The loops are plain
// element-wise float code over query tokens that the compiler vectorises.
//
// Everything here has internal linkage and uses no std:: templates or shared inline
// functions: an inline function with external linkage compiled with -mavx512f in one
// translation unit could be the copy the linker keeps for the baseline path too.
// Include only from those translation units.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/lut_maxsim.h"
#include "cpu/parallel.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

// The vector type below never crosses a non-inlined call boundary between builds.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ce {
namespace {

inline float lut_half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  // IEEE half -> float (subnormals, inf, NaN handled), same as common/dtype.h.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

inline float lut_max(float a, float b) { return a < b ? b : a; }

// Tables are per residual byte (256 entries of Lq floats), so a token costs dim*nbits/8
// lookups into tables of dim*nbits/8 * 256 * Lq floats per query. (A nibble-table variant
// existed for the scalar layouts; a byte codebook entry does not split into two nibble
// halves, so it went with the one decoding contract of common/codec.h.)

// Floats from one byte position's table to the next: 256 entries of Lq floats plus one cache
// line, so that the tables of successive positions do not all start on the same L1 cache
// set (with a power-of-two stride every lookup of a token competed for the same 8 ways).
inline int64_t table_stride(int64_t lq) { return 256 * lq + 16; }

// Tables of query q, byte position `unit`: lut[value * lq + i] = sum_j q_i[unit*k + j] *
// codebook[unit][value][j], k = 8 / nbits dimensions per byte, summed in j order.
// `tables` is where the query's tables go (its slot of p.lut).
inline void build_lut_block(const LutMaxSimParams& p, int64_t q, int64_t unit, float* query_t, float* tables) {
  const int64_t lq = p.query_len, dim = p.dim;
  const int per_unit = 8 / p.nbits;
  const float* query = p.queries + q * lq * dim;
  // The byte's k dimensions transposed to [j][i], so the inner loop is contiguous.
  for (int j = 0; j < per_unit; ++j)
    for (int64_t i = 0; i < lq; ++i) query_t[j * lq + i] = query[i * dim + unit * per_unit + j];
  float* lut = tables + unit * table_stride(lq);
  const float* words = p.codebook + unit * 256 * per_unit;
  for (int value = 0; value < 256; ++value) {
    float* entry = lut + value * lq;
    for (int64_t i = 0; i < lq; ++i) entry[i] = 0.f;
    for (int j = 0; j < per_unit; ++j) {
      const float w = words[value * per_unit + j];
      const float* qj = query_t + j * lq;
      for (int64_t i = 0; i < lq; ++i) entry[i] += qj[i] * w;
    }
  }
}

// 16 floats as one GCC vector: an AVX-512 register, two AVX2 ones or four SSE ones,
// depending on the flags of the including file. Element-wise ops only, so the scoring is
// bit-identical in every build (the table build may fuse multiply-adds under -mfma).
typedef float v16f __attribute__((vector_size(64)));
inline v16f load16(const float* ptr) {
  v16f v;
  __builtin_memcpy(&v, ptr, sizeof v);
  return v;
}
inline void store16(float* ptr, v16f v) { __builtin_memcpy(ptr, &v, sizeof v); }

// best[l] = max over tokens t in [begin, end) of <q_{lane0 + l}, x_t>, for NV*16 query
// tokens starting at lane0 (all inside the query). Two accumulator sets (even and odd
// byte positions) halve the dependent-add chain.
template <int NV>
inline void best_lanes(const LutMaxSimParams& p, const float* scores, const float* lut, int64_t begin,
                       int64_t end, int64_t lane0, float* best_out) {
  const int64_t lq = p.query_len;
  const int64_t positions = p.dim * p.nbits / 8;
  const int64_t units = p.dim * p.nbits / 8;
  const int64_t table = table_stride(lq);
  v16f best[NV];
  for (int v = 0; v < NV; ++v) best[v] = v16f{} - INFINITY;
  for (int64_t t = begin; t < end; ++t) {
    const float* centroid_scores = scores + static_cast<int64_t>(p.codes[t]) * lq + lane0;
    const uint8_t* packed = p.residuals + t * positions;
    v16f even[NV], odd[NV];
    for (int v = 0; v < NV; ++v) {
      even[v] = load16(centroid_scores + 16 * v);
      odd[v] = v16f{};
    }
    const float* base = lut + lane0;
    int64_t unit = 0;
    for (; unit + 1 < units; unit += 2, base += 2 * table) {
      const float* e0 = base + packed[unit] * lq;
      const float* e1 = base + table + packed[unit + 1] * lq;
      for (int v = 0; v < NV; ++v) {
        even[v] += load16(e0 + 16 * v);
        odd[v] += load16(e1 + 16 * v);
      }
    }
    if (unit < units) {
      const float* e0 = base + packed[unit] * lq;
      for (int v = 0; v < NV; ++v) even[v] += load16(e0 + 16 * v);
    }
    const float inv_norm = lut_half_to_float(p.inv_norms[t]);
    for (int v = 0; v < NV; ++v) {
      const v16f sim = (even[v] + odd[v]) * inv_norm;
      best[v] = best[v] < sim ? sim : best[v];
    }
  }
  for (int v = 0; v < NV; ++v) store16(best_out + 16 * v, best[v]);
}

// The same for the last lq % 16 query tokens, one at a time.
inline void best_tail(const LutMaxSimParams& p, const float* scores, const float* lut, int64_t begin,
                      int64_t end, int64_t lane0, float* best_out) {
  const int64_t lq = p.query_len;
  const int64_t positions = p.dim * p.nbits / 8;
  const int64_t units = p.dim * p.nbits / 8;
  const int64_t table = table_stride(lq);
  for (int64_t i = lane0; i < lq; ++i) {
    float best = -INFINITY;
    for (int64_t t = begin; t < end; ++t) {
      const uint8_t* packed = p.residuals + t * positions;
      float even = scores[static_cast<int64_t>(p.codes[t]) * lq + i], odd = 0.f;
      int64_t unit = 0;
      for (; unit + 1 < units; unit += 2) {
        even += lut[unit * table + packed[unit] * lq + i];
        odd += lut[(unit + 1) * table + packed[unit + 1] * lq + i];
      }
      if (unit < units) even += lut[unit * table + packed[unit] * lq + i];
      best = lut_max(best, (even + odd) * lut_half_to_float(p.inv_norms[t]));
    }
    best_out[i - lane0] = best;
  }
}

// Score of query q against document `doc`; `best` is scratch of query_len floats.
// Not inlined into the pool's task bodies, where it ran ~5% slower.
__attribute__((noinline)) float score_document(const LutMaxSimParams& p, int64_t q, int64_t doc, float* best, const float* lut) {
  const int64_t lq = p.query_len;
  const int64_t begin = p.doc_offsets[doc], end = p.doc_offsets[doc + 1];
  if (end == begin) return -INFINITY;
  const float* scores = p.scores + q * p.n_centroids * lq;
  int64_t lane = 0;
  // Two vectors (32 query tokens, the default query length) per pass over the tokens.
  for (; lane + 32 <= lq; lane += 32) best_lanes<2>(p, scores, lut, begin, end, lane, best + lane);
  for (; lane + 16 <= lq; lane += 16) best_lanes<1>(p, scores, lut, begin, end, lane, best + lane);
  if (lane < lq) best_tail(p, scores, lut, begin, end, lane, best + lane);
  // In query-token order, the same in every ISA build.
  float total = 0.f;
  for (int64_t i = 0; i < lq; ++i) total += best[i];
  return total;
}

// Query of flat position j: the last q with cand_offsets[q] <= j (empty queries skipped).
inline int64_t lut_query_of(const int64_t* cand_offsets, int64_t n_queries, int64_t j) {
  int64_t lo = 0, hi = n_queries;  // invariant: cand_offsets[lo] <= j < cand_offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (cand_offsets[mid] <= j) lo = mid; else hi = mid;
  }
  return lo;
}

// Below this many (query, candidate) pairs with a single query, the call stays on the
// calling thread: waking a worker costs more than the work.
constexpr int64_t kLutParallelMinPairs = 16;

// scratch: lut_scratch_floats(...) floats per slot of `threads`, allocated by the caller
// before the loops (nothing in a task allocates).
void lut_maxsim_impl(const LutMaxSimParams& p, float* scratch, int64_t scratch_floats, int threads) {
  const int64_t lq = p.query_len;
  const int64_t units = p.dim * p.nbits / 8;
  const bool per_query = p.cand_offsets != nullptr;
  const int64_t table_floats = units * table_stride(lq);  // one query's tables
  const int64_t first = per_query ? p.cand_offsets[0] : 0;
  const int64_t pairs = per_query ? p.n_candidates : p.n_queries * p.n_candidates;
  if (!(p.n_queries > 1 || pairs >= kLutParallelMinPairs)) threads = 1;
  auto query_t_of = [&](int slot) { return scratch + slot * scratch_floats; };
  auto best_of = [&](int slot) { return scratch + slot * scratch_floats + (8 / p.nbits) * lq; };
  if (p.n_queries >= 2 * threads) {
    // A batch: one query per task, its tables built and used by the same thread while they
    // are in its cache (tables built for the whole batch first were evicted before use: a
    // batch cost more CPU per query than single queries). No barrier but the end.
    auto query = [&](int64_t q, int slot) {
      // The slot's own part of the workspace (the batch holds more slots than threads):
      // reused, so it stays in cache and its pages are touched once.
      float* tables = p.lut + slot * table_floats;
      float* best = best_of(slot);
      for (int64_t unit = 0; unit < units; ++unit) build_lut_block(p, q, unit, query_t_of(slot), tables);
      if (per_query) {
        for (int64_t j = p.cand_offsets[q]; j < p.cand_offsets[q + 1]; ++j)
          p.out[j] = score_document(p, q, p.candidates[j], best, tables);
      } else {
        for (int64_t m = 0; m < p.n_candidates; ++m)
          p.out[q * p.n_candidates + m] = score_document(p, q, p.candidates[m], best, tables);
      }
    };
    parallel_for(p.n_queries, threads, query);
    return;
  }
  // A few queries: every thread on every query's tables, then on all pairs of all queries,
  // query-major (a query's tables stay in cache while the threads sweep its candidates).
  auto build = [&](int64_t block, int slot) {
    build_lut_block(p, block / units, block % units, query_t_of(slot), p.lut + block / units * table_floats);
  };
  parallel_for(p.n_queries * units, threads, build);
  constexpr int64_t kPairsPerTask = 4;
  auto score = [&](int64_t task, int slot) {
    float* best = best_of(slot);
    for (int64_t w = task * kPairsPerTask; w < std::min(pairs, (task + 1) * kPairsPerTask); ++w) {
      if (per_query) {
        const int64_t j = first + w;
        const int64_t q = lut_query_of(p.cand_offsets, p.n_queries, j);
        p.out[j] = score_document(p, q, p.candidates[j], best, p.lut + q * table_floats);
      } else {
        const int64_t q = w / p.n_candidates;
        p.out[w] = score_document(p, q, p.candidates[w - q * p.n_candidates], best, p.lut + q * table_floats);
      }
    }
  };
  parallel_for((pairs + kPairsPerTask - 1) / kPairsPerTask, threads, score);
}

// Per-thread scratch of lut_maxsim_impl: a transposed query unit and the maxes.
inline int64_t lut_scratch_floats(int64_t query_len, int nbits) {
  return (8 / nbits) * query_len + query_len;
}

inline void lut_maxsim_dispatch(const LutMaxSimParams& p, float* scratch, int64_t scratch_floats, int threads) {
  lut_maxsim_impl(p, scratch, scratch_floats, threads);
}

}  // namespace
}  // namespace ce
