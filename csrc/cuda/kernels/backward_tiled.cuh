// Backward kernels that keep a group's x and dy on chip (see backward.cuh for the others):
//   gn_bwd_onchip      groups that fit one CTA's shared memory, instead of the sums / coeffs /
//                      dx kernels (gn_bwd_params still reduces the dweight/dbias terms): x and
//                      dy parked in shared memory, the reductions, the per-channel terms and dx
//                      from there: 3 tensor accesses.
//   gn_bwd_cluster     (sm_90) a group over a thread-block cluster, each CTA holding a chunk,
//                      the reductions through distributed shared memory: 3 tensor accesses.
#pragma once

#include "common/cluster_layout.h"
#include "cuda/kernels/backward.cuh"

namespace groupnorm_cuda {
namespace kernels {

// ---- phases of the tiled backward kernels (gn_bwd_onchip, gn_bwd_cluster) over one thread's
// vectors e = e_begin + lt, + tpg, ... < e_end of group g (x at base), parked in the tiles at
// index e - origin.

// Loads x and dy (kLoadBatch in flight) into the tiles; returns the Welford statistics of x - s
// (SiLU only, else empty).
template <typename T, typename W, typename O, int V>
__device__ inline Welford<acc_t<T>> park_x_dy(const BwdParams<T, W, O>& p, int64_t base, int64_t e_begin, int64_t e_end,
                                              int64_t origin, int lt, int tpg, Vec<T, V>* xt, Vec<O, V>* dt,
                                              acc_t<T> s) {
  const Geometry& geo = p.geo;
  Welford<acc_t<T>> st = welford_zero<acc_t<T>>();
  Walk w;
  w.init(V * (e_begin + lt), V * tpg, geo.KE);
  constexpr int B = kLoadBatch<T> / 2 > 1 ? kLoadBatch<T> / 2 : 1;  // x and dy: 2 * B loads in flight
  for (int64_t e0 = e_begin + lt; e0 < e_end; e0 += B * tpg) {
    Vec<T, V> xv[B];
    Vec<O, V> dv[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
      if (e0 + u * tpg < e_end) {
        const int64_t off = base + w.row * geo.RS + w.col;
        xv[u] = load_vec<T, V>(p.x, off);
        dv[u] = load_vec<O, V>(p.dy, off);
        w.advance();
      }
    }
#pragma unroll
    for (int u = 0; u < B; ++u) {
      if (e0 + u * tpg < e_end) {
        // read back by this same thread (sums, dx); the per-channel sums follow a barrier
        store_tile<T, V>(xt, e0 + u * tpg - origin, xv[u]);
        store_tile<O, V>(dt, e0 + u * tpg - origin, dv[u]);
        if (p.silu) accumulate_vec<T, V>(st, xv[u], s);
      }
    }
  }
  return st;
}

// This thread's part of the group sums: sum u, sum gamma dy', sum gamma dy' u.
template <typename T, typename W, typename O, int V>
__device__ inline void tile_sums(const BwdParams<T, W, O>& p, int64_t g, int64_t e_begin, int64_t e_end, int64_t origin,
                                 int lt, int tpg, const Vec<T, V>* xt, const Vec<O, V>* dt, acc_t<T> mu, acc_t<T> r,
                                 acc_t<T> rho, acc_t<T>& se, acc_t<T>& sga, acc_t<T>& sgb) {
  using A = acc_t<T>;
  se = sga = sgb = A(0);
  Walk w;
  w.init(V * (e_begin + lt), V * tpg, p.geo.KE);
  for (int64_t e = e_begin + lt; e < e_end; e += tpg) {
    const Vec<T, V> xv = load_tile<T, V>(xt, e - origin);
    const Vec<O, V> dv = load_tile<O, V>(dt, e - origin);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      A u, gamma;
      const A d = elem_grad<T, W, O, V>(p, g, w.row, w.col, j, xv.v[j], dv.v[j], mu, r, rho, u, gamma);
      se += u;
      sga += gamma * d;
      sgb += gamma * d * u;
    }
    w.advance();
  }
}

// dx of this thread's vectors: rho * gamma * dy' + c2 * u + c3.
template <typename T, typename W, typename O, int V>
__device__ inline void tile_dx(const BwdParams<T, W, O>& p, int64_t g, int64_t base, int64_t e_begin, int64_t e_end,
                               int64_t origin, int lt, int tpg, const Vec<T, V>* xt, const Vec<O, V>* dt, acc_t<T> mu,
                               acc_t<T> r, acc_t<T> rho, acc_t<T> c2, acc_t<T> c3) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  Walk w;
  w.init(V * (e_begin + lt), V * tpg, geo.KE);
  for (int64_t e = e_begin + lt; e < e_end; e += tpg) {
    const Vec<T, V> xv = load_tile<T, V>(xt, e - origin);
    const Vec<O, V> dv = load_tile<O, V>(dt, e - origin);
    Vec<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      A u, gamma;
      const A d = elem_grad<T, W, O, V>(p, g, w.row, w.col, j, xv.v[j], dv.v[j], mu, r, rho, u, gamma);
      out.v[j] = from_acc<T>(rho * gamma * d + c2 * u + c3);
    }
    store_vec<T, V>(p.dx, base + w.row * geo.RS + w.col, out);
    w.advance();
  }
}

