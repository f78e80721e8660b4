// The ISA-independent half of the CPU MaxSim kernels (csrc/common/maxsim.h), included by
// maxsim.cpp (scalar), maxsim_avx2.cpp, maxsim_avx512.cpp (x86-64) and maxsim_neon.cpp (aarch64).
// Each of those supplies a `Kernel` (below) and instantiates run_maxsim / run_maxsim_topk with
// it. Deliberate per-ISA twins: those four Kernel structs (block, convert_rows) have the same
// shape, each in its own ISA's intrinsics; everything they share lives here.
//
// Everything after the entry-point declarations sits in an unnamed namespace on purpose:
// every ISA's translation unit gets its own copy compiled with its own flags, so no AVX-512
// instruction can reach the scalar path through a shared (weak, linker-chosen) inline or
// template instantiation. For the same reason this file avoids std:: templates on shared
// types (std::vector<float>, std::fill<float*>); buffers are plain aligned_alloc memory.
//
// How a document is scored. All query tokens of all queries are one set of R = nq * Lq rows
// (the max runs per query token, the sum per query at the end). They are packed once per
// call, transposed, in chunks of QV * W rows (W = SIMD lanes): qt[k][lane] holds coordinate k
// of the chunk's rows, zero-padded past R. For each document, tokens go by panels of P rows
// (converted to fp32 once per token for fp16/bf16 storage), and for every chunk a
// micro-kernel computes a (QV*W query rows) x (NT doc tokens) tile of dot products with FMAs
// (query vectors from qt, each doc coordinate broadcast), then folds the tile's max over
// its NT tokens into best[row]. The dim loop is scalar, so any dim works without a vector
// tail; the token tail of a document is padded by repeating its last token (max is
// idempotent) and the row tail by zero rows that the final per-query sum skips.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "common/isa.h"
#include "common/maxsim.h"
#include "cpu/parallel.h"

namespace ce {

// Per-ISA entry points, defined in maxsim_avx2.cpp / maxsim_avx512.cpp (x86-64 builds) and
// maxsim_neon.cpp (aarch64 builds), dispatched from maxsim.cpp; only called when cpu_isa()
// says the CPU has the instructions.
int maxsim_avx2(const MaxSimParams& p);
int maxsim_topk_avx2(const MaxSimTopkParams& p);
int maxsim_avx512(const MaxSimParams& p);
int maxsim_topk_avx512(const MaxSimTopkParams& p);
int maxsim_neon(const MaxSimParams& p);
int maxsim_topk_neon(const MaxSimTopkParams& p);

namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }


// Documents per task of the parallel loops (cpu/parallel.h).
constexpr int64_t kDocsPerTask = 4;

// a * b for element counts, or std::bad_alloc when the product cannot be a real size (a
// negative count or int64 overflow): an impossible request surfaces as MemoryError in
// Python instead of wrapping around to a small buffer.
inline int64_t count_product(int64_t a, int64_t b) {
  int64_t n;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &n)) throw std::bad_alloc();
  return n;
}

// 64-byte aligned storage owned by one call; allocated before any parallel region (an
// exception must not leave an OpenMP region). Failure throws std::bad_alloc, which the
// binding turns into MemoryError.
template <class T>
class Buffer {
 public:
  explicit Buffer(int64_t n) {
    const int64_t bytes = count_product(n > 0 ? n : 1, int64_t(sizeof(T)));
    if (bytes > std::numeric_limits<int64_t>::max() - 64) throw std::bad_alloc();
    data_ = static_cast<T*>(std::aligned_alloc(64, static_cast<size_t>(round_up(bytes, 64))));
    if (!data_) throw std::bad_alloc();
  }
  ~Buffer() { std::free(data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return data_; }

 private:
  T* data_;
};
using Floats = Buffer<float>;

// Query rows packed for the micro-kernels (see the file comment).
template <class Kernel>
struct PackedQueries {
  static constexpr int W = Kernel::kLanes;
  static constexpr int kChunkRows = Kernel::kMaxQv * W;
  int64_t rows, padded_rows, dim;
  Floats qt;

  explicit PackedQueries(const MaxSimParams& p)
      : rows(p.n_queries * p.query_len),
        padded_rows(round_up(p.n_queries * p.query_len, W)),
        dim(p.dim),
        qt(count_product(round_up(count_product(p.n_queries, p.query_len), W), p.dim)) {
    float* out = qt.get();
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_vectors(r0) * W) {
      const int64_t width = chunk_vectors(r0) * W;
      float* chunk = out + r0 * dim;
      for (int64_t k = 0; k < dim; ++k)
        for (int64_t lane = 0; lane < width; ++lane)
          chunk[k * width + lane] = (r0 + lane < rows) ? p.queries[(r0 + lane) * dim + k] : 0.f;
    }
  }

