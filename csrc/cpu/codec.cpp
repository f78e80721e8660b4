// Residual codec on CPU: quantisation of residuals against given codes, and decompression.
// Both are memory-bound single passes over the tokens; OpenMP over blocks of tokens.
#include "common/codec.h"
#include "common/isa.h"
#include "cpu/codec_argmax_impl.h"
#include "cpu/codec_nearest_impl.h"
#include "cpu/codec_probe.h"

#ifdef CE_HAVE_OPENMP
#include <omp.h>
#endif
#include "cpu/codec_probe_impl.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace ce {

void argmax_rows_avx2(const float* sims, int64_t rows, int64_t cols, int32_t* out);
void argmax_rows_avx512(const float* sims, int64_t rows, int64_t cols, int32_t* out);
void probed_argmax_avx2(const ProbedArgmaxParams& p, const ProbeScratch* scratch, int n_scratch);
void probed_argmax_avx512(const ProbedArgmaxParams& p, const ProbeScratch* scratch, int n_scratch);
void nearest_codewords_avx2(const float* residual, int64_t rows, const float* codebook_t, int64_t positions,
                            int per_byte, uint8_t* out);
void nearest_codewords_avx512(const float* residual, int64_t rows, const float* codebook_t, int64_t positions,
                              int per_byte, uint8_t* out);
void probed_argmax_bf16(const ProbedArgmaxParams& p, const ProbeScratch* scratch, int n_scratch);

bool probed_bf16_available() {
#if defined(__x86_64__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has && cpu_isa() == Isa::AVX512;
#else
  return false;
#endif
}

void argmax_rows_cpu(const float* sims, int64_t rows, int64_t cols, int32_t* out) {
  switch (cpu_isa()) {
#ifdef CE_HAVE_X86_SIMD  // the *_avx* translation units exist only in x86-64 builds
    case Isa::AVX512: argmax_rows_avx512(sims, rows, cols, out); return;
    case Isa::AVX2: argmax_rows_avx2(sims, rows, cols, out); return;
#endif
    default: break;
  }
  argmax_rows_impl(sims, rows, cols, out);
}

void probed_argmax_cpu(const ProbedArgmaxParams& p) {
  if (p.rows <= 0) return;
  // One scratch area per thread, allocated here so nothing in the parallel region allocates.
  const int64_t n_blocks = (p.rows + kProbeBlock - 1) / kProbeBlock;
  const int n_threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(max_threads(), n_blocks)));
  const int64_t block = std::min(kProbeBlock, p.rows);
  const int64_t n_cells = p.n_cells, nprobe = p.nprobe;
  const int64_t ints = (n_cells + 1) + n_cells + block * nprobe + (block * nprobe + n_cells * 3) + block * 16;
  const int64_t floats = block * 16 + nprobe;
  std::vector<int32_t> int_pool(static_cast<size_t>(ints * n_threads));
  std::vector<float> float_pool(static_cast<size_t>(floats * n_threads));
  std::vector<ProbeScratch> scratch(n_threads);
  for (int t = 0; t < n_threads; ++t) {
    int32_t* i = int_pool.data() + t * ints;
    float* f = float_pool.data() + t * floats;
    ProbeScratch& s = scratch[t];
    s.cell_count = i; i += n_cells + 1;
    s.cell_fill = i; i += n_cells;
    s.probes = i; i += block * nprobe;
    s.lists = i; i += block * nprobe + n_cells * 3;
    s.best_i = i;
    s.best_s = f; f += block * 16;
    s.probe_scores = f;
  }
#ifdef CE_HAVE_X86_SIMD  // the *_avx* translation units exist only in x86-64 builds
  if (p.cell_data_bf16 && p.emb_bf16 && p.centroids && p.dim % 2 == 0 && probed_bf16_available()) {
    probed_argmax_bf16(p, scratch.data(), n_threads);
    return;
  }
#endif
  switch (cpu_isa()) {
#ifdef CE_HAVE_X86_SIMD
    case Isa::AVX512: probed_argmax_avx512(p, scratch.data(), n_threads); return;
    case Isa::AVX2: probed_argmax_avx2(p, scratch.data(), n_threads); return;
#endif
    default: break;
  }
  probed_argmax_impl(p, scratch.data(), n_threads);
}

