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
// Larger thread-block clusters (up to 16 CTAs on sm_90) are non-portable: the kernel's
// cudaFuncAttributeNonPortableClusterSizeAllowed first (gn_allow_cluster), and whether the
// device can place such a cluster with the launch's shared memory is asked before planning on
// it (gn_cluster_fits: cudaOccupancyMaxActiveClusters).
constexpr unsigned kGnPortableCluster = 8;
inline bool gn_cluster_nonportable(unsigned cluster_x) { return cluster_x > kGnPortableCluster; }

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
// Thread-block clusters (sm_90): launch with a cluster size along x, and the cluster API of
// cooperative_groups::this_cluster() that the kernels use.
template <typename K>
inline void gn_allow_cluster(K kernel, unsigned cluster_x) {
  if (gn_cluster_nonportable(cluster_x)) ::simt::allow_nonportable_cluster(kernel);
}
template <typename K>
inline bool gn_cluster_fits(K kernel, dim3, dim3, size_t smem_bytes, unsigned cluster_x) {
  gn_allow_dynamic_smem(kernel, smem_bytes);
  gn_allow_cluster(kernel, cluster_x);
  return ::simt::max_active_clusters(kernel, cluster_x) > 0;
}
#define GN_LAUNCH_CLUSTER(kernel, grid, block, smem_bytes, stream, cluster_x, ...)            \
  (gn_allow_dynamic_smem((kernel), (smem_bytes)), gn_allow_cluster((kernel), (cluster_x)), \
   ::simt::launch_cluster((kernel), (grid), (block), (smem_bytes), (cluster_x), __VA_ARGS__))
inline unsigned gn_cluster_rank() { return ::simt::cluster_rank(); }
inline void gn_cluster_sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::simt::cluster_sync(file, line);
}
template <typename T>
inline T* gn_cluster_map(T* p, unsigned rank) {
  return ::simt::cluster_map(p, rank);
}
#else
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>
// Sets a function attribute of the kernel on the current device to at least `value`, once per
// kernel, device, attribute and value (the attribute is a driver call). `name`: for the error.
template <typename K>
inline void gn_raise_func_attribute(K kernel, cudaFuncAttribute attr, int value, const char* name) {
  static std::mutex mu;
  static std::vector<std::tuple<const void*, int, int, int>> granted;  // kernel, device, attribute, value
  int device = 0;
  cudaGetDevice(&device);
  const void* key = reinterpret_cast<const void*>(kernel);
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& g : granted)
    if (std::get<0>(g) == key && std::get<1>(g) == device && std::get<2>(g) == static_cast<int>(attr) &&
        std::get<3>(g) >= value)
      return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, attr, value);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("groupnorm_cuda: cudaFuncSetAttribute(") + name + ", " +
                             std::to_string(value) + "): " + cudaGetErrorString(err));
  granted.emplace_back(key, device, static_cast<int>(attr), value);
}
// Raises the kernel's dynamic shared memory limit on the current device to at least `bytes`.
template <typename K>
inline void gn_allow_dynamic_smem(K kernel, size_t bytes) {
  if (bytes <= kGnDefaultDynamicSmem) return;
  gn_raise_func_attribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes),
                          "MaxDynamicSharedMemorySize");
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
// Thread-block clusters: cudaLaunchKernelEx with cudaLaunchAttributeClusterDimension (the
// planner asks for clusters only on devices that have them, sm_90+); the device side is
// cooperative_groups::this_cluster(), compiled to a trap for older architectures.
template <typename K>
inline void gn_allow_cluster(K kernel, unsigned cluster_x) {
  if (!gn_cluster_nonportable(cluster_x)) return;
  gn_raise_func_attribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1, "NonPortableClusterSizeAllowed");
}
// The launch configuration of a cluster launch (attr: storage for its one attribute).
inline cudaLaunchConfig_t gn_cluster_config(dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                                            unsigned cluster_x, cudaLaunchAttribute* attr) {
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster_x;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem_bytes;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}
// Whether the current device can place one cluster of this launch at all.
template <typename K>
inline bool gn_cluster_fits(K kernel, dim3 grid, dim3 block, size_t smem_bytes, unsigned cluster_x) {
  gn_allow_dynamic_smem(kernel, smem_bytes);
  gn_allow_cluster(kernel, cluster_x);
  cudaLaunchAttribute attr[1];
  const cudaLaunchConfig_t cfg = gn_cluster_config(grid, block, smem_bytes, nullptr, cluster_x, attr);
  int clusters = 0;
  const cudaError_t err = cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // a refused configuration is an answer, not a sticky error
    return false;
  }
  return clusters > 0;
}
template <typename... P, typename... A>
inline void gn_launch_cluster(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                              unsigned cluster_x, A&&... args) {
  gn_allow_dynamic_smem(kernel, smem_bytes);
  gn_allow_cluster(kernel, cluster_x);
  cudaLaunchAttribute attr[1];
  const cudaLaunchConfig_t cfg = gn_cluster_config(grid, block, smem_bytes, stream, cluster_x, attr);
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("groupnorm_cuda: cluster launch (") + std::to_string(cluster_x) +
                             " CTAs): " + cudaGetErrorString(err));
}
#define GN_LAUNCH_CLUSTER(kernel, grid, block, smem_bytes, stream, cluster_x, ...) \
  gn_launch_cluster((kernel), (grid), (block), (smem_bytes), (stream), (cluster_x), __VA_ARGS__)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned gn_cluster_rank() { return cooperative_groups::this_cluster().block_rank(); }
__device__ __forceinline__ void gn_cluster_sync() { cooperative_groups::this_cluster().sync(); }
template <typename T>
__device__ __forceinline__ T* gn_cluster_map(T* p, unsigned rank) {
  return cooperative_groups::this_cluster().map_shared_rank(p, rank);
}
#else
__device__ __forceinline__ unsigned gn_cluster_rank() { __trap(); return 0; }
__device__ __forceinline__ void gn_cluster_sync() { __trap(); }
template <typename T>
__device__ __forceinline__ T* gn_cluster_map(T* p, unsigned) { __trap(); return p; }
#endif
#endif

#ifndef GN_AFTER_LAUNCH
#define GN_AFTER_LAUNCH() ((void)0)
#endif
