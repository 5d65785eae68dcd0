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

namespace detail {

// ------------------------------------------------------------------------------ reporting
inline std::mutex& report_mutex() {
  static std::mutex m;
  return m;
}

enum ThreadState : int { kRunning = 0, kAtBarrier = 1, kAtWarpOp = 2, kExited = 3, kIdle = 4 };
enum WarpOp : int { kShflIdx = 0, kShflUp = 1, kShflDown = 2, kShflXor = 3, kSyncWarp = 4, kBallot = 5,
                    kAny = 6, kAll = 7 };
inline const char* warp_op_name(int op) {
  static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                "__syncwarp", "__ballot_sync", "__any_sync", "__all_sync"};
  return (op >= 0 && op < 8) ? names[op] : "?";
}

// What each emulated thread is doing; written by the thread itself, read (relaxed) by whoever
// reports a deadlock. Relaxed atomics create no happens-before edges for TSan.
struct ThreadInfo {
  std::atomic<int> state{kIdle};
  std::atomic<const char*> file{nullptr};
  std::atomic<int> line{0};
  std::atomic<int> op{0};
  std::atomic<unsigned> mask{0};
};

struct WarpGroup {  // one pending warp-collective (shuffle / syncwarp / vote) of some lanes
  int op = 0;
  unsigned mask = 0;
  int width = 32;
  int size = 0;
  const char* file = nullptr;
  int line = 0;
  unsigned arrived = 0;
  int departed = 0;
  bool complete = false;
  int b[32] = {};
  alignas(16) unsigned char in[32][16];
  alignas(16) unsigned char out[32][16];
};

struct Warp {
  std::mutex m;
  std::condition_variable cv;
  std::list<WarpGroup> groups;
  unsigned existing = 0;  // lanes that exist in this (possibly partial) warp
  unsigned exited = 0;
};

struct Cluster;

struct Block {
  dim3 idx;
  int nthreads = 0;
  Cluster* cluster = nullptr;  // thread-block cluster (simt::launch_cluster), else null
  unsigned cluster_rank = 0;
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  // barrier
  std::mutex bm;
  std::condition_variable bcv;
  int live = 0;
  int arrived = 0;
  uint64_t gen = 0;
  int pred_count = 0;   // __syncthreads_count/and/or: nonzero predicates of this phase
  int last_count = 0;   // ... and the total of the phase that just completed
  int last_arrived = 0;  // threads that took part in the phase that just completed
  const char* site_file = nullptr;
  int site_line = 0;
  // low 32 bits: threads exited or blocked in an unsatisfied wait; high 32 bits: threads exited.
  // Only relaxed RMWs (no TSan-visible synchronization); total modification order makes the
  // "everybody is blocked" test exact.
  std::atomic<uint64_t> inactive{0};
  std::unique_ptr<Warp[]> warps;
  std::unique_ptr<ThreadInfo[]> info;
};

// The CTAs of one thread-block cluster: they run concurrently, share a cluster-wide barrier
// (cluster.sync()) and read each other's dynamic shared memory (map_shared_rank).
struct Cluster {
  std::vector<Block*> blocks;
  std::mutex m;
  std::condition_variable cv;
  int live = 0;     // threads of the cluster not yet exited
  int arrived = 0;  // threads waiting at the current cluster barrier
  uint64_t gen = 0;
};

struct ThreadCtx {
  Block* block = nullptr;
  int tid = -1;
};
inline thread_local ThreadCtx tctx;

inline std::string thread_name(const Block* b, int tid) {
  char buf[160];
  if (!b || tid < 0) return "host thread";
  const unsigned dx = blockDim.x ? blockDim.x : 1, dy = blockDim.y ? blockDim.y : 1;
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u) [linear %d, warp %d, lane %d]", b->idx.x,
                b->idx.y, b->idx.z, unsigned(tid) % dx, (unsigned(tid) / dx) % dy, unsigned(tid) / (dx * dy), tid,
                tid / 32, tid % 32);
  return buf;
}

inline std::string describe_threads(Block* b);

