// gn_fwd_bundle: the on-chip forward of channels-last groups that are not a whole number of
// 16-byte vectors (C / G % V != 0 with C % V == 0: SD UNet's 320 channels in 32 groups, 10 per
// group), which the group-wise walks can only read with scalar loads and the rows schedule
// only in two passes (2R + 1W).
//
// A bundle is k = V / gcd(D, V) consecutive groups: its k * D channels are `cols` whole vectors
// per spatial row. One bundle per CTA (cluster == 1, any architecture), or per thread-block
// cluster (sm_90) of `cluster` CTAs holding `chunk_rows` spatial rows each. Thread (rl, col) of
// the rows_par x cols working threads takes vector column `col` of rows rl, rl + rows_par, ...
// of its chunk: its V lanes are fixed channels of at most two groups (`lo` for lanes < js, `hi`
// for the rest; the planner checks the two), so while it parks its vectors in shared memory it
// keeps a Welford state per lane, then folds them into the two groups' states. The CTA merges
// each group's states in a fixed order (a warp per group: row lanes, then columns), a cluster
// exchanges the per-group partials through distributed shared memory and every CTA merges them
// in rank order (the same bits everywhere). y from the tile: 1 read + 1 write.
// s of a group is its first element, as everywhere (csrc/README.md): statistics are of x - s.
#pragma once

#include "common/cluster_layout.h"
#include "cuda/kernels/forward.cuh"

namespace groupnorm_cuda {
namespace kernels {

constexpr int kBundleMaxThreads = 512;  // == plan::kMaxBundleThreads

// ---- phases shared by gn_fwd_bundle and gn_bwd_bundle ----

// A thread's Welford state per lane (channel) of x - s[group of the lane], count shared.
template <typename A, int V> struct LaneWelford {
  A cnt, mean[V], m2[V];
  __device__ inline void init() {
    cnt = A(0);
#pragma unroll
    for (int j = 0; j < V; ++j) mean[j] = m2[j] = A(0);
  }
  template <typename T>
  __device__ inline void add(const Vec<T, V>& v, const BundleLanes<V>& ln, A slo, A shi) {
    cnt += A(1);
    const A inv = gn_div(A(1), cnt);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const A xs = to_acc(v.v[j]) - (j < ln.js ? slo : shi);
      const A d = xs - mean[j];
      mean[j] += d * inv;
      m2[j] += d * (xs - mean[j]);
    }
  }
  // The states of the two groups (lanes < js in order, then the rest) to q[0..2], q[3..5].
  __device__ inline void fold(A* q, int js) const {
    Welford<A> lo = welford_zero<A>(), hi = welford_zero<A>();
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (j < js) welford_merge(lo, cnt, mean[j], m2[j]);
      else welford_merge(hi, cnt, mean[j], m2[j]);
    }
    q[0] = lo.n;
    q[1] = lo.mean;
    q[2] = lo.m2;
    q[3] = hi.n;
    q[4] = hi.mean;
    q[5] = hi.m2;
  }
};

// Per group gb of the bundle (a warp each): merges the folded states (6 per working thread at
// `part`) of the threads whose columns touch it, row lanes across the warp's lanes and columns
// in order, then the warp's butterfly -> out[3 * gb]. Call after a barrier over `part`.
template <typename A, int V>
__device__ inline void bundle_group_welford(const A* part, A* out, int k, int cols, int rows_par, int64_t D) {
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  for (int gb = warp; gb < k; gb += static_cast<int>(blockDim.x) >> 5) {
    const int c_first = static_cast<int>(gb * D / V), c_last = static_cast<int>(((gb + 1) * D - 1) / V);
    Welford<A> acc = welford_zero<A>();
    for (int r = lane; r < rows_par; r += 32)
      for (int c = c_first; c <= c_last; ++c) {
        const int slot = static_cast<int>(static_cast<int64_t>(c) * V / D) == gb ? 0 : 3;
        const A* q = part + 6 * (r * cols + c) + slot;
        welford_merge(acc, q[0], q[1], q[2]);
      }
    warp_welford(acc);
    if (lane == 0) {
      out[3 * gb] = acc.n;
      out[3 * gb + 1] = acc.mean;
      out[3 * gb + 2] = acc.m2;
    }
  }
}

// The k per-group triples at `mine` of every CTA of the cluster (cs == 1: this CTA's) ->
// all[3 * (gb * cs + rank)], through distributed shared memory. Call after a cluster barrier
// (cs > 1; else a CTA barrier) over `mine`; a CTA barrier follows.
template <typename A> __device__ inline void bundle_gather(A* mine, A* all, int k, int cs) {
  for (int i = static_cast<int>(threadIdx.x); i < k * cs; i += static_cast<int>(blockDim.x)) {
    const int gb = i / cs, r = i - gb * cs;
    const A* q = cs > 1 ? gn_cluster_map(mine, static_cast<unsigned>(r)) : mine;
    all[3 * i] = q[3 * gb];
    all[3 * i + 1] = q[3 * gb + 1];
    all[3 * i + 2] = q[3 * gb + 2];
  }
  __syncthreads();
}

