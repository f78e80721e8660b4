// C++ test driver of the CPU kernels, without Python: every dispatched SIMD path of maxsim,
// maxsim_topk, lut_maxsim and the residual codec against plain scalar references written here from the contracts
// (common/maxsim.h, common/lut_maxsim.h, common/codec.h). CI cross-compiles it for aarch64 and
// runs it under qemu (.ci/aarch64), once per ISA path (CE_ISA=scalar, then the best one).
//
// Inputs are small integers, so every sum is exact in fp32 and any path must match the
// reference bit for bit, whatever its summation order (tests/ops/test_maxsim.py does the same).
// Exit status 0 when every check passed; failures are printed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <vector>

#include "common/codec.h"
#include "common/dtype.h"
#include "common/isa.h"
#include "common/lut_maxsim.h"
#include "common/maxsim.h"

namespace {

int g_failures = 0;
int g_checks = 0;

void expect(bool ok, const char* what, long long a = 0, long long b = 0) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    if (g_failures <= 20) std::printf("FAIL %s (%lld, %lld)\n", what, a, b);
  }
}

constexpr float kInf = std::numeric_limits<float>::infinity();

// Small-integer values in [-3, 3]: exact in fp32, fp16 and bf16.
std::vector<float> small_ints(std::mt19937& rng, int64_t n) {
  std::uniform_int_distribution<int> pick(-3, 3);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(pick(rng));
  return v;
}

uint16_t float_to_bf16(float f) {  // exact for the small integers used here
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>(bits >> 16);
}

std::vector<int64_t> random_offsets(std::mt19937& rng, int64_t n_docs, int max_len) {
  std::uniform_int_distribution<int> len(0, max_len);
  std::vector<int64_t> offsets(n_docs + 1, 0);
  for (int64_t d = 0; d < n_docs; ++d) offsets[d + 1] = offsets[d] + (d % 5 == 3 ? 0 : len(rng));
  return offsets;
}

// score[q, d] = sum_i max_j <q_i, x_j>, -inf for an empty document (common/maxsim.h).
std::vector<float> reference_maxsim(const std::vector<float>& queries, const std::vector<float>& docs,
                                    const std::vector<int64_t>& offsets, const std::vector<int64_t>& subset,
                                    int64_t nq, int64_t lq, int64_t dim) {
  const int64_t n_out = static_cast<int64_t>(subset.size());
  std::vector<float> out(nq * n_out);
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t o = 0; o < n_out; ++o) {
      const int64_t d = subset[o];
      if (offsets[d + 1] == offsets[d]) {
        out[q * n_out + o] = -kInf;
        continue;
      }
      double total = 0;
      for (int64_t i = 0; i < lq; ++i) {
        double best = -kInf;
        for (int64_t t = offsets[d]; t < offsets[d + 1]; ++t) {
          double s = 0;
          for (int64_t k = 0; k < dim; ++k) s += double(queries[(q * lq + i) * dim + k]) * docs[t * dim + k];
          best = std::max(best, s);
        }
        total += best;
      }
      out[q * n_out + o] = static_cast<float>(total);
    }
  return out;
}

