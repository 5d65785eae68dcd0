// Part of simt_runtime.h: warp collectives, cluster barriers and shared-memory mapping, configuration.
// Include simt_runtime.h, not this file: the parts rely on its includes, CUDA keywords and
// built-in variables, and on each other's order.
#pragma once

namespace simt {
namespace detail {

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

}  // namespace detail
}  // namespace simt
