// Forward kernels.
//   gn_fwd_onchip : gpb groups per CTA, tpg threads per group; each thread keeps the vectors
//                   it loaded in (dynamic) shared memory, so x is read once: 1R + 1W.
//   gn_fwd_stats  : partial Welford (n, mean, M2) of x - s over one chunk of a group -> ws.
//   gn_fwd_apply  : merges the group's partials in a fixed order, writes mean/rstd (split 0),
//                   normalizes its chunk: with gn_fwd_stats 2R + 1W.
// s is the group's first element (csrc/README.md): statistics are of x - s.
#pragma once

#include "cuda/kernels/common.cuh"

namespace groupnorm_cuda {
namespace kernels {

template <typename T, typename W> struct FwdParams {
  const T* x;
  const W* weight;  // nullable
  const W* bias;    // nullable
  T* y;
  acc_t<T>* mean;
  acc_t<T>* rstd;
  acc_t<T>* ws;  // partials [NG][splits][3]
  Geometry geo;
  WalkSched sched;
  acc_t<T> eps;
  bool silu;
};

// Normalizes the vector at (row, col) of group ng: y = ((x - s) - m) * (rstd * w) + b.
template <typename T, typename W, int V>
__device__ inline Vec<T, V> fwd_epilogue(const FwdParams<T, W>& p, const Vec<T, V>& v, int64_t g, int64_t row,
                                         int64_t col, acc_t<T> s, acc_t<T> m, acc_t<T> rstd) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  Vec<T, V> out;
  if (!geo.channels_last) {
    const int64_t c = g * geo.D + row;
    const A a = p.weight ? rstd * to_acc(p.weight[c]) : rstd;
    const A b = p.bias ? to_acc(p.bias[c]) : A(0);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      A z = ((to_acc(v.v[j]) - s) - m) * a + b;
      if (p.silu) z = z * gn_sigmoid(z);
      out.v[j] = from_acc<T>(z);
    }
  } else {
    const int64_t c0 = g * geo.D + col * V;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const A a = p.weight ? rstd * to_acc(p.weight[c0 + j]) : rstd;
      const A b = p.bias ? to_acc(p.bias[c0 + j]) : A(0);
      A z = ((to_acc(v.v[j]) - s) - m) * a + b;
      if (p.silu) z = z * gn_sigmoid(z);
      out.v[j] = from_acc<T>(z);
    }
  }
  return out;
}

template <typename T, int V>
__device__ inline void accumulate_vec(Welford<acc_t<T>>& st, const Vec<T, V>& v, acc_t<T> s) {
  using A = acc_t<T>;
  A d[V];
#pragma unroll
  for (int j = 0; j < V; ++j) d[j] = to_acc(v.v[j]) - s;
  welford_add_vec<A, V>(st, d);
}

template <typename T, typename W, int V>
__global__ void gn_fwd_onchip(FwdParams<T, W> p) {
  using A = acc_t<T>;
  __shared__ A red[3][32];
  const Geometry& geo = p.geo;
  const GroupSlot gs = slot_of(p.sched, geo);
  const int slot = static_cast<int>(threadIdx.x) / p.sched.tpg;
  Vec<T, V>* tile = gn_dynamic_smem<Vec<T, V>>() + static_cast<int64_t>(slot) * geo.Mv;
  const int64_t base = gs.active ? geo.group_base(gs.ng) : 0;
  const A s = gs.active ? to_acc(p.x[base]) : A(0);

  Welford<A> st = welford_zero<A>();
  Walk w;
  w.init(gs.e_begin + gs.lt, p.sched.tpg, geo.K);
  for (int64_t e = gs.e_begin + gs.lt; e < gs.e_end; e += p.sched.tpg) {
    const Vec<T, V> v = load_vec<T, V>(p.x, base + w.row * geo.RS + w.col * V);
    tile[e] = v;  // read back below by this same thread: no barrier needed
    accumulate_vec<T, V>(st, v, s);
    w.advance();
  }
  group_welford(st, red, p.sched.tpg);
  const A m = st.mean;
  const A rstd = gn_rsqrt(st.m2 / A(geo.M) + p.eps);
  if (gs.active && gs.lt == 0) {
    p.mean[gs.ng] = s + m;
    p.rstd[gs.ng] = rstd;
  }
  const int64_t g = gs.ng % geo.G;
  w.init(gs.e_begin + gs.lt, p.sched.tpg, geo.K);
  for (int64_t e = gs.e_begin + gs.lt; e < gs.e_end; e += p.sched.tpg) {
    const Vec<T, V> out = fwd_epilogue<T, W, V>(p, tile[e], g, w.row, w.col, s, m, rstd);
    store_vec<T, V>(p.y, base + w.row * geo.RS + w.col * V, out);
    w.advance();
  }
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
  w.init(gs.e_begin + gs.lt, sched.tpg, geo.K);
  for (int64_t e = gs.e_begin + gs.lt; e < gs.e_end; e += sched.tpg) {
    const Vec<T, V> v = load_vec<T, V>(x, base + w.row * geo.RS + w.col * V);
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

template <typename T, typename W, int V>
__global__ void gn_fwd_apply(FwdParams<T, W> p) {
  using A = acc_t<T>;
  const Geometry& geo = p.geo;
  const GroupSlot gs = slot_of(p.sched, geo);
  const int64_t base = gs.active ? geo.group_base(gs.ng) : 0;
  const A s = gs.active ? to_acc(p.x[base]) : A(0);
  const Welford<A> st = merge_partials(p.ws + 3 * (gs.active ? gs.ng : 0) * p.sched.splits, p.sched.splits, gs.active);
  const A m = st.mean;
  const A rstd = gn_rsqrt(st.m2 / A(geo.M) + p.eps);
  if (gs.active && gs.split == 0 && gs.lt == 0) {
    p.mean[gs.ng] = s + m;
    p.rstd[gs.ng] = rstd;
  }
  const int64_t g = gs.ng % geo.G;
  Walk w;
  w.init(gs.e_begin + gs.lt, p.sched.tpg, geo.K);
  for (int64_t e = gs.e_begin + gs.lt; e < gs.e_end; e += p.sched.tpg) {
    const int64_t off = base + w.row * geo.RS + w.col * V;
    const Vec<T, V> v = load_vec<T, V>(p.x, off);
    store_vec<T, V>(p.y, off, fwd_epilogue<T, W, V>(p, v, g, w.row, w.col, s, m, rstd));
    w.advance();
  }
}

}  // namespace kernels
}  // namespace groupnorm_cuda