[[noreturn]] inline void fail_v(bool dump, const char* fmt, va_list ap) {
  std::lock_guard<std::mutex> lk(report_mutex());
  char msg[2048];
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  std::string where = thread_name(tctx.block, tctx.tid);
  std::fprintf(stderr, "SIMT ERROR: %s\n  (reported by %s)\n", msg, where.c_str());
  if (dump && tctx.block) std::fprintf(stderr, "%s", describe_threads(tctx.block).c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  const char* on_err = std::getenv("SIMT_ON_ERROR");
  if (on_err && std::strcmp(on_err, "abort") == 0) std::abort();  // for a debugger / core dump
  std::_Exit(kErrorExitCode);
}

[[noreturn]] inline void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(false, fmt, ap);
}
[[noreturn]] inline void fail_dump(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void fail_dump(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(true, fmt, ap);
}

inline std::string lanes_str(unsigned m) {
  std::string s;
  int i = 0;
  while (i < 32) {
    if (!(m >> i & 1u)) { ++i; continue; }
    int j = i;
    while (j + 1 < 32 && (m >> (j + 1) & 1u)) ++j;
    if (!s.empty()) s += ",";
    s += std::to_string(i);
    if (j > i) s += "-" + std::to_string(j);
    i = j + 1;
  }
  return s.empty() ? "none" : s;
}

// Groups threads with identical state into ranges: "threads 0-31,64-95: waiting at ...".
inline std::string describe_threads(Block* b) {
  struct Row { std::string what; std::vector<int> tids; };
  std::vector<Row> rows;
  for (int t = 0; t < b->nthreads; ++t) {
    const ThreadInfo& in = b->info[t];
    int st = in.state.load(std::memory_order_relaxed);
    char buf[512];
    const char* f = in.file.load(std::memory_order_relaxed);
    int ln = in.line.load(std::memory_order_relaxed);
    switch (st) {
      case kAtBarrier: std::snprintf(buf, sizeof buf, "waiting at __syncthreads() %s:%d", f ? f : "?", ln); break;
      case kAtWarpOp:
        std::snprintf(buf, sizeof buf, "waiting at %s(mask=0x%08x) %s:%d", warp_op_name(in.op.load(std::memory_order_relaxed)),
                      in.mask.load(std::memory_order_relaxed), f ? f : "?", ln);
        break;
      case kExited: std::snprintf(buf, sizeof buf, "exited"); break;
      case kRunning: std::snprintf(buf, sizeof buf, "running (not at a barrier or warp collective)"); break;
      default: std::snprintf(buf, sizeof buf, "not started yet"); break;
    }
    auto it = std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.what == buf; });
    if (it == rows.end()) rows.push_back({buf, {t}});
    else it->tids.push_back(t);
  }
  std::string out = "  thread states of block (" + std::to_string(b->idx.x) + "," + std::to_string(b->idx.y) + "," +
                    std::to_string(b->idx.z) + ") [linear thread ids]:\n";
  for (auto& r : rows) {
    std::string ids;
    size_t i = 0;
    while (i < r.tids.size()) {
      size_t j = i;
      while (j + 1 < r.tids.size() && r.tids[j + 1] == r.tids[j] + 1) ++j;
      if (!ids.empty()) ids += ",";
      ids += std::to_string(r.tids[i]);
      if (j > i) ids += "-" + std::to_string(r.tids[j]);
      i = j + 1;
    }
    out += "    threads " + ids + ": " + r.what + "\n";
  }
  return out;
}

inline ThreadCtx& ctx(const char* what) {
  ThreadCtx& c = tctx;
  if (!c.block) fail("%s called outside of a kernel launched with simt::launch", what);
  return c;
}

inline void set_state(Block& b, int tid, int st, const char* file = nullptr, int line = 0, int op = 0,
                      unsigned mask = 0) {
  ThreadInfo& in = b.info[tid];
  in.file.store(file, std::memory_order_relaxed);
  in.line.store(line, std::memory_order_relaxed);
  in.op.store(op, std::memory_order_relaxed);
  in.mask.store(mask, std::memory_order_relaxed);
  in.state.store(st, std::memory_order_relaxed);
}

// Called (with the lock of the wait's sync object held) right before a thread blocks in an
// unsatisfied wait. If it is the last thread to become inactive, nobody can ever wake anyone.
inline void note_blocked(Block& b) {
  uint64_t v = b.inactive.fetch_add(1, std::memory_order_relaxed) + 1;
  if (uint32_t(v) == uint32_t(b.nthreads))
    fail_dump("DEADLOCK: every thread of the block is waiting (at __syncthreads or a warp collective) and "
              "none can make progress");
}
inline void note_released(Block& b, int n) {
  if (n > 0) b.inactive.fetch_sub(uint64_t(n), std::memory_order_relaxed);
}

