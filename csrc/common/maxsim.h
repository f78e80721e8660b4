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
};

// Writes every score[q, d]. CPU: OpenMP over documents, dynamic schedule.
void maxsim_cpu(const MaxSimParams& p);

}  // namespace ce

#include "common/cuda_stream.h"
namespace ce {
// Same contract on device pointers; queued on `stream`, no host synchronisation.
// Returns a cudaError_t value (0 on success): no exceptions cross the CUDA boundary.
// With fp16/bf16 documents the queries are rounded to the documents' dtype (tensor-core
// products, fp32 accumulation); query_len <= 512. Shape routing: csrc/cuda/maxsim.cu.
int maxsim_cuda(const MaxSimParams& p, Stream stream);
}  // namespace ce