// One group (or gpb groups) per CTA with the group's x and dy held in shared memory (the
// walk of dx_sched with splits == 1): reads x and dy once, writes dx once.
//   1. load x, dy into this thread's slots of the tiles; with SiLU also the Welford of x - s
//      (r_pre, as the SiLU pre-pass computes it);
//   2. group sums of u, gamma * dy', gamma * dy' * u -> r, c2, c3 (as gn_bwd_coeffs);
//   3. per channel of the group (`chan_lanes` threads each, fixed order): a = sum dy',
//      bsum = sum dy' * u -> the dweight/dbias terms for gn_bwd_params;
//   4. dx of this thread's vectors.
// The per-channel sums a = sum dy', bsum = sum dy' * u of every channel of group g from the
// tiles holding the walk-order elements [E0, E1) of the group (all of it: [0, M)): the
// elements of channel cc there are E = cc * cstr + q * pstr for q in [q0, q1); `chan_lanes`
// lanes per channel, every thread of the CTA running the same trips (convergent sub-warp
// shuffles). sink(cc, a, bsum) once per channel.
template <typename T, typename W, typename O, int V, typename Sink>
__device__ inline void tile_channel_sums(const BwdParams<T, W, O>& p, int64_t g, int64_t E0, int64_t E1, bool active,
                                         int lt, int tpg, const Vec<T, V>* xt, const Vec<O, V>* dt, acc_t<T> mu,
                                         acc_t<T> r, acc_t<T> rho, Sink sink) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const T* xs = reinterpret_cast<const T*>(xt);
  const O* ds = reinterpret_cast<const O*>(dt);
  const int L = p.chan_lanes;
  const int cl = lt / L, li = lt - cl * L;
  const int cpt = tpg / L;                                  // channels per trip
  const int64_t cstr = geo.channels_last ? 1 : geo.HxW;    // element stride between channels
  const int64_t pstr = geo.channels_last ? geo.D : 1;      // element stride between positions
  for (int64_t c0 = 0; c0 < geo.D; c0 += cpt) {
    const int64_t cc = c0 + cl;
    const bool valid = active && cc < geo.D;
    const int64_t c = g * geo.D + cc;
    const A gamma = (valid && p.weight) ? to_acc(p.weight[c]) : A(1);
    const A beta = (valid && p.bias) ? to_acc(p.bias[c]) : A(0);
    A sa = A(0), sb = A(0);
    if (valid) {
      const int64_t lo = E0 - cc * cstr, hi = E1 - cc * cstr;  // q * pstr in [lo, hi)
      const int64_t q0 = lo <= 0 ? 0 : (lo + pstr - 1) / pstr;
      int64_t q1 = hi <= 0 ? 0 : (hi + pstr - 1) / pstr;
      q1 = q1 < geo.HxW ? q1 : geo.HxW;
      for (int64_t q = q0 + li; q < q1; q += L) {
        const int64_t i = cc * cstr + q * pstr - E0;
        const A u = to_acc(xs[i]) - mu;
        const A d = dy_eff(to_acc(ds[i]), u, r, rho, gamma, beta, p.silu);
        sa += d;
        sb += d * u;
      }
    }
    for (int off = L >> 1; off >= 1; off >>= 1) {
      sa += shfl_xor(sa, off);
      sb += shfl_xor(sb, off);
    }
    if (valid && li == 0) sink(cc, sa, sb);
  }
}