// ------------------------------------------------------------------------------ barrier
inline void barrier_complete(Block& b, int waiters) {
  b.last_count = b.pred_count;
  b.last_arrived = b.arrived;
  b.pred_count = 0;
  b.arrived = 0;
  b.site_file = nullptr;
  b.gen++;
  note_released(b, waiters);
  b.bcv.notify_all();
}

// Returns the number of threads of the block that passed a nonzero predicate.
inline int syncthreads(const char* file, int line, int pred = 0, int* participants = nullptr) {
  ThreadCtx& c = ctx("__syncthreads()");
  int count;
  Block& b = *c.block;
  set_state(b, c.tid, kAtBarrier, file, line);
  {
    std::unique_lock<std::mutex> lk(b.bm);
    if (b.arrived > 0 && (b.site_line != line || std::strcmp(b.site_file, file) != 0))
      fail_dump("DEADLOCK: divergent __syncthreads(): this thread reached the barrier at %s:%d while %d other "
                "thread(s) wait at the barrier at %s:%d (a barrier inside a divergent branch hangs or is "
                "undefined on a GPU)",
                file, line, b.arrived, b.site_file, b.site_line);
    if (b.arrived == 0) {
      b.site_file = file;
      b.site_line = line;
    }
    b.arrived++;
    b.pred_count += pred != 0;
    if (b.arrived == b.live) {
      barrier_complete(b, b.arrived - 1);
    } else {
      const uint64_t g = b.gen;
      note_blocked(b);
      b.bcv.wait(lk, [&] { return b.gen != g; });
    }
    count = b.last_count;  // cannot be overwritten before we read it: the next phase needs us
    if (participants) *participants = b.last_arrived;
  }
  set_state(b, c.tid, kRunning);
  return count;
}

// ------------------------------------------------------------------------------ warp collectives
inline unsigned lane_bit(int lane) { return 1u << lane; }

template <int Op>
inline void warp_compute(WarpGroup& g) {
  const unsigned mask = g.mask;
  const int width = g.width;
  const unsigned segmask = unsigned(32 - width) & 31u;
  if (Op == kSyncWarp) return;
  if (Op == kBallot || Op == kAny || Op == kAll) {
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l)
      if ((mask >> l & 1u) && g.b[l]) ballot |= lane_bit(l);
    unsigned r = Op == kBallot ? ballot : Op == kAny ? unsigned(ballot != 0) : unsigned(ballot == mask);
    for (int l = 0; l < 32; ++l)
      if (mask >> l & 1u) std::memcpy(g.out[l], &r, sizeof r);
    return;
  }
  // PTX shfl.sync semantics (c = ((32-width)<<8) | clamp, clamp 0 for .up and 0x1f otherwise).
  const unsigned clamp = Op == kShflUp ? 0u : 31u;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    const int bval = g.b[lane] & 31;
    const int maxLane = int((unsigned(lane) & segmask) | (clamp & ~segmask));
    const int minLane = int(unsigned(lane) & segmask);
    int j = lane;
    bool pval = false;
    switch (Op) {
      case kShflUp: j = lane - bval; pval = j >= maxLane; break;
      case kShflDown: j = lane + bval; pval = j <= maxLane; break;
      case kShflXor: j = lane ^ bval; pval = j <= maxLane; break;
      default: j = minLane | (bval & int(~segmask & 31u)); pval = j <= maxLane; break;
    }
    if (!pval) j = lane;
    if (j >= 0 && j < 32 && (mask >> j & 1u)) std::memcpy(g.out[lane], g.in[j], 16);
    else std::memset(g.out[lane], 0xFF, 16);  // source lane not in mask: undefined on a GPU -> poison
  }
}

