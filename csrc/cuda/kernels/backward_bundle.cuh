// gn_bwd_bundle: the backward of channels-last groups that are not a whole number of 16-byte
// vectors, on the bundles of forward_bundle.cuh (k groups whose k * D channels are whole
// vectors per spatial row, on one CTA or a thread-block cluster of `cluster` CTAs holding
// `chunk_rows` rows each). x and dy of the chunk are parked in shared memory (read once), dx is
// written once; the dweight/dbias terms go per (n, channel) to gn_bwd_params.
//   1. park x and dy; with SiLU also the Welford statistics of x per lane, folded per group,
//      merged in the CTA and then the cluster (rank order) -> r_pre of each group;
//   2. per lane (a fixed channel) over the thread's rows: sum dy', sum dy' u (u = x - mu); sum u
//      per group (of the two the thread's lanes belong to);
//   3. per channel of the bundle: the row lanes' sums in order (a warp per channel);
//   4. per group: sum u over the threads touching it, sum gamma dy' and sum gamma dy' u over its
//      channels, in order; then the cluster's in rank order -> c2, c3 of
//      dx = rho * gamma * dy' + c2 * u + c3 (as gn_bwd_coeffs); every CTA computes the same bits;
//   5. the dweight/dbias terms per channel from the cluster's per-channel sums (rank order),
//      each CTA a share of the channels;
//   6. dx from the tiles.
#pragma once

#include "common/cluster_layout.h"
#include "cuda/kernels/backward.cuh"
#include "cuda/kernels/forward_bundle.cuh"

