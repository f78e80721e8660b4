// Unpacks addresses and sizes for the PLAID family; no checks here (ops/plaid.py does them).
#include <pybind11/pybind11.h>

#include "bindings/params.h"

namespace py = pybind11;

void bind_plaid(py::module_& m) {
  m.def(
      "candidates_mark",
      [](uintptr_t scores, uintptr_t ivf, uintptr_t ivf_offsets, uintptr_t subset,
         uintptr_t bitmap, uintptr_t counts, int64_t n_queries, int64_t n_centroids,
         int64_t query_len, int64_t nprobe, int64_t n_docs, int64_t bitmap_words) {
        const auto p = ce_bind::candidates_params(scores, ivf, ivf_offsets, subset, bitmap, counts, 0, 0,
                                                  n_queries, n_centroids, query_len, nprobe, n_docs,
                                                  bitmap_words);
        py::gil_scoped_release release;
        ce::candidates_mark_cpu(p);
      },
      py::arg("scores"), py::arg("ivf"), py::arg("ivf_offsets"), py::arg("subset"),
      py::arg("bitmap"), py::arg("counts"), py::arg("n_queries"), py::arg("n_centroids"),
      py::arg("query_len"), py::arg("nprobe"), py::arg("n_docs"), py::arg("bitmap_words"));
  m.def(
      "candidates_collect",
      [](uintptr_t bitmap, uintptr_t out_offsets, uintptr_t out_ids, int64_t n_queries,
         int64_t n_docs, int64_t bitmap_words) {
        const auto p = ce_bind::candidates_params(0, 0, 0, 0, bitmap, 0, out_offsets, out_ids, n_queries,
                                                  0, 0, 0, n_docs, bitmap_words);
        py::gil_scoped_release release;
        ce::candidates_collect_cpu(p);
      },
      py::arg("bitmap"), py::arg("out_offsets"), py::arg("out_ids"), py::arg("n_queries"),
      py::arg("n_docs"), py::arg("bitmap_words"));
  m.def(
      "centroid_interaction",
      [](uintptr_t scores, uintptr_t doc_codes, uintptr_t doc_offsets, uintptr_t candidates,
         uintptr_t cand_offsets, uintptr_t keep, uintptr_t approx, uintptr_t out_offsets,
         uintptr_t out_scores, uintptr_t out_ids, int64_t n_queries, int64_t n_centroids,
         int64_t query_len, int64_t n_docs, int64_t ndocs, float threshold, int prune) {
        const auto p = ce_bind::centroid_interaction_params(
            scores, doc_codes, doc_offsets, candidates, cand_offsets, keep, approx, out_offsets, out_scores,
            out_ids, n_queries, n_centroids, query_len, n_docs, ndocs, threshold, prune);
        py::gil_scoped_release release;
        ce::centroid_interaction_cpu(p);
      },
      py::arg("scores"), py::arg("doc_codes"), py::arg("doc_offsets"), py::arg("candidates"),
      py::arg("cand_offsets"), py::arg("keep"), py::arg("approx"), py::arg("out_offsets"),
      py::arg("out_scores"), py::arg("out_ids"), py::arg("n_queries"), py::arg("n_centroids"),
      py::arg("query_len"), py::arg("n_docs"), py::arg("ndocs"), py::arg("threshold"),
      py::arg("prune"));
  m.def(
      "centroid_scores",
      [](uintptr_t centroids, uintptr_t queries, uintptr_t scores, int64_t n_queries, int64_t n_centroids,
         int64_t query_len, int64_t dim) {
        const ce::CentroidScoresParams p{ce_bind::ptr<const float>(centroids), ce_bind::ptr<const float>(queries),
                                         ce_bind::ptr<float>(scores), n_queries, n_centroids, query_len, dim};
        py::gil_scoped_release release;
        ce::centroid_scores_cpu(p);
      },
      py::arg("centroids"), py::arg("queries"), py::arg("scores"), py::arg("n_queries"),
      py::arg("n_centroids"), py::arg("query_len"), py::arg("dim"));
}
