// Residual codec contract (ColBERTv2 / PLAID layout, plus a product-quantized variant),
// shared by csrc/cpu/codec.cpp and csrc/cuda/codec.cu.
//
// A token x (dim floats) is stored as
//   code      int32   nearest centroid by inner product (computed by the caller, see
//                     ops/codec.py: a blocked GEMM + argmax in torch),
//   residual  uint8   [dim * nbits / 8] bytes describing r = x - C[code], and
//   inv_norm  fp16    1 / ||decoded||, decoded = C[code] + the bytes' decoded residual.
//
// Decoding (one contract for every layout): byte p covers dimensions p*k .. p*k + k - 1,
// k = 8 / nbits, and decodes through a BYTE CODEBOOK float32 [dim*nbits/8][256][k]:
// decoded[p*k + j] = C[code][p*k + j] + codebook[p][byte_p][j].
//
// Encoding, two rules:
// - scalar buckets (layouts "pooled" and "per_dim", bucket_cutoffs given): the bucket of r[d]
//   is the number of cutoffs[d, :] strictly below it (ColBERT's `torch.bucketize`,
//   right=False: a value equal to a cutoff falls in the lower bucket), cutoffs per dimension
//   [dim, 2^nbits - 1] non-decreasing rows (pooled tables arrive expanded). The byte packs
//   its k buckets in ColBERT's bit layout: each dimension contributes its bucket's nbits
//   bits least-significant bit first, dimensions in order, packed most-significant bit first
//   (numpy `packbits`); bit k*j + b of the byte (counting from the MSB) is bit b of
//   dimension j's bucket. The codebook of such tables is their expansion (ops/codec.py
//   byte_codebook): codebook[p][v][j] = weights[p*k + j][codec_unpack(v, j, nbits)], so
//   imported colbert-ai indexes decode bit-identically.
// - product quantization (layout "codebook", bucket_cutoffs == nullptr): byte p is the
//   nearest codeword v of r[p*k .. p*k + k) by squared L2 distance
//   sum_j (r[p*k + j] - codebook[p][v][j])^2, summed in j order without fused multiply-adds
//   (so CPU builds and CUDA agree), ties to the lowest v.
//
// All pointers are caller-owned; sizes were validated in Python (ops/codec.py).
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"

#if defined(__CUDACC__)
#define CE_HOST_DEVICE __host__ __device__
#else
#define CE_HOST_DEVICE
#endif