inline void compute_group(WarpGroup& g) {
  switch (g.op) {
    case kShflIdx: warp_compute<kShflIdx>(g); break;
    case kShflUp: warp_compute<kShflUp>(g); break;
    case kShflDown: warp_compute<kShflDown>(g); break;
    case kShflXor: warp_compute<kShflXor>(g); break;
    case kSyncWarp: warp_compute<kSyncWarp>(g); break;
    case kBallot: warp_compute<kBallot>(g); break;
    case kAny: warp_compute<kAny>(g); break;
    default: warp_compute<kAll>(g); break;
  }
}

// Every lane named in `mask` must reach a collective with the same op/mask/width; returns this
// lane's 16-byte result slot content in `out`.
inline void warp_collective(int op, unsigned mask, const void* in, int size, int b, int width, const char* file,
                            int line, void* out) {
  ThreadCtx& c = ctx(warp_op_name(op));
  Block& blk = *c.block;
  const int lane = c.tid % 32, wi = c.tid / 32;
  Warp& w = blk.warps[wi];
  const unsigned me = lane_bit(lane);
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail("%s at %s:%d: width %d is not a power of 2 in [1, 32]", warp_op_name(op), file, line, width);
  if (!(mask & me))
    fail("%s at %s:%d: mask 0x%08x does not include the calling lane %d", warp_op_name(op), file, line, mask, lane);
  if (mask & ~w.existing)
    fail("%s at %s:%d: mask 0x%08x names lane(s) %s that do not exist in warp %d (blockDim has %d threads)",
         warp_op_name(op), file, line, mask, lanes_str(mask & ~w.existing).c_str(), wi, blk.nthreads);
  set_state(blk, c.tid, kAtWarpOp, file, line, op, mask);
  {
    std::unique_lock<std::mutex> lk(w.m);
    if (mask & w.exited)
      fail_dump("%s(mask=0x%08x) at %s:%d: the mask names lane(s) %s of warp %d that have already exited",
                warp_op_name(op), mask, file, line, lanes_str(mask & w.exited).c_str(), wi);
    std::list<WarpGroup>::iterator g = w.groups.end();
    for (auto it = w.groups.begin(); it != w.groups.end(); ++it) {
      if (it->complete) continue;
      const bool same_mask = it->mask == mask;
      if (same_mask && it->op == op && it->width == width && it->size == size && !(it->arrived & me)) {
        g = it;
        break;
      }
      // Same mask but a different collective: both wait for each other (PTX: same qualifiers and
      // same membermask). A different mask is fine unless this lane is named by the pending group
      // and our mask names lanes already waiting in it (they wait for us, we wait for them).
      if (same_mask || ((it->mask & me) && (mask & it->arrived)))
        fail_dump("warp collective mismatch in warp %d: lane %d executes %s(mask=0x%08x, width=%d, %d-byte value) "
                  "at %s:%d, but lanes %s are waiting for it in %s(mask=0x%08x, width=%d, %d-byte value) at %s:%d; "
                  "every lane named in a mask must execute the same collective with the same mask (the mask names "
                  "lanes that do not participate)",
                  wi, lane, warp_op_name(op), mask, width, size, file, line, lanes_str(it->arrived).c_str(),
                  warp_op_name(it->op), it->mask, it->width, it->size, it->file, it->line);
    }
    if (g == w.groups.end()) {
      w.groups.emplace_back();
      g = std::prev(w.groups.end());
      g->op = op;
      g->mask = mask;
      g->width = width;
      g->size = size;
      g->file = file;
      g->line = line;
    }
    std::memset(g->in[lane], 0, 16);
    if (size) std::memcpy(g->in[lane], in, size_t(size));
    g->b[lane] = b;
    g->arrived |= me;
    if (g->arrived == mask) {
      compute_group(*g);
      g->complete = true;
      note_released(blk, __builtin_popcount(mask) - 1);
      w.cv.notify_all();
    } else {
      note_blocked(blk);
      w.cv.wait(lk, [&] { return g->complete; });
    }
    if (out && size) std::memcpy(out, g->out[lane], size_t(size));
    if (++g->departed == __builtin_popcount(mask)) w.groups.erase(g);
  }
  set_state(blk, c.tid, kRunning);
}

template <typename T>
inline T shfl(int op, unsigned mask, T var, int b, int width, const char* file, int line) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 16,
                "simt: shuffled type must be trivially copyable and at most 16 bytes");
  T r;
  warp_collective(op, mask, &var, int(sizeof(T)), b, width, file, line, &r);
  return r;
}

