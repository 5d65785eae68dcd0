// Backward kernels (formulas: csrc/README.md, "Backward").
//   [gn_fwd_stats]     SiLU only: partial Welford of x - s per chunk, merged by the consumers
//                      into r_pre = (s - mu) + m, the rounding error of the saved mean that the
//                      pre-activation z needs.
//   gn_bwd_sums_nchw / gn_bwd_sums_nhwc
//                      per (n, c, piece): a = sum dy', bsum = sum dy' * u, e = sum u, u = x - mu.
//                      Each (n, c, piece) is written by exactly one thread (no atomics).
//   gn_bwd_coeffs      one warp per (n, g): r = sum e / M, c2, c3 of
//                      dx = rho * gamma * dy' + c2 * u + c3, and per (n, c) the dweight/dbias
//                      terms rho * (bsum - r * a) and a.
//   gn_bwd_params      one thread per channel: dweight, dbias = sums of the dwp_rows rows of
//                      terms (a row per sample, or per CTA of samples) in order.
//   gn_bwd_dx          elementwise dx over the walk schedule of the forward.
//   gn_bwd_silu_r / gn_bwd_sums_rows / gn_bwd_dx_rows
//                      channels-last rows schedule: backward_rows.cuh.
//   The split ops (csrc/ops.cpp) run parts of the Split / Rows schedules with `r_in` (the
//   residual r given per group: no SiLU pre-pass, no sum of u): backward_sums is the sums
//   kernel + gn_bwd_coeffs writing the group sums (`group_out`) + gn_bwd_params writing
//   accumulation-type parts; backward_dx is gn_bwd_coeffs from the given sums (`group_in`) +
//   the dx kernel.
//   gn_bwd_onchip / gn_bwd_cluster
//                      groups whose x and dy fit on chip (one CTA, or a thread-block cluster):
//                      backward_tiled.cuh.
//   gn_bwd_bundle      channels-last groups that are not whole vectors, k at a time on chip:
//                      backward_bundle.cuh.
#pragma once

#include "cuda/kernels/common.cuh"

