// Unpacks addresses, sizes and the stream for the CUDA PLAID family; no checks here
// (ops/plaid.py does them). Same argument lists as bindings/cpu/plaid.cpp plus `stream`.
#include <pybind11/pybind11.h>

#include "bindings/cuda/check.h"
#include "bindings/params.h"

namespace py = pybind11;

void bind_plaid(py::module_& m) {
  m.attr("plaid_max_picks") = ce::kCudaMaxPicks;
  m.attr("plaid_max_keep") = ce::kCudaMaxKeep;
  m.def(
      "candidates_mark",
      [](uintptr_t scores, uintptr_t ivf, uintptr_t ivf_offsets, uintptr_t subset,
         uintptr_t bitmap, uintptr_t counts, int64_t n_queries, int64_t n_centroids,
         int64_t query_len, int64_t nprobe, int64_t n_docs, int64_t bitmap_words,
         uintptr_t stream) {
        const auto p = ce_bind::candidates_params(scores, ivf, ivf_offsets, subset, bitmap, counts, 0, 0,
                                                  n_queries, n_centroids, query_len, nprobe, n_docs,
                                                  bitmap_words);
        ce_launch_cuda(&ce::candidates_mark_cuda, p, stream, "candidates_mark");
      },
      py::arg("scores"), py::arg("ivf"), py::arg("ivf_offsets"), py::arg("subset"),
      py::arg("bitmap"), py::arg("counts"), py::arg("n_queries"), py::arg("n_centroids"),
      py::arg("query_len"), py::arg("nprobe"), py::arg("n_docs"), py::arg("bitmap_words"),
      py::arg("stream"));
  m.def(
      "candidates_collect",
      [](uintptr_t bitmap, uintptr_t out_offsets, uintptr_t out_ids, int64_t n_queries,
         int64_t n_docs, int64_t bitmap_words, uintptr_t stream) {
        const auto p = ce_bind::candidates_params(0, 0, 0, 0, bitmap, 0, out_offsets, out_ids, n_queries,
                                                  0, 0, 0, n_docs, bitmap_words);
        ce_launch_cuda(&ce::candidates_collect_cuda, p, stream, "candidates_collect");
      },
      py::arg("bitmap"), py::arg("out_offsets"), py::arg("out_ids"), py::arg("n_queries"),
      py::arg("n_docs"), py::arg("bitmap_words"), py::arg("stream"));
  m.def(
      "centroid_interaction",
      [](uintptr_t scores, uintptr_t doc_codes, uintptr_t doc_offsets, uintptr_t candidates,
         uintptr_t cand_offsets, uintptr_t keep, uintptr_t approx, uintptr_t out_offsets,
         uintptr_t out_scores, uintptr_t out_ids, int64_t n_queries, int64_t n_centroids,
         int64_t query_len, int64_t n_docs, int64_t ndocs, float threshold, int prune,
         uintptr_t stream) {
        const auto p = ce_bind::centroid_interaction_params(
            scores, doc_codes, doc_offsets, candidates, cand_offsets, keep, approx, out_offsets, out_scores,
            out_ids, n_queries, n_centroids, query_len, n_docs, ndocs, threshold, prune);
        ce_launch_cuda(&ce::centroid_interaction_cuda, p, stream, "centroid_interaction");
      },
      py::arg("scores"), py::arg("doc_codes"), py::arg("doc_offsets"), py::arg("candidates"),
      py::arg("cand_offsets"), py::arg("keep"), py::arg("approx"), py::arg("out_offsets"),
      py::arg("out_scores"), py::arg("out_ids"), py::arg("n_queries"), py::arg("n_centroids"),
      py::arg("query_len"), py::arg("n_docs"), py::arg("ndocs"), py::arg("threshold"),
      py::arg("prune"), py::arg("stream"));
}
