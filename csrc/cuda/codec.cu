// Residual codec on CUDA (contract, bucket rule and bit layout: common/codec.h).
//
// Byte-for-byte equal to the CPU: the bucket of r = x - c is the same comparison count
// (common/codec.h's codec_bucket), bits are packed by the same codec_bit_shift, the nearest
// codeword sums the same (a - b)^2 in j order with the same strict-less tie rule, and every
// float operation that feeds a stored value (norm sums, inverse norms, renormalisation) is
// written with round-to-nearest intrinsics in the CPU's order, so nvcc cannot contract
// a * b + c into an FMA that the CPU does not do.
//
// quantize:   scalar buckets: one thread per token (index build time, not the search path);
//             nearest codeword: one thread per (token, byte position), the position's 256
//             codewords read through the read-only cache.
// decompress: one thread per packed byte (its 8 / nbits output values) when the inverse
//             norms are given or no normalisation is asked, which is the search path;
//             one thread per token when the norm must be recomputed (16 partial sums in
//             the CPU's order, see sum_partials16).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/codec.h"
#include "cuda/check.cuh"

namespace ce {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_elem(const void* base, int64_t i, DType dtype) {
  switch (dtype) {
    case DType::F16: return __half2float(static_cast<const __half*>(base)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

__device__ __forceinline__ void store_elem(void* base, int64_t i, float v, DType dtype) {
  switch (dtype) {
    case DType::F16: static_cast<__half*>(base)[i] = __float2half_rn(v); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v); break;
    default: static_cast<float*>(base)[i] = v; break;
  }
}

// csrc/cpu/codec.cpp's sum_of_squares sums x[d]^2 into 16 partial sums,
// partial[d % 16] in dimension order, then adds the partials in order from 0. Norms here
// accumulate the same way (partial[d & 15]) and end with this sum, so stored inverse norms
// and recomputed norms are bit-identical to the CPU's.
__device__ __forceinline__ float sum_partials16(const float* partial) {
  float total = 0.f;
  for (int l = 0; l < 16; ++l) total = __fadd_rn(total, partial[l]);
  return total;
}

// Decoded value of dimension p*k + j whose byte is `byte` (the byte codebook, common/codec.h).
__device__ __forceinline__ float codeword(const float* codebook, int64_t p, uint8_t byte, int j, int per_byte) {
  return __ldg(codebook + (p * 256 + byte) * per_byte + j);
}

// Sum of squares of the decoded row C[code] + codeword values, in the CPU's summation order
// (see sum_partials16).
__device__ __forceinline__ float decoded_norm_sq(const float* centroid, const uint8_t* packed,
                                                 const float* codebook, int64_t row_bytes, int per_byte) {
  float partial[16] = {};
  for (int64_t byte = 0; byte < row_bytes; ++byte) {
    for (int j = 0; j < per_byte; ++j) {
      const int64_t d = byte * per_byte + j;
      const float v = __fadd_rn(centroid[d], codeword(codebook, byte, packed[byte], j, per_byte));
      partial[d & 15] = __fadd_rn(partial[d & 15], __fmul_rn(v, v));
    }
  }
  return sum_partials16(partial);
}

// Scalar buckets: bytes packed from the buckets, the norm of C[code] + the codebook's values.
__global__ void __launch_bounds__(kThreads)
quantize_kernel(QuantizeParams p) {
  const int nbits = p.nbits, per_byte = 8 / nbits, n_cutoffs = (1 << nbits) - 1;
  const int64_t dim = p.dim, row_bytes = dim * nbits / 8;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; t < p.n_tokens;
       t += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float* centroid = p.centroids + static_cast<int64_t>(p.codes[t]) * dim;
    const int64_t row = t * dim;
    for (int64_t byte = 0; byte < row_bytes; ++byte) {
      unsigned value = 0;
      for (int j = 0; j < per_byte; ++j) {
        const int64_t d = byte * per_byte + j;
        const int b = codec_bucket(__fsub_rn(load_elem(p.emb, row + d, p.emb_dtype), centroid[d]),
                                   p.bucket_cutoffs + d * n_cutoffs, n_cutoffs);
        for (int bit = 0; bit < nbits; ++bit)
          value |= ((static_cast<unsigned>(b) >> bit) & 1u) << codec_bit_shift(j, bit, nbits);
      }
      p.residuals[t * row_bytes + byte] = static_cast<uint8_t>(value);
    }
    // the thread's own bytes, just written
    const float norm_sq = decoded_norm_sq(centroid, p.residuals + t * row_bytes, p.codebook, row_bytes, per_byte);
    p.inv_norms[t] = __half_as_ushort(__float2half_rn(codec_inv_norm(norm_sq)));
  }
}

// Nearest codeword: one thread per (token, byte position) writes the byte.
__global__ void __launch_bounds__(kThreads)
nearest_codeword_kernel(QuantizeParams p) {
  const int per_byte = 8 / p.nbits;
  const int64_t dim = p.dim, row_bytes = dim * p.nbits / 8;
  const int64_t n = p.n_tokens * row_bytes;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t t = e / row_bytes, byte = e - t * row_bytes;
    const int64_t d0 = byte * per_byte;
    const float* centroid = p.centroids + static_cast<int64_t>(p.codes[t]) * dim + d0;
    float r[8];
    for (int j = 0; j < per_byte; ++j) r[j] = __fsub_rn(load_elem(p.emb, t * dim + d0 + j, p.emb_dtype), centroid[j]);
    const float* words = p.codebook + byte * 256 * per_byte;
    float best = INFINITY;
    int best_v = 0;
    for (int v = 0; v < 256; ++v) {
      float dist = 0.f;
      for (int j = 0; j < per_byte; ++j) {
        const float diff = __fsub_rn(r[j], __ldg(words + v * per_byte + j));
        dist = __fadd_rn(dist, __fmul_rn(diff, diff));
      }
      if (dist < best) {  // strict: ties keep the lowest v
        best = dist;
        best_v = v;
      }
    }
    p.residuals[e] = static_cast<uint8_t>(best_v);
  }
}

// Inverse norms of C[code] + the codebook's values of the bytes nearest_codeword_kernel wrote.
__global__ void __launch_bounds__(kThreads)
codeword_norm_kernel(QuantizeParams p) {
  const int per_byte = 8 / p.nbits;
  const int64_t dim = p.dim, row_bytes = dim * p.nbits / 8;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; t < p.n_tokens;
       t += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float* centroid = p.centroids + static_cast<int64_t>(p.codes[t]) * dim;
    const float norm_sq = decoded_norm_sq(centroid, p.residuals + t * row_bytes, p.codebook, row_bytes, per_byte);
    p.inv_norms[t] = __half_as_ushort(__float2half_rn(codec_inv_norm(norm_sq)));
  }
}

