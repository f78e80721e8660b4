// Error plumbing and launch helpers for launchers: every launch is checked and the code
// returned to the binding, which raises in Python. No exceptions, no c10. The helpers only
// query device attributes (no synchronisation).
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#define CE_CUDA_RETURN_IF_ERROR(expr)          \
  do {                                         \
    cudaError_t ce_err_ = (expr);              \
    if (ce_err_ != cudaSuccess) return ce_err_; \
  } while (0)

#define CE_CUDA_RETURN_LAUNCH_ERROR() return static_cast<int>(cudaGetLastError())

namespace ce {

// Raises `kernel`'s dynamic shared-memory limit when it needs more than the default 48 KB.
// Returns cudaErrorInvalidValue, without touching the runtime's error state, when the
// current device cannot give that much.
inline cudaError_t allow_dynamic_smem(const void* kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  int device = 0, optin = 0;
  CE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  CE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (smem > static_cast<size_t>(optin)) return cudaErrorInvalidValue;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
}

// Blocks to launch for a grid-stride loop over `n_work` items: enough resident blocks to fill
// the device `waves` times, rounded down to a multiple of `multiple` (n_work must be a
// multiple of it), at least `multiple`, at most n_work and INT_MAX.
inline cudaError_t grid_for(const void* kernel, int threads, size_t smem, int64_t n_work,
                            int64_t multiple, int waves, unsigned* blocks) {
  int device = 0, sms = 0, per_sm = 0;
  CE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  CE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CE_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  if (per_sm < 1 || multiple < 1) return cudaErrorInvalidConfiguration;
  const int64_t target = static_cast<int64_t>(sms) * per_sm * waves;
  int64_t n = target < n_work ? target : n_work;
  if (n < multiple) n = multiple;
  n = (n / multiple) * multiple;
  const int64_t cap = (static_cast<int64_t>(INT_MAX) / multiple) * multiple;
  if (cap == 0) return cudaErrorInvalidConfiguration;
  *blocks = static_cast<unsigned>(n < cap ? n : cap);
  return cudaSuccess;
}

}  // namespace ce
