// Backward kernels of the channels-last rows schedule (see backward.cuh for the other
// schedules and forward.cuh for the rows schedule itself): the SiLU pre-pass is
// gn_fwd_stats_rows + gn_bwd_silu_r (r_pre per group); gn_bwd_sums_rows and gn_bwd_dx_rows take
// rows x all C channels of a sample with 16-byte vectors along C.
#pragma once

#include "cuda/kernels/backward.cuh"

namespace groupnorm_cuda {
namespace kernels {

// ---- channels-last rows schedule ----
// r_pre of every group from the rows pre-pass partials: one warp per group.
template <typename T, typename W, typename O>
__global__ void gn_bwd_silu_r(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t ng = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const bool active = ng < p.geo.N * p.geo.G;
  const A r = silu_r(p, ng, active ? p.geo.group_base(ng) : 0, active);
  if (active && lane == 0) p.rbuf[ng] = r;
}

// Per-channel constants of the V channels of a rows-schedule thread.
template <typename T, typename W, int V> struct RowChannels {
  acc_t<T> mu[V], rho[V], r[V], gamma[V], beta[V];
  template <typename O> __device__ inline void load(const BwdParams<T, W, O>& p, const RowSlot& sl) {
    using A = acc_t<T>;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t c = sl.c0 + j;
      const int64_t ng = sl.n * p.geo.G + c / p.geo.D;
      mu[j] = p.mean[ng];
      rho[j] = p.rstd[ng];
      r[j] = p.silu ? (p.r_in ? p.r_in[ng] : p.rbuf[ng]) : A(0);
      gamma[j] = p.weight ? to_acc(p.weight[c]) : A(1);
      beta[j] = p.bias ? to_acc(p.bias[c]) : A(0);
    }
  }
};

template <typename T, typename W, typename O, int V>
__global__ void gn_bwd_sums_rows(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const RowSlot sl = row_slot<V>(p.rows, geo);
  RowChannels<T, W, V> ch;
  ch.load(p, sl);
  A sa[V], sb[V], se[V];
#pragma unroll
  for (int j = 0; j < V; ++j) sa[j] = sb[j] = se[j] = A(0);
  if (sl.valid) {
    for (int64_t row = sl.r0 + sl.rl; row < sl.r1; row += p.rows.rows_par) {
      const int64_t off = sl.sample + row * geo.C + sl.c0;
      const Vec<T, V> xv = load_vec<T, V>(p.x, off);
      const Vec<O, V> dv = load_vec<O, V>(p.dy, off);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A u = to_acc(xv.v[j]) - ch.mu[j];
        const A d = dy_eff(to_acc(dv.v[j]), u, ch.r[j], ch.rho[j], ch.gamma[j], ch.beta[j], p.silu);
        sa[j] += d;
        sb[j] += d * u;
        se[j] += u;
      }
    }
  }
  // Row lanes -> shared memory -> one thread per vector column sums them in order.
  A* st = gn_dynamic_smem<A>();
  const int nt = static_cast<int>(blockDim.x);
  const int tid = static_cast<int>(threadIdx.x);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    st[(0 * nt + tid) * V + j] = sa[j];
    st[(1 * nt + tid) * V + j] = sb[j];
    st[(2 * nt + tid) * V + j] = se[j];
  }
  __syncthreads();
  const int64_t cw = geo.C / V;
  if (tid < cw) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      A a = A(0), b = A(0), e = A(0);
      for (int rl = 0; rl < p.rows.rows_par; ++rl) {
        const int64_t k = (rl * cw + tid) * V + j;
        a += st[k];
        b += st[nt * V + k];
        e += st[2 * nt * V + k];
      }
      A* out = p.sums + 3 * ((sl.n * geo.C + tid * V + j) * p.pieces + sl.piece);
      out[0] = a;
      out[1] = b;
      out[2] = e;
    }
  }
}

template <typename T, typename W, typename O, int V>
__global__ void gn_bwd_dx_rows(BwdParams<T, W, O> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const RowSlot sl = row_slot<V>(p.rows, geo);
  if (!sl.valid) return;  // no barriers below
  RowChannels<T, W, V> ch;
  ch.load(p, sl);
  A c2[V], c3[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t ng = sl.n * geo.G + (sl.c0 + j) / geo.D;
    c2[j] = p.coef[2 * ng];
    c3[j] = p.coef[2 * ng + 1];
  }
  for (int64_t row = sl.r0 + sl.rl; row < sl.r1; row += p.rows.rows_par) {
    const int64_t off = sl.sample + row * geo.C + sl.c0;
    const Vec<T, V> xv = load_vec<T, V>(p.x, off);
    const Vec<O, V> dv = load_vec<O, V>(p.dy, off);
    Vec<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const A u = to_acc(xv.v[j]) - ch.mu[j];
      const A d = dy_eff(to_acc(dv.v[j]), u, ch.r[j], ch.rho[j], ch.gamma[j], ch.beta[j], p.silu);
      out.v[j] = from_acc<T>(ch.rho[j] * ch.gamma[j] * d + c2[j] * u + c3[j]);
    }
    store_vec<T, V>(p.dx, off, out);
  }
}

}  // namespace kernels
}  // namespace groupnorm_cuda
