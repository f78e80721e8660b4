// Unpacks addresses, sizes and the stream for the CUDA codec family: the twin of
// bindings/cpu/codec.cpp plus `stream`. No checks here (ops/codec.py does them).
#include <pybind11/pybind11.h>

#include "bindings/cuda/check.h"
#include "bindings/params.h"

namespace py = pybind11;

void bind_codec(py::module_& m) {
  m.def(
      "quantize_residuals",
      [](uintptr_t emb, uintptr_t centroids, uintptr_t codes, uintptr_t bucket_cutoffs,
         uintptr_t codebook, uintptr_t residuals, uintptr_t inv_norms, int64_t n_tokens,
         int64_t dim, int64_t n_centroids, int nbits, int emb_dtype, uintptr_t stream) {
        const auto p = ce_bind::quantize_params(emb, centroids, codes, bucket_cutoffs, codebook, residuals,
                                                inv_norms, n_tokens, dim, n_centroids, nbits, emb_dtype);
        ce_launch_cuda(&ce::quantize_residuals_cuda, p, stream, "quantize_residuals");
      },
      py::arg("emb"), py::arg("centroids"), py::arg("codes"), py::arg("bucket_cutoffs"),
      py::arg("codebook"), py::arg("residuals"), py::arg("inv_norms"), py::arg("n_tokens"),
      py::arg("dim"), py::arg("n_centroids"), py::arg("nbits"), py::arg("emb_dtype"), py::arg("stream"));
  m.def(
      "decompress_residuals",
      [](uintptr_t codes, uintptr_t residuals, uintptr_t centroids, uintptr_t codebook,
         uintptr_t inv_norms, uintptr_t out, int64_t n_tokens, int64_t dim, int64_t n_centroids,
         int nbits, bool normalize, int out_dtype, uintptr_t stream) {
        const auto p = ce_bind::decompress_params(codes, residuals, centroids, codebook, inv_norms, out,
                                                  n_tokens, dim, n_centroids, nbits, normalize, out_dtype);
        ce_launch_cuda(&ce::decompress_residuals_cuda, p, stream, "decompress_residuals");
      },
      py::arg("codes"), py::arg("residuals"), py::arg("centroids"), py::arg("codebook"),
      py::arg("inv_norms"), py::arg("out"), py::arg("n_tokens"), py::arg("dim"),
      py::arg("n_centroids"), py::arg("nbits"), py::arg("normalize"), py::arg("out_dtype"), py::arg("stream"));
}
