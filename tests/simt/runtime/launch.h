// Part of simt_runtime.h: the launch API (simt::launch, launch_cluster, function attributes, launch log).
// Include simt_runtime.h, not this file: the parts rely on its includes, CUDA keywords and
// built-in variables, and on each other's order.
#pragma once

namespace simt {

namespace detail {
template <typename... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> params;
  template <size_t... I>
  void call(std::index_sequence<I...>) const {
    kernel(std::get<I>(params)...);  // each thread gets its own by-value copy of the parameters
  }
  static void invoke(const void* self) {
    static_cast<const KernelCall*>(self)->call(std::index_sequence_for<P...>{});
  }
};
}  // namespace detail

// Runs kernel<<<grid, block, smem_bytes>>>(args...) to completion (synchronously). The arguments
// are converted (implicitly) to the kernel's parameter types and stored once; every thread gets
// its own by-value copy of the parameters, as on a GPU. Blocks run one after another in a random
// order (SIMT_SEED); the threads of a block run concurrently, one OS thread each.
// Every launch since the last clear, in order: which kernel, with what configuration (so a
// test can check that a launcher ran the launches it was asked to).
struct LaunchRecord {
  const void* kernel;
  dim3 grid, block;
  size_t smem_bytes;
  unsigned cluster_x = 1;
};
inline std::vector<LaunchRecord>& launch_log() {
  static std::vector<LaunchRecord> log;
  return log;
}

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes): without it
// a launch may ask for at most 48 KiB of dynamic shared memory.
inline std::vector<std::pair<const void*, size_t>>& max_dynamic_shared_table() {
  static std::vector<std::pair<const void*, size_t>> t;
  return t;
}
template <typename... P>
void set_max_dynamic_shared(void (*kernel)(P...), size_t bytes) {
  if (bytes > 232448)
    detail::fail("cudaFuncSetAttribute(MaxDynamicSharedMemorySize, %zu) > 227 KiB (sm_90 opt-in maximum): "
                 "cudaErrorInvalidValue", bytes);
  std::lock_guard<std::mutex> lock(detail::launch_mutex());
  for (auto& e : max_dynamic_shared_table())
    if (e.first == reinterpret_cast<const void*>(kernel)) {
      e.second = bytes;
      return;
    }
  max_dynamic_shared_table().push_back({reinterpret_cast<const void*>(kernel), bytes});
}

// A launch past 48 KiB of dynamic shared memory needs the kernel's limit raised first.
inline void check_dynamic_shared(const void* kernel, size_t smem_bytes) {
  if (smem_bytes <= 48 * 1024) return;
  size_t allowed = 48 * 1024;
  {
    std::lock_guard<std::mutex> lock(detail::launch_mutex());
    for (const auto& e : max_dynamic_shared_table())
      if (e.first == kernel) allowed = e.second;
  }
  if (smem_bytes > allowed)
    detail::fail("invalid launch configuration: %zu bytes of dynamic shared memory > the kernel's "
                 "MaxDynamicSharedMemorySize (%zu; raise it with cudaFuncSetAttribute first)",
                 smem_bytes, allowed);
}

