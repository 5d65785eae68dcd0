// Forward kernels.
//   gn_fwd_onchip : gpb groups per CTA, tpg threads per group; each thread keeps the vectors
//                   it loaded in (dynamic) shared memory, so x is read once: 1R + 1W.
//   gn_fwd_cluster: a group split over a thread-block cluster (sm_90), its chunks parked in the
//                   CTAs' shared memory, partials exchanged through distributed shared memory: 1R + 1W.
//   gn_fwd_stats  : partial Welford (n, mean, M2) of x - s over one chunk of a group -> ws.
//   gn_fwd_apply  : merges the group's partials in a fixed order, writes mean/rstd (split 0),
//                   normalizes its chunk: with gn_fwd_stats 2R + 1W.
//   gn_fwd_stats_rows / gn_fwd_finalize / gn_fwd_apply_rows
//                 : channels-last tensors whose groups are not a whole number of 16-byte
//                   vectors (C / G % V != 0, e.g. SD UNet's 320 channels in 32 groups) but
//                   whose rows are (C % V == 0): a CTA takes a block of spatial rows of one
//                   sample with 16-byte vectors along C across all groups. Per-channel
//                   Welford -> per-(n, g, piece) partials -> merged per group in a fixed order
//                   -> elementwise epilogue: 2R + 1W, coalesced, vectorized.
//   gn_split_moments / gn_split_given
//                 : the split ops (a shard of a group, csrc/ops.cpp): gn_fwd_stats{,_rows} +
//                   gn_split_moments is `stats` (the partials merged in order into float64
//                   moments); gn_split_given + gn_fwd_apply{,_rows} is `apply` (the given
//                   moments -> per-group (s, m, rstd) -> the same epilogues).
// s is the group's first element (csrc/README.md): statistics are of x - s.
#pragma once

#include "common/cluster_layout.h"
#include "cuda/kernels/common.cuh"

namespace groupnorm_cuda {
namespace kernels {

// O: y's element type, T (the op's default) or float for a 16-bit T (the output dtype of
// autocast's float32 policy, written directly instead of from a float32 copy of x).
template <typename T, typename W, typename O> struct FwdParams {
  const T* x;
  const W* weight;  // nullable
  const W* bias;    // nullable
  O* y;
  acc_t<T>* mean;
  acc_t<T>* rstd;
  acc_t<T>* ws;  // partials [NG][splits][3]
  acc_t<T>* gstat;  // per group (s, m, rstd) [NG][3]: rows schedule, and given statistics
  double* moments_out;       // split op stats: [NG][4] (count, s, m, M2) (else null)
  const double* moments_in;  // split op apply: [NG][4] the merged moments (else null)
  Geometry geo;
  WalkSched sched;
  RowsSched rows;
  BundleSched bundle;
  acc_t<T> eps;
  bool silu;
};

// Normalizes the vector whose first element is at (row, col) of group g (the walk's view):
// y = ((x - s) - m) * (rstd * w) + b. NCHW: channel `row`, the vector's tail in the next
// channel where a flat group's vector crosses the end of the row.
template <typename T, typename W, typename O, int V>
__device__ inline Vec<O, V> fwd_epilogue(const FwdParams<T, W, O>& p, const Vec<T, V>& v, int64_t g, int64_t row,
                                         int64_t col, acc_t<T> s, acc_t<T> m, acc_t<T> rstd) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  Vec<O, V> out;
  if (!geo.channels_last) {
    const int64_t c = g * geo.D + row;
    const A a = p.weight ? rstd * to_acc(p.weight[c]) : rstd;
    const A b = p.bias ? to_acc(p.bias[c]) : A(0);
    A a1 = a, b1 = b;
    if (col + V > geo.HxW) {  // flat groups only
      a1 = p.weight ? rstd * to_acc(p.weight[c + 1]) : rstd;
      b1 = p.bias ? to_acc(p.bias[c + 1]) : A(0);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const bool next = col + j >= geo.HxW;
      A z = ((to_acc(v.v[j]) - s) - m) * (next ? a1 : a) + (next ? b1 : b);
      if (p.silu) z = gn_silu(z);
      out.v[j] = from_acc<O>(z);
    }
  } else {
    const int64_t c0 = g * geo.D + col;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const A a = p.weight ? rstd * to_acc(p.weight[c0 + j]) : rstd;
      const A b = p.bias ? to_acc(p.bias[c0 + j]) : A(0);
      A z = ((to_acc(v.v[j]) - s) - m) * a + b;
      if (p.silu) z = gn_silu(z);
      out.v[j] = from_acc<O>(z);
    }
  }
  return out;
}