namespace groupnorm_cuda {
namespace kernels {

// O: y's element type (FwdParams), so dy's: T, or float for a 16-bit T (autocast's float32
// output; its float32 gradient is read as it is, never rounded to 16 bits).
template <typename T, typename W, typename O> struct BwdParams {
  const O* dy;
  const T* x;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  const W* weight;  // nullable
  const W* bias;    // nullable
  T* dx;            // nullable: not wanted
  W* dweight;       // nullable
  W* dbias;         // nullable
  acc_t<T>* silu_ws;  // [NG][silu_splits][3] partial stats of x (SiLU only)
  acc_t<T>* sums;     // [N][C][pieces][3]
  acc_t<T>* coef;     // [NG][2]
  acc_t<T>* dwp;      // [N][C][2]: per-(n, c) dweight/dbias terms
  acc_t<T>* rbuf;     // rows schedule with SiLU: r_pre per group [NG]
  Geometry geo;
  WalkSched dx_sched;
  int64_t silu_splits;
  // gn_bwd_sums_*: NCHW: `lanes` threads per channel row, `rows_par` rows per CTA,
  // `row_blocks` CTAs over the D rows, `pieces` x `piece_len` vector-columns.
  // NHWC: `lanes` vector-columns in parallel, `rows_par` rows in parallel, `pieces` x
  // `piece_len` spatial rows.
  int64_t pieces, piece_len, row_blocks;
  int lanes, rows_par;
  RowsSched rows;  // rows schedule (pieces == rows.pieces)
  BundleSched bundle;  // gn_bwd_bundle
  // gn_bwd_onchip: `chan_lanes` threads per channel in the per-channel sums; `onchip_nb`
  // samples per CTA (the same dx_sched.gpb / onchip_nb groups of each), their dweight/dbias
  // terms added in the CTA (1: the groups in order, a row of terms per sample).
  int chan_lanes;
  int onchip_nb;
  int64_t dwp_rows;  // rows of dweight/dbias terms in dwp (gn_bwd_params adds them)
  bool silu;
  // Split ops (else null / 0): r_in (N, G) the given residual; group_out (N, G, 2) this
  // shard's [Asum, Bsum]; group_in (N, G, 2) the sums over all shards, with M_total elements a
  // group; dweight_acc / dbias_acc the parameter-gradient parts in the accumulation type.
  const acc_t<T>* r_in;
  acc_t<T>* group_out;
  const acc_t<T>* group_in;
  int64_t M_total;
  acc_t<T>* dweight_acc;
  acc_t<T>* dbias_acc;
};

// Row n of the dweight / dbias terms of channel c from its sums over the whole group.
template <typename A> __device__ inline void write_channel_terms(A* dwp, int64_t C, int64_t n, int64_t c, A sa, A sb,
                                                                A rho, A rm) {
  dwp[2 * (n * C + c)] = rho * (sb - rm * sa);
  dwp[2 * (n * C + c) + 1] = sa;
}

// Thread-block clusters (gn_bwd_cluster, gn_bwd_bundle): row n of the dweight / dbias terms of
// `count` channels (first, first + 1, ...), from the per-channel sums (a, bsum at chan[2 * cc])
// of every CTA of the cluster (cs == 1: this CTA's), added in rank order through distributed
// shared memory; the channels shared out over the cluster's CTAs (cc = rank, rank + cs, ...).
// rho_of(cc) / rm_of(cc): the statistics of the channel's group. Call after a cluster barrier
// over `chan`, whose shared memory must stay alive until the peers are done (a last barrier).
template <typename A, typename Rho, typename Rm>
__device__ inline void cluster_channel_terms(A* dwp, int64_t C, int64_t n, int64_t first, int64_t count, A* chan,
                                             int cs, unsigned rank, Rho rho_of, Rm rm_of) {
  for (int64_t cc = rank + static_cast<int64_t>(cs) * threadIdx.x; cc < count;
       cc += static_cast<int64_t>(cs) * blockDim.x) {
    A sa = A(0), sb = A(0);
    for (int r = 0; r < cs; ++r) {
      const A* q = cs > 1 ? gn_cluster_map(chan, static_cast<unsigned>(r)) : chan;
      sa += q[2 * cc];
      sb += q[2 * cc + 1];
    }
    write_channel_terms(dwp, C, n, first + cc, sa, sb, rho_of(cc), rm_of(cc));
  }
}

// r_pre of group ng from the SiLU pre-pass (warp-redundant, fixed order), or the given one.
template <typename T, typename W, typename O>
__device__ inline acc_t<T> silu_r(const BwdParams<T, W, O>& p, int64_t ng, int64_t base, bool active) {
  using A = acc_t<T>;
  if (p.r_in) return active ? p.r_in[ng] : A(0);
  const Welford<A> st = merge_partials(p.silu_ws + 3 * (active ? ng : 0) * p.silu_splits, p.silu_splits, active);
  const A s = active ? to_acc(p.x[base]) : A(0);
  const A mu = active ? p.mean[ng] : A(0);
  return (s - mu) + st.mean;
}

// dy' : dy, or dy * silu'(z) with z = (u - r) * rho * gamma + beta.
template <typename A>
__device__ inline A dy_eff(A dyv, A u, A r, A rho, A gamma, A beta, bool silu) {
  if (!silu) return dyv;
  return gn_silu_grad(dyv, (u - r) * rho * gamma + beta);
}

// Element j of the vector whose first element is at (row, col) of group g (the walk's view;
// NCHW flat groups: past the end of the row it is the next channel): returns dy', sets
// u = x - mu and gamma.
template <typename T, typename W, typename O, int V>
__device__ inline acc_t<T> elem_grad(const BwdParams<T, W, O>& p, int64_t g, int64_t row, int64_t col, int j, T xv,
                                     O dyv, acc_t<T> mu, acc_t<T> r, acc_t<T> rho, acc_t<T>& u, acc_t<T>& gamma) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const int64_t c = geo.channels_last ? g * geo.D + col + j : g * geo.D + row + (col + j >= geo.HxW ? 1 : 0);
  gamma = p.weight ? to_acc(p.weight[c]) : A(1);
  const A beta = p.bias ? to_acc(p.bias[c]) : A(0);
  u = to_acc(xv) - mu;
  return dy_eff(to_acc(dyv), u, r, rho, gamma, beta, p.silu);
}

template <typename T, typename W, typename O, int V>
__global__ void gn_bwd_sums_nchw(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const int64_t bid = blockIdx.x;
  const int64_t pc = bid % p.pieces;
  const int64_t t = bid / p.pieces;
  const int64_t rb = t % p.row_blocks;
  const int64_t ng = t / p.row_blocks;
  const int64_t n = ng / geo.G, g = ng - n * geo.G;
  const int LR = p.lanes;
  const int rl = static_cast<int>(threadIdx.x) / LR;
  const int lc = static_cast<int>(threadIdx.x) - rl * LR;
  const int64_t row = rb * p.rows_par + rl;
  const bool valid = rl < p.rows_par && row < geo.D;
  const int64_t base = geo.group_base(ng);
  const A mu = p.mean[ng], rho = p.rstd[ng];
  const A r = p.silu ? silu_r(p, ng, base, true) : A(0);
  const int64_t c = g * geo.D + row;
  A gamma = A(1), beta = A(0);
  if (valid && p.weight) gamma = to_acc(p.weight[c]);
  if (valid && p.bias) beta = to_acc(p.bias[c]);
  const int64_t k0 = pc * p.piece_len;
  const int64_t k1 = k0 + p.piece_len < geo.K ? k0 + p.piece_len : geo.K;
  A sa = A(0), sb = A(0), se = A(0);
  if (valid) {
    const int64_t rowoff = base + row * geo.RS;
    for (int64_t k = k0 + lc; k < k1; k += LR) {
      const Vec<T, V> xv = load_vec<T, V>(p.x, rowoff + k * V);
      const Vec<O, V> dv = load_vec<O, V>(p.dy, rowoff + k * V);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A u = to_acc(xv.v[j]) - mu;
        const A d = dy_eff(to_acc(dv.v[j]), u, r, rho, gamma, beta, p.silu);
        sa += d;
        sb += d * u;
        se += u;
      }
    }
  }
  for (int off = LR >> 1; off >= 1; off >>= 1) {
    sa += shfl_xor(sa, off);
    sb += shfl_xor(sb, off);
    se += shfl_xor(se, off);
  }
  if (valid && lc == 0) {
    A* out = p.sums + 3 * ((n * geo.C + c) * p.pieces + pc);
    out[0] = sa;
    out[1] = sb;
    out[2] = se;
  }
}

