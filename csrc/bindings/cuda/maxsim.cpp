// Unpacks addresses, sizes and the stream for the CUDA MaxSim family.
#include <pybind11/pybind11.h>

#include "bindings/cuda/check.h"
#include "common/maxsim.h"

namespace py = pybind11;

void bind_maxsim(py::module_& m) {
  m.def(
      "maxsim",
      [](uintptr_t queries, uintptr_t doc_emb, uintptr_t doc_offsets, uintptr_t doc_subset,
         uintptr_t scores, int64_t n_queries, int64_t query_len, int64_t dim, int64_t n_docs,
         int64_t n_subset, int doc_dtype, uintptr_t stream, uintptr_t status) {
        ce::MaxSimParams p{reinterpret_cast<const float*>(queries),
                           reinterpret_cast<const void*>(doc_emb),
                           reinterpret_cast<const int64_t*>(doc_offsets),
                           reinterpret_cast<const int64_t*>(doc_subset),
                           reinterpret_cast<float*>(scores),
                           n_queries, query_len, dim, n_docs, n_subset,
                           static_cast<ce::DType>(doc_dtype), reinterpret_cast<int*>(status)};
        int err;
        {
          py::gil_scoped_release release;
          err = ce::maxsim_cuda(p, reinterpret_cast<ce::Stream>(stream));
        }
        ce_raise_on_cuda_error(err, "maxsim");
      },
      py::arg("queries"), py::arg("doc_emb"), py::arg("doc_offsets"), py::arg("doc_subset"),
      py::arg("scores"), py::arg("n_queries"), py::arg("query_len"), py::arg("dim"),
      py::arg("n_docs"), py::arg("n_subset"), py::arg("doc_dtype"), py::arg("stream"),
      py::arg("status") = 0);
  m.def(
      "maxsim_check",
      [](uintptr_t queries, uintptr_t doc_offsets, uintptr_t doc_subset, int64_t n_queries,
         int64_t query_len, int64_t dim, int64_t n_docs, int64_t n_subset, int64_t n_rows,
         uintptr_t status, uintptr_t stream) {
        ce::MaxSimParams p{reinterpret_cast<const float*>(queries), nullptr,
                           reinterpret_cast<const int64_t*>(doc_offsets),
                           reinterpret_cast<const int64_t*>(doc_subset), nullptr,
                           n_queries, query_len, dim, n_docs, n_subset, ce::DType::F32,
                           reinterpret_cast<int*>(status)};
        int err;
        {
          py::gil_scoped_release release;
          err = ce::maxsim_check_cuda(p, n_rows, reinterpret_cast<ce::Stream>(stream));
        }
        ce_raise_on_cuda_error(err, "maxsim_check");
      },
      "The checked maxsim op's argument checks on the device: sets *status to "
      "kMaxSimBadInput or 0 (csrc/common/maxsim.h).",
      py::arg("queries"), py::arg("doc_offsets"), py::arg("doc_subset"), py::arg("n_queries"),
      py::arg("query_len"), py::arg("dim"), py::arg("n_docs"), py::arg("n_subset"),
      py::arg("n_rows"), py::arg("status"), py::arg("stream"));
}