  // Vectors (of W lanes) in the chunk starting at row r0: full chunks, then a narrower one.
  int chunk_vectors(int64_t r0) const {
    const int64_t left = (rows - r0 + W - 1) / W;
    return static_cast<int>(left < Kernel::kMaxQv ? left : Kernel::kMaxQv);
  }
};

// What a block prefetches while it computes: row j of block b is at
// base + b * block_bytes + j * row_bytes, element k at + k * elem_bytes.
struct Prefetch {
  const char* base;
  int64_t block_bytes, row_bytes, elem_bytes;
};

template <class Kernel, int QV>
inline void blocks_qv(const float* qt, const float* rows, int64_t stride, int64_t dim,
                      int64_t n_blocks, float* best, float* check, const Prefetch& pf) {
  for (int64_t b = 0; b < n_blocks; ++b)
    Kernel::template block<QV>(qt, rows + b * Kernel::kTokens * stride, stride, dim, best, check,
                               pf.base + b * pf.block_bytes, pf.row_bytes, pf.elem_bytes);
}

// All chunks of query rows against n_blocks blocks of kTokens token rows each.
template <class Kernel>
inline void score_blocks(const PackedQueries<Kernel>& pq, const float* rows, int64_t stride,
                         int64_t n_blocks, float* best, float* check, const Prefetch& pf) {
  constexpr int W = Kernel::kLanes;
  for (int64_t r0 = 0; r0 < pq.rows;) {
    const int qv = pq.chunk_vectors(r0);
    const float* qt = pq.qt.get() + r0 * pq.dim;
    // Kernels support QV in 1..kMaxQv, kMaxQv <= 4.
    switch (qv) {
      case 1: blocks_qv<Kernel, 1>(qt, rows, stride, pq.dim, n_blocks, best + r0, check, pf); break;
      case 2: blocks_qv<Kernel, (Kernel::kMaxQv >= 2 ? 2 : 1)>(qt, rows, stride, pq.dim, n_blocks, best + r0, check, pf); break;
      case 3: blocks_qv<Kernel, (Kernel::kMaxQv >= 3 ? 3 : 1)>(qt, rows, stride, pq.dim, n_blocks, best + r0, check, pf); break;
      default: blocks_qv<Kernel, (Kernel::kMaxQv >= 4 ? 4 : 1)>(qt, rows, stride, pq.dim, n_blocks, best + r0, check, pf); break;
    }
    r0 += qv * W;
  }
}

// Tokens per panel: a multiple of kTokens, about 16 KiB of fp32 rows, so that a panel and
// the 16 KiB of packed rows of a 32-token, dim-128 query share the 32 KiB L1.
template <class Kernel>
inline int64_t panel_tokens(int64_t dim) {
  const int64_t nt = Kernel::kTokens;
  const int64_t fit = (16384 / 4) / (dim > 0 ? dim : 1);
  return fit < nt ? nt : fit / nt * nt;
}

// Per-thread scratch of one call: best[padded_rows], panel[P + kTokens rows, dim], and
// check[kLanes]: the kernels add (s - s) of every similarity s there, so it stays 0 unless
// a similarity was NaN or infinite. With finite queries (checked in Python) that happens
// exactly when a scored document holds a NaN/inf (q * inf and 0 * inf are not finite), so
// doc_emb needs no separate validation pass over memory.
template <class Kernel>
struct Scratch {
  int64_t best_stride, panel_stride;
  Floats best, panel, check;
  Scratch(const PackedQueries<Kernel>& pq, int64_t panel_rows, int threads)
      : best_stride(round_up(pq.padded_rows, 16)),
        panel_stride(round_up((panel_rows + Kernel::kTokens) * pq.dim, 16)),
        best(count_product(round_up(pq.padded_rows, 16), threads)),
        panel(count_product(round_up((panel_rows + Kernel::kTokens) * pq.dim, 16), threads)),
        check(int64_t{16} * threads) {
    for (int64_t i = 0; i < int64_t{16} * threads; ++i) check.get()[i] = 0.f;
  }
  float* best_of(int tid) const { return best.get() + tid * best_stride; }
  float* panel_of(int tid) const { return panel.get() + tid * panel_stride; }
  float* check_of(int tid) const { return check.get() + tid * 16; }
  // kMaxSimNonFinite when any thread saw a non-finite similarity, else 0.
  int status(int threads) const {
    for (int64_t i = 0; i < int64_t{16} * threads; ++i)
      if (check.get()[i] != 0.f) return kMaxSimNonFinite;
    return 0;
  }
};

