// simt_runtime.h -- executes CUDA kernel source on the CPU (GROUPNORM_SIMT mode).
//
// Every CUDA thread of a block runs as a real OS thread (from a pool reused across blocks and
// launches); the blocks of a launch run one after another, in a random order (env SIMT_SEED).
// __syncthreads() is a mutex+condvar generation barrier, warp shuffles go through a per-warp
// exchange, so ThreadSanitizer sees exactly the happens-before edges a GPU gives: a barrier
// orders the whole block, a shuffle orders the lanes of one warp, nothing else. Misuse that a
// GPU would turn into a hang or garbage (divergent barriers, shuffle masks naming lanes that
// do not take part, deadlocks, bad launch configurations) is reported as
//   "SIMT ERROR: ..." on stderr, and the process exits with status 87 (never hangs).
//
// Self-contained: needs only the CUDA headers (vector_types.h, cuda_fp16.h, cuda_bf16.h),
// which compile with g++ when __CUDACC__ is not defined. C++17.
#pragma once

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#error "simt_runtime.h is the host emulation of CUDA; do not compile it with nvcc"
#endif

#include <vector_types.h>
#include <vector_functions.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------------------------
// CUDA keywords. host_defines.h (pulled in above) maps __global__/__device__/__host__ to
// nothing and __forceinline__ to inline+always_inline when __CUDACC__ is undefined. It also maps
// __shared__ to nothing, which would make shared arrays per-thread: redefine it to `static`
// (blocks run one after another, so one static instance per function == one per block).
#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __grid_constant__
#define __grid_constant__
#endif

// Built-in variables (thread-local: each emulated CUDA thread is an OS thread).
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace simt {
constexpr int kErrorExitCode = 87;
}  // namespace simt

// The runtime, in dependency order (each part under 500 lines).
#include "runtime/report_barrier.h"  // simt::detail: SIMT ERROR reports, thread context, __syncthreads
#include "runtime/warp_cluster.h"    // simt::detail: shuffles / votes, cluster barriers and DSMEM, SIMT_* env
#include "runtime/pool.h"            // simt::detail: the OS-thread pool that runs blocks and clusters
#include "runtime/launch.h"          // simt: launch, launch_cluster, attributes, launch log
#include "runtime/builtins.h"        // CUDA built-ins: __syncthreads, __shfl_*_sync, atomics
