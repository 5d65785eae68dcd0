// CPU backward, contiguous (NCHW) layout: a unit is one group (n, g). Per channel of the unit:
// a = sum(dy'), bs = sum(dy' * u), e = sum(u) (u = x - mean; dy' = dy, or dy * silu'(z) with a
// pre-pass for the r that z needs), then per-group coefficients (backward_common.h), then dx.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/kernels/backward_common.h"
#include "cpu/kernels/common.h"
#include "cpu/kernels/params.h"
#include "cpu/kernels/schedule.h"
#include "cpu/kernels/scratch.h"

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

template <typename T, typename W>
class BackwardNchw {
  using A = acc_t<T>;
  static constexpr int64_t kChunk = 2048;  // values per channel_sums call: shorter float sums

 public:
  explicit BackwardNchw(const BwdArgs<T, W>& a)
      : a_(a),
        D_(a.s.D()),
        HxW_(a.s.HxW),
        M_(a.s.M()),
        units_(a.s.N * a.s.G),
        silu_(a.s.act == Activation::SiLU),
        whole_(HxW_ <= kPieceElems),
        cpp_(whole_ ? std::max<int64_t>(1, kPieceElems / HxW_) : 1),
        ppc_(whole_ ? 1 : (HxW_ + kPieceElems - 1) / kPieceElems),
        pieces_(whole_ ? (D_ + cpp_ - 1) / cpp_ : D_ * ppc_),
        short_(whole_ && HxW_ <= kChunk),
        sched_(make_schedule(units_, pieces_, 2 * M_ * static_cast<int64_t>(sizeof(T)))),
        direct_(whole_ || sched_.fused),
        pre_in_unit_(silu_ && sched_.fused && !a.r_in),
        keep_g_(pre_in_unit_ && a.dx && !a.group_in && M_ * static_cast<int64_t>(sizeof(A)) <= keep_grad_bytes()),
        next_unit_(sched_.fused && M_ * static_cast<int64_t>(sizeof(T)) <= next_unit_bytes()),
        partial_(direct_ ? 0 : pieces_),
        sums_(units_ * D_),
        esums_(silu_ ? units_ * D_ : 0),
        r_silu_(silu_ ? units_ : 0),
        coef_(units_),
        wv_(params_acc(a.w, a.s.C, A(1))) {}

  // The fused backward, or a part of it for the split ops (params.h): with r_in no SiLU
  // pre-pass (z takes the given r); with group_in no reduction (dx from the given sums).
  void run() {
    if (a_.r_in)
      std::copy(a_.r_in, a_.r_in + (silu_ ? units_ : 0), r_silu_.begin());
    else if (silu_ && !pre_in_unit_)
      run_schedule(
          sched_, [this](int64_t u, int64_t p) { stats_into(esums_, true, u, p); },
          [this](int64_t u) { pre_finish(u); }, [](int64_t, int64_t) {});
    run_schedule(
        sched_, [this](int64_t u, int64_t p) { if (!a_.group_in) stats(u, p); }, [this](int64_t u) { finish(u); },
        [this](int64_t u, int64_t p) { apply(u, p); });
  }

 private:
  // Calls f(d, h0, h1, first) for the channel segments of piece p.
  template <typename F>
  void for_segments(int64_t p, const F& f) const {
    if (whole_) {
      for (int64_t d = p * cpp_; d < std::min(D_, (p + 1) * cpp_); ++d) f(d, int64_t(0), HxW_, true);
    } else {
      const int64_t h0 = (p % ppc_) * kPieceElems;
      f(p / ppc_, h0, std::min(HxW_, h0 + kPieceElems), p % ppc_ == 0);
    }
  }

  ChanSums<A> segment_sums(int64_t u, int64_t d, int64_t h0, int64_t h1, bool only_e) {
    const int64_t off = u * M_ + d * HxW_;
    const A mu = a_.mean[u];
    const ZCoef<A> zc = silu_ && !only_e ? z_coef(a_, u / a_.s.G, (u % a_.s.G) * D_ + d, r_silu_[u]) : ZCoef<A>{};
    A* g_out = keep_g_ && !only_e ? kept_.get(M_) + d * HxW_ : nullptr;
    ChanSums<A> acc;
    for (int64_t h = h0; h < h1; h += kChunk) {
      const int64_t cnt = std::min(kChunk, h1 - h);
      acc.add(channel_sums(a_.dy + off + h, a_.x + off + h, cnt, mu, silu_, zc, only_e, g_out ? g_out + h : nullptr));
    }
    return acc;
  }

