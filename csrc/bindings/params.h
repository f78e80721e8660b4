// The params structs of the kernel contracts (csrc/common/*.h) from the integer argument lists
// the Python ops pass (addresses as uintptr_t), shared by bindings/cpu and bindings/cuda: both
// modules take the same arguments (CUDA adds `stream` last), so each struct is assembled once.
// Unpacking only: no checks (ops/<family>.py does them).
// Deliberate per-device twins: bindings/cpu/<family>.cpp and bindings/cuda/<family>.cpp declare
// the same lambda parameters and py::arg lists (CUDA's end with `stream`), one module each.
#pragma once
#include <cstdint>

#include "common/codec.h"
#include "common/dtype.h"
#include "common/lut_maxsim.h"
#include "common/maxsim.h"
#include "common/plaid.h"

namespace ce_bind {

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

inline ce::MaxSimParams maxsim_params(uintptr_t queries, uintptr_t doc_emb, uintptr_t doc_offsets,
                                      uintptr_t doc_subset, uintptr_t scores, int64_t n_queries,
                                      int64_t query_len, int64_t dim, int64_t n_docs, int64_t n_subset,
                                      int doc_dtype) {
  return ce::MaxSimParams{ptr<const float>(queries), ptr<const void>(doc_emb),
                          ptr<const int64_t>(doc_offsets), ptr<const int64_t>(doc_subset),
                          ptr<float>(scores), n_queries, query_len, dim, n_docs, n_subset,
                          static_cast<ce::DType>(doc_dtype)};
}

inline ce::LutMaxSimParams lut_maxsim_params(uintptr_t queries, uintptr_t scores, uintptr_t codes,
                                             uintptr_t residuals, uintptr_t inv_norms, uintptr_t doc_offsets,
                                             uintptr_t candidates, uintptr_t cand_offsets,
                                             uintptr_t codebook, uintptr_t lut,
                                             uintptr_t out, int64_t n_queries, int64_t query_len, int64_t dim,
                                             int64_t n_centroids, int64_t n_tokens, int64_t n_docs,
                                             int64_t n_candidates, int nbits) {
  return ce::LutMaxSimParams{ptr<const float>(queries), ptr<const float>(scores), ptr<const int32_t>(codes),
                             ptr<const uint8_t>(residuals), ptr<const uint16_t>(inv_norms),
                             ptr<const int64_t>(doc_offsets), ptr<const int64_t>(candidates),
                             ptr<const int64_t>(cand_offsets), ptr<const float>(codebook), ptr<float>(lut),
                             ptr<float>(out),
                             n_queries, query_len, dim, n_centroids, n_tokens, n_docs, n_candidates, nbits};
}

inline ce::CandidatesParams candidates_params(uintptr_t scores, uintptr_t ivf, uintptr_t ivf_offsets,
                                              uintptr_t subset, uintptr_t bitmap, uintptr_t counts,
                                              uintptr_t out_offsets, uintptr_t out_ids, int64_t n_queries,
                                              int64_t n_centroids, int64_t query_len, int64_t nprobe,
                                              int64_t n_docs, int64_t bitmap_words) {
  return ce::CandidatesParams{ptr<const float>(scores), ptr<const int32_t>(ivf),
                              ptr<const int64_t>(ivf_offsets), ptr<const uint8_t>(subset),
                              ptr<uint64_t>(bitmap), ptr<int64_t>(counts),
                              ptr<const int64_t>(out_offsets), ptr<int32_t>(out_ids),
                              n_queries, n_centroids, query_len, nprobe, n_docs, bitmap_words};
}

inline ce::CentroidInteractionParams centroid_interaction_params(
    uintptr_t scores, uintptr_t doc_codes, uintptr_t doc_offsets, uintptr_t candidates, uintptr_t cand_offsets,
    uintptr_t keep, uintptr_t approx, uintptr_t out_offsets, uintptr_t out_scores, uintptr_t out_ids,
    int64_t n_queries, int64_t n_centroids, int64_t query_len, int64_t n_docs, int64_t ndocs, float threshold,
    int prune) {
  return ce::CentroidInteractionParams{
      ptr<const float>(scores), ptr<const int32_t>(doc_codes), ptr<const int64_t>(doc_offsets),
      ptr<const int32_t>(candidates), ptr<const int64_t>(cand_offsets), ptr<uint8_t>(keep), ptr<float>(approx),
      ptr<const int64_t>(out_offsets), ptr<float>(out_scores), ptr<int32_t>(out_ids),
      n_queries, n_centroids, query_len, n_docs, ndocs, threshold, prune};
}

inline ce::QuantizeParams quantize_params(uintptr_t emb, uintptr_t centroids, uintptr_t codes,
                                          uintptr_t bucket_cutoffs, uintptr_t codebook, uintptr_t residuals,
                                          uintptr_t inv_norms, int64_t n_tokens, int64_t dim, int64_t n_centroids,
                                          int nbits, int emb_dtype) {
  return ce::QuantizeParams{ptr<const void>(emb), ptr<const float>(centroids), ptr<const int32_t>(codes),
                            ptr<const float>(bucket_cutoffs), ptr<const float>(codebook),
                            ptr<uint8_t>(residuals), ptr<uint16_t>(inv_norms), n_tokens, dim, n_centroids,
                            nbits, static_cast<ce::DType>(emb_dtype)};
}

inline ce::DecompressParams decompress_params(uintptr_t codes, uintptr_t residuals, uintptr_t centroids,
                                              uintptr_t codebook, uintptr_t inv_norms, uintptr_t out,
                                              int64_t n_tokens, int64_t dim, int64_t n_centroids, int nbits,
                                              bool normalize, int out_dtype) {
  return ce::DecompressParams{ptr<const int32_t>(codes), ptr<const uint8_t>(residuals),
                              ptr<const float>(centroids), ptr<const float>(codebook),
                              ptr<const uint16_t>(inv_norms), ptr<void>(out), n_tokens, dim, n_centroids,
                              nbits, normalize, static_cast<ce::DType>(out_dtype)};
}

}  // namespace ce_bind