void test_maxsim(std::mt19937& rng, int64_t nq, int64_t lq, int64_t dim, int64_t n_docs, ce::DType dtype,
                 bool use_subset) {
  const std::vector<int64_t> offsets = random_offsets(rng, n_docs, 40);
  const int64_t n_tokens = offsets.back();
  const std::vector<float> queries = small_ints(rng, nq * lq * dim);
  const std::vector<float> docs = small_ints(rng, n_tokens * dim);
  std::vector<int64_t> subset;
  if (use_subset) {
    std::uniform_int_distribution<int64_t> doc(0, n_docs - 1);
    for (int64_t i = 0; i < n_docs + 3; ++i) subset.push_back(doc(rng));  // repeats allowed
  } else {
    for (int64_t d = 0; d < n_docs; ++d) subset.push_back(d);
  }
  std::vector<uint16_t> docs16(docs.size());
  for (size_t e = 0; e < docs.size(); ++e)
    docs16[e] = dtype == ce::DType::F16 ? ce::float_to_half(docs[e]) : float_to_bf16(docs[e]);
  const void* doc_emb = dtype == ce::DType::F32 ? static_cast<const void*>(docs.data()) : docs16.data();
  const int64_t n_out = static_cast<int64_t>(subset.size());
  const std::vector<float> expected = reference_maxsim(queries, docs, offsets, subset, nq, lq, dim);

  std::vector<float> scores(nq * n_out, 12345.f);
  ce::MaxSimParams p{queries.data(), doc_emb, offsets.data(), use_subset ? subset.data() : nullptr,
                     scores.data(), nq, lq, dim, n_docs, use_subset ? n_out : 0, dtype};
  expect(ce::maxsim_cpu(p) == 0, "maxsim status");
  for (int64_t e = 0; e < nq * n_out; ++e) expect(scores[e] == expected[e], "maxsim score", e, dim);

  // top-k: higher score first, then the lower document id; empty documents never returned.
  for (int64_t k : {int64_t{1}, int64_t{3}, n_out}) {
    std::vector<float> top_scores(nq * k);
    std::vector<int64_t> top_ids(nq * k);
    ce::MaxSimTopkParams tp{p, k, top_scores.data(), top_ids.data()};
    tp.scoring.scores = nullptr;
    expect(ce::maxsim_topk_cpu(tp) == 0, "maxsim_topk status");
    for (int64_t q = 0; q < nq; ++q) {
      std::vector<std::pair<float, int64_t>> hits;
      for (int64_t o = 0; o < n_out; ++o)
        if (expected[q * n_out + o] != -kInf) hits.push_back({expected[q * n_out + o], subset[o]});
      std::sort(hits.begin(), hits.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      for (int64_t i = 0; i < k; ++i) {
        const bool filled = i < static_cast<int64_t>(hits.size());
        expect(top_ids[q * k + i] == (filled ? hits[i].second : -1), "topk id", q, i);
        expect(top_scores[q * k + i] == (filled ? hits[i].first : -kInf), "topk score", q, i);
      }
    }
  }
}

void test_maxsim_reports_non_finite(std::mt19937& rng) {
  const int64_t nq = 2, lq = 5, dim = 33, n_docs = 9;
  std::vector<int64_t> offsets = random_offsets(rng, n_docs, 12);
  offsets[n_docs] = offsets[n_docs - 1] + 4;  // the last document is not empty
  const std::vector<float> queries = small_ints(rng, nq * lq * dim);
  std::vector<float> docs = small_ints(rng, offsets.back() * dim);
  docs[(offsets.back() - 2) * dim + 7] = std::nanf("");
  std::vector<float> scores(nq * n_docs);
  ce::MaxSimParams p{queries.data(), docs.data(), offsets.data(), nullptr, scores.data(),
                     nq, lq, dim, n_docs, 0, ce::DType::F32};
  expect(ce::maxsim_cpu(p) == ce::kMaxSimNonFinite, "maxsim flags NaN");
}

// An impossible top-k size must come back as std::bad_alloc (MemoryError in Python), not
// wrap around to a small buffer or abort inside a parallel region.
void test_maxsim_topk_impossible_size() {
  const float query = 1.f, doc = 1.f;
  const int64_t offsets[] = {0, 1};
  for (int64_t k : {int64_t{1} << 44, std::numeric_limits<int64_t>::max() / 4}) {
    float top_score = 0.f;
    int64_t top_id = 0;
    ce::MaxSimTopkParams tp{{&query, &doc, offsets, nullptr, nullptr, 1, 1, 1, 1, 0, ce::DType::F32},
                            k, &top_score, &top_id};
    bool threw = false;
    try {
      ce::maxsim_topk_cpu(tp);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    expect(threw, "maxsim_topk impossible k throws bad_alloc", k);
  }
}

// Bucket of dimension d of a token, from its packed residual bytes (common/codec.h layout).
int bucket_of(const uint8_t* packed, int64_t d, int nbits) {
  int bucket = 0;
  for (int b = 0; b < nbits; ++b) {
    const int64_t bit = d * nbits + b;  // position in the MSB-first stream
    bucket |= ((packed[bit / 8] >> (7 - bit % 8)) & 1) << b;
  }
  return bucket;
}

// Byte codebook [dim*nbits/8][256][8/nbits] of per-dimension tables weights [dim, 2^nbits]
// (what ops/codec.py byte_codebook builds): entry [p][v][j] = weights[p*k + j, bucket_j(v)].
std::vector<float> byte_codebook(const std::vector<float>& weights, int64_t dim, int nbits) {
  const int per_byte = 8 / nbits;
  const int64_t positions = dim * nbits / 8;
  std::vector<float> codebook(positions * 256 * per_byte);
  for (int64_t p = 0; p < positions; ++p)
    for (int v = 0; v < 256; ++v) {
      const uint8_t byte = static_cast<uint8_t>(v);
      for (int j = 0; j < per_byte; ++j)
        codebook[(p * 256 + v) * per_byte + j] = weights[((p * per_byte + j) << nbits) + bucket_of(&byte, j, nbits)];
    }
  return codebook;
}

void test_lut_maxsim(std::mt19937& rng, int64_t nq, int64_t lq, int64_t dim, int nbits, int64_t n_docs) {
  const int64_t n_centroids = 5;
  const std::vector<int64_t> offsets = random_offsets(rng, n_docs, 30);
  const int64_t n_tokens = offsets.back(), positions = dim * nbits / 8;
  const std::vector<float> queries = small_ints(rng, nq * lq * dim);
  const std::vector<float> scores = small_ints(rng, nq * n_centroids * lq);
  // Per-dimension bucket weights [dim, 2^nbits], every row different (common/codec.h).
  const std::vector<float> weights = small_ints(rng, dim << nbits);
  const std::vector<float> codebook = byte_codebook(weights, dim, nbits);
  std::vector<int32_t> codes(n_tokens);
  std::vector<uint8_t> residuals(n_tokens * positions);
  std::vector<uint16_t> inv_norms(n_tokens);
  std::uniform_int_distribution<int> code(0, n_centroids - 1), byte(0, 255), scale(0, 2);
  const float scales[] = {1.f, 0.5f, 2.f};
  for (auto& c : codes) c = code(rng);
  for (auto& r : residuals) r = static_cast<uint8_t>(byte(rng));
  for (auto& n : inv_norms) n = ce::float_to_half(scales[scale(rng)]);
  std::vector<int64_t> candidates;
  for (int64_t d = n_docs - 1; d >= 0; d -= 2) candidates.push_back(d);
  const int64_t n_cand = static_cast<int64_t>(candidates.size());

  std::vector<float> lut(nq * ce::lut_workspace_floats_cpu(dim, nbits, lq));
  std::vector<float> out(nq * n_cand, 12345.f);
  ce::LutMaxSimParams p{queries.data(), scores.data(), codes.data(), residuals.data(), inv_norms.data(),
                        offsets.data(), candidates.data(), /*cand_offsets=*/nullptr, codebook.data(), lut.data(), out.data(),
                        nq, lq, dim, n_centroids, n_tokens, n_docs, n_cand, nbits};
  ce::lut_maxsim_cpu(p);
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t m = 0; m < n_cand; ++m) {
      const int64_t d = candidates[m];
      double total = offsets[d + 1] == offsets[d] ? -kInf : 0;
      for (int64_t i = 0; i < lq && offsets[d + 1] > offsets[d]; ++i) {
        double best = -kInf;
        for (int64_t t = offsets[d]; t < offsets[d + 1]; ++t) {
          double s = scores[(q * n_centroids + codes[t]) * lq + i];
          for (int64_t k = 0; k < dim; ++k)
            s += double(queries[(q * lq + i) * dim + k]) *
                 weights[(k << nbits) + bucket_of(&residuals[t * positions], k, nbits)];
          best = std::max(best, s * ce::half_to_float(inv_norms[t]));
        }
        total += best;
      }
      expect(out[q * n_cand + m] == static_cast<float>(total), "lut_maxsim score", q * n_cand + m, dim);
    }
}

// Random codes in [0, n_centroids), then quantize_residuals_cpu (per-dimension buckets from
// `bucket_cutoffs`, or the nearest codeword when it is nullptr) and decompress_residuals_cpu
// (no renormalization) of `emb`.
struct Encoded {
  std::vector<int32_t> codes;
  std::vector<uint8_t> residuals;
  std::vector<uint16_t> inv_norms;
  std::vector<float> out;
};

Encoded encode_and_decode(std::mt19937& rng, const std::vector<float>& emb, const std::vector<float>& centroids,
                          const float* bucket_cutoffs, const std::vector<float>& codebook, int64_t n_tokens,
                          int64_t dim, int64_t n_centroids, int nbits) {
  Encoded e{std::vector<int32_t>(n_tokens), std::vector<uint8_t>(n_tokens * dim * nbits / 8),
            std::vector<uint16_t>(n_tokens), std::vector<float>(n_tokens * dim)};
  std::uniform_int_distribution<int> code(0, n_centroids - 1);
  for (auto& c : e.codes) c = code(rng);
  ce::QuantizeParams qp{emb.data(), centroids.data(), e.codes.data(), bucket_cutoffs, codebook.data(),
                        e.residuals.data(), e.inv_norms.data(), n_tokens, dim, n_centroids, nbits, ce::DType::F32};
  ce::quantize_residuals_cpu(qp);
  ce::DecompressParams dp{e.codes.data(), e.residuals.data(), centroids.data(), codebook.data(), nullptr,
                          e.out.data(), n_tokens, dim, n_centroids, nbits, /*normalize=*/false, ce::DType::F32};
  ce::decompress_residuals_cpu(dp);
  return e;
}

// quantize_residuals_cpu + decompress_residuals_cpu with per-dimension tables (distinct rows):
// buckets, decoded values and stored inverse norms against the contract (common/codec.h).
// Values are multiples of 1/2, so residuals, comparisons and norms are exact.
void test_codec_per_dim(std::mt19937& rng, int64_t dim, int nbits, int64_t n_tokens) {
  const int64_t n_centroids = 5, levels = int64_t{1} << nbits, row_bytes = dim * nbits / 8;
  std::vector<float> emb = small_ints(rng, n_tokens * dim), centroids = small_ints(rng, n_centroids * dim);
  for (auto& x : emb) x *= 0.5f;
  std::vector<float> cutoffs = small_ints(rng, dim * (levels - 1));
  const std::vector<float> weights = small_ints(rng, dim * levels);
  const std::vector<float> codebook = byte_codebook(weights, dim, nbits);
  for (int64_t d = 0; d < dim; ++d)  // each row non-decreasing
    std::sort(cutoffs.begin() + d * (levels - 1), cutoffs.begin() + (d + 1) * (levels - 1));
  const auto [codes, residuals, inv_norms, out] =
      encode_and_decode(rng, emb, centroids, cutoffs.data(), codebook, n_tokens, dim, n_centroids, nbits);
  for (int64_t t = 0; t < n_tokens; ++t) {
    float norm_sq = 0.f;
    for (int64_t d = 0; d < dim; ++d) {
      const float c = centroids[codes[t] * dim + d], r = emb[t * dim + d] - c;
      int want = 0;
      for (int64_t j = 0; j < levels - 1; ++j) want += r > cutoffs[d * (levels - 1) + j] ? 1 : 0;
      const int got = bucket_of(&residuals[t * row_bytes], d, nbits);
      expect(got == want, "codec per-dim bucket", t, d);
      const float decoded = c + weights[d * levels + want];
      expect(out[t * dim + d] == decoded, "codec per-dim decoded value", t, d);
      norm_sq += decoded * decoded;
    }
    expect(inv_norms[t] == ce::float_to_half(ce::codec_inv_norm(norm_sq)), "codec per-dim inv_norm", t, dim);
  }
}

// quantize_residuals_cpu with a product-quantized codebook (bucket_cutoffs nullptr): every
// byte is the nearest codeword of its k residual values by squared L2 (ties -> lowest v), and
// decompression gives C[code] + that codeword. Small integers: every distance is exact, and
// ties (duplicate codewords) are frequent.
void test_codec_codebook(std::mt19937& rng, int64_t dim, int nbits, int64_t n_tokens) {
  const int64_t n_centroids = 5, row_bytes = dim * nbits / 8, per_byte = 8 / nbits;
  const std::vector<float> emb = small_ints(rng, n_tokens * dim), centroids = small_ints(rng, n_centroids * dim);
  const std::vector<float> codebook = small_ints(rng, row_bytes * 256 * per_byte);
  const auto [codes, residuals, inv_norms, out] =
      encode_and_decode(rng, emb, centroids, /*bucket_cutoffs=*/nullptr, codebook, n_tokens, dim, n_centroids, nbits);
  for (int64_t t = 0; t < n_tokens; ++t) {
    float norm_sq = 0.f;
    for (int64_t p = 0; p < row_bytes; ++p) {
      int want = 0;
      float best = kInf;
      for (int v = 0; v < 256; ++v) {
        float dist = 0.f;
        for (int64_t j = 0; j < per_byte; ++j) {
          const int64_t d = p * per_byte + j;
          const float diff = emb[t * dim + d] - centroids[codes[t] * dim + d] - codebook[(p * 256 + v) * per_byte + j];
          dist += diff * diff;
        }
        if (dist < best) { best = dist; want = v; }
      }
      expect(residuals[t * row_bytes + p] == want, "codec codebook nearest codeword", t, p);
      for (int64_t j = 0; j < per_byte; ++j) {
        const int64_t d = p * per_byte + j;
        const float decoded = centroids[codes[t] * dim + d] + codebook[(p * 256 + want) * per_byte + j];
        expect(out[t * dim + d] == decoded, "codec codebook decoded value", t, d);
        norm_sq += decoded * decoded;
      }
    }
    expect(inv_norms[t] == ce::float_to_half(ce::codec_inv_norm(norm_sq)), "codec codebook inv_norm", t, dim);
  }
}

}  // namespace

