// Part of simt_runtime.h: reporting (SIMT ERROR, thread context) and the block barrier.
// Include simt_runtime.h, not this file: the parts rely on its includes, CUDA keywords and
// built-in variables, and on each other's order.
#pragma once

namespace simt {
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

}  // namespace detail
}  // namespace simt