// One thread per packed byte: out = C[code] + w, times the stored inverse norm if asked.
__global__ void __launch_bounds__(kThreads)
decompress_bytes_kernel(DecompressParams p) {
  const int per_byte = 8 / p.nbits;
  const int64_t dim = p.dim, row_bytes = dim * p.nbits / 8;
  const int64_t n = p.n_tokens * row_bytes;
  const bool scaled = p.normalize && p.inv_norms != nullptr;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t t = e / row_bytes, byte = e - t * row_bytes;
    const int64_t d0 = byte * per_byte;
    const float* centroid = p.centroids + static_cast<int64_t>(p.codes[t]) * dim + d0;
    const uint8_t packed = p.residuals[e];
    const float scale = scaled ? __half2float(__ushort_as_half(p.inv_norms[t])) : 1.f;
    for (int j = 0; j < per_byte; ++j) {
      float v = __fadd_rn(centroid[j], codeword(p.codebook, byte, packed, j, per_byte));
      if (scaled) v = __fmul_rn(v, scale);
      store_elem(p.out, t * dim + d0 + j, v, p.out_dtype);
    }
  }
}

// One thread per token: recomputes the norm in dimension order (torch's normalize:
// x / max(||x||, 1e-12)), then writes the row.
__global__ void __launch_bounds__(kThreads)
decompress_renorm_kernel(DecompressParams p) {
  const int per_byte = 8 / p.nbits;
  const int64_t dim = p.dim, row_bytes = dim * p.nbits / 8;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; t < p.n_tokens;
       t += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float* centroid = p.centroids + static_cast<int64_t>(p.codes[t]) * dim;
    const uint8_t* packed = p.residuals + t * row_bytes;
    const float norm_sq = decoded_norm_sq(centroid, packed, p.codebook, row_bytes, per_byte);
    const float scale = __fdiv_rn(1.f, fmaxf(__fsqrt_rn(norm_sq), 1e-12f));
    for (int64_t byte = 0; byte < row_bytes; ++byte) {
      for (int j = 0; j < per_byte; ++j) {
        const int64_t d = byte * per_byte + j;
        const float w = codeword(p.codebook, byte, packed[byte], j, per_byte);
        store_elem(p.out, t * dim + d, __fmul_rn(__fadd_rn(centroid[d], w), scale), p.out_dtype);
      }
    }
  }
}

template <typename Kernel, typename Params>
cudaError_t launch_strided(Kernel kernel, int64_t n_items, Stream stream, const Params& params) {
  if (n_items == 0) return cudaSuccess;
  unsigned blocks = 0;
  // Enough resident blocks to cover n_items once, or fill the device twice.
  CE_CUDA_RETURN_IF_ERROR(grid_for(reinterpret_cast<const void*>(kernel), kThreads, 0,
                                   (n_items + kThreads - 1) / kThreads, 1, 2, &blocks));
  kernel<<<blocks, kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

bool valid_nbits(int nbits, int64_t dim) {
  return (nbits == 1 || nbits == 2 || nbits == 4) && dim > 0 && (dim * nbits) % 8 == 0;
}

}  // namespace

int quantize_residuals_cuda(const QuantizeParams& p, Stream stream) {
  if (p.n_tokens == 0) return 0;
  if (!valid_nbits(p.nbits, p.dim)) return static_cast<int>(cudaErrorInvalidValue);
  if (p.bucket_cutoffs != nullptr) return static_cast<int>(launch_strided(quantize_kernel, p.n_tokens, stream, p));
  const cudaError_t err = launch_strided(nearest_codeword_kernel, p.n_tokens * (p.dim * p.nbits / 8), stream, p);
  if (err != cudaSuccess) return static_cast<int>(err);
  return static_cast<int>(launch_strided(codeword_norm_kernel, p.n_tokens, stream, p));
}

int decompress_residuals_cuda(const DecompressParams& p, Stream stream) {
  if (p.n_tokens == 0) return 0;
  if (!valid_nbits(p.nbits, p.dim)) return static_cast<int>(cudaErrorInvalidValue);
  if (p.normalize && p.inv_norms == nullptr)
    return static_cast<int>(launch_strided(decompress_renorm_kernel, p.n_tokens, stream, p));
  return static_cast<int>(launch_strided(decompress_bytes_kernel, p.n_tokens * (p.dim * p.nbits / 8), stream, p));
}

}  // namespace ce