// ---- phases of the tiled forward kernels (gn_fwd_onchip, gn_fwd_cluster) over one thread's
// vectors e = e_begin + lt, + tpg, ... < e_end of a group (x at base), parked in the tile at
// index e - origin.

// Loads x (kLoadBatch in flight) into the tile; returns the Welford statistics of x - s.
template <typename T, int V>
__device__ inline Welford<acc_t<T>> park_x(const T* __restrict__ x, const Geometry& geo, int64_t base, int64_t e_begin,
                                           int64_t e_end, int64_t origin, int lt, int tpg, Vec<T, V>* tile,
                                           acc_t<T> s) {
  Welford<acc_t<T>> st = welford_zero<acc_t<T>>();
  Walk w;
  w.init(V * (e_begin + lt), V * tpg, geo.KE);
  constexpr int B = kLoadBatch<T>;
  for (int64_t e0 = e_begin + lt; e0 < e_end; e0 += B * tpg) {
    Vec<T, V> v[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
      if (e0 + u * tpg < e_end) {
        v[u] = load_vec<T, V>(x, base + w.row * geo.RS + w.col);
        w.advance();
      }
    }
#pragma unroll
    for (int u = 0; u < B; ++u) {
      if (e0 + u * tpg < e_end) {
        store_tile<T, V>(tile, e0 + u * tpg - origin, v[u]);  // read back by this same thread: no barrier
        accumulate_vec<T, V>(st, v[u], s);
      }
    }
  }
  return st;
}

// y of this thread's vectors from the tile.
template <typename T, typename W, typename O, int V>
__device__ inline void tile_epilogue(const FwdParams<T, W, O>& p, int64_t g, int64_t base, int64_t e_begin, int64_t e_end,
                                     int64_t origin, int lt, int tpg, const Vec<T, V>* tile, acc_t<T> s, acc_t<T> m,
                                     acc_t<T> rstd) {
  const Geometry& geo = p.geo;
  Walk w;
  w.init(V * (e_begin + lt), V * tpg, geo.KE);
  for (int64_t e = e_begin + lt; e < e_end; e += tpg) {
    const Vec<O, V> out = fwd_epilogue<T, W, O, V>(p, load_tile<T, V>(tile, e - origin), g, w.row, w.col, s, m, rstd);
    store_vec<O, V>(p.y, base + w.row * geo.RS + w.col, out);
    w.advance();
  }
}

// At most 512 threads per CTA, two CTAs per SM by registers (<= 64 each): a CTA can take a
// whole SM's worth of shared memory, but smaller groups keep two resident.
constexpr int kFwdOnChipMaxThreads = 512;

template <typename T, typename W, typename O, int V>
__global__ void __launch_bounds__(kFwdOnChipMaxThreads, 2) gn_fwd_onchip(FwdParams<T, W, O> p) {
  using A = acc_t<T>;
  __shared__ A red[3][32];
  const Geometry& geo = p.geo;
  const GroupSlot gs = slot_of(p.sched, geo);
  const int slot = static_cast<int>(threadIdx.x) / p.sched.tpg;
  Vec<T, V>* tile = gn_dynamic_smem<Vec<T, V>>() + static_cast<int64_t>(slot) * geo.Mv;
  const int64_t base = gs.active ? geo.group_base(gs.ng) : 0;
  const A s = gs.active ? to_acc(p.x[base]) : A(0);

  Welford<A> st = park_x<T, V>(p.x, geo, base, gs.e_begin, gs.e_end, 0, gs.lt, p.sched.tpg, tile, s);
  group_welford(st, red, p.sched.tpg);
  const A m = st.mean;
  const A rstd = gn_rsqrt(st.m2 / A(geo.M) + p.eps);
  if (gs.active && gs.lt == 0) {
    p.mean[gs.ng] = s + m;
    p.rstd[gs.ng] = rstd;
  }
  tile_epilogue<T, W, O, V>(p, gs.ng % geo.G, base, gs.e_begin, gs.e_end, 0, gs.lt, p.sched.tpg, tile, s, m, rstd);
}