void accumulate_rows_cpu(const float* x, const int32_t* codes, int64_t rows, int64_t dim, float* sums,
                         int64_t n_sums) {
  // Every thread scans all codes (cheap) and adds only rows of its own sums: no atomics,
  // no allocation, a fixed order per sum.
#pragma omp parallel
  {
    int64_t thread = 0, n_threads = 1;
#ifdef CE_HAVE_OPENMP
    thread = omp_get_thread_num();
    n_threads = omp_get_num_threads();
#endif
    const int64_t lo = n_sums * thread / n_threads, hi = n_sums * (thread + 1) / n_threads;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t c = codes[i];
      if (c < lo || c >= hi) continue;
      float* out = sums + c * dim;
      const float* row = x + i * dim;
      for (int64_t d = 0; d < dim; ++d) out[d] += row[d];
    }
  }
}

namespace {

constexpr int64_t kTokenBlock = 256;  // tokens per OpenMP task: amortises scheduling

// float -> bf16 bits, round to nearest even (NaN kept quiet).
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

// Sum of squares with 16 independent partial sums: vectorises without -ffast-math and
// breaks the dependent-add chain (a plain loop was half of decompression time).
inline float sum_of_squares(const float* x, int64_t n) {
  float partial[16] = {};
  int64_t d = 0;
  for (; d + 16 <= n; d += 16)
    for (int l = 0; l < 16; ++l) partial[l] += x[d + l] * x[d + l];
  for (; d < n; ++d) partial[d & 15] += x[d] * x[d];
  float total = 0.f;
  for (int l = 0; l < 16; ++l) total += partial[l];
  return total;
}

inline void store_row(const float* row, void* out, int64_t t, int64_t dim, DType dtype) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(static_cast<float*>(out) + t * dim, row, dim * sizeof(float));
      break;
    case DType::F16: {
      uint16_t* dst = static_cast<uint16_t*>(out) + t * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d] = float_to_half(row[d]);
      break;
    }
    case DType::BF16: {
      uint16_t* dst = static_cast<uint16_t*>(out) + t * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d] = float_to_bf16_bits(row[d]);
      break;
    }
  }
}

}  // namespace

using NearestCodewordsFn = void (*)(const float*, int64_t, const float*, int64_t, int, uint8_t*);

NearestCodewordsFn nearest_codewords_for_cpu() {
  switch (cpu_isa()) {
#ifdef CE_HAVE_X86_SIMD
    case Isa::AVX512: return &nearest_codewords_avx512;
    case Isa::AVX2: return &nearest_codewords_avx2;
#endif
    default: return &nearest_codewords_impl;
  }
}

void quantize_residuals_cpu(const QuantizeParams& p) {
  const int64_t dim = p.dim;
  const int nbits = p.nbits;
  const int per_byte = 8 / nbits;
  const int64_t row_bytes = dim * nbits / 8;
  const int n_cutoffs = (1 << nbits) - 1;
  const int64_t emb_row_bytes = dim * dtype_size(p.emb_dtype);
  const int64_t n_blocks = (p.n_tokens + kTokenBlock - 1) / kTokenBlock;
  const bool by_codeword = p.bucket_cutoffs == nullptr;
  // Per-thread rows and the transposed codebook allocated before the region: nothing inside
  // it may throw.
  const int n_threads = std::max(1, max_threads());
  std::vector<uint8_t> bucket_pool(static_cast<size_t>(dim * n_threads));
  // Per thread: kNearestRows residual rows, then one decoded row.
  const int64_t pool_floats = (kNearestRows + 1) * dim;
  std::vector<float> row_pool(static_cast<size_t>(pool_floats * n_threads));
  std::vector<float> codebook_t(by_codeword ? static_cast<size_t>(row_bytes * per_byte * 256) : 0);
  for (int64_t byte = 0; by_codeword && byte < row_bytes; ++byte)  // [p][v][j] -> [p][j][v]
    for (int v = 0; v < 256; ++v)
      for (int j = 0; j < per_byte; ++j)
        codebook_t[(byte * per_byte + j) * 256 + v] = p.codebook[(byte * 256 + v) * per_byte + j];
  const NearestCodewordsFn nearest = nearest_codewords_for_cpu();
#pragma omp parallel num_threads(n_threads)
  {
    int thread = 0;
#ifdef CE_HAVE_OPENMP
    thread = omp_get_thread_num();
#endif
    uint8_t* bucket = bucket_pool.data() + thread * dim;
    float* residual = row_pool.data() + thread * pool_floats;
    float* decoded = residual + kNearestRows * dim;
    // The inverse norm of token u from its stored bytes: C[code] + the codebook's values.
    auto finish_token = [&](int64_t u) {
      const float* centroid = p.centroids + static_cast<int64_t>(p.codes[u]) * dim;
      const uint8_t* packed = p.residuals + u * row_bytes;
      for (int64_t byte = 0; byte < row_bytes; ++byte) {
        const float* word = p.codebook + (byte * 256 + packed[byte]) * per_byte;
        for (int j = 0; j < per_byte; ++j) decoded[byte * per_byte + j] = centroid[byte * per_byte + j] + word[j];
      }
      p.inv_norms[u] = float_to_half(codec_inv_norm(sum_of_squares(decoded, dim)));
    };
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < n_blocks; ++block) {
      const int64_t end = std::min(p.n_tokens, (block + 1) * kTokenBlock);
      for (int64_t t = block * kTokenBlock; t < end; ++t) {
        const void* row = static_cast<const char*>(p.emb) + t * emb_row_bytes;
        const float* centroid = p.centroids + static_cast<int64_t>(p.codes[t]) * dim;
        uint8_t* packed = p.residuals + t * row_bytes;
        if (by_codeword) {
          // Residuals of kNearestRows tokens, then their bytes in one pass over the codebook.
          const int64_t first = t - (t - block * kTokenBlock) % kNearestRows;
          float* r = residual + (t - first) * dim;
          for (int64_t d = 0; d < dim; ++d) r[d] = load_as_float(row, d, p.emb_dtype) - centroid[d];
          if (t + 1 < end && t - first + 1 < kNearestRows) continue;
          nearest(residual, t - first + 1, codebook_t.data(), row_bytes, per_byte, p.residuals + first * row_bytes);
          for (int64_t u = first; u <= t; ++u) finish_token(u);
          continue;
        }
        for (int64_t d = 0; d < dim; ++d)
          bucket[d] = static_cast<uint8_t>(codec_bucket(load_as_float(row, d, p.emb_dtype) - centroid[d],
                                                        p.bucket_cutoffs + d * n_cutoffs, n_cutoffs));
        for (int64_t byte = 0; byte < row_bytes; ++byte) {
          unsigned value = 0;
          for (int j = 0; j < per_byte; ++j) {
            const unsigned b = bucket[byte * per_byte + j];
            for (int bit = 0; bit < nbits; ++bit) value |= ((b >> bit) & 1u) << codec_bit_shift(j, bit, nbits);
          }
          packed[byte] = static_cast<uint8_t>(value);
        }
        finish_token(t);
      }
    }
  }
}