constexpr int kNhwcSumsMaxThreads = 256;

template <typename T, typename W, typename O, int V>
__global__ void gn_bwd_sums_nhwc(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  __shared__ A red[kNhwcSumsMaxThreads * 8];
  const Geometry& geo = p.geo;
  const int64_t bid = blockIdx.x;
  const int64_t g = bid % geo.G;
  const int64_t t = bid / geo.G;
  const int64_t pc = t % p.pieces;
  const int64_t n = t / p.pieces;
  const int64_t ng = n * geo.G + g;
  const int CW = p.lanes, RP = p.rows_par;
  const int tid = static_cast<int>(threadIdx.x);
  const int rl = tid / CW;
  const int lc = tid - rl * CW;
  const bool valid = rl < RP;
  const int64_t base = geo.group_base(ng);
  const A mu = p.mean[ng], rho = p.rstd[ng];
  const A r = p.silu ? silu_r(p, ng, base, true) : A(0);
  const int64_t r0 = pc * p.piece_len;
  const int64_t r1 = r0 + p.piece_len < geo.HxW ? r0 + p.piece_len : geo.HxW;
  for (int64_t col0 = 0; col0 < geo.K; col0 += CW) {
    const int64_t col = col0 + lc;
    const bool vc = valid && col < geo.K;
    const int64_t c0 = g * geo.D + col * V;
    A gamma[V], beta[V], sa[V], sb[V], se[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      gamma[j] = (vc && p.weight) ? to_acc(p.weight[c0 + j]) : A(1);
      beta[j] = (vc && p.bias) ? to_acc(p.bias[c0 + j]) : A(0);
      sa[j] = A(0);
      sb[j] = A(0);
      se[j] = A(0);
    }
    if (vc) {
      for (int64_t row = r0 + rl; row < r1; row += RP) {
        const int64_t off = base + row * geo.RS + col * V;
        const Vec<T, V> xv = load_vec<T, V>(p.x, off);
        const Vec<O, V> dv = load_vec<O, V>(p.dy, off);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const A u = to_acc(xv.v[j]) - mu;
          const A d = dy_eff(to_acc(dv.v[j]), u, r, rho, gamma[j], beta[j], p.silu);
          sa[j] += d;
          sb[j] += d * u;
          se[j] += u;
        }
      }
    }
    if (RP > 1) {
      // Fixed-order reduction over the RP row lanes of each column, one quantity at a time.
      for (int q = 0; q < 3; ++q) {
#pragma unroll
        for (int j = 0; j < V; ++j) red[tid * V + j] = q == 0 ? sa[j] : (q == 1 ? sb[j] : se[j]);
        __syncthreads();
        if (vc && rl == 0) {
#pragma unroll
          for (int j = 0; j < V; ++j) {
            A acc = A(0);
            for (int rr = 0; rr < RP; ++rr) acc += red[(rr * CW + lc) * V + j];
            if (q == 0) sa[j] = acc; else if (q == 1) sb[j] = acc; else se[j] = acc;
          }
        }
        __syncthreads();
      }
    }
    if (vc && rl == 0) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        A* out = p.sums + 3 * ((n * geo.C + c0 + j) * p.pieces + pc);
        out[0] = sa[j];
        out[1] = sb[j];
        out[2] = se[j];
      }
    }
  }
}

