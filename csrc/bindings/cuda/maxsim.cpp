// Unpacks addresses, sizes and the stream for the CUDA MaxSim family: the twin of
// bindings/cpu/maxsim.cpp plus `stream` (top-k on CUDA is composed in ops/maxsim.py).
#include <pybind11/pybind11.h>

#include "bindings/cuda/check.h"
#include "bindings/params.h"

namespace py = pybind11;

void bind_maxsim(py::module_& m) {
  m.def(
      "maxsim",
      [](uintptr_t queries, uintptr_t doc_emb, uintptr_t doc_offsets, uintptr_t doc_subset,
         uintptr_t scores, int64_t n_queries, int64_t query_len, int64_t dim, int64_t n_docs,
         int64_t n_subset, int doc_dtype, uintptr_t stream) {
        ce_launch_cuda(&ce::maxsim_cuda,
                       ce_bind::maxsim_params(queries, doc_emb, doc_offsets, doc_subset, scores, n_queries,
                                              query_len, dim, n_docs, n_subset, doc_dtype),
                       stream, "maxsim");
      },
      py::arg("queries"), py::arg("doc_emb"), py::arg("doc_offsets"), py::arg("doc_subset"),
      py::arg("scores"), py::arg("n_queries"), py::arg("query_len"), py::arg("dim"),
      py::arg("n_docs"), py::arg("n_subset"), py::arg("doc_dtype"), py::arg("stream"));
}