// The group of this thread's slot in gn_bwd_onchip: slot_of's (groups in order) when one
// sample per CTA, else slot = ni * gb + gi holds group gblk * gb + gi of sample nblk * nb + ni
// (gb = gpb / nb groups of nb samples; CTA b = nblk * ceil(G / gb) + gblk).
__device__ inline GroupSlot onchip_slot(const WalkSched& s, const Geometry& geo, int nb, int64_t& nblk,
                                        int64_t& gblk) {
  GroupSlot r = slot_of(s, geo);
  nblk = gblk = 0;
  if (nb <= 1) return r;
  const int gb = s.gpb / nb;
  const int64_t GB = (geo.G + gb - 1) / gb;
  const int slot = static_cast<int>(threadIdx.x) / s.tpg;
  nblk = static_cast<int64_t>(blockIdx.x) / GB;
  gblk = static_cast<int64_t>(blockIdx.x) - nblk * GB;
  const int64_t n = nblk * nb + slot / gb, g = gblk * gb + slot % gb;
  r.active = n < geo.N && g < geo.G;
  r.ng = n * geo.G + g;
  r.e_begin = 0;
  r.e_end = r.active ? (s.chunk < geo.Mv ? s.chunk : geo.Mv) : 0;
  return r;
}

// Tiles are stored in walk order, i.e. as T (x) and O (dy) elements: NCHW [D][HxW], NHWC
// [HxW][D]; a slot is its x tile, then its dy tile (onchip_bwd_slot_bytes). With nb > 1 samples
// per CTA the per-channel terms of its gpb groups follow the slots ([gpb][D][2]).
template <typename T, typename W, typename O, int V>
__global__ void gn_bwd_onchip(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  __shared__ A red[3][32];
  const Geometry& geo = p.geo;
  const int tpg = p.dx_sched.tpg;
  const int nb = p.onchip_nb;
  int64_t nblk, gblk;
  const GroupSlot gs = onchip_slot(p.dx_sched, geo, nb, nblk, gblk);
  const int slot = static_cast<int>(threadIdx.x) / tpg;
  const int64_t xvec = static_cast<int64_t>(sizeof(Vec<T, V>)), dvec = static_cast<int64_t>(sizeof(Vec<O, V>));
  const int64_t slot_bytes = onchip_bwd_slot_bytes(geo.Mv, xvec, dvec);
  unsigned char* slot_base = gn_dynamic_smem<unsigned char>() + static_cast<int64_t>(slot) * slot_bytes;
  Vec<T, V>* xt = reinterpret_cast<Vec<T, V>*>(slot_base);
  Vec<O, V>* dt = reinterpret_cast<Vec<O, V>*>(slot_base + tile_bytes_of(geo.Mv, xvec));
  const int64_t ng = gs.active ? gs.ng : 0;
  const int64_t n = ng / geo.G, g = ng - n * geo.G;
  const int64_t base = geo.group_base(ng);
  const A mu = p.mean[ng], rho = p.rstd[ng];
  const A s = to_acc(p.x[base]);

  Welford<A> st = park_x_dy<T, W, O, V>(p, base, gs.e_begin, gs.e_end, 0, gs.lt, tpg, xt, dt, s);
  A r = A(0);
  if (p.silu) {
    group_welford(st, red, tpg);
    r = (s - mu) + st.mean;
  }

  // 2. group sums from this thread's own vectors
  A se, sga, sgb;
  tile_sums<T, W, O, V>(p, g, gs.e_begin, gs.e_end, 0, gs.lt, tpg, xt, dt, mu, r, rho, se, sga, sgb);
  group_sum3(se, sga, sgb, red, tpg);
  const A invM = A(1) / A(geo.M);
  const A rm = se * invM;
  const A Acoef = rho * (sgb - rm * sga);
  const A c2 = -rho * rho * Acoef * invM;
  const A c3 = rho * (rm * rho * Acoef - sga) * invM;

  // 3. per-channel dweight / dbias terms of the whole group: row n, or (nb samples per CTA)
  //    added over the CTA's samples in order into row nblk
  if (p.dwp && nb <= 1) {
    __syncthreads();  // the tiles of the whole group
    tile_channel_sums<T, W, O, V>(p, g, 0, geo.M, gs.active, gs.lt, tpg, xt, dt, mu, r, rho, [&](int64_t cc, A sa, A sb) {
      write_channel_terms(p.dwp, geo.C, n, g * geo.D + cc, sa, sb, rho, rm);
    });
  } else if (p.dwp) {
    const int gpb = p.dx_sched.gpb, gb = gpb / nb;
    A* terms = reinterpret_cast<A*>(gn_dynamic_smem<unsigned char>() + static_cast<int64_t>(gpb) * slot_bytes);
    __syncthreads();  // the tiles of the whole group
    tile_channel_sums<T, W, O, V>(p, g, 0, geo.M, gs.active, gs.lt, tpg, xt, dt, mu, r, rho, [&](int64_t cc, A sa, A sb) {
      terms[2 * (slot * geo.D + cc)] = rho * (sb - rm * sa);
      terms[2 * (slot * geo.D + cc) + 1] = sa;
    });
    __syncthreads();  // every slot's terms
    for (int64_t k = threadIdx.x; k < static_cast<int64_t>(gb) * geo.D; k += blockDim.x) {
      const int gi = static_cast<int>(k / geo.D);
      const int64_t cc = k - static_cast<int64_t>(gi) * geo.D, gg = gblk * gb + gi;
      if (gg >= geo.G) continue;
      A t1 = A(0), t2 = A(0);
      for (int ni = 0; ni < nb && nblk * nb + ni < geo.N; ++ni) {
        const A* q = terms + 2 * ((ni * gb + gi) * geo.D + cc);
        t1 += q[0];
        t2 += q[1];
      }
      p.dwp[2 * (nblk * geo.C + gg * geo.D + cc)] = t1;
      p.dwp[2 * (nblk * geo.C + gg * geo.D + cc) + 1] = t2;
    }
  }

  // 4. dx of this thread's own vectors
  if (p.dx) tile_dx<T, W, O, V>(p, g, base, gs.e_begin, gs.e_end, 0, gs.lt, tpg, xt, dt, mu, r, rho, c2, c3);
}