namespace ce {

// Bucket of residual value r: count of cutoffs strictly below r (== torch.bucketize, right=False).
CE_HOST_DEVICE inline int codec_bucket(float r, const float* cutoffs, int n_cutoffs) {
  int bucket = 0;
  for (int j = 0; j < n_cutoffs; ++j) bucket += (r > cutoffs[j]) ? 1 : 0;
  return bucket;
}

// Bit position (7 = MSB) inside a packed byte of bit `bit` of the j-th dimension it holds.
CE_HOST_DEVICE inline int codec_bit_shift(int j, int bit, int nbits) { return 7 - (j * nbits + bit); }

// Bucket of the j-th dimension held in `byte` (inverse of the packing above).
CE_HOST_DEVICE inline int codec_unpack(uint8_t byte, int j, int nbits) {
  int bucket = 0;
  for (int b = 0; b < nbits; ++b) bucket |= ((byte >> codec_bit_shift(j, b, nbits)) & 1) << b;
  return bucket;
}

// Stored inverse norm: 1/norm rounded to fp16, 0 for a zero vector (its normalised form is
// the zero vector, as torch.nn.functional.normalize gives), saturated at the fp16 maximum.
CE_HOST_DEVICE inline float codec_inv_norm(float norm_sq) {
  if (!(norm_sq > 0.f)) return 0.f;
  const float inv = 1.f / sqrtf(norm_sq);
  return inv < 65504.f ? inv : 65504.f;
}

struct QuantizeParams {
  const void* emb;             // [n_tokens, dim] in emb_dtype, contiguous
  const float* centroids;      // [n_centroids, dim] fp32, contiguous
  const int32_t* codes;        // [n_tokens] in [0, n_centroids) (caller's argmax)
  const float* bucket_cutoffs; // [dim, 2^nbits - 1], each row non-decreasing; nullptr: the
                               // byte is the nearest codeword (product quantization)
  const float* codebook;       // [dim * nbits / 8, 256, 8 / nbits] byte codebook
  uint8_t* residuals;          // [n_tokens, dim * nbits / 8] output
  uint16_t* inv_norms;         // [n_tokens] fp16 bits, output
  int64_t n_tokens;
  int64_t dim;                 // dim * nbits % 8 == 0
  int64_t n_centroids;
  int32_t nbits;               // 1, 2 or 4
  DType emb_dtype;
};

struct DecompressParams {
  const int32_t* codes;        // [n_tokens] in [0, n_centroids)
  const uint8_t* residuals;    // [n_tokens, dim * nbits / 8]
  const float* centroids;      // [n_centroids, dim] fp32, contiguous
  const float* codebook;       // [dim * nbits / 8, 256, 8 / nbits] byte codebook
  const uint16_t* inv_norms;   // [n_tokens] fp16 bits, or nullptr: recompute the norm
  void* out;                   // [n_tokens, dim] in out_dtype, output
  int64_t n_tokens;
  int64_t dim;
  int64_t n_centroids;
  int32_t nbits;
  bool normalize;              // scale to unit norm (by inv_norms when given)
  DType out_dtype;
};

// Nearest centroids, one block of tokens at a time: out[r] = the first k maximising
// sims[r, k] (ties -> lowest k), sims [rows, cols] fp32 finite, the caller's GEMM of the
// tokens with the centroids. CPU only: on CUDA the caller uses torch's argmax.
void argmax_rows_cpu(const float* sims, int64_t rows, int64_t cols, int32_t* out);

// Two-level nearest centroid (ops/codec.py: nearest_centroids_probed). The K centroids are
// grouped into n_cells cells (a coarse k-means over them); cell c's centroids are stored
// transposed as a [dim][width_c] fp32 block at cell_data + cell_offsets[c] * dim, width_c =
// cell_offsets[c + 1] - cell_offsets[c] a multiple of 16, cell_ids[col] the centroid's
// index in the original order (-1 for padding columns, which never win). For each token
// the nprobe cells of highest coarse score are probed (ties -> lower cell) and out[t] is
// the centroid of highest inner product among them (ties -> lowest original index).
struct ProbedArgmaxParams {
  const float* emb;            // [rows, dim] fp32, contiguous
  const float* coarse_scores;  // [rows, n_cells] fp32 finite: <emb[t], coarse centroid c>
  const float* cell_data;      // [dim * cell_offsets[n_cells]]
  const int64_t* cell_offsets; // [n_cells + 1], multiples of 16
  const int32_t* cell_ids;     // [cell_offsets[n_cells]]
  int32_t* out;                // [rows] output
  int64_t rows;
  int64_t dim;
  int64_t n_cells;
  int32_t nprobe;              // 1 <= nprobe <= n_cells
  // Optional bf16 screening (used where the CPU has avx512_bf16, else ignored; nullptr:
  // off): the cells scored by bf16 dot products, then the 16 lane winners of every token
  // rescored in fp32 against `centroids`, so the result is an fp32 argmax over candidates
  // a bf16 screen kept. cell_data_bf16: cell c's block as [dim/2][width_c][2] bf16 bits at
  // cell_data_bf16 + cell_offsets[c] * dim; emb_bf16 [rows, dim]; dim even.
  const uint16_t* cell_data_bf16;
  const uint16_t* emb_bf16;
  const float* centroids;      // [K, dim] fp32, original order (for the rescoring)
};
// Whether probed_argmax_cpu would use the bf16 screen (avx512_bf16 and CE_ISA allows avx512).
bool probed_bf16_available();
// Throws std::bad_alloc only before its parallel region (per-thread scratch).
void probed_argmax_cpu(const ProbedArgmaxParams& p);

// k-means update: sums[codes[i]] += x[i] for every row i (x [rows, dim] fp32, sums
// [n_sums, dim] fp32 accumulated into, codes in [0, n_sums)). Each thread owns a range of
// sums and adds its rows in row order, so the result does not depend on the thread count.
void accumulate_rows_cpu(const float* x, const int32_t* codes, int64_t rows, int64_t dim, float* sums,
                         int64_t n_sums);

// Residual bytes and inverse norms of every token. CPU: OpenMP over token blocks; throws
// std::bad_alloc only before its parallel region (per-thread scratch).
void quantize_residuals_cpu(const QuantizeParams& p);
// out[t, p*k + j] = C[codes[t], p*k + j] + codebook[p, byte_p, j], then (normalize) scaled to
// unit norm.
void decompress_residuals_cpu(const DecompressParams& p);

}  // namespace ce

#include "common/cuda_stream.h"
namespace ce {
// Same contracts on device pointers; queued on `stream`, no host synchronisation.
// Return a cudaError_t value (0 on success): no exceptions cross the CUDA boundary.
int quantize_residuals_cuda(const QuantizeParams& p, Stream stream);
int decompress_residuals_cuda(const DecompressParams& p, Stream stream);
}  // namespace ce
