// Unpacks addresses, sizes and the stream for the CUDA MaxSim family: the twin of
// bindings/cpu/maxsim.cpp plus `stream` and the optional device status word (top-k on CUDA
// is composed in ops/maxsim.py), and the checked op's device-side argument checks.
#include <pybind11/pybind11.h>

#include "bindings/cuda/check.h"
#include "bindings/params.h"

namespace py = pybind11;

void bind_maxsim(py::module_& m) {
  m.def(
      "maxsim",
      [](uintptr_t queries, uintptr_t doc_emb, uintptr_t doc_offsets, uintptr_t doc_subset,
         uintptr_t scores, int64_t n_queries, int64_t query_len, int64_t dim, int64_t n_docs,
         int64_t n_subset, int doc_dtype, uintptr_t stream, uintptr_t status) {
        ce::MaxSimParams p = ce_bind::maxsim_params(queries, doc_emb, doc_offsets, doc_subset, scores, n_queries,
                                                    query_len, dim, n_docs, n_subset, doc_dtype);
        p.status = ce_bind::ptr<int>(status);
        ce_launch_cuda(&ce::maxsim_cuda, p, stream, "maxsim");
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
        ce::MaxSimParams p = ce_bind::maxsim_params(queries, 0, doc_offsets, doc_subset, 0, n_queries, query_len,
                                                    dim, n_docs, n_subset, static_cast<int>(ce::DType::F32));
        p.status = ce_bind::ptr<int>(status);
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