// ------------------------------------------------------------------------------ clusters
// barrier.cluster.arrive + wait over every thread of every CTA of the cluster (exited threads
// count as arrived, as for __syncthreads). Not seen by the per-block deadlock detector (a CTA's
// threads may all wait here while its peers run); a cluster that never completes the barrier
// ends in the launch's TIMEOUT report.
inline void cluster_sync(const char* file, int line) {
  ThreadCtx& c = ctx("cluster.sync()");
  Block& b = *c.block;
  if (!b.cluster) fail("cluster.sync() at %s:%d in a kernel not launched with a cluster (simt::launch_cluster)", file, line);
  Cluster& cl = *b.cluster;
  set_state(b, c.tid, kAtBarrier, file, line);
  {
    std::unique_lock<std::mutex> lk(cl.m);
    cl.arrived++;
    if (cl.arrived == cl.live) {
      cl.arrived = 0;
      cl.gen++;
      cl.cv.notify_all();
    } else {
      const uint64_t g = cl.gen;
      cl.cv.wait(lk, [&] { return cl.gen != g; });
    }
  }
  set_state(b, c.tid, kRunning);
}

inline void thread_exit() {
  ThreadCtx& c = tctx;
  Block& b = *c.block;
  const int lane = c.tid % 32;
  set_state(b, c.tid, kExited);
  {
    std::lock_guard<std::mutex> lk(b.bm);
    b.live--;
    if (b.arrived > 0 && b.arrived == b.live) barrier_complete(b, b.arrived);  // exited threads count as arrived
    // A CTA's shared memory ends with its last thread: poison it, so that a peer of the cluster
    // still reading it (no cluster.sync() before exit) gets NaN and, under TSan, a race report.
    if (b.live == 0 && b.cluster && b.smem_bytes) std::memset(b.smem, 0xFF, b.smem_bytes);
  }
  if (b.cluster) {
    Cluster& cl = *b.cluster;
    std::lock_guard<std::mutex> lk(cl.m);
    cl.live--;
    if (cl.arrived > 0 && cl.arrived == cl.live) {
      cl.arrived = 0;
      cl.gen++;
      cl.cv.notify_all();
    }
  }
  {
    Warp& w = b.warps[c.tid / 32];
    std::lock_guard<std::mutex> lk(w.m);
    w.exited |= lane_bit(lane);
    for (auto& g : w.groups)
      if (!g.complete && (g.mask & lane_bit(lane)))
        fail_dump("lane %d of warp %d exited while lanes %s wait for it in %s(mask=0x%08x) at %s:%d (the mask "
                  "names a lane that does not participate)",
                  lane, c.tid / 32, lanes_str(g.arrived).c_str(), warp_op_name(g.op), g.mask, g.file, g.line);
  }
  uint64_t v = b.inactive.fetch_add((uint64_t(1) << 32) + 1, std::memory_order_relaxed) + (uint64_t(1) << 32) + 1;
  if (uint32_t(v) == uint32_t(b.nthreads) && uint32_t(v >> 32) != uint32_t(b.nthreads))
    fail_dump("DEADLOCK: the remaining threads of the block wait forever");
}

// ------------------------------------------------------------------------------ configuration
inline double env_double(const char* name, double dflt) {
  const char* s = std::getenv(name);
  return (s && *s) ? std::atof(s) : dflt;
}