  // Piece p of unit u into target (only_e: the SiLU pre-pass, e sums only).
  void stats_into(std::vector<ChanSums<A>>& target, bool only_e, int64_t u, int64_t p) {
    if (short_) {
      stats_short(target, only_e, u, p);
      return;
    }
    for_segments(p, [&](int64_t d, int64_t h0, int64_t h1, bool first) {
      const ChanSums<A> part = segment_sums(u, d, h0, h1, only_e);
      if (direct_) {
        ChanSums<A>& dst = target[u * D_ + d];
        if (first) dst = ChanSums<A>{};
        dst.add(part);
      } else {
        partial_[p] = part;
      }
    });
  }

  // Short channels (whole, at most kChunk values): the same sums as segment_sums, as one loop
  // over the piece's channels with the per-channel helpers inlined (no call per channel).
  GN_HOT void stats_short(std::vector<ChanSums<A>>& target, bool only_e, int64_t u, int64_t p) {
    const int64_t d0 = p * cpp_, d1 = std::min(D_, d0 + cpp_);
    const int64_t n = u / a_.s.G, c0 = (u % a_.s.G) * D_;
    const A mu = a_.mean[u];
    const T* x = a_.x + u * M_;
    const T* dy = a_.dy + u * M_;
    A* kept = keep_g_ && !only_e ? kept_.get(M_) : nullptr;
    ChanSums<A>* dst = target.data() + u * D_;
    for (int64_t d = d0; d < d1; ++d) {
      const ZCoef<A> zc = silu_ && !only_e ? z_coef(a_, n, c0 + d, r_silu_[u]) : ZCoef<A>{};
      const int64_t off = d * HxW_;
      dst[d] = channel_sums(dy + off, x + off, HxW_, mu, silu_, zc, only_e, kept ? kept + off : nullptr);
    }
  }

  void merge(std::vector<ChanSums<A>>& target, int64_t u) {
    if (direct_) return;
    for (int64_t d = 0; d < D_; ++d) {
      ChanSums<A>& dst = target[u * D_ + d];
      dst = ChanSums<A>{};
      for (int64_t q = 0; q < ppc_; ++q) dst.add(partial_[d * ppc_ + q]);
    }
  }

  // SiLU: r per group, needed by z before the main reduction. r exactly as finish_group
  // computes it from the same e sums (same summation), so the z of the reduction (and of a kept
  // dy') equals the z of a recomputing dx pass bit for bit: dx must not depend on whether dy'
  // was kept, i.e. on the schedule.
  void pre_finish(int64_t u) {
    merge(esums_, u);
    A* se = scratch_.get(D_);
    for (int64_t d = 0; d < D_; ++d) se[d] = esums_[u * D_ + d].e;
    r_silu_[u] = sum_vec(se, D_) / static_cast<A>(M_);
  }

  void stats(int64_t u, int64_t p) {
    if (pre_in_unit_ && p == 0) {
      for (int64_t q = 0; q < pieces_; ++q) stats_into(esums_, true, u, q);
      pre_finish(u);
    }
    stats_into(sums_, false, u, p);
  }

  // With SiLU the e sums equal the pre-pass ones bit for bit, and finish_group sums them as
  // pre_finish did, so coef_[u].r == r_silu_[u].
  void finish(int64_t u) {
    if (a_.group_in) {
      coef_[u] = finish_group(a_, u / a_.s.G, u % a_.s.G, nullptr, nullptr, nullptr, wv_.data());
      return;
    }
    merge(sums_, u);
    A* soa = scratch_.get(3 * D_);
    for (int64_t d = 0; d < D_; ++d) {
      const ChanSums<A>& cs = sums_[u * D_ + d];
      soa[d] = cs.a;
      soa[D_ + d] = cs.bs;
      soa[2 * D_ + d] = cs.e;
    }
    coef_[u] = finish_group(a_, u / a_.s.G, u % a_.s.G, soa, soa + D_, soa + 2 * D_, wv_.data());
  }

