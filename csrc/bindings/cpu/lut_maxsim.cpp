// Unpacks addresses and sizes for lut_maxsim; no checks here (ops/lut_maxsim.py does them).
#include <pybind11/pybind11.h>

#include "bindings/params.h"

namespace py = pybind11;

void bind_lut_maxsim(py::module_& m) {
  m.def(
      "lut_maxsim",
      [](uintptr_t queries, uintptr_t scores, uintptr_t codes, uintptr_t residuals,
         uintptr_t inv_norms, uintptr_t doc_offsets, uintptr_t candidates, uintptr_t cand_offsets,
         uintptr_t codebook,
         uintptr_t lut, uintptr_t out, int64_t n_queries, int64_t query_len, int64_t dim,
         int64_t n_centroids, int64_t n_tokens, int64_t n_docs, int64_t n_candidates, int nbits) {
        const auto p = ce_bind::lut_maxsim_params(queries, scores, codes, residuals, inv_norms, doc_offsets,
                                                  candidates, cand_offsets, codebook, lut, out, n_queries,
                                                  query_len, dim, n_centroids, n_tokens, n_docs, n_candidates, nbits);
        py::gil_scoped_release release;
        ce::lut_maxsim_cpu(p);
      },
      py::arg("queries"), py::arg("scores"), py::arg("codes"), py::arg("residuals"),
      py::arg("inv_norms"), py::arg("doc_offsets"), py::arg("candidates"),
      py::arg("cand_offsets"), py::arg("codebook"), py::arg("lut"), py::arg("out"), py::arg("n_queries"),
      py::arg("query_len"), py::arg("dim"), py::arg("n_centroids"), py::arg("n_tokens"),
      py::arg("n_docs"), py::arg("n_candidates"), py::arg("nbits"));
  m.def("lut_workspace_floats", &ce::lut_workspace_floats_cpu, py::arg("dim"), py::arg("nbits"),
        py::arg("query_len"));
}