// Where a bundle CTA works: bundle (n, b), its first element, its rows [r0, r1), and this
// thread's place (row lane rl, vector column col) among the rows_par x cols working threads.
struct BundleSlot {
  int64_t n, b, base, r0, r1;
  int rl, col;
  bool active;
  __device__ inline BundleSlot(const BundleSched& bs, const Geometry& geo, unsigned rank) {
    const int64_t nb = static_cast<int64_t>(blockIdx.x) / bs.cluster;  // clusters are consecutive CTAs
    const int64_t GB = geo.G / bs.k;
    n = nb / GB;
    b = nb - n * GB;
    base = n * geo.HxW * geo.C + b * bs.k * geo.D;
    r0 = static_cast<int64_t>(rank) * bs.chunk_rows;
    r1 = r0 + bs.chunk_rows < geo.HxW ? r0 + bs.chunk_rows : geo.HxW;
    const int lt = static_cast<int>(threadIdx.x);
    active = lt < bs.rows_par * bs.cols;
    rl = active ? lt / bs.cols : 0;
    col = active ? lt - rl * bs.cols : 0;
  }
};

template <typename T, typename W, typename O, int V>
__global__ void __launch_bounds__(kBundleMaxThreads, 1) gn_fwd_bundle(FwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const BundleSched& bs = p.bundle;
  const int cs = bs.cluster, k = bs.k, cols = bs.cols, rows_par = bs.rows_par;
  const unsigned rank = cs > 1 ? gn_cluster_rank() : 0u;
  const BundleSmem L = bundle_smem_layout(false, bs.chunk_rows * cols, V, static_cast<int64_t>(sizeof(T)), 0,
                                          static_cast<int64_t>(sizeof(A)), rows_par * cols, k, cols, cs);
  unsigned char* sm = gn_dynamic_smem<unsigned char>();
  Vec<T, V>* tile = reinterpret_cast<Vec<T, V>*>(sm);
  A* accs = reinterpret_cast<A*>(sm + L.tile_bytes);
  A* part = accs + L.part;
  A* gpart = accs + L.wpart;
  A* all = accs + L.wall;
  A* fin = accs + L.fin;

  const BundleSlot sl(bs, geo, rank);
  const BundleLanes<V> ln(sl.col, geo.D);
  const A slo = to_acc(p.x[sl.base + ln.glo * geo.D]), shi = to_acc(p.x[sl.base + ln.ghi * geo.D]);

  // 1. park this thread's vectors (kLoadBatch in flight) with a Welford state per lane
  if (sl.active) {
    LaneWelford<A, V> st;
    st.init();
    constexpr int B = kLoadBatch<T>;
    for (int64_t row0 = sl.r0 + sl.rl; row0 < sl.r1; row0 += static_cast<int64_t>(B) * rows_par) {
      Vec<T, V> v[B];
#pragma unroll
      for (int u = 0; u < B; ++u)
        if (row0 + u * rows_par < sl.r1) v[u] = load_vec<T, V>(p.x, sl.base + (row0 + u * rows_par) * geo.C + sl.col * V);
#pragma unroll
      for (int u = 0; u < B; ++u) {
        const int64_t row = row0 + u * rows_par;
        if (row < sl.r1) {
          store_tile<T, V>(tile, (row - sl.r0) * cols + sl.col, v[u]);  // read back by this same thread
          st.add(v[u], ln, slo, shi);
        }
      }
    }
    st.fold(part + 6 * threadIdx.x, ln.js);
  }
  __syncthreads();

  // 2. the CTA's partial per group, 3. the cluster's (rank order), the group statistics
  bundle_group_welford<A, V>(part, gpart, k, cols, rows_par, geo.D);
  if (cs > 1) gn_cluster_sync();  // every CTA's partials are written
  else __syncthreads();
  bundle_gather(gpart, all, k, cs);
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  for (int gb = warp; gb < k; gb += static_cast<int>(blockDim.x) >> 5) {
    const Welford<A> tot = merge_partials(all + 3 * cs * gb, cs, true);
    if (lane == 0) {
      const A rstd = gn_rsqrt(tot.m2 / A(geo.M) + p.eps);
      fin[2 * gb] = tot.mean;
      fin[2 * gb + 1] = rstd;
      if (rank == 0) {
        const int64_t ng = sl.n * geo.G + sl.b * k + gb;
        p.mean[ng] = to_acc(p.x[sl.base + gb * geo.D]) + tot.mean;
        p.rstd[ng] = rstd;
      }
    }
  }
  __syncthreads();

  // 4. y of this thread's vectors from the tile
  if (sl.active) {
    A sh[V], m[V], a[V], bb[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const bool in_lo = j < ln.js;
      const int gb = in_lo ? ln.glo : ln.ghi;
      const int64_t c = (sl.b * k) * geo.D + sl.col * V + j;
      sh[j] = in_lo ? slo : shi;
      m[j] = fin[2 * gb];
      a[j] = p.weight ? fin[2 * gb + 1] * to_acc(p.weight[c]) : fin[2 * gb + 1];
      bb[j] = p.bias ? to_acc(p.bias[c]) : A(0);
    }
    for (int64_t row = sl.r0 + sl.rl; row < sl.r1; row += rows_par) {
      const Vec<T, V> xv = load_tile<T, V>(tile, (row - sl.r0) * cols + sl.col);
      Vec<O, V> out;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        A z = ((to_acc(xv.v[j]) - sh[j]) - m[j]) * a[j] + bb[j];
        if (p.silu) z = gn_silu(z);
        out.v[j] = from_acc<O>(z);
      }
      store_vec<O, V>(p.y, sl.base + row * geo.C + sl.col * V, out);
    }
  }
  if (cs > 1) gn_cluster_sync();  // no CTA leaves (and frees its shared memory) while a peer may still read it
}

}  // namespace kernels
}  // namespace groupnorm_cuda