// gn_fwd_cluster (sm_90): one group per thread-block cluster of `splits` CTAs, for groups too
// large for one CTA's shared memory or too few to fill the GPU one per CTA. CTA `rank` parks
// chunk `rank` of the group (the split schedule's cut) in its shared memory and publishes its
// partial (n, mean, M2); after cluster.sync() each CTA gathers the cluster's partials through
// distributed shared memory and merges them in rank order (merge_partials: every CTA gets the
// same bits), then normalizes its chunk from shared memory: 1R + 1W. A last cluster.sync()
// keeps each CTA's shared memory alive until its peers have read it.
// Dynamic shared memory: common/cluster_layout.h.
template <typename T, typename W, typename O, int V>
__global__ void __launch_bounds__(kFwdOnChipMaxThreads, 1) gn_fwd_cluster(FwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const int64_t cs = p.sched.splits;
  const int tpg = p.sched.tpg;
  const unsigned rank = gn_cluster_rank();
  const ClusterSmem L = cluster_smem_layout(p.sched.chunk, static_cast<int64_t>(sizeof(Vec<T, V>)),
                                            static_cast<int64_t>(sizeof(A)), cs);
  unsigned char* sm = gn_dynamic_smem<unsigned char>();
  Vec<T, V>* tile = reinterpret_cast<Vec<T, V>*>(sm);
  A* accs = reinterpret_cast<A*>(sm + L.tile_bytes);
  A(*red)[32] = reinterpret_cast<A(*)[32]>(accs + L.red);
  A* part = accs + L.part;
  A* all = accs + L.all;

  const int64_t ng = static_cast<int64_t>(blockIdx.x) / cs;  // clusters are cs consecutive CTAs
  const int lt = static_cast<int>(threadIdx.x);
  const int64_t e_begin = static_cast<int64_t>(rank) * p.sched.chunk;
  const int64_t e_end = e_begin + p.sched.chunk < geo.Mv ? e_begin + p.sched.chunk : geo.Mv;
  const int64_t base = geo.group_base(ng);
  const A s = to_acc(p.x[base]);

  Welford<A> st = park_x<T, V>(p.x, geo, base, e_begin, e_end, e_begin, lt, tpg, tile, s);
  group_welford(st, red, tpg);
  if (lt == 0) {
    part[0] = st.n;
    part[1] = st.mean;
    part[2] = st.m2;
  }
  gn_cluster_sync();  // every CTA's partial is written
  if (lt < cs) {
    const A* q = gn_cluster_map(part, static_cast<unsigned>(lt));
    all[3 * lt] = q[0];
    all[3 * lt + 1] = q[1];
    all[3 * lt + 2] = q[2];
  }
  __syncthreads();
  const Welford<A> tot = merge_partials(all, cs, true);
  const A m = tot.mean;
  const A rstd = gn_rsqrt(tot.m2 / A(geo.M) + p.eps);
  if (rank == 0 && lt == 0) {
    p.mean[ng] = s + m;
    p.rstd[ng] = rstd;
  }
  tile_epilogue<T, W, O, V>(p, ng % geo.G, base, e_begin, e_end, e_begin, lt, tpg, tile, s, m, rstd);
  gn_cluster_sync();  // no CTA leaves (and frees its shared memory) while a peer may still read it
}

// Partial statistics of one chunk (split schedule) — also the SiLU backward's pre-pass.
template <typename T, int V>
__global__ void gn_fwd_stats(const T* __restrict__ x, acc_t<T>* __restrict__ ws, Geometry geo, WalkSched sched) {
  using A = acc_t<T>;
  __shared__ A red[3][32];
  const GroupSlot gs = slot_of(sched, geo);
  const int64_t base = gs.active ? geo.group_base(gs.ng) : 0;
  const A s = gs.active ? to_acc(x[base]) : A(0);
  Welford<A> st = welford_zero<A>();
  Walk w;
  w.init(V * (gs.e_begin + gs.lt), V * sched.tpg, geo.KE);
  for (int64_t e = gs.e_begin + gs.lt; e < gs.e_end; e += sched.tpg) {
    const Vec<T, V> v = load_vec<T, V>(x, base + w.row * geo.RS + w.col);
    accumulate_vec<T, V>(st, v, s);
    w.advance();
  }
  group_welford(st, red, sched.tpg);
  if (gs.active && gs.lt == 0) {
    A* out = ws + 3 * (gs.ng * sched.splits + gs.split);
    out[0] = st.n;
    out[1] = st.mean;
    out[2] = st.m2;
  }
}

