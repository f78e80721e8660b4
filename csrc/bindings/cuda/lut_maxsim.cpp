// Unpacks addresses, sizes and the stream for CUDA lut_maxsim: the twin of
// bindings/cpu/lut_maxsim.cpp plus `stream`. No checks here (ops/lut_maxsim.py does them).
#include <pybind11/pybind11.h>

#include "bindings/cuda/check.h"
#include "common/lut_maxsim.h"

namespace py = pybind11;

void bind_lut_maxsim(py::module_& m) {
  m.def(
      "lut_maxsim",
      [](uintptr_t queries, uintptr_t scores, uintptr_t codes, uintptr_t residuals,
         uintptr_t inv_norms, uintptr_t doc_offsets, uintptr_t candidates, uintptr_t cand_offsets,
         uintptr_t bucket_weights,
         uintptr_t lut, uintptr_t out, int64_t n_queries, int64_t query_len, int64_t dim,
         int64_t n_centroids, int64_t n_tokens, int64_t n_docs, int64_t n_candidates, int nbits, uintptr_t stream) {
        ce::LutMaxSimParams p{reinterpret_cast<const float*>(queries),
                              reinterpret_cast<const float*>(scores),
                              reinterpret_cast<const int32_t*>(codes),
                              reinterpret_cast<const uint8_t*>(residuals),
                              reinterpret_cast<const uint16_t*>(inv_norms),
                              reinterpret_cast<const int64_t*>(doc_offsets),
                              reinterpret_cast<const int64_t*>(candidates),
                              reinterpret_cast<const int64_t*>(cand_offsets),
                              reinterpret_cast<const float*>(bucket_weights),
                              reinterpret_cast<float*>(lut),
                              reinterpret_cast<float*>(out),
                              n_queries, query_len, dim, n_centroids, n_tokens, n_docs,
                              n_candidates, nbits};
        int err;
        {
          py::gil_scoped_release release;
          err = ce::lut_maxsim_cuda(p, reinterpret_cast<ce::Stream>(stream));
        }
        ce_raise_on_cuda_error(err, "lut_maxsim");
      },
      py::arg("queries"), py::arg("scores"), py::arg("codes"), py::arg("residuals"),
      py::arg("inv_norms"), py::arg("doc_offsets"), py::arg("candidates"),
      py::arg("cand_offsets"), py::arg("bucket_weights"), py::arg("lut"), py::arg("out"), py::arg("n_queries"),
      py::arg("query_len"), py::arg("dim"), py::arg("n_centroids"), py::arg("n_tokens"),
      py::arg("n_docs"), py::arg("n_candidates"), py::arg("nbits"), py::arg("stream"));
  m.def("lut_workspace_floats", &ce::lut_workspace_floats_cuda, py::arg("dim"), py::arg("nbits"),
        py::arg("query_len"));
}
