// The one seam between the kernel headers and whatever runs them.
//   * nvcc: real CUDA launches (`<<<...>>>` appears only here) on the given stream.
//   * GROUPNORM_SIMT: the CPU emulator of tests/simt (simt_runtime.h on its include path)
//     runs every CUDA thread of a block as an OS thread.
// Every launch is followed by GN_AFTER_LAUNCH(): the ATen glue defines it as
// C10_CUDA_KERNEL_LAUNCH_CHECK() before including the kernels; it is a no-op otherwise.
#pragma once

// A launch asking for more than 48 KiB of dynamic shared memory first raises the kernel's
// cudaFuncAttributeMaxDynamicSharedMemorySize (gn_allow_dynamic_smem), as CUDA requires; the
// emulator refuses such a launch without it, as CUDA does.
constexpr size_t kGnDefaultDynamicSmem = 48 * 1024;

#if defined(GROUPNORM_SIMT)
#include "simt_runtime.h"  // dim3, cudaStream_t, __global__, __device__, __shared__, threadIdx..., __syncthreads, __shfl_*_sync, simt::launch, simt::dynamic_shared<T>()
template <typename K>
inline void gn_allow_dynamic_smem(K kernel, size_t bytes) {
  if (bytes > kGnDefaultDynamicSmem) ::simt::set_max_dynamic_shared(kernel, bytes);
}
#define GN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  (gn_allow_dynamic_smem((kernel), (smem_bytes)), ::simt::launch((kernel), (grid), (block), (smem_bytes), __VA_ARGS__))
template <typename T>
inline T* gn_dynamic_smem() {
  return ::simt::dynamic_shared<T>();
}
#else
#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>
// Raises the kernel's dynamic shared memory limit on the current device to at least `bytes`
// (once per kernel, device and size: the attribute is a driver call).
template <typename K>
inline void gn_allow_dynamic_smem(K kernel, size_t bytes) {
  if (bytes <= kGnDefaultDynamicSmem) return;
  static std::mutex mu;
  static std::vector<std::tuple<const void*, int, size_t>> granted;  // kernel, device, bytes
  int device = 0;
  cudaGetDevice(&device);
  const void* key = reinterpret_cast<const void*>(kernel);
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& g : granted)
    if (std::get<0>(g) == key && std::get<1>(g) == device && std::get<2>(g) >= bytes) return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("groupnorm_cuda: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, ") +
                             std::to_string(bytes) + "): " + cudaGetErrorString(err));
  granted.emplace_back(key, device, bytes);
}
#define GN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)  \
  do {                                                           \
    gn_allow_dynamic_smem((kernel), (smem_bytes));               \
    (kernel)<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__); \
  } while (0)
template <typename T>
__device__ __forceinline__ T* gn_dynamic_smem() {
  extern __shared__ __align__(16) unsigned char gn_smem_[];
  return reinterpret_cast<T*>(gn_smem_);
}
#endif

#ifndef GN_AFTER_LAUNCH
#define GN_AFTER_LAUNCH() ((void)0)
#endif
