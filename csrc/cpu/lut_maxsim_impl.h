// The lut_maxsim CPU kernel body, compiled once per ISA (lut_maxsim.cpp: baseline,
// lut_maxsim_avx2.cpp, lut_maxsim_avx512.cpp) with that file's flags. The loops are plain
// element-wise float code over query tokens that the compiler vectorises.
//
// Everything here has internal linkage and uses no std:: templates or shared inline
// functions: an inline function with external linkage compiled with -mavx512f in one
// translation unit could be the copy the linker keeps for the baseline path too.
// Include only from those translation units.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/lut_maxsim.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace ce {
namespace {

inline float lut_half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  // IEEE half -> float (subnormals, inf, NaN handled), same as common/dtype.h.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// Bucket of the j-th dimension held in a packed byte (common/codec.h: codec_unpack).
inline int lut_unpack(int byte, int j, int nbits) {
  int bucket = 0;
  for (int b = 0; b < nbits; ++b) bucket |= ((byte >> (7 - (j * nbits + b))) & 1) << b;
  return bucket;
}

inline float lut_max(float a, float b) { return a < b ? b : a; }

// Tables of query q, byte position pos: lut[byte * lq + i] = sum_j q_i[pos*k + j] * w[bucket_j(byte)].
inline void build_lut_block(const LutMaxSimParams& p, int64_t q, int64_t pos, float* query_t) {
  const int64_t lq = p.query_len, dim = p.dim;
  const int nbits = p.nbits, per_byte = 8 / nbits;
  const int64_t positions = dim * nbits / 8;
  const float* query = p.queries + q * lq * dim;
  // The byte's k dimensions transposed to [j][i], so the inner loop is contiguous.
  for (int j = 0; j < per_byte; ++j)
    for (int64_t i = 0; i < lq; ++i) query_t[j * lq + i] = query[i * dim + pos * per_byte + j];
  float* lut = p.lut + (q * positions + pos) * 256 * lq;
  for (int byte = 0; byte < 256; ++byte) {
    float* entry = lut + byte * lq;
    for (int64_t i = 0; i < lq; ++i) entry[i] = 0.f;
    for (int j = 0; j < per_byte; ++j) {
      const float w = p.bucket_weights[lut_unpack(byte, j, nbits)];
      const float* qj = query_t + j * lq;
      for (int64_t i = 0; i < lq; ++i) entry[i] += qj[i] * w;
    }
  }
}

// Score of query q against document `doc`. LQ > 0 fixes the query length at compile time
// (the accumulators stay in registers); LQ == 0 reads it from p.
template <int LQ>
inline float score_document(const LutMaxSimParams& p, int64_t q, int64_t doc, float* acc, float* best) {
  const int64_t lq = LQ > 0 ? LQ : p.query_len;
  const int64_t positions = p.dim * p.nbits / 8;
  const int64_t begin = p.doc_offsets[doc], end = p.doc_offsets[doc + 1];
  if (end == begin) return -INFINITY;
  const float* scores = p.scores + q * p.n_centroids * lq;
  const float* lut = p.lut + q * positions * 256 * lq;
  for (int64_t i = 0; i < lq; ++i) best[i] = -INFINITY;
  for (int64_t t = begin; t < end; ++t) {
    const float* centroid_scores = scores + static_cast<int64_t>(p.codes[t]) * lq;
    for (int64_t i = 0; i < lq; ++i) acc[i] = centroid_scores[i];
    const uint8_t* packed = p.residuals + t * positions;
    for (int64_t pos = 0; pos < positions; ++pos) {
      const float* entry = lut + (pos * 256 + packed[pos]) * lq;
      for (int64_t i = 0; i < lq; ++i) acc[i] += entry[i];
    }
    const float inv_norm = lut_half_to_float(p.inv_norms[t]);
    for (int64_t i = 0; i < lq; ++i) best[i] = lut_max(best[i], acc[i] * inv_norm);
  }
  // In query-token order, the same in every ISA build.
  float total = 0.f;
  for (int64_t i = 0; i < lq; ++i) total += best[i];
  return total;
}

template <int LQ>
void lut_maxsim_impl(const LutMaxSimParams& p) {
  const int64_t lq = p.query_len;
  const int per_byte = 8 / p.nbits;
  const int64_t positions = p.dim * p.nbits / 8;
#pragma omp parallel
  {
    float* query_t = new float[per_byte * lq];
    alignas(64) float acc_fixed[LQ > 0 ? LQ : 1];
    alignas(64) float best_fixed[LQ > 0 ? LQ : 1];
    float* acc_dyn = LQ > 0 ? nullptr : new float[lq];
    float* best_dyn = LQ > 0 ? nullptr : new float[lq];
    float* acc = LQ > 0 ? acc_fixed : acc_dyn;
    float* best = LQ > 0 ? best_fixed : best_dyn;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < p.n_queries * positions; ++block)
      build_lut_block(p, block / positions, block % positions, query_t);
    // Query-major: one query's tables (dim*nbits/8 * 256 * Lq floats) stay in cache while
    // the threads sweep its candidates. The implicit barrier above orders build and use.
    for (int64_t q = 0; q < p.n_queries; ++q) {
#pragma omp for schedule(dynamic, 4)
      for (int64_t m = 0; m < p.n_candidates; ++m)
        p.out[q * p.n_candidates + m] = score_document<LQ>(p, q, p.candidates[m], acc, best);
    }
    delete[] query_t;
    delete[] acc_dyn;
    delete[] best_dyn;
  }
}

inline void lut_maxsim_dispatch(const LutMaxSimParams& p) {
  if (p.query_len == 32) lut_maxsim_impl<32>(p);
  else lut_maxsim_impl<0>(p);
}

}  // namespace
}  // namespace ce
