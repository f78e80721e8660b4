// Fused MaxSim on CPU: scalar reference path. One document per OpenMP task (dynamic
// schedule: document lengths vary a lot, static partitioning left threads idle in PLAID).
#include <algorithm>
#include <limits>
#include <vector>

#include "common/maxsim.h"

namespace ce {

void maxsim_cpu(const MaxSimParams& p) {
  const int64_t n_out = p.doc_subset ? p.n_subset : p.n_docs;
  const int64_t lq = p.query_len, dim = p.dim;
  const int64_t row_bytes = dim * dtype_size(p.doc_dtype);
#pragma omp parallel
  {
    std::vector<float> token(dim);
    std::vector<float> best(lq);
#pragma omp for schedule(dynamic, 4)
    for (int64_t out = 0; out < n_out; ++out) {
      const int64_t d = p.doc_subset ? p.doc_subset[out] : out;
      const int64_t begin = p.doc_offsets[d], end = p.doc_offsets[d + 1];
      for (int64_t q = 0; q < p.n_queries; ++q) {
        const float* query = p.queries + q * lq * dim;
        std::fill(best.begin(), best.end(), -std::numeric_limits<float>::infinity());
        for (int64_t t = begin; t < end; ++t) {
          const void* row = static_cast<const char*>(p.doc_emb) + t * row_bytes;
          for (int64_t k = 0; k < dim; ++k) token[k] = load_as_float(row, k, p.doc_dtype);
          for (int64_t i = 0; i < lq; ++i) {
            const float* qi = query + i * dim;
            float dot = 0.f;
            for (int64_t k = 0; k < dim; ++k) dot += qi[k] * token[k];
            best[i] = std::max(best[i], dot);
          }
        }
        float total = 0.f;
        for (int64_t i = 0; i < lq; ++i) total += best[i];
        // lq == 0 would give 0; an empty document gives -inf through the sum.
        p.scores[q * n_out + out] = (end == begin) ? -std::numeric_limits<float>::infinity() : total;
      }
    }
  }
}

}  // namespace ce
