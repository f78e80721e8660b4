// Unpacks addresses, sizes and the stream for the CUDA codec family: the twin of
// bindings/cpu/codec.cpp plus `stream`. No checks here (ops/codec.py does them).
#include <pybind11/pybind11.h>

#include "bindings/cuda/check.h"
#include "common/codec.h"

namespace py = pybind11;

void bind_codec(py::module_& m) {
  m.def(
      "quantize_residuals",
      [](uintptr_t emb, uintptr_t centroids, uintptr_t codes, uintptr_t bucket_cutoffs,
         uintptr_t bucket_weights, uintptr_t residuals, uintptr_t inv_norms, int64_t n_tokens,
         int64_t dim, int64_t n_centroids, int nbits, int emb_dtype, uintptr_t stream) {
        ce::QuantizeParams p{reinterpret_cast<const void*>(emb),
                             reinterpret_cast<const float*>(centroids),
                             reinterpret_cast<const int32_t*>(codes),
                             reinterpret_cast<const float*>(bucket_cutoffs),
                             reinterpret_cast<const float*>(bucket_weights),
                             reinterpret_cast<uint8_t*>(residuals),
                             reinterpret_cast<uint16_t*>(inv_norms),
                             n_tokens, dim, n_centroids, nbits,
                             static_cast<ce::DType>(emb_dtype)};
        int err;
        {
          py::gil_scoped_release release;
          err = ce::quantize_residuals_cuda(p, reinterpret_cast<ce::Stream>(stream));
        }
        ce_raise_on_cuda_error(err, "quantize_residuals");
      },
      py::arg("emb"), py::arg("centroids"), py::arg("codes"), py::arg("bucket_cutoffs"),
      py::arg("bucket_weights"), py::arg("residuals"), py::arg("inv_norms"), py::arg("n_tokens"),
      py::arg("dim"), py::arg("n_centroids"), py::arg("nbits"), py::arg("emb_dtype"), py::arg("stream"));
  m.def(
      "decompress_residuals",
      [](uintptr_t codes, uintptr_t residuals, uintptr_t centroids, uintptr_t bucket_weights,
         uintptr_t inv_norms, uintptr_t out, int64_t n_tokens, int64_t dim, int64_t n_centroids,
         int nbits, bool normalize, int out_dtype, uintptr_t stream) {
        ce::DecompressParams p{reinterpret_cast<const int32_t*>(codes),
                               reinterpret_cast<const uint8_t*>(residuals),
                               reinterpret_cast<const float*>(centroids),
                               reinterpret_cast<const float*>(bucket_weights),
                               reinterpret_cast<const uint16_t*>(inv_norms),
                               reinterpret_cast<void*>(out),
                               n_tokens, dim, n_centroids, nbits, normalize,
                               static_cast<ce::DType>(out_dtype)};
        int err;
        {
          py::gil_scoped_release release;
          err = ce::decompress_residuals_cuda(p, reinterpret_cast<ce::Stream>(stream));
        }
        ce_raise_on_cuda_error(err, "decompress_residuals");
      },
      py::arg("codes"), py::arg("residuals"), py::arg("centroids"), py::arg("bucket_weights"),
      py::arg("inv_norms"), py::arg("out"), py::arg("n_tokens"), py::arg("dim"),
      py::arg("n_centroids"), py::arg("nbits"), py::arg("normalize"), py::arg("out_dtype"), py::arg("stream"));
}