// score[q] of document d for every query q (out[q * out_stride]).
template <class Kernel>
inline void score_document(const MaxSimParams& p, const PackedQueries<Kernel>& pq,
                           int64_t panel_rows, int64_t d, float* best, float* panel,
                           float* check, float* out, int64_t out_stride) {
  constexpr int64_t NT = Kernel::kTokens;
  const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
  if (end == begin) {
    for (int64_t q = 0; q < p.n_queries; ++q) out[q * out_stride] = kMinusInf;
    return;
  }
  const int64_t dim = p.dim;
  for (int64_t r = 0; r < pq.padded_rows; ++r) best[r] = kMinusInf;
  for (int64_t t0 = begin; t0 < end; t0 += panel_rows) {
    const int64_t n = min_i64(panel_rows, end - t0);
    const int64_t full = n / NT, rem = n % NT;
    if (p.doc_dtype == DType::F32) {
      // fp32 rows are read in place; only the token tail is copied (and padded). Each block
      // prefetches the next block's rows (the next document's first rows at the end).
      const float* rows = static_cast<const float*>(p.doc_emb) + t0 * dim;
      const int64_t row_bytes = dim * int64_t(sizeof(float));
      const Prefetch next{reinterpret_cast<const char*>(rows + NT * dim), NT * row_bytes, row_bytes,
                          int64_t(sizeof(float))};
      score_blocks(pq, rows, dim, full, best, check, next);
      if (rem) {
        std::memcpy(panel, rows + full * NT * dim, sizeof(float) * rem * dim);
        for (int64_t j = rem; j < NT; ++j)
          std::memcpy(panel + j * dim, panel + (rem - 1) * dim, sizeof(float) * dim);
        const Prefetch after{reinterpret_cast<const char*>(rows + n * dim), 0, row_bytes,
                             int64_t(sizeof(float))};
        score_blocks(pq, panel, dim, 1, best, check, after);
      }
    } else {
      // 16-bit rows are converted to fp32 once per panel; while the panel is scored, its
      // blocks prefetch the next panel's source rows, one block's worth each.
      const uint16_t* src = static_cast<const uint16_t*>(p.doc_emb) + t0 * dim;
      Kernel::convert_rows(src, p.doc_dtype, n, dim, panel);
      const int64_t padded = round_up(n, NT);
      for (int64_t j = n; j < padded; ++j)
        std::memcpy(panel + j * dim, panel + (n - 1) * dim, sizeof(float) * dim);
      const int64_t row_bytes = dim * int64_t(sizeof(uint16_t));
      const Prefetch next{reinterpret_cast<const char*>(src + n * dim), NT * row_bytes, row_bytes,
                          int64_t(sizeof(uint16_t))};
      score_blocks(pq, panel, dim, padded / NT, best, check, next);
    }
  }
  const int64_t lq = p.query_len;
  for (int64_t q = 0; q < p.n_queries; ++q) {
    float total = 0.f;  // fixed order: identical for any thread count
    for (int64_t i = 0; i < lq; ++i) total += best[q * lq + i];
    out[q * out_stride] = total;
  }
}

template <class Kernel>
int run_maxsim(const MaxSimParams& p) {
  const int64_t n_out = p.doc_subset ? p.n_subset : p.n_docs;
  if (n_out == 0 || p.n_queries == 0) return 0;
  const PackedQueries<Kernel> pq(p);
  const int64_t panel_rows = panel_tokens<Kernel>(p.dim);
  const int threads = max_threads();
  Scratch<Kernel> scratch(pq, panel_rows, threads);
  // Tasks of kDocsPerTask documents.
  auto score = [&](int64_t task, int slot) {
    for (int64_t o = task * kDocsPerTask; o < min_i64(n_out, (task + 1) * kDocsPerTask); ++o) {
      const int64_t d = p.doc_subset ? p.doc_subset[o] : o;
      score_document<Kernel>(p, pq, panel_rows, d, scratch.best_of(slot), scratch.panel_of(slot),
                             scratch.check_of(slot), p.scores + o, n_out);
    }
  };
  parallel_for((n_out + kDocsPerTask - 1) / kDocsPerTask, threads, score);
  return scratch.status(threads);
}