namespace groupnorm_cuda {
namespace kernels {

template <typename T, typename W, typename O, int V>
__global__ void __launch_bounds__(kBundleMaxThreads, 1) gn_bwd_bundle(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const BundleSched& bs = p.bundle;
  const int cs = bs.cluster, k = bs.k, cols = bs.cols, rows_par = bs.rows_par;
  const unsigned rank = cs > 1 ? gn_cluster_rank() : 0u;
  const BundleSmem L = bundle_smem_layout(true, bs.chunk_rows * cols, V, static_cast<int64_t>(sizeof(T)),
                                          static_cast<int64_t>(sizeof(O)), static_cast<int64_t>(sizeof(A)),
                                          rows_par * cols, k, cols, cs);
  unsigned char* sm = gn_dynamic_smem<unsigned char>();
  Vec<T, V>* xt = reinterpret_cast<Vec<T, V>*>(sm);
  Vec<O, V>* dt = reinterpret_cast<Vec<O, V>*>(sm + L.tile_bytes);
  A* accs = reinterpret_cast<A*>(sm + L.tile_bytes + L.dy_tile_bytes);
  A* part = accs + L.part;
  A* chan = accs + L.chan;
  A* wpart = accs + L.wpart;
  A* spart = accs + L.spart;
  A* wall = accs + L.wall;
  A* sall = accs + L.sall;
  A* fin = accs + L.fin;  // per group: r_pre, c2, c3, rm

  const BundleSlot sl(bs, geo, rank);
  const BundleLanes<V> ln(sl.col, geo.D);
  const int lt = static_cast<int>(threadIdx.x);
  const int warp = lt >> 5, lane = lt & 31, nwarps = static_cast<int>(blockDim.x) >> 5;
  const int64_t ng0 = sl.n * geo.G + sl.b * k;  // the bundle's first group
  const int64_t c0 = (sl.b * k) * geo.D;        // and first channel
  const A slo = to_acc(p.x[sl.base + ln.glo * geo.D]), shi = to_acc(p.x[sl.base + ln.ghi * geo.D]);

  // 1. park x and dy (2 x kLoadBatch / 2 vectors in flight); SiLU: r_pre per group
  if (sl.active) {
    LaneWelford<A, V> st;
    st.init();
    constexpr int B = kLoadBatch<T> / 2 > 1 ? kLoadBatch<T> / 2 : 1;
    for (int64_t row0 = sl.r0 + sl.rl; row0 < sl.r1; row0 += static_cast<int64_t>(B) * rows_par) {
      Vec<T, V> xv[B];
      Vec<O, V> dv[B];
#pragma unroll
      for (int u = 0; u < B; ++u) {
        if (row0 + u * rows_par < sl.r1) {
          const int64_t off = sl.base + (row0 + u * rows_par) * geo.C + sl.col * V;
          xv[u] = load_vec<T, V>(p.x, off);
          dv[u] = load_vec<O, V>(p.dy, off);
        }
      }
#pragma unroll
      for (int u = 0; u < B; ++u) {
        const int64_t row = row0 + u * rows_par;
        if (row < sl.r1) {
          store_tile<T, V>(xt, (row - sl.r0) * cols + sl.col, xv[u]);  // read back by this same thread
          store_tile<O, V>(dt, (row - sl.r0) * cols + sl.col, dv[u]);
          if (p.silu) st.add(xv[u], ln, slo, shi);
        }
      }
    }
    if (p.silu) st.fold(part + 6 * lt, ln.js);
  }
  if (p.silu) {
    __syncthreads();
    bundle_group_welford<A, V>(part, wpart, k, cols, rows_par, geo.D);
    if (cs > 1) gn_cluster_sync();  // every CTA's Welford partials are written
    else __syncthreads();
    bundle_gather(wpart, wall, k, cs);
    for (int gb = warp; gb < k; gb += nwarps) {
      const Welford<A> tot = merge_partials(wall + 3 * cs * gb, cs, true);
      if (lane == 0) fin[4 * gb] = (to_acc(p.x[sl.base + gb * geo.D]) - p.mean[ng0 + gb]) + tot.mean;
    }
    __syncthreads();  // r_pre of every group; `part` free again
  }

  // 2. per-lane sums over this thread's rows
  const A mlo = p.mean[ng0 + ln.glo], mhi = p.mean[ng0 + ln.ghi];
  const A rholo = p.rstd[ng0 + ln.glo], rhohi = p.rstd[ng0 + ln.ghi];
  const A rlo = p.silu ? fin[4 * ln.glo] : A(0), rhi = p.silu ? fin[4 * ln.ghi] : A(0);
  // this thread's lanes' gamma and beta (loaded again for dx: not held across the reductions)
  auto lane_params = [&](A(&gamma)[V], A(&beta)[V]) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t c = c0 + sl.col * V + j;
      gamma[j] = p.weight ? to_acc(p.weight[c]) : A(1);
      beta[j] = p.bias ? to_acc(p.bias[c]) : A(0);
    }
  };
  if (sl.active) {
    A gamma[V], beta[V];
    lane_params(gamma, beta);
    A sa[V], sb[V], su_lo = A(0), su_hi = A(0);
#pragma unroll
    for (int j = 0; j < V; ++j) sa[j] = sb[j] = A(0);
    for (int64_t row = sl.r0 + sl.rl; row < sl.r1; row += rows_par) {
      const int64_t e = (row - sl.r0) * cols + sl.col;
      const Vec<T, V> xv = load_tile<T, V>(xt, e);
      const Vec<O, V> dv = load_tile<O, V>(dt, e);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const bool in_lo = j < ln.js;
        const A u = to_acc(xv.v[j]) - (in_lo ? mlo : mhi);
        const A d = dy_eff(to_acc(dv.v[j]), u, in_lo ? rlo : rhi, in_lo ? rholo : rhohi, gamma[j], beta[j], p.silu);
        if (in_lo) su_lo += u;
        else su_hi += u;
        sa[j] += d;
        sb[j] += d * u;
      }
    }
    A* q = part + (2 * V + 2) * lt;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      q[j] = sa[j];
      q[V + j] = sb[j];
    }
    q[2 * V] = su_lo;
    q[2 * V + 1] = su_hi;
  }
  __syncthreads();

  // 3. per channel: the row lanes' sums (lanes across row lanes, then the butterfly)
  for (int cc = warp; cc < cols * V; cc += nwarps) {
    const int c = cc / V, j = cc - c * V;
    A a = A(0), ab = A(0);
    for (int r = lane; r < rows_par; r += 32) {
      const A* q = part + (2 * V + 2) * (r * cols + c);
      a += q[j];
      ab += q[V + j];
    }
    a = warp_sum(a);
    ab = warp_sum(ab);
    if (lane == 0) {
      chan[2 * cc] = a;
      chan[2 * cc + 1] = ab;
    }
  }
  __syncthreads();

  // 4. per group: this CTA's sums over its channels, then the cluster's -> the coefficients
  for (int gb = warp; gb < k; gb += nwarps) {
    A se = A(0), sga = A(0), sgb = A(0);
    const int c_first = static_cast<int>(gb * geo.D / V), c_last = static_cast<int>(((gb + 1) * geo.D - 1) / V);
    for (int r = lane; r < rows_par; r += 32)
      for (int c = c_first; c <= c_last; ++c) {
        const int slot = static_cast<int>(static_cast<int64_t>(c) * V / geo.D) == gb ? 0 : 1;
        se += part[(2 * V + 2) * (r * cols + c) + 2 * V + slot];
      }
    for (int64_t i = lane; i < geo.D; i += 32) {
      const int64_t cc = gb * geo.D + i;
      const A g = p.weight ? to_acc(p.weight[c0 + cc]) : A(1);
      sga += g * chan[2 * cc];
      sgb += g * chan[2 * cc + 1];
    }
    se = warp_sum(se);
    sga = warp_sum(sga);
    sgb = warp_sum(sgb);
    if (lane == 0) {
      spart[3 * gb] = se;
      spart[3 * gb + 1] = sga;
      spart[3 * gb + 2] = sgb;
    }
  }
  if (cs > 1) gn_cluster_sync();  // every CTA's sums are written
  else __syncthreads();
  bundle_gather(spart, sall, k, cs);
  for (int gb = warp; gb < k; gb += nwarps) {
    // the cs partials summed the same way in every warp and CTA (butterfly: the same bits)
    const A* q = sall + 3 * cs * gb;
    const A se = warp_sum(lane < cs ? q[3 * lane] : A(0));
    const A sga = warp_sum(lane < cs ? q[3 * lane + 1] : A(0));
    const A sgb = warp_sum(lane < cs ? q[3 * lane + 2] : A(0));
    if (lane == 0) {
      const A rho = p.rstd[ng0 + gb];
      const A invM = A(1) / A(geo.M);
      const A rm = se * invM;
      const A Acoef = rho * (sgb - rm * sga);
      fin[4 * gb + 1] = -rho * rho * Acoef * invM;
      fin[4 * gb + 2] = rho * (rm * rho * Acoef - sga) * invM;
      fin[4 * gb + 3] = rm;
    }
  }
  __syncthreads();

  // 5. the dweight / dbias terms of this CTA's share of the channels, from the cluster's sums
  if (p.dwp)
    cluster_channel_terms(p.dwp, geo.C, sl.n, c0, static_cast<int64_t>(cols) * V, chan, cs, rank,
                          [&](int64_t cc) { return p.rstd[ng0 + cc / geo.D]; },
                          [&](int64_t cc) { return fin[4 * (cc / geo.D) + 3]; });

  // 6. dx of this thread's vectors from the tiles
  if (p.dx && sl.active) {
    A gamma[V], beta[V];
    lane_params(gamma, beta);
    const A c2lo = fin[4 * ln.glo + 1], c3lo = fin[4 * ln.glo + 2];
    const A c2hi = fin[4 * ln.ghi + 1], c3hi = fin[4 * ln.ghi + 2];
    for (int64_t row = sl.r0 + sl.rl; row < sl.r1; row += rows_par) {
      const int64_t e = (row - sl.r0) * cols + sl.col;
      const Vec<T, V> xv = load_tile<T, V>(xt, e);
      const Vec<O, V> dv = load_tile<O, V>(dt, e);
      Vec<T, V> out;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const bool in_lo = j < ln.js;
        const A rho = in_lo ? rholo : rhohi;
        const A u = to_acc(xv.v[j]) - (in_lo ? mlo : mhi);
        const A d = dy_eff(to_acc(dv.v[j]), u, in_lo ? rlo : rhi, rho, gamma[j], beta[j], p.silu);
        out.v[j] = from_acc<T>(rho * gamma[j] * d + (in_lo ? c2lo : c2hi) * u + (in_lo ? c3lo : c3hi));
      }
      store_vec<T, V>(p.dx, sl.base + row * geo.C + sl.col * V, out);
    }
  }
  if (cs > 1) gn_cluster_sync();  // no CTA leaves (and frees its shared memory) while a peer may still read it
}

}  // namespace kernels
}  // namespace groupnorm_cuda