  void apply(int64_t u, int64_t p) {
    if (!a_.dx) return;
    if (short_) {
      apply_short(u, p);
      return;
    }
    const int64_t n = u / a_.s.G, g = u % a_.s.G;
    const A mu = a_.mean[u];
    const int64_t unit_bytes = M_ * static_cast<int64_t>(sizeof(T));
    for_segments(p, [&](int64_t d, int64_t h0, int64_t h1, bool) {
      const int64_t c = g * D_ + d;
      const int64_t off = u * M_ + d * HxW_ + h0;
      const A c1 = a_.rstd[u] * param_at(a_.w, c, A(1));
      if (next_unit_) {
        prefetch_at(a_.x + off, unit_bytes, h1 - h0);
        if (!keep_g_) prefetch_at(a_.dy + off, unit_bytes, h1 - h0);
      }
      if (keep_g_) {
        channel_dx_kept(kept_.get(M_) + d * HxW_ + h0, a_.x + off, a_.dx + off, h1 - h0, mu, c1, coef_[u].c2,
                        coef_[u].c3);
        return;
      }
      const ZCoef<A> zc = silu_ ? z_coef(a_, n, c, coef_[u].r) : ZCoef<A>{};
      channel_dx(a_.dy + off, a_.x + off, a_.dx + off, h1 - h0, mu, c1, coef_[u].c2, coef_[u].c3, silu_, zc);
    });
  }

  // apply for short channels: one loop over the piece's channels, helpers inlined.
  GN_HOT void apply_short(int64_t u, int64_t p) {
    const int64_t d0 = p * cpp_, d1 = std::min(D_, d0 + cpp_);
    const int64_t n = u / a_.s.G, c0 = (u % a_.s.G) * D_;
    const A mu = a_.mean[u], rho = a_.rstd[u];
    const GroupCoef<A> gc = coef_[u];
    const int64_t unit_bytes = M_ * static_cast<int64_t>(sizeof(T));
    const A* kept = keep_g_ ? kept_.get(M_) : nullptr;
    for (int64_t d = d0; d < d1; ++d) {
      const int64_t off = u * M_ + d * HxW_;
      const A c1 = rho * param_at(a_.w, c0 + d, A(1));
      if (next_unit_) {
        prefetch_at(a_.x + off, unit_bytes, HxW_);
        if (!keep_g_) prefetch_at(a_.dy + off, unit_bytes, HxW_);
      }
      if (kept) {
        channel_dx_kept(kept + d * HxW_, a_.x + off, a_.dx + off, HxW_, mu, c1, gc.c2, gc.c3);
      } else {
        const ZCoef<A> zc = silu_ ? z_coef(a_, n, c0 + d, gc.r) : ZCoef<A>{};
        channel_dx(a_.dy + off, a_.x + off, a_.dx + off, HxW_, mu, c1, gc.c2, gc.c3, silu_, zc);
      }
    }
  }

  const BwdArgs<T, W>& a_;
  const int64_t D_, HxW_, M_, units_;
  const bool silu_;
  // Pieces hold whole channels when a channel is short (several channels per piece), else a
  // range of one channel (several pieces per channel, merged in order).
  const bool whole_;
  const int64_t cpp_;  // channels per piece
  const int64_t ppc_;  // pieces per channel
  const int64_t pieces_;
  const bool short_;   // whole channels of at most kChunk values: stats_short / apply_short
  const Schedule sched_;
  // Where piece results go: straight into the per-channel sums when no other piece touches the
  // channel concurrently, else into per-piece partials merged in finish.
  const bool direct_;
  // SiLU, fused schedule (one thread runs a whole unit): the r pre-pass runs per unit just
  // before its reduction, while the unit is cache-hot, and when the unit's dy' is at most
  // keep_grad_bytes() the reduction keeps it (per-thread scratch) for the dx pass instead of
  // evaluating the sigmoid a second time.
  const bool pre_in_unit_, keep_g_;
  // Fused, small units: the dx pass of a unit prefetches the same range of the next unit's x
  // and dy (as forward_nchw does). Measured as there: 32x2048x7x7 2.50 -> 2.39 ms,
  // 32x1024x14x14 3.98 -> 3.70 ms, 8x512x32x32 2.39 -> 2.24 ms.
  const bool next_unit_;
  std::vector<ChanSums<A>> partial_;
  std::vector<ChanSums<A>> sums_;   // a, bs, e per (n, c)
  std::vector<ChanSums<A>> esums_;  // SiLU pre-pass: e per (n, c)
  std::vector<A> r_silu_;
  std::vector<GroupCoef<A>> coef_;
  Scratch<A> scratch_;
  Scratch<A> kept_;  // keep_g: dy' of the unit a thread is working on, M values
  const std::vector<A> wv_;
};

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