template <typename T, typename W, typename O>
__global__ void gn_bwd_coeffs(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t ng = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const bool active = ng < geo.N * geo.G;
  const int64_t n = ng / geo.G, g = ng - n * geo.G;
  const A rho = active ? p.rstd[ng] : A(0);
  if (p.group_in) {  // split op backward_dx: the group's sums over all shards are given
    if (active && lane == 0) {
      const A invM = A(1) / A(p.M_total);
      const A Acoef = p.group_in[2 * ng], sga = p.group_in[2 * ng + 1], r = p.r_in[ng];
      p.coef[2 * ng] = -rho * rho * Acoef * invM;
      p.coef[2 * ng + 1] = rho * (r * rho * Acoef - sga) * invM;
    }
    return;
  }
  A se = A(0), sga = A(0), sgb = A(0);
  if (active) {
    for (int64_t cc = lane; cc < geo.D; cc += 32) {
      const int64_t c = g * geo.D + cc;
      const A* s = p.sums + 3 * (n * geo.C + c) * p.pieces;
      A a = A(0), b = A(0), e = A(0);
      for (int64_t k = 0; k < p.pieces; ++k) {
        a += s[3 * k];
        b += s[3 * k + 1];
        e += s[3 * k + 2];
      }
      const A gam = p.weight ? to_acc(p.weight[c]) : A(1);
      se += e;
      sga += gam * a;
      sgb += gam * b;
    }
  }
  se = warp_sum(se);
  sga = warp_sum(sga);
  sgb = warp_sum(sgb);
  const A invM = A(1) / A(geo.M);
  const A r = p.r_in ? (active ? p.r_in[ng] : A(0)) : se * invM;
  const A Acoef = rho * (sgb - r * sga);
  if (active && lane == 0) {
    p.coef[2 * ng] = -rho * rho * Acoef * invM;
    p.coef[2 * ng + 1] = rho * (r * rho * Acoef - sga) * invM;
    if (p.group_out) {  // split op backward_sums: this shard's share of the group sums
      p.group_out[2 * ng] = Acoef;
      p.group_out[2 * ng + 1] = sga;
    }
  }
  if (active && p.dwp) {
    for (int64_t cc = lane; cc < geo.D; cc += 32) {
      const int64_t c = g * geo.D + cc;
      const A* s = p.sums + 3 * (n * geo.C + c) * p.pieces;
      A a = A(0), b = A(0);
      for (int64_t k = 0; k < p.pieces; ++k) {
        a += s[3 * k];
        b += s[3 * k + 1];
      }
      p.dwp[2 * (n * geo.C + c)] = rho * (b - r * a);
      p.dwp[2 * (n * geo.C + c) + 1] = a;
    }
  }
}

template <typename T, typename W, typename O>
__global__ void gn_bwd_params(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.geo.C) return;
  A dw = A(0), db = A(0);
  for (int64_t n = 0; n < p.dwp_rows; ++n) {
    dw += p.dwp[2 * (n * p.geo.C + c)];
    db += p.dwp[2 * (n * p.geo.C + c) + 1];
  }
  if (p.dweight) p.dweight[c] = from_acc<W>(dw);
  if (p.dbias) p.dbias[c] = from_acc<W>(db);
  if (p.dweight_acc) p.dweight_acc[c] = dw;  // split op backward_sums: parts to be added over shards
  if (p.dbias_acc) p.dbias_acc[c] = db;
}

template <typename T, typename W, typename O, int V>
__global__ void gn_bwd_dx(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const GroupSlot gs = slot_of(p.dx_sched, geo);
  const int64_t ng = gs.active ? gs.ng : 0;
  const int64_t base = geo.group_base(ng);
  const A mu = p.mean[ng], rho = p.rstd[ng];
  const A c2 = p.coef[2 * ng], c3 = p.coef[2 * ng + 1];
  const A r = p.silu ? silu_r(p, ng, base, gs.active) : A(0);
  const int64_t g = ng % geo.G;
  Walk w;
  w.init(V * (gs.e_begin + gs.lt), V * p.dx_sched.tpg, geo.KE);
  for (int64_t e = gs.e_begin + gs.lt; e < gs.e_end; e += p.dx_sched.tpg) {
    const int64_t off = base + w.row * geo.RS + w.col;
    const Vec<T, V> xv = load_vec<T, V>(p.x, off);
    const Vec<O, V> dv = load_vec<O, V>(p.dy, off);
    Vec<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      A u, gamma;
      const A d = elem_grad<T, W, O, V>(p, g, w.row, w.col, j, xv.v[j], dv.v[j], mu, r, rho, u, gamma);
      out.v[j] = from_acc<T>(rho * gamma * d + c2 * u + c3);
    }
    store_vec<T, V>(p.dx, off, out);
    w.advance();
  }
}

}  // namespace kernels
}  // namespace groupnorm_cuda