namespace {

// PER_BYTE = 8 / nbits dimensions per residual byte, fixed so the inner loop unrolls.
template <int PER_BYTE>
void decompress_impl(const DecompressParams& p) {
  const int64_t dim = p.dim;
  const int64_t row_bytes = dim / PER_BYTE;
  const float* codebook = p.codebook;  // [row_bytes][256][PER_BYTE]: one lookup per byte
  const int64_t n_blocks = (p.n_tokens + kTokenBlock - 1) / kTokenBlock;
  const int n_threads = std::max(1, max_threads());
  std::vector<float> row_pool(static_cast<size_t>(dim * n_threads));  // before the region: no throw inside
#pragma omp parallel num_threads(n_threads)
  {
    int thread = 0;
#ifdef CE_HAVE_OPENMP
    thread = omp_get_thread_num();
#endif
    float* row_buf = row_pool.data() + thread * dim;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < n_blocks; ++block) {
      const int64_t end = std::min(p.n_tokens, (block + 1) * kTokenBlock);
      for (int64_t t = block * kTokenBlock; t < end; ++t) {
        const float* centroid = p.centroids + static_cast<int64_t>(p.codes[t]) * dim;
        const uint8_t* packed = p.residuals + t * row_bytes;
        float* out = row_buf;
        for (int64_t byte = 0; byte < row_bytes; ++byte) {
          const float* word = codebook + (byte * 256 + packed[byte]) * PER_BYTE;
          for (int j = 0; j < PER_BYTE; ++j) out[byte * PER_BYTE + j] = centroid[byte * PER_BYTE + j] + word[j];
        }
        if (p.normalize) {
          float scale;
          if (p.inv_norms) {
            scale = half_to_float(p.inv_norms[t]);
          } else {
            const float norm_sq = sum_of_squares(out, dim);
            // torch.nn.functional.normalize: x / max(||x||, 1e-12).
            scale = 1.f / std::max(std::sqrt(norm_sq), 1e-12f);
          }
          for (int64_t d = 0; d < dim; ++d) out[d] *= scale;
        }
        store_row(out, p.out, t, dim, p.out_dtype);
      }
    }
  }
}

}  // namespace

void decompress_residuals_cpu(const DecompressParams& p) {
  switch (p.nbits) {
    case 1: decompress_impl<8>(p); break;
    case 2: decompress_impl<4>(p); break;
    default: decompress_impl<2>(p); break;
  }
}

}  // namespace ce
