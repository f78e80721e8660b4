// Fused late-interaction (MaxSim) contract, shared by csrc/cpu/maxsim.cpp and
// csrc/cuda/maxsim.cu.
//
//   score[q, d] = sum_i max_j <queries[q, i], doc_emb[j]>,  j in doc d's token range
//
// The running max starts at -inf, so a document with no tokens scores -inf (never 0:
// ColBERT's CPU kernel started at 0, which is wrong for negative similarities).
// Documents are packed: doc_offsets[d] .. doc_offsets[d+1] index rows of doc_emb.
// All pointers are caller-owned; sizes were validated in Python (ops/maxsim.py).
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace ce {

struct MaxSimParams {
  const float* queries;        // [n_queries, query_len, dim] fp32, contiguous
  const void* doc_emb;         // [n_tokens, dim] in doc_dtype, contiguous
  const int64_t* doc_offsets;  // [n_docs + 1], non-decreasing, doc_offsets[0] == 0
  const int64_t* doc_subset;   // [n_out] document indices to score, or nullptr: all docs
  float* scores;               // [n_queries, n_out] output, n_out = subset ? n_subset : n_docs
  int64_t n_queries;
  int64_t query_len;
  int64_t dim;
  int64_t n_docs;
  int64_t n_subset;            // length of doc_subset (ignored when it is nullptr)
  DType doc_dtype;
  // CUDA only, may be nullptr: a device status word. The checked op (ops/maxsim.py) writes
  // kMaxSimBadInput there from its device-side argument checks before the launch; every block
  // then returns at once, so invalid offsets or subset entries are never dereferenced. The
  // kernels OR in kMaxSimNonFinite when a similarity is NaN or infinite. One read of the word
  // after the launch is the op's only host synchronisation.
  int* status = nullptr;
};

// Status of the CPU kernels: a similarity was NaN or infinite. With finite queries this
// means a scored document holds NaN/inf; the kernels detect it on the fly so that the
// caller needs no separate validation pass over doc_emb (the outputs are then unspecified).
constexpr int kMaxSimNonFinite = 1;
// Status bit of the CUDA status word (MaxSimParams::status): the caller's checks failed.
constexpr int kMaxSimBadInput = 2;

// Writes every score[q, d]. CPU: OpenMP over documents, dynamic schedule; SIMD path chosen
// once by cpu_isa() (common/isa.h). Per-document work is independent, so the result does not
// depend on the number of threads. Returns 0 or kMaxSimNonFinite.
int maxsim_cpu(const MaxSimParams& p);

// The best k documents per query without materialising the (n_queries, n_out) scores:
// per-thread bounded heaps merged at the end. Order (and tie rule): higher score first, then
// the lower document id. Document ids are doc_subset entries when a subset is given (a
// repeated entry may come back repeatedly). Empty documents (-inf) are never returned: when
// fewer than k documents are non-empty the tail of a row is index -1, score -inf.
struct MaxSimTopkParams {
  MaxSimParams scoring;   // scoring.scores is not used (may be nullptr)
  int64_t k;              // 1 <= k <= n_out (the op passes min(k, n_out))
  float* top_scores;      // [n_queries, k] output, best first
  int64_t* top_indices;   // [n_queries, k] output, document ids or -1
};
int maxsim_topk_cpu(const MaxSimTopkParams& p);  // 0 or kMaxSimNonFinite

}  // namespace ce

#include "common/cuda_stream.h"
namespace ce {
// Same contract on device pointers; queued on `stream`, no host synchronisation.
// Returns a cudaError_t value (0 on success): no exceptions cross the CUDA boundary.
// With fp16/bf16 documents the queries are rounded to the documents' dtype (tensor-core
// products, fp32 accumulation); query_len <= 512. Shape routing: csrc/cuda/maxsim.cu.
int maxsim_cuda(const MaxSimParams& p, Stream stream);

// The checked op's argument checks as one launch (no host synchronisation): sets *status to
// kMaxSimBadInput when offsets are not 0 .. n_rows non-decreasing, a subset entry lies outside
// [0, n_docs), or a query value is NaN/inf; else to 0. Pointers as in MaxSimParams (queries
// fp32 contiguous), status a device int.
int maxsim_check_cuda(const MaxSimParams& p, int64_t n_rows, Stream stream);
}  // namespace ce
