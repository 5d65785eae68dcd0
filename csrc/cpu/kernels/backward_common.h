// Pieces shared by the two CPU backward kernels: the SiLU pre-activation coefficients of a
// channel and the per-group step that turns per-channel sums into dweight / dbias partials and
// dx coefficients (csrc/README.md, "Backward").
#pragma once

#include <cstdint>

#include "cpu/kernels/common.h"
#include "cpu/kernels/params.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

using at::vec::Vectorized;

// Coefficients of one channel for the SiLU pre-activation z = u * zs + zb.
template <typename A>
struct ZCoef {
  A zs = 0, zb = 0;
};

// Per-group result of the reduction, turned into dx coefficients.
template <typename A>
struct GroupCoef {
  A r = 0;   // sum(u) / M: rounding error of the saved mean
  A c2 = 0;  // dx = rho * w * dy' + c2 * u + c3
  A c3 = 0;
};

// What a group's channels reduce to: r, and Asum = sum_c w_c * rho * (bs_c - r * a_c),
// Bsum = sum_c w_c * a_c. Sums over disjoint parts of a group (shards) add up.
template <typename A>
struct GroupSums {
  A r = 0, Asum = 0, Bsum = 0;
};

// A channel's dweight term rho * (bs - r * a) from its sums (dyxhat summed over the channel),
// scalar or vector: one expression for every path that must give the same bits.
template <typename X>
inline X dweight_term(const X& rho, const X& r, const X& a, const X& bs) {
  return rho * (bs - r * a);
}

// A group's [Asum, Bsum] into the split op's group_out (BwdArgs), when asked.
template <typename T, typename W>
inline void store_group_sums(const BwdArgs<T, W>& a, int64_t u, const GroupSums<acc_t<T>>& gs) {
  if (!a.group_out) return;
  a.group_out[2 * u] = gs.Asum;
  a.group_out[2 * u + 1] = gs.Bsum;
}

// The residual r of group u's saved mean: given (r_in, a shard's sums in the sharded backward),
// else sum(e) / M from its D channels' sums of u at se. One expression for every path.
template <typename T, typename W>
inline acc_t<T> group_residual(const BwdArgs<T, W>& a, int64_t u, const acc_t<T>* se) {
  return a.r_in ? a.r_in[u] : sum_vec(se, a.s.D()) / static_cast<acc_t<T>>(a.s.M());
}

// Given per-channel sums of one group (D channels of sample n, as three arrays a, bs, e),
// writes the dweight/dbias partials and returns the group's sums (r from group_residual). wv:
// the weight in the accumulation type (params_acc). Vector loops over the channels.
template <typename T, typename W>
GroupSums<acc_t<T>> reduce_group(const BwdArgs<T, W>& a, int64_t n, int64_t g, const acc_t<T>* sa,
                                 const acc_t<T>* sb, const acc_t<T>* se, const acc_t<T>* wv) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const auto& s = a.s;
  const int64_t D = s.D();
  const A rho = a.rstd[n * s.G + g];
  GroupSums<A> gs;
  gs.r = group_residual(a, n * s.G + g, se);
  const A* w = wv + g * D;
  A* dw = a.dw_part ? a.dw_part + n * s.C + g * D : nullptr;
  A* db = a.db_part ? a.db_part + n * s.C + g * D : nullptr;
  V vA(0), vB(0);
  A Asum = 0, Bsum = 0;
  walk<A>(
      D, nullptr,
      [&](int64_t d, const V& va, const V& vb) {
        const V dyxhat = dweight_term(V(rho), V(gs.r), va, vb);
        const V vw = V::loadu(w + d);
        vA = at::vec::fmadd(vw, dyxhat, vA);
        vB = at::vec::fmadd(vw, va, vB);
        if (dw) dyxhat.store(dw + d);
        if (db) va.store(db + d);
      },
      [&](int64_t d, A va, A vb) {
        const A dyxhat = dweight_term(rho, gs.r, va, vb);
        Asum += w[d] * dyxhat;
        Bsum += w[d] * va;
        if (dw) dw[d] = dyxhat;
        if (db) db[d] = va;
      },
      sa, sb);
  if (D >= V::size()) {
    Asum += hsum(vA);
    Bsum += hsum(vB);
  }
  gs.Asum = Asum;
  gs.Bsum = Bsum;
  return gs;
}

// dx coefficients of a group from its sums over all M elements (M: the whole group's count,
// over every shard).
template <typename A>
inline GroupCoef<A> group_coef(A rho, const GroupSums<A>& gs, int64_t M_count) {
  const A M = static_cast<A>(M_count);
  GroupCoef<A> gc;
  gc.r = gs.r;
  gc.c2 = -rho * rho * gs.Asum / M;
  gc.c3 = rho * (gc.r * rho * gs.Asum - gs.Bsum) / M;
  return gc;
}

// The dx coefficients of group (n, g), as the split ops ask (BwdArgs): from the sums given for
// the whole sharded group (group_in), else from this call's per-channel sums (written to
// group_out when asked).
template <typename T, typename W>
GroupCoef<acc_t<T>> finish_group(const BwdArgs<T, W>& a, int64_t n, int64_t g, const acc_t<T>* sa,
                                 const acc_t<T>* sb, const acc_t<T>* se, const acc_t<T>* wv) {
  using A = acc_t<T>;
  const int64_t u = n * a.s.G + g;
  const A rho = a.rstd[u];
  if (a.group_in) return group_coef(rho, GroupSums<A>{a.r_in[u], a.group_in[2 * u], a.group_in[2 * u + 1]}, a.M_total);
  const GroupSums<A> gs = reduce_group(a, n, g, sa, sb, se, wv);
  store_group_sums(a, u, gs);
  return group_coef(rho, gs, a.s.M());
}

template <typename T, typename W>
inline ZCoef<acc_t<T>> z_coef(const BwdArgs<T, W>& a, int64_t n, int64_t c, acc_t<T> r) {
  using A = acc_t<T>;
  // z = (u - r) * rho * w + b = u * zs + (b - r * zs)
  ZCoef<A> z;
  z.zs = a.rstd[n * a.s.G + c / a.s.D()] * param_at(a.w, c, A(1));
  z.zb = param_at(a.b, c, A(0)) - r * z.zs;
  return z;
}

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
