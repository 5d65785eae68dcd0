// The NCHW backward's per-channel loops over one channel's values (u = x - mean, dy' = dy or
// dy * silu'(z)): the sums a, bs, e and the dx pass, read as T and converted in registers. Used
// where a channel is walked on its own: long channels, and short ones narrower than a vector
// (backward_nchw.h walks the others as one flat run, walk_channels).
#pragma once

#include <cstdint>

#include "cpu/kernels/backward_common.h"
#include "cpu/kernels/common.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

using at::vec::Vectorized;

template <typename A>
struct ChanSums {
  A a = 0, bs = 0, e = 0;
  void add(const ChanSums& o) {
    a += o.a;
    bs += o.bs;
    e += o.e;
  }
};

// Sums over n values of one channel (u = x - mu), read as T and converted in registers.
// With SiLU, z = u * zc.zs + zc.zb, and dy' is also stored to g_out when it is not null.
// e is accumulated in the same order with and without only_e (the SiLU pre-pass relies on
// getting the same bits).
template <typename T>
GN_HOT_INLINE inline ChanSums<acc_t<T>> channel_sums(const T* dy, const T* x, int64_t n, acc_t<T> mu, bool silu,
                                       ZCoef<acc_t<T>> zc, bool only_e, acc_t<T>* g_out = nullptr) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const V vmu(mu), zs(zc.zs), zb(zc.zb);
  V va(0), vb(0), ve(0);
  A sa = 0, sb = 0, se = 0;
  T* const none = nullptr;
  if (only_e) {
    walk<T>(
        n, none, [&](int64_t, const V& v) { ve += v - vmu; }, [&](int64_t, A v) { se += v - mu; }, x);
  } else if (silu) {
    walk<T>(
        n, none,
        [&](int64_t i, const V& g0, const V& v) {
          const V u = v - vmu;
          const V g = silu_grad_vec<T>(g0, at::vec::fmadd(u, zs, zb));
          if (g_out) g.store(g_out + i);
          va += g;
          vb = at::vec::fmadd(g, u, vb);
          ve += u;
        },
        [&](int64_t i, A g0, A v) {
          const A u = v - mu;
          const A g = silu_grad_scalar(g0, u * zc.zs + zc.zb);
          if (g_out) g_out[i] = g;
          sa += g;
          sb += g * u;
          se += u;
        },
        dy, x);
  } else {
    walk<T>(
        n, none,
        [&](int64_t, const V& g, const V& v) {
          const V u = v - vmu;
          va += g;
          vb = at::vec::fmadd(g, u, vb);
          ve += u;
        },
        [&](int64_t, A g, A v) {
          const A u = v - mu;
          sa += g;
          sb += g * u;
          se += u;
        },
        dy, x);
  }
  ChanSums<A> out;
  out.a = hsum(va) + sa;
  out.bs = hsum(vb) + sb;
  out.e = hsum(ve) + se;
  return out;
}

// dx = c1 * dy' + c2 * u + c3 over n values of one channel, T in and out.
template <typename T>
GN_HOT_INLINE inline void channel_dx(const T* dy, const T* x, T* out, int64_t n, acc_t<T> mu, acc_t<T> c1, acc_t<T> c2,
                       acc_t<T> c3, bool silu, ZCoef<acc_t<T>> zc) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const V vmu(mu), v1(c1), v2(c2), v3(c3), zs(zc.zs), zb(zc.zb);
  if (silu) {
    walk<T>(
        n, out,
        [&](int64_t, const V& g0, const V& v) {
          const V u = v - vmu;
          return at::vec::fmadd(v1, silu_grad_vec<T>(g0, at::vec::fmadd(u, zs, zb)), at::vec::fmadd(v2, u, v3));
        },
        [&](int64_t, A g0, A v) {
          const A u = v - mu;
          return c1 * silu_grad_scalar(g0, u * zc.zs + zc.zb) + (c2 * u + c3);
        },
        dy, x);
  } else {
    walk<T>(
        n, out,
        [&](int64_t, const V& g, const V& v) { return at::vec::fmadd(v1, g, at::vec::fmadd(v2, v - vmu, v3)); },
        [&](int64_t, A g, A v) { return c1 * g + (c2 * (v - mu) + c3); }, dy, x);
  }
}

// dx = c1 * g + c2 * u + c3 with dy' = g kept from channel_sums (SiLU: no second sigmoid).
template <typename T>
GN_HOT_INLINE inline void channel_dx_kept(const acc_t<T>* g, const T* x, T* out, int64_t n, acc_t<T> mu, acc_t<T> c1,
                            acc_t<T> c2, acc_t<T> c3) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const V vmu(mu), v1(c1), v2(c2), v3(c3);
  walk<T>(
      n, out,
      [&](int64_t i, const V& v) { return at::vec::fmadd(v1, V::loadu(g + i), at::vec::fmadd(v2, v - vmu, v3)); },
      [&](int64_t i, A v) { return c1 * g[i] + (c2 * (v - mu) + c3); }, x);
}

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