template <typename T, typename W, typename O, int V>
__global__ void gn_fwd_apply(FwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const GroupSlot gs = slot_of(p.sched, geo);
  const int64_t base = gs.active ? geo.group_base(gs.ng) : 0;
  A s, m, rstd;
  if (p.moments_in) {  // split op apply: (s, m, rstd) of the given moments (gn_split_given)
    const A* q = p.gstat + 3 * (gs.active ? gs.ng : 0);
    s = q[0];
    m = q[1];
    rstd = q[2];
  } else {
    s = gs.active ? to_acc(p.x[base]) : A(0);
    const Welford<A> st = merge_partials(p.ws + 3 * (gs.active ? gs.ng : 0) * p.sched.splits, p.sched.splits, gs.active);
    m = st.mean;
    rstd = gn_rsqrt(st.m2 / A(geo.M) + p.eps);
    if (gs.active && gs.split == 0 && gs.lt == 0) {
      p.mean[gs.ng] = s + m;
      p.rstd[gs.ng] = rstd;
    }
  }
  const int64_t g = gs.ng % geo.G;
  Walk w;
  w.init(V * (gs.e_begin + gs.lt), V * p.sched.tpg, geo.KE);
  for (int64_t e = gs.e_begin + gs.lt; e < gs.e_end; e += p.sched.tpg) {
    const int64_t off = base + w.row * geo.RS + w.col;
    const Vec<T, V> v = load_vec<T, V>(p.x, off);
    store_vec<O, V>(p.y, off, fwd_epilogue<T, W, O, V>(p, v, g, w.row, w.col, s, m, rstd));
    w.advance();
  }
}

// ---- channels-last rows schedule ----
// Per thread: V consecutive channels (vector column lc of C / V), the rows rl, rl + RP, ...
// of the CTA's piece. Returns the thread's (count, mean, M2) per channel of x - s[group].
template <typename T, int V>
__global__ void gn_fwd_stats_rows(const T* __restrict__ x, acc_t<T>* __restrict__ ws, Geometry geo, RowsSched rs) {
  using A = acc_t<T>;
  const RowSlot sl = row_slot<V>(rs, geo);
  A mean[V], m2[V], sh[V];
  A cnt = A(0);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    mean[j] = A(0);
    m2[j] = A(0);
    sh[j] = sl.valid ? to_acc(x[sl.sample + (sl.c0 + j) / geo.D * geo.D]) : A(0);
  }
  if (sl.valid) {
    for (int64_t row = sl.r0 + sl.rl; row < sl.r1; row += rs.rows_par) {
      const Vec<T, V> v = load_vec<T, V>(x, sl.sample + row * geo.C + sl.c0);
      cnt += A(1);
      const A inv = A(1) / cnt;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A d = (to_acc(v.v[j]) - sh[j]) - mean[j];
        mean[j] += d * inv;
        m2[j] += d * ((to_acc(v.v[j]) - sh[j]) - mean[j]);
      }
    }
  }
  // Per-channel states to shared memory, then one thread per group merges them in a fixed
  // order (row lanes outer, channels inner).
  A* st = gn_dynamic_smem<A>();
  const int nt = static_cast<int>(blockDim.x);
  const int tid = static_cast<int>(threadIdx.x);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    st[(0 * nt + tid) * V + j] = cnt;
    st[(1 * nt + tid) * V + j] = mean[j];
    st[(2 * nt + tid) * V + j] = m2[j];
  }
  __syncthreads();
  const int64_t cw = geo.C / V;
  for (int64_t g = tid; g < geo.G; g += nt) {
    Welford<A> acc = welford_zero<A>();
    for (int rl = 0; rl < rs.rows_par; ++rl)
      for (int64_t c = g * geo.D; c < (g + 1) * geo.D; ++c) {
        const int64_t k = (rl * cw + c / V) * V + c % V;
        welford_merge(acc, st[k], st[nt * V + k], st[2 * nt * V + k]);
      }
    A* out = ws + 3 * ((sl.n * geo.G + g) * rs.pieces + sl.piece);
    out[0] = acc.n;
    out[1] = acc.mean;
    out[2] = acc.m2;
  }
}