// ------------------------------------------------------------------------------ top-k

struct Hit {
  float score;
  int64_t id;
};

// The tie rule of the contract: higher score first, then lower id.
inline bool better(const Hit& a, const Hit& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// Bounded heap of the k best hits seen; the root is the worst kept.
struct TopK {
  Hit* hits;
  int64_t k, size;

  void offer(const Hit& h) {
    if (size < k) {
      int64_t i = size++;
      while (i > 0) {  // sift up: a worse hit moves toward the root
        const int64_t parent = (i - 1) / 2;
        if (!better(hits[parent], h)) break;
        hits[i] = hits[parent];
        i = parent;
      }
      hits[i] = h;
    } else if (better(h, hits[0])) {
      int64_t i = 0;
      for (;;) {  // sift down from the root
        int64_t child = 2 * i + 1;
        if (child >= size) break;
        if (child + 1 < size && better(hits[child], hits[child + 1])) ++child;
        if (!better(h, hits[child])) break;  // h is no better than the worse child: stays
        hits[i] = hits[child];
        i = child;
      }
      hits[i] = h;
    }
  }
};

template <class Kernel>
int run_maxsim_topk(const MaxSimTopkParams& tp) {
  const MaxSimParams& p = tp.scoring;
  const int64_t n_out = p.doc_subset ? p.n_subset : p.n_docs;
  const int64_t nq = p.n_queries, k = tp.k;
  if (nq == 0 || k == 0) return 0;
  const PackedQueries<Kernel> pq(p);
  const int64_t panel_rows = panel_tokens<Kernel>(p.dim);
  const int threads = max_threads();
  Scratch<Kernel> scratch(pq, panel_rows, threads);
  // Per-thread heaps (threads * nq * k hits) and, for the merge, the same again.
  const int64_t heap_hits = count_product(count_product(threads, nq), k);
  Floats doc_scores(count_product(nq, threads));
  Buffer<Hit> heaps(heap_hits);
  Buffer<Hit> merged(heap_hits);
  Buffer<int64_t> heap_size_buffer(count_product(threads, nq));
  int64_t* heap_sizes = heap_size_buffer.get();
  for (int64_t i = 0; i < static_cast<int64_t>(threads) * nq; ++i) heap_sizes[i] = 0;
  auto score = [&](int64_t task, int slot) {
    float* mine = doc_scores.get() + slot * nq;
    Hit* my_heaps = heaps.get() + static_cast<int64_t>(slot) * nq * k;
    int64_t* my_sizes = heap_sizes + slot * nq;
    for (int64_t o = task * kDocsPerTask; o < min_i64(n_out, (task + 1) * kDocsPerTask); ++o) {
      const int64_t d = p.doc_subset ? p.doc_subset[o] : o;
      score_document<Kernel>(p, pq, panel_rows, d, scratch.best_of(slot), scratch.panel_of(slot),
                             scratch.check_of(slot), mine, 1);
      if (p.doc_offsets[d + 1] == p.doc_offsets[d]) continue;  // empty: never returned
      for (int64_t q = 0; q < nq; ++q) {
        // A NaN score (reported through the status) would break the order the heaps and
        // the merge's sort rely on: keep it out.
        if (mine[q] != mine[q]) continue;
        TopK heap{my_heaps + q * k, k, my_sizes[q]};
        heap.offer(Hit{mine[q], d});
        my_sizes[q] = heap.size;
      }
    }
  };
  parallel_for((n_out + kDocsPerTask - 1) / kDocsPerTask, threads, score);
  // Merge: per query, the union of the slots' heaps holds the k best under a strict order,
  // so the result does not depend on how documents were spread over threads.
  auto merge = [&](int64_t q, int) {
    Hit* all = merged.get() + q * threads * k;
    int64_t count = 0;
    for (int t = 0; t < threads; ++t) {
      const Hit* h = heaps.get() + (static_cast<int64_t>(t) * nq + q) * k;
      for (int64_t i = 0; i < heap_sizes[t * nq + q]; ++i) all[count++] = h[i];
    }
    const int64_t keep = min_i64(k, count);
    std::partial_sort(all, all + keep, all + count, better);
    for (int64_t i = 0; i < k; ++i) {
      tp.top_scores[q * k + i] = i < keep ? all[i].score : kMinusInf;
      tp.top_indices[q * k + i] = i < keep ? all[i].id : -1;
    }
  };
  parallel_for(nq, threads, merge);
  return scratch.status(threads);
}

}  // namespace
}  // namespace ce
