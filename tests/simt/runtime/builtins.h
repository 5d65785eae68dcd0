// Part of simt_runtime.h: CUDA device built-ins in the global namespace (__syncthreads, shuffles, atomics).
// Include simt_runtime.h, not this file: the parts rely on its includes, CUDA keywords and
// built-in variables, and on each other's order.
#pragma once

// ---------------------------------------------------------------------------------------------
// CUDA device built-ins (global namespace, as in CUDA).
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::simt::detail::syncthreads(file, line);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::syncthreads(file, line, pred);
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  int participants = 0;
  const int count = ::simt::detail::syncthreads(file, line, pred, &participants);
  return count == participants;
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::syncthreads(file, line, pred) != 0;
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::simt::detail::warp_collective(::simt::detail::kSyncWarp, mask, nullptr, 0, 0, 32, file, line, nullptr);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  return ::simt::detail::shfl(::simt::detail::kShflIdx, mask, var, srcLane, width, file, line);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::shfl(::simt::detail::kShflUp, mask, var, int(delta), width, file, line);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::shfl(::simt::detail::kShflDown, mask, var, int(delta), width, file, line);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::shfl(::simt::detail::kShflXor, mask, var, laneMask, width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  unsigned r = 0;
  ::simt::detail::warp_collective(::simt::detail::kBallot, mask, &r, 4, pred != 0, 32, file, line, &r);
  return r;
}
inline int __any_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  unsigned r = 0;
  ::simt::detail::warp_collective(::simt::detail::kAny, mask, &r, 4, pred != 0, 32, file, line, &r);
  return int(r);
}
inline int __all_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  unsigned r = 0;
  ::simt::detail::warp_collective(::simt::detail::kAll, mask, &r, 4, pred != 0, 32, file, line, &r);
  return int(r);
}
// Memory fences: no-ops here (inter-block visibility is not modelled).
inline void __threadfence() {}
inline void __threadfence_block() {}
template <typename T>
inline T __ldg(const T* p) { return *p; }

// Atomics: one global mutex (TSan-visible synchronization among all atomic users).
namespace simt { namespace detail {
inline std::mutex& atomic_mutex() {
  static std::mutex m;
  return m;
}
}}  // namespace simt::detail
#define SIMT_DEFINE_ATOMIC_(name, T, expr)                                   \
  inline T name(T* addr, T val) {                                            \
    std::lock_guard<std::mutex> lk(::simt::detail::atomic_mutex());          \
    T old = *addr;                                                           \
    *addr = (expr);                                                          \
    return old;                                                              \
  }
SIMT_DEFINE_ATOMIC_(atomicAdd, float, old + val)
SIMT_DEFINE_ATOMIC_(atomicAdd, double, old + val)
SIMT_DEFINE_ATOMIC_(atomicAdd, int, old + val)
SIMT_DEFINE_ATOMIC_(atomicAdd, unsigned int, old + val)
SIMT_DEFINE_ATOMIC_(atomicAdd, unsigned long long, old + val)
SIMT_DEFINE_ATOMIC_(atomicSub, int, old - val)
SIMT_DEFINE_ATOMIC_(atomicSub, unsigned int, old - val)
SIMT_DEFINE_ATOMIC_(atomicExch, int, val)
SIMT_DEFINE_ATOMIC_(atomicExch, unsigned int, val)
SIMT_DEFINE_ATOMIC_(atomicExch, float, val)
SIMT_DEFINE_ATOMIC_(atomicMax, int, old > val ? old : val)
SIMT_DEFINE_ATOMIC_(atomicMax, unsigned int, old > val ? old : val)
SIMT_DEFINE_ATOMIC_(atomicMin, int, old < val ? old : val)
SIMT_DEFINE_ATOMIC_(atomicMin, unsigned int, old < val ? old : val)
#undef SIMT_DEFINE_ATOMIC_
inline int atomicCAS(int* addr, int compare, int val) {
  std::lock_guard<std::mutex> lk(::simt::detail::atomic_mutex());
  int old = *addr;
  if (old == compare) *addr = val;
  return old;
}
inline unsigned atomicCAS(unsigned* addr, unsigned compare, unsigned val) {
  std::lock_guard<std::mutex> lk(::simt::detail::atomic_mutex());
  unsigned old = *addr;
  if (old == compare) *addr = val;
  return old;
}