inline uint64_t base_seed() {
  static const uint64_t seed = [] {
    const char* s = std::getenv("SIMT_SEED");
    uint64_t v;
    if (s && *s) v = std::strtoull(s, nullptr, 0);
    else v = (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
    std::fprintf(stderr, "simt: SIMT_SEED=%llu (block order randomized; set SIMT_SEED to reproduce)\n",
                 (unsigned long long)v);
    return v;
  }();
  return seed;
}

// ------------------------------------------------------------------------------ thread pool
struct Body {  // type-erased kernel call (a plain function pointer keeps sanitizer stacks short)
  void (*fn)(const void*);
  const void* arg;
};

class Pool {
 public:
  static Pool& get() {
    static Pool p;
    return p;
  }
  ~Pool() {
    for (auto& w : workers_) {
      {
        std::lock_guard<std::mutex> lk(w->m);
        w->stop = true;
      }
      w->cv.notify_one();
    }
    for (auto& w : workers_) w->thread.join();
  }

  // Runs body on nthreads pool threads for block blk; returns when all have exited.
  void run_block(Block* blk, int nthreads, const Body* body, const dim3& bdim, const dim3& gdim,
                 double timeout_s) {
    run_blocks(&blk, 1, nthreads, body, bdim, gdim, timeout_s);
  }
  // The same for nblocks blocks at once (the CTAs of a cluster), nthreads each.
  void run_blocks(Block* const* blks, int nblocks, int per_block, const Body* body, const dim3& bdim,
                  const dim3& gdim, double timeout_s) {
    const int nthreads = nblocks * per_block;
    Block* blk = blks[0];
    while (int(workers_.size()) < nthreads) {
      workers_.emplace_back(new Worker);
      Worker* w = workers_.back().get();
      const int i = int(workers_.size()) - 1;
      w->thread = std::thread([this, w, i] { worker(w, i); });
    }
    {
      std::lock_guard<std::mutex> lk(done_m_);
      done_ = 0;
      n_ = nthreads;
    }
    // Each worker has its own start mutex: a thread that finishes its part of the block and goes
    // back to waiting must not happen-before a thread that has not started yet (that would hide
    // races from TSan), so no lock is shared between workers outside the barrier/warp objects.
    for (int i = 0; i < nthreads; ++i) {
      Worker& w = *workers_[size_t(i)];
      {
        std::lock_guard<std::mutex> lk(w.m);
        w.job = Job{blks[i / per_block], body, bdim, gdim, i % per_block};
        w.has_job = true;
      }
      w.cv.notify_one();
    }
    std::unique_lock<std::mutex> lk(done_m_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (done_ != nthreads) {
      if (done_cv_.wait_until(lk, deadline) == std::cv_status::timeout && done_ != nthreads) {
        lk.unlock();
        tctx.block = blk;  // so the report dumps this block's thread states
        tctx.tid = -1;
        fail_dump("TIMEOUT: block (%u,%u,%u) did not finish within %.1f s (SIMT_TIMEOUT): a hang (spin-wait on "
                  "another thread/block, infinite loop) or a deadlock the layer cannot see",
                  blk->idx.x, blk->idx.y, blk->idx.z, timeout_s);
      }
    }
  }

 private:
  struct Job {
    Block* blk = nullptr;
    const Body* body = nullptr;
    dim3 bdim, gdim;
    int tid = 0;  // linear thread index within blk
  };
  struct Worker {
    std::thread thread;
    std::mutex m;
    std::condition_variable cv;
    bool has_job = false;
    bool stop = false;
    Job job;
  };

  void worker(Worker* w, int i) {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lk(w->m);
        w->cv.wait(lk, [&] { return w->stop || w->has_job; });
        if (w->stop) return;
        job = w->job;
        w->has_job = false;
      }
      Block* blk = job.blk;
      const dim3 bdim = job.bdim;
      const unsigned t = unsigned(job.tid);
      threadIdx = make_uint3(t % bdim.x, (t / bdim.x) % bdim.y, t / (bdim.x * bdim.y));
      blockIdx = make_uint3(blk->idx.x, blk->idx.y, blk->idx.z);
      blockDim = bdim;
      gridDim = job.gdim;
      tctx.block = blk;
      tctx.tid = job.tid;
      set_state(*blk, job.tid, kRunning);
      job.body->fn(job.body->arg);
      thread_exit();
      tctx.block = nullptr;
      tctx.tid = -1;
      {
        std::lock_guard<std::mutex> lk(done_m_);
        if (++done_ == n_) done_cv_.notify_one();
      }
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex done_m_;
  std::condition_variable done_cv_;
  int done_ = 0;
  int n_ = 0;
};

struct SmemDeleter {
  void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t(16)); }
};

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