// One warp per group (n, g): merges the pieces in order, writes mean / rstd and (s, m, rstd)
// of the shifted data for gn_fwd_apply_rows.
template <typename T, typename W, typename O>
__global__ void gn_fwd_finalize(FwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t ng = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const bool active = ng < geo.N * geo.G;
  const Welford<A> st = merge_partials(p.ws + 3 * (active ? ng : 0) * p.rows.pieces, p.rows.pieces, active);
  if (active && lane == 0) {
    const A rstd = gn_rsqrt(st.m2 / A(geo.M) + p.eps);
    const A s = to_acc(p.x[geo.group_base(ng)]);
    p.mean[ng] = s + st.mean;
    p.rstd[ng] = rstd;
    p.gstat[3 * ng] = s;
    p.gstat[3 * ng + 1] = st.mean;
    p.gstat[3 * ng + 2] = rstd;
  }
}

// Split op stats: one warp per group (n, g) merges the `parts` partials (walk chunks or rows
// pieces) of x - s in order and writes the float64 moments (count, s, m, M2); the count is the
// exact element count of the group in this shard.
template <typename T>
__global__ void gn_split_moments(const T* __restrict__ x, const acc_t<T>* __restrict__ ws, int64_t parts, Geometry geo,
                                 double* __restrict__ moments) {
  using A = acc_t<T>;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t ng = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const bool active = ng < geo.N * geo.G;
  const Welford<A> st = merge_partials(ws + 3 * (active ? ng : 0) * parts, parts, active);
  if (active && lane == 0) {
    double* out = moments + 4 * ng;
    out[0] = static_cast<double>(geo.M);
    out[1] = static_cast<double>(to_acc(x[geo.group_base(ng)]));
    out[2] = static_cast<double>(st.mean);
    out[3] = static_cast<double>(st.m2);
  }
}

// Split op apply: one thread per group (n, g) turns the given moments (count, s, m, M2) into
// the accumulation type's (s, m, rstd) for gn_fwd_apply{,_rows} and writes mean and rstd, as
// the CPU kernels do (rstd of the rounded moments, variance clamped at 0).
template <typename T, typename W, typename O>
__global__ void gn_split_given(FwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const int64_t ng = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ng >= p.geo.N * p.geo.G) return;
  const double* q = p.moments_in + 4 * ng;
  const A s = static_cast<A>(q[1]), m = static_cast<A>(q[2]);
  const A var = static_cast<A>(q[3]) / static_cast<A>(q[0]);
  const A rstd = gn_rsqrt((var > A(0) ? var : A(0)) + p.eps);
  p.mean[ng] = s + m;
  p.rstd[ng] = rstd;
  p.gstat[3 * ng] = s;
  p.gstat[3 * ng + 1] = m;
  p.gstat[3 * ng + 2] = rstd;
}

template <typename T, typename W, typename O, int V>
__global__ void gn_fwd_apply_rows(FwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const RowSlot sl = row_slot<V>(p.rows, geo);
  if (!sl.valid) return;  // no barriers below
  A sh[V], m[V], a[V], b[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t c = sl.c0 + j;
    const int64_t g = c / geo.D;
    const int64_t ng = sl.n * geo.G + g;
    sh[j] = p.gstat[3 * ng];
    m[j] = p.gstat[3 * ng + 1];
    a[j] = p.weight ? p.gstat[3 * ng + 2] * to_acc(p.weight[c]) : p.gstat[3 * ng + 2];
    b[j] = p.bias ? to_acc(p.bias[c]) : A(0);
  }
  for (int64_t row = sl.r0 + sl.rl; row < sl.r1; row += p.rows.rows_par) {
    const int64_t off = sl.sample + row * geo.C + sl.c0;
    const Vec<T, V> xv = load_vec<T, V>(p.x, off);
    Vec<O, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      A z = ((to_acc(xv.v[j]) - sh[j]) - m[j]) * a[j] + b[j];
      if (p.silu) z = gn_silu(z);
      out.v[j] = from_acc<O>(z);
    }
    store_vec<O, V>(p.y, off, out);
  }
}

}  // namespace kernels
}  // namespace groupnorm_cuda