// Thread-block clusters of more than 8 CTAs (non-portable, up to 16 on sm_90): a launch needs
// cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) first, and the
// device must be able to place such a cluster (cudaOccupancyMaxActiveClusters > 0).
// set_device_max_cluster() sets the largest cluster the emulated device places (default 16).
inline std::vector<const void*>& nonportable_cluster_table() {
  static std::vector<const void*> t;
  return t;
}
template <typename... P>
void allow_nonportable_cluster(void (*kernel)(P...)) {
  std::lock_guard<std::mutex> lock(detail::launch_mutex());
  for (const void* k : nonportable_cluster_table())
    if (k == reinterpret_cast<const void*>(kernel)) return;
  nonportable_cluster_table().push_back(reinterpret_cast<const void*>(kernel));
}
inline unsigned& device_max_cluster() {
  static unsigned m = 16;
  return m;
}
inline void set_device_max_cluster(unsigned m) { device_max_cluster() = m; }
inline bool nonportable_allowed(const void* kernel) {
  std::lock_guard<std::mutex> lock(detail::launch_mutex());
  for (const void* k : nonportable_cluster_table())
    if (k == kernel) return true;
  return false;
}
// cudaOccupancyMaxActiveClusters: clusters of `cluster_x` CTAs the device holds at once (0: none;
// past 8 CTAs only with the kernel's non-portable attribute, as on a GPU).
template <typename... P>
int max_active_clusters(void (*kernel)(P...), unsigned cluster_x) {
  if (cluster_x > 8 && !nonportable_allowed(reinterpret_cast<const void*>(kernel))) return 0;
  return cluster_x <= device_max_cluster() ? 1 : 0;
}
inline void check_cluster_size(const void* kernel, unsigned cluster_x) {
  if (cluster_x <= 8) return;
  if (!nonportable_allowed(kernel))
    detail::fail("invalid cluster launch: %u CTAs per cluster > 8 (portable) without "
                 "cudaFuncAttributeNonPortableClusterSizeAllowed", cluster_x);
  if (cluster_x > device_max_cluster())
    detail::fail("cluster launch: %u CTAs per cluster do not fit the device (cudaOccupancyMaxActiveClusters = 0; "
                 "check before launching)", cluster_x);
}

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "simt::launch: wrong number of kernel arguments");
  if (!kernel) detail::fail("simt::launch: null kernel pointer");
  check_dynamic_shared(reinterpret_cast<const void*>(kernel), smem_bytes);
  {
    std::lock_guard<std::mutex> lock(detail::launch_mutex());
    launch_log().push_back({reinterpret_cast<const void*>(kernel), grid, block, smem_bytes});
  }
  const detail::KernelCall<P...> kc{kernel, std::tuple<std::decay_t<P>...>(
                                                detail::implicit_convert<std::decay_t<P>>(std::forward<A>(args))...)};
  detail::run_grid(grid, block, smem_bytes, detail::Body{&detail::KernelCall<P...>::invoke, &kc});
}

// Runs kernel<<<grid, block, smem_bytes>>>(args...) as thread-block clusters of cluster_x
// consecutive CTAs along x (cudaLaunchKernelEx with cudaLaunchAttributeClusterDimension): the
// CTAs of a cluster run concurrently; clusters one after another, in a random order.
template <typename... P, typename... A>
void launch_cluster(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, unsigned cluster_x, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "simt::launch_cluster: wrong number of kernel arguments");
  if (!kernel) detail::fail("simt::launch_cluster: null kernel pointer");
  check_dynamic_shared(reinterpret_cast<const void*>(kernel), smem_bytes);
  check_cluster_size(reinterpret_cast<const void*>(kernel), cluster_x);
  {
    std::lock_guard<std::mutex> lock(detail::launch_mutex());
    launch_log().push_back({reinterpret_cast<const void*>(kernel), grid, block, smem_bytes, cluster_x});
  }
  const detail::KernelCall<P...> kc{kernel, std::tuple<std::decay_t<P>...>(
                                                detail::implicit_convert<std::decay_t<P>>(std::forward<A>(args))...)};
  detail::run_grid(grid, block, smem_bytes, detail::Body{&detail::KernelCall<P...>::invoke, &kc}, cluster_x);
}

// cooperative_groups::this_cluster(): block_rank(), sync(), map_shared_rank().
inline unsigned cluster_rank() { return detail::ctx("cluster.block_rank()").block->cluster_rank; }
inline void cluster_sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::cluster_sync(file, line);
}
// The address of `p` (in this CTA's dynamic shared memory) in the shared memory of CTA `rank`
// of the cluster.
template <typename T>
inline T* cluster_map(T* p, unsigned rank) {
  detail::Block* b = detail::ctx("cluster.map_shared_rank()").block;
  const unsigned char* c = reinterpret_cast<const unsigned char*>(p);
  if (c < b->smem || c >= b->smem + b->smem_bytes)
    detail::fail("cluster.map_shared_rank(): the pointer is not in this CTA's dynamic shared memory");
  const unsigned cs = b->cluster ? unsigned(b->cluster->blocks.size()) : 1u;
  if (rank >= cs) detail::fail("cluster.map_shared_rank(): rank %u of a cluster of %u CTAs", rank, cs);
  detail::Block* peer = b->cluster ? b->cluster->blocks[rank] : b;
  return reinterpret_cast<T*>(peer->smem + (c - b->smem));
}

// Pointer to the dynamic shared memory of the current block (poisoned with 0xFF at block start,
// exactly as large as the launch asked; 16-byte aligned).
template <typename T>
inline T* dynamic_shared() {
  return reinterpret_cast<T*>(detail::ctx("simt::dynamic_shared").block->smem);
}
inline size_t dynamic_shared_bytes() { return detail::ctx("simt::dynamic_shared_bytes").block->smem_bytes; }

}  // namespace simt