int main() {
  std::printf("kernel tests: isa %s, %d threads\n", ce::isa_name(ce::cpu_isa()), ce::max_threads());
  std::mt19937 rng(20261129);
  // Sizes straddle every path's lane, chunk and token-block widths (4/8/16 lanes, 16/32 rows,
  // 4/6/8 tokens) and dims that are not multiples of a vector.
  for (int64_t lq : {1, 3, 7, 16, 32, 33})
    for (int64_t dim : {1, 7, 16, 33, 128})
      for (ce::DType dtype : {ce::DType::F32, ce::DType::F16, ce::DType::BF16})
        test_maxsim(rng, 1 + (lq + dim) % 3, lq, dim, 1 + (lq * dim) % 23, dtype, (lq + dim) % 2 == 0);
  test_maxsim(rng, 2, 32, 128, 83, ce::DType::F32, false);
  test_maxsim_reports_non_finite(rng);
  test_maxsim_topk_impossible_size();
  for (int nbits : {1, 2, 4})
    for (int64_t lq : {1, 15, 16, 32, 37})
      for (int64_t dim : {8, 24, 128}) test_lut_maxsim(rng, 1 + lq % 2, lq, dim, nbits, 1 + (lq + dim) % 13);
  for (int nbits : {1, 2, 4})
    for (int64_t dim : {8, 24, 128}) test_codec_per_dim(rng, dim, nbits, 300);
  for (int nbits : {1, 2, 4})
    for (int64_t dim : {8, 24, 128}) test_codec_codebook(rng, dim, nbits, 300);
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