constexpr int kMaxThreadsBwdCluster = 512;  // == plan::kMaxClusterBwdTpg

// gn_bwd_cluster (sm_90): the backward of a group per thread-block cluster of `splits` CTAs, for
// groups whose x and dy do not fit one CTA (or too few groups to fill the GPU). CTA `rank`
// parks chunk `rank` of x and dy in its shared memory (read once), the group's reductions go
// through distributed shared memory (SiLU: the Welford partials of x, then the three sums and
// the per-channel sums of each chunk), each CTA writes the dweight/dbias terms of its share of
// the channels (row n, for gn_bwd_params) and dx of its chunk: reads x and dy once, writes dx.
// Every CTA combines the partials in rank order (same bits everywhere); a last cluster.sync()
// keeps shared memory alive for the peers' reads.
template <typename T, typename W, typename O, int V>
__global__ void __launch_bounds__(kMaxThreadsBwdCluster, 1) gn_bwd_cluster(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const int64_t cs = p.dx_sched.splits;
  const int tpg = p.dx_sched.tpg;
  const unsigned rank = gn_cluster_rank();
  const ClusterBwdSmem L = cluster_bwd_smem_layout(p.dx_sched.chunk, static_cast<int64_t>(sizeof(Vec<T, V>)),
                                                   static_cast<int64_t>(sizeof(Vec<O, V>)),
                                                   static_cast<int64_t>(sizeof(A)), cs, geo.D);
  unsigned char* sm = gn_dynamic_smem<unsigned char>();
  Vec<T, V>* xt = reinterpret_cast<Vec<T, V>*>(sm);
  Vec<O, V>* dt = reinterpret_cast<Vec<O, V>*>(sm + L.tile_bytes);
  A* accs = reinterpret_cast<A*>(sm + L.tile_bytes + L.dy_tile_bytes);
  A(*red)[32] = reinterpret_cast<A(*)[32]>(accs + L.red);
  A* wpart = accs + L.wpart;
  A* spart = accs + L.spart;
  A* wall = accs + L.wall;
  A* sall = accs + L.sall;
  A* chan = accs + L.chan;

  const int64_t ng = static_cast<int64_t>(blockIdx.x) / cs;  // clusters are cs consecutive CTAs
  const int64_t n = ng / geo.G, g = ng - n * geo.G;
  const int lt = static_cast<int>(threadIdx.x);
  const int64_t e_begin = static_cast<int64_t>(rank) * p.dx_sched.chunk;
  const int64_t e_end = e_begin + p.dx_sched.chunk < geo.Mv ? e_begin + p.dx_sched.chunk : geo.Mv;
  const int64_t base = geo.group_base(ng);
  const A mu = p.mean[ng], rho = p.rstd[ng];
  const A s = to_acc(p.x[base]);

  // 1. park the chunk of x and dy (and, for SiLU, the Welford statistics of x)
  Welford<A> st = park_x_dy<T, W, O, V>(p, base, e_begin, e_end, e_begin, lt, tpg, xt, dt, s);
  A r = A(0);
  if (p.silu) {
    group_welford(st, red, tpg);
    if (lt == 0) {
      wpart[0] = st.n;
      wpart[1] = st.mean;
      wpart[2] = st.m2;
    }
    gn_cluster_sync();  // every CTA's Welford partial is written
    if (lt < cs) {
      const A* q = gn_cluster_map(wpart, static_cast<unsigned>(lt));
      wall[3 * lt] = q[0];
      wall[3 * lt + 1] = q[1];
      wall[3 * lt + 2] = q[2];
    }
    __syncthreads();
    r = (s - mu) + merge_partials(wall, cs, true).mean;
  }

  // 2. the group sums, this CTA's part then the cluster's
  A se, sga, sgb;
  tile_sums<T, W, O, V>(p, g, e_begin, e_end, e_begin, lt, tpg, xt, dt, mu, r, rho, se, sga, sgb);
  group_sum3(se, sga, sgb, red, tpg);
  if (lt == 0) {
    spart[0] = se;
    spart[1] = sga;
    spart[2] = sgb;
  }
  // 3. this CTA's per-channel sums, for the peers too
  if (p.dwp) {
    __syncthreads();  // the whole chunk's tiles
    tile_channel_sums<T, W, O, V>(p, g, e_begin * V, e_end * V, true, lt, tpg, xt, dt, mu, r, rho,
                               [&](int64_t cc, A sa, A sb) {
                                 chan[2 * cc] = sa;
                                 chan[2 * cc + 1] = sb;
                               });
  }
  gn_cluster_sync();  // every CTA's sums and channel sums are written
  if (lt < cs) {
    const A* q = gn_cluster_map(spart, static_cast<unsigned>(lt));
    sall[3 * lt] = q[0];
    sall[3 * lt + 1] = q[1];
    sall[3 * lt + 2] = q[2];
  }
  __syncthreads();
  {  // every warp sums the cs partials the same way (butterfly: the same bits in every lane and CTA)
    const int lane = lt & 31;
    se = lane < cs ? sall[3 * lane] : A(0);
    sga = lane < cs ? sall[3 * lane + 1] : A(0);
    sgb = lane < cs ? sall[3 * lane + 2] : A(0);
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) {
      se += shfl_xor(se, off);
      sga += shfl_xor(sga, off);
      sgb += shfl_xor(sgb, off);
    }
  }
  const A invM = A(1) / A(geo.M);
  const A rm = se * invM;
  const A Acoef = rho * (sgb - rm * sga);
  const A c2 = -rho * rho * Acoef * invM;
  const A c3 = rho * (rm * rho * Acoef - sga) * invM;

  // 4. the dweight / dbias terms of this CTA's share of the channels, from the cluster's sums
  if (p.dwp)
    cluster_channel_terms(p.dwp, geo.C, n, g * geo.D, geo.D, chan, static_cast<int>(cs), rank,
                          [&](int64_t) { return rho; }, [&](int64_t) { return rm; });

  // 5. dx of this CTA's chunk
  if (p.dx) tile_dx<T, W, O, V>(p, g, base, e_begin, e_end, e_begin, lt, tpg, xt, dt, mu, r, rho, c2, c3);
  gn_cluster_sync();  // no CTA leaves (and frees its shared memory) while a peer may still read it
}

}  // namespace kernels
}  // namespace groupnorm_cuda
