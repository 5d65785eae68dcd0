// The one seam between the kernel headers and whatever runs them.
//   * nvcc: real CUDA launches (`<<<...>>>` appears only here) on the given stream.
//   * GROUPNORM_SIMT: the CPU emulator of tests/simt (simt_runtime.h on its include path)
//     runs every CUDA thread of a block as an OS thread.
// Every launch is followed by GN_AFTER_LAUNCH(): the ATen glue defines it as
// C10_CUDA_KERNEL_LAUNCH_CHECK() before including the kernels; it is a no-op otherwise.
#pragma once

#if defined(GROUPNORM_SIMT)
#include "simt_runtime.h"  // dim3, cudaStream_t, __global__, __device__, __shared__, threadIdx..., __syncthreads, __shfl_*_sync, simt::launch, simt::dynamic_shared<T>()
#define GN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  ::simt::launch((kernel), (grid), (block), (smem_bytes), __VA_ARGS__)
template <typename T>
inline T* gn_dynamic_smem() {
  return ::simt::dynamic_shared<T>();
}
#else
#include <cuda_runtime.h>
#define GN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  (kernel)<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
template <typename T>
__device__ __forceinline__ T* gn_dynamic_smem() {
  extern __shared__ __align__(16) unsigned char gn_smem_[];
  return reinterpret_cast<T*>(gn_smem_);
}
#endif

#ifndef GN_AFTER_LAUNCH
#define GN_AFTER_LAUNCH() ((void)0)
#endif
