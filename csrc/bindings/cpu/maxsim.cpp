// Unpacks addresses and sizes for the MaxSim family; no checks here (ops/maxsim.py does them).
// Both functions return the kernel's status (0, or ce::kMaxSimNonFinite).
#include <pybind11/pybind11.h>

#include "bindings/params.h"

namespace py = pybind11;

void bind_maxsim(py::module_& m) {
  m.def(
      "maxsim",
      [](uintptr_t queries, uintptr_t doc_emb, uintptr_t doc_offsets, uintptr_t doc_subset,
         uintptr_t scores, int64_t n_queries, int64_t query_len, int64_t dim, int64_t n_docs,
         int64_t n_subset, int doc_dtype) {
        const auto p = ce_bind::maxsim_params(queries, doc_emb, doc_offsets, doc_subset, scores, n_queries,
                                              query_len, dim, n_docs, n_subset, doc_dtype);
        py::gil_scoped_release release;
        return ce::maxsim_cpu(p);
      },
      py::arg("queries"), py::arg("doc_emb"), py::arg("doc_offsets"), py::arg("doc_subset"),
      py::arg("scores"), py::arg("n_queries"), py::arg("query_len"), py::arg("dim"),
      py::arg("n_docs"), py::arg("n_subset"), py::arg("doc_dtype"));
  m.def(
      "maxsim_topk",
      [](uintptr_t queries, uintptr_t doc_emb, uintptr_t doc_offsets, uintptr_t doc_subset,
         int64_t n_queries, int64_t query_len, int64_t dim, int64_t n_docs, int64_t n_subset,
         int doc_dtype, int64_t k, uintptr_t top_scores, uintptr_t top_indices) {
        const ce::MaxSimTopkParams p{
            ce_bind::maxsim_params(queries, doc_emb, doc_offsets, doc_subset, 0, n_queries, query_len, dim,
                                   n_docs, n_subset, doc_dtype),
            k, ce_bind::ptr<float>(top_scores), ce_bind::ptr<int64_t>(top_indices)};
        py::gil_scoped_release release;
        return ce::maxsim_topk_cpu(p);
      },
      py::arg("queries"), py::arg("doc_emb"), py::arg("doc_offsets"), py::arg("doc_subset"),
      py::arg("n_queries"), py::arg("query_len"), py::arg("dim"), py::arg("n_docs"),
      py::arg("n_subset"), py::arg("doc_dtype"), py::arg("k"), py::arg("top_scores"),
      py::arg("top_indices"));
}
