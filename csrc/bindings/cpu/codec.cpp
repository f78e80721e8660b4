// Unpacks addresses and sizes for the codec family; no checks here (ops/codec.py does them).
#include <pybind11/pybind11.h>

#include "bindings/params.h"

namespace py = pybind11;

void bind_codec(py::module_& m) {
  m.def(
      "argmax_rows",
      [](uintptr_t sims, int64_t rows, int64_t cols, uintptr_t out) {
        py::gil_scoped_release release;
        ce::argmax_rows_cpu(reinterpret_cast<const float*>(sims), rows, cols,
                            reinterpret_cast<int32_t*>(out));
      },
      py::arg("sims"), py::arg("rows"), py::arg("cols"), py::arg("out"));
  m.def(
      "probed_argmax",
      [](uintptr_t emb, uintptr_t coarse_scores, uintptr_t cell_data, uintptr_t cell_offsets,
         uintptr_t cell_ids, uintptr_t out, int64_t rows, int64_t dim, int64_t n_cells, int nprobe,
         uintptr_t cell_data_bf16, uintptr_t emb_bf16, uintptr_t centroids) {
        ce::ProbedArgmaxParams p{reinterpret_cast<const float*>(emb),
                                 reinterpret_cast<const float*>(coarse_scores),
                                 reinterpret_cast<const float*>(cell_data),
                                 reinterpret_cast<const int64_t*>(cell_offsets),
                                 reinterpret_cast<const int32_t*>(cell_ids),
                                 reinterpret_cast<int32_t*>(out), rows, dim, n_cells, nprobe,
                                 reinterpret_cast<const uint16_t*>(cell_data_bf16),
                                 reinterpret_cast<const uint16_t*>(emb_bf16),
                                 reinterpret_cast<const float*>(centroids)};
        py::gil_scoped_release release;
        ce::probed_argmax_cpu(p);
      },
      py::arg("emb"), py::arg("coarse_scores"), py::arg("cell_data"), py::arg("cell_offsets"),
      py::arg("cell_ids"), py::arg("out"), py::arg("rows"), py::arg("dim"), py::arg("n_cells"),
      py::arg("nprobe"), py::arg("cell_data_bf16"), py::arg("emb_bf16"), py::arg("centroids"));
  m.def("probed_bf16_available", &ce::probed_bf16_available);
  m.def(
      "accumulate_rows",
      [](uintptr_t x, uintptr_t codes, int64_t rows, int64_t dim, uintptr_t sums, int64_t n_sums) {
        py::gil_scoped_release release;
        ce::accumulate_rows_cpu(reinterpret_cast<const float*>(x), reinterpret_cast<const int32_t*>(codes), rows,
                                dim, reinterpret_cast<float*>(sums), n_sums);
      },
      py::arg("x"), py::arg("codes"), py::arg("rows"), py::arg("dim"), py::arg("sums"), py::arg("n_sums"));
  m.def(
      "quantize_residuals",
      [](uintptr_t emb, uintptr_t centroids, uintptr_t codes, uintptr_t bucket_cutoffs,
         uintptr_t codebook, uintptr_t residuals, uintptr_t inv_norms, int64_t n_tokens,
         int64_t dim, int64_t n_centroids, int nbits, int emb_dtype) {
        const auto p = ce_bind::quantize_params(emb, centroids, codes, bucket_cutoffs, codebook, residuals,
                                                inv_norms, n_tokens, dim, n_centroids, nbits, emb_dtype);
        py::gil_scoped_release release;
        ce::quantize_residuals_cpu(p);
      },
      py::arg("emb"), py::arg("centroids"), py::arg("codes"), py::arg("bucket_cutoffs"),
      py::arg("codebook"), py::arg("residuals"), py::arg("inv_norms"), py::arg("n_tokens"),
      py::arg("dim"), py::arg("n_centroids"), py::arg("nbits"), py::arg("emb_dtype"));
  m.def(
      "decompress_residuals",
      [](uintptr_t codes, uintptr_t residuals, uintptr_t centroids, uintptr_t codebook,
         uintptr_t inv_norms, uintptr_t out, int64_t n_tokens, int64_t dim, int64_t n_centroids,
         int nbits, bool normalize, int out_dtype) {
        const auto p = ce_bind::decompress_params(codes, residuals, centroids, codebook, inv_norms, out,
                                                  n_tokens, dim, n_centroids, nbits, normalize, out_dtype);
        py::gil_scoped_release release;
        ce::decompress_residuals_cpu(p);
      },
      py::arg("codes"), py::arg("residuals"), py::arg("centroids"), py::arg("codebook"),
      py::arg("inv_norms"), py::arg("out"), py::arg("n_tokens"), py::arg("dim"),
      py::arg("n_centroids"), py::arg("nbits"), py::arg("normalize"), py::arg("out_dtype"));
}
