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

// The lanes of vector column `col` of a bundle: the group (within the bundle) of lane 0, and
// the first lane js (<= V) of the next group.
template <int V> struct BundleLanes {
  int glo, ghi, js;
  __device__ inline BundleLanes(int col, int64_t D) {
    glo = static_cast<int>(static_cast<int64_t>(col) * V / D);
    const int64_t next = (glo + 1) * D - static_cast<int64_t>(col) * V;
    js = next < V ? static_cast<int>(next) : V;
    ghi = js < V ? glo + 1 : glo;
  }
};

template <typename T, typename W, int V>
__global__ void __launch_bounds__(kFwdOnChipMaxThreads, 1) gn_fwd_bundle(FwdParams<T, W> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const BundleSched& bs = p.bundle;
  const int cs = bs.cluster, k = bs.k, cols = bs.cols, rows_par = bs.rows_par;
  const int span = rows_par * cols;
  const unsigned rank = cs > 1 ? gn_cluster_rank() : 0u;
  const BundleSmem L = bundle_smem_layout(bs.chunk_rows * cols, static_cast<int64_t>(sizeof(Vec<T, V>)),
                                          static_cast<int64_t>(sizeof(A)), span, k, cs);
  unsigned char* sm = gn_dynamic_smem<unsigned char>();
  Vec<T, V>* tile = reinterpret_cast<Vec<T, V>*>(sm);
  A* accs = reinterpret_cast<A*>(sm + L.tile_bytes);
  A* part = accs + L.part;
  A* gpart = accs + L.gpart;
  A* all = accs + L.all;
  A* fin = accs + L.fin;

  const int64_t nb = static_cast<int64_t>(blockIdx.x) / cs;  // bundle (n, b); clusters are cs consecutive CTAs
  const int64_t GB = geo.G / k;
  const int64_t n = nb / GB, b = nb - n * GB;
  const int64_t base = n * geo.HxW * geo.C + b * k * geo.D;  // row 0, first channel of the bundle
  const int64_t r0 = static_cast<int64_t>(rank) * bs.chunk_rows;
  const int64_t r1 = r0 + bs.chunk_rows < geo.HxW ? r0 + bs.chunk_rows : geo.HxW;
  const int lt = static_cast<int>(threadIdx.x);
  const bool active = lt < span;
  const int rl = active ? lt / cols : 0;
  const int col = active ? lt - rl * cols : 0;
  const BundleLanes<V> ln(col, geo.D);
  const A slo = to_acc(p.x[base + ln.glo * geo.D]), shi = to_acc(p.x[base + ln.ghi * geo.D]);

  // 1. park this thread's vectors (kLoadBatch in flight) with a Welford state per lane
  A mean[V], m2[V];
  A cnt = A(0);
#pragma unroll
  for (int j = 0; j < V; ++j) mean[j] = m2[j] = A(0);
  if (active) {
    constexpr int B = kLoadBatch<T>;
    for (int64_t row0 = r0 + rl; row0 < r1; row0 += static_cast<int64_t>(B) * rows_par) {
      Vec<T, V> v[B];
#pragma unroll
      for (int u = 0; u < B; ++u)
        if (row0 + u * rows_par < r1) v[u] = load_vec<T, V>(p.x, base + (row0 + u * rows_par) * geo.C + col * V);
#pragma unroll
      for (int u = 0; u < B; ++u) {
        const int64_t row = row0 + u * rows_par;
        if (row < r1) {
          store_tile<T, V>(tile, (row - r0) * cols + col, v[u]);  // read back by this same thread
          cnt += A(1);
          const A inv = gn_div(A(1), cnt);
#pragma unroll
          for (int j = 0; j < V; ++j) {
            const A xs = to_acc(v[u].v[j]) - (j < ln.js ? slo : shi);
            const A d = xs - mean[j];
            mean[j] += d * inv;
            m2[j] += d * (xs - mean[j]);
          }
        }
      }
    }
    // fold the lanes into the states of the two groups, lanes in order
    Welford<A> lo = welford_zero<A>(), hi = welford_zero<A>();
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (j < ln.js) welford_merge(lo, cnt, mean[j], m2[j]);
      else welford_merge(hi, cnt, mean[j], m2[j]);
    }
    A* q = part + 6 * lt;
    q[0] = lo.n;
    q[1] = lo.mean;
    q[2] = lo.m2;
    q[3] = hi.n;
    q[4] = hi.mean;
    q[5] = hi.m2;
  }
  __syncthreads();

  // 2. per group of the bundle (a warp each): the states of the threads whose columns touch it,
  // row lanes across the warp's lanes, columns in order; then the warp's butterfly
  const int warp = lt >> 5, lane = lt & 31, nwarps = static_cast<int>(blockDim.x) >> 5;
  for (int gb = warp; gb < k; gb += nwarps) {
    const int c_first = static_cast<int>(gb * geo.D / V), c_last = static_cast<int>(((gb + 1) * geo.D - 1) / V);
    Welford<A> acc = welford_zero<A>();
    for (int r = lane; r < rows_par; r += 32)
      for (int c = c_first; c <= c_last; ++c) {
        const int slot = static_cast<int>(static_cast<int64_t>(c) * V / geo.D) == gb ? 0 : 3;
        const A* q = part + 6 * (r * cols + c) + slot;
        welford_merge(acc, q[0], q[1], q[2]);
      }
    warp_welford(acc);
    if (lane == 0) {
      gpart[3 * gb] = acc.n;
      gpart[3 * gb + 1] = acc.mean;
      gpart[3 * gb + 2] = acc.m2;
    }
  }

  // 3. the cluster's partials per group (rank order), the group statistics
  if (cs > 1) gn_cluster_sync();  // every CTA's partials are written
  else __syncthreads();
  for (int i = lt; i < k * cs; i += static_cast<int>(blockDim.x)) {
    const int gb = i / cs, r = i - gb * cs;
    const A* q = cs > 1 ? gn_cluster_map(gpart, static_cast<unsigned>(r)) : gpart;
    all[3 * i] = q[3 * gb];
    all[3 * i + 1] = q[3 * gb + 1];
    all[3 * i + 2] = q[3 * gb + 2];
  }
  __syncthreads();
  for (int gb = warp; gb < k; gb += nwarps) {
    const Welford<A> tot = merge_partials(all + 3 * cs * gb, cs, true);
    if (lane == 0) {
      const A rstd = gn_rsqrt(tot.m2 / A(geo.M) + p.eps);
      fin[2 * gb] = tot.mean;
      fin[2 * gb + 1] = rstd;
      if (rank == 0) {
        const int64_t ng = n * geo.G + b * k + gb;
        p.mean[ng] = to_acc(p.x[base + gb * geo.D]) + tot.mean;
        p.rstd[ng] = rstd;
      }
    }
  }
  __syncthreads();

  // 4. y of this thread's vectors from the tile
  if (active) {
    A sh[V], m[V], a[V], bb[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const bool in_lo = j < ln.js;
      const int gb = in_lo ? ln.glo : ln.ghi;
      const int64_t c = (b * k) * geo.D + col * V + j;
      sh[j] = in_lo ? slo : shi;
      m[j] = fin[2 * gb];
      a[j] = p.weight ? fin[2 * gb + 1] * to_acc(p.weight[c]) : fin[2 * gb + 1];
      bb[j] = p.bias ? to_acc(p.bias[c]) : A(0);
    }
    for (int64_t row = r0 + rl; row < r1; row += rows_par) {
      const Vec<T, V> xv = load_tile<T, V>(tile, (row - r0) * cols + col);
      Vec<T, V> out;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        A z = ((to_acc(xv.v[j]) - sh[j]) - m[j]) * a[j] + bb[j];
        if (p.silu) z = gn_silu(z);
        out.v[j] = from_acc<T>(z);
      }
      store_vec<T, V>(p.y, base + row * geo.C + col * V, out);
    }
  }
  if (cs > 1) gn_cluster_sync();  // no CTA leaves (and frees its shared memory) while a peer may still read it
}

}  // namespace kernels
}  // namespace groupnorm_cuda