inline void run_grid(dim3 grid, dim3 block, size_t smem_bytes, Body body, unsigned cluster_x = 1) {
  if (tctx.block) fail("simt::launch called from inside a kernel (dynamic parallelism is not supported)");
  const uint64_t nt = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    fail("invalid launch configuration: grid (%u,%u,%u) block (%u,%u,%u) has a zero dimension "
         "(cudaErrorInvalidConfiguration)", grid.x, grid.y, grid.z, block.x, block.y, block.z);
  if (block.x > 1024 || block.y > 1024 || block.z > 64 || nt > 1024)
    fail("invalid launch configuration: block (%u,%u,%u) = %llu threads; limits are x,y <= 1024, z <= 64, "
         "x*y*z <= 1024 (cudaErrorInvalidConfiguration)", block.x, block.y, block.z, (unsigned long long)nt);
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
    fail("invalid launch configuration: grid (%u,%u,%u) exceeds limits x <= 2^31-1, y,z <= 65535",
         grid.x, grid.y, grid.z);
  if (smem_bytes > 232448)
    fail("invalid launch configuration: %zu bytes of dynamic shared memory > 227 KiB (sm_90 opt-in maximum)",
         smem_bytes);
  if (cluster_x == 0 || cluster_x > 16 || grid.x % cluster_x != 0)
    fail("invalid cluster launch: cluster size %u (1-16, 8 portable) must divide grid.x = %u", cluster_x, grid.x);
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  const double max_blocks = env_double("SIMT_MAX_BLOCKS", 1 << 20);
  if (double(nblocks) > max_blocks)
    fail("grid (%u,%u,%u) = %llu blocks is too large to emulate (SIMT_MAX_BLOCKS=%.0f)", grid.x, grid.y, grid.z,
         (unsigned long long)nblocks, max_blocks);

  std::lock_guard<std::mutex> launch_lock(launch_mutex());  // one launch at a time (one device, one stream)
  static uint64_t launch_counter = 0;
  const uint64_t seed = base_seed() + 0x9E3779B97F4A7C15ull * (++launch_counter);
  // Clusters (cluster_x consecutive blocks along x, all resident at once) in a random order.
  const uint64_t nclusters = nblocks / cluster_x;
  std::vector<uint64_t> order(nclusters);
  for (uint64_t i = 0; i < nclusters; ++i) order[i] = i;
  const char* ord = std::getenv("SIMT_BLOCK_ORDER");
  if (!(ord && std::strcmp(ord, "linear") == 0)) {
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
  }
  const double timeout_s = env_double("SIMT_TIMEOUT", 120.0);
  const int n = int(nt);
  const int nwarps = (n + 31) / 32;
  for (uint64_t ci : order) {
    std::vector<std::unique_ptr<Block>> blks(cluster_x);
    std::vector<std::unique_ptr<unsigned char, SmemDeleter>> smems(cluster_x);
    Cluster cl;
    cl.live = n * int(cluster_x);
    for (unsigned r = 0; r < cluster_x; ++r) {
      const uint64_t lin = ci * cluster_x + r;
      blks[r].reset(new Block);
      Block& blk = *blks[r];
      blk.idx = dim3(unsigned(lin % grid.x), unsigned((lin / grid.x) % grid.y), unsigned(lin / (uint64_t(grid.x) * grid.y)));
      blk.nthreads = n;
      blk.live = n;
      blk.warps.reset(new Warp[nwarps]);
      for (int w = 0; w < nwarps; ++w) {
        const int lanes = std::min(32, n - 32 * w);
        blk.warps[w].existing = lanes == 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1u);
      }
      blk.info.reset(new ThreadInfo[n]);
      // Dynamic shared memory: exactly smem_bytes (so ASan sees the bounds), fresh per block,
      // poisoned with 0xFF bytes (NaN for float/double, -1 for integers).
      smems[r].reset(static_cast<unsigned char*>(::operator new[](smem_bytes, std::align_val_t(16))));
      if (smem_bytes) std::memset(smems[r].get(), 0xFF, smem_bytes);
      blk.smem = smems[r].get();
      blk.smem_bytes = smem_bytes;
      if (cluster_x > 1) {
        blk.cluster = &cl;
        blk.cluster_rank = r;
        cl.blocks.push_back(&blk);
      }
    }
    std::vector<Block*> ptrs;
    for (auto& b : blks) ptrs.push_back(b.get());
    Pool::get().run_blocks(ptrs.data(), int(cluster_x), n, &body, block, grid, timeout_s);
  }
}

template <typename To, typename From>
To implicit_convert(From&& f) {
  return std::forward<From>(f);  // copy-initialization: only implicit conversions, like a kernel call
}

}  // namespace detail

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
