// CPU backward, contiguous (NCHW) layout: a unit is one group (n, g). Per channel of the unit:
// a = sum(dy'), bs = sum(dy' * u), e = sum(u) (u = x - mean; dy' = dy, or dy * silu'(z) with a
// pre-pass for the r that z needs), then per-group coefficients (backward_common.h), then dx.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/kernels/backward_channel.h"
#include "cpu/kernels/backward_common.h"
#include "cpu/kernels/common.h"
#include "cpu/kernels/params.h"
#include "cpu/kernels/schedule.h"
#include "cpu/kernels/scratch.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

using at::vec::Vectorized;

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
        flat_(short_ && walk_flat<T>(HxW_)),
        sched_(make_schedule(units_, pieces_, 2 * M_ * static_cast<int64_t>(sizeof(T)))),
        direct_(whole_ || sched_.fused),
        pre_in_unit_(silu_ && sched_.fused && !a.r_in),
        keep_g_(pre_in_unit_ && a.dx && !a.group_in && M_ * static_cast<int64_t>(sizeof(A)) <= keep_grad_bytes()),
        next_unit_(sched_.fused && next_unit_prefetch(M_ * static_cast<int64_t>(sizeof(T)))),
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
    if (flat_) {
      stats_flat(target, only_e, u, p);
      return;
    }
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

  // The per-channel coefficients of channels [d0, d0 + count) of unit u that the flat walks
  // need, one channel and its successor at a time (walk_channels: a vector meets at most two).
  struct FlatCoef {
    A c1 = 0;  // rho * w (dx)
    ZCoef<A> z;
  };
  FlatCoef flat_coef(int64_t u, int64_t d, A r) const {
    FlatCoef k;
    const int64_t c = (u % a_.s.G) * D_ + d;
    k.c1 = a_.rstd[u] * param_at(a_.w, c, A(1));
    if (silu_) k.z = z_coef(a_, u / a_.s.G, c, r);
    return k;
  }

  // stats_short as one flat walk over the piece's channels (walk_flat): a, bs per
  // channel, a vector that straddles two channels split by lanes; e summed over the whole
  // piece (only the group's total is used) and recorded at the piece's first channel, zero at
  // the others. The SiLU pre-pass and the main pass write e the same way (same bits of r).
  GN_HOT void stats_flat(std::vector<ChanSums<A>>& target, bool only_e, int64_t u, int64_t p) {
    using V = Vectorized<A>;
    const int64_t d0 = p * cpp_, count = std::min(D_, d0 + cpp_) - d0;
    const int64_t off = u * M_ + d0 * HxW_;
    const A mu = a_.mean[u];
    const V vmu(mu), zero(0);
    const T* x = a_.x + off;
    const T* dy = a_.dy + off;
    ChanSums<A>* dst = target.data() + u * D_ + d0;
    T* const none = nullptr;
    V ve(0);
    A se = 0;
    if (only_e) {
      walk_channels<T>(
          count * HxW_, HxW_, HxW_, none, [&](int64_t, int64_t, int64_t, const V& v) { ve += v - vmu; },
          [&](int64_t, int64_t, A v) { se += v - mu; }, [&](int64_t c) { dst[c].e = 0; }, x);
    } else {
      A* kept = keep_g_ ? kept_.get(M_) + d0 * HxW_ : nullptr;
      FlatCoef cur = silu_ ? flat_coef(u, d0, r_silu_[u]) : FlatCoef{};
      FlatCoef next = silu_ && count > 1 ? flat_coef(u, d0 + 1, r_silu_[u]) : FlatCoef{};
      V va(0), vb(0), spill_a(0), spill_b(0);  // spill: lanes of a straddling vector past channel c
      A sa = 0, sb = 0;
      const auto grad = [&](int64_t i, int64_t m, const V& g0, const V& uu) {
        if (!silu_) return g0;
        const V z = at::vec::fmadd(uu, lanes_of<A>(m, cur.z.zs, next.z.zs), lanes_of<A>(m, cur.z.zb, next.z.zb));
        const V g = silu_grad_vec<T>(g0, z);
        if (kept) g.store(kept + i);
        return g;
      };
      walk_channels<T>(
          count * HxW_, HxW_, HxW_, none,
          [&](int64_t i, int64_t, int64_t m, const V& g0, const V& v) {
            const V uu = v - vmu;
            const V g = grad(i, m, g0, uu);
            ve += uu;
            if (m == V::size()) {
              va += g;
              vb = at::vec::fmadd(g, uu, vb);
            } else {  // zero, not a product with zero, in the other channel's lanes (inf * 0)
              const V lo = lanes_below<A>(m);
              const V gc = V::blendv(zero, g, lo), gn = V::blendv(g, zero, lo);
              va += gc;
              vb = at::vec::fmadd(gc, V::blendv(zero, uu, lo), vb);
              spill_a = gn;
              spill_b = gn * V::blendv(uu, zero, lo);
            }
          },
          [&](int64_t i, int64_t, A g0, A v) {
            const A uu = v - mu;
            const A g = silu_ ? silu_grad_scalar(g0, uu * cur.z.zs + cur.z.zb) : g0;
            if (kept) kept[i] = g;
            sa += g;
            sb += g * uu;
            se += uu;
          },
          [&](int64_t c) {
            dst[c].a = hsum(va) + sa;
            dst[c].bs = hsum(vb) + sb;
            dst[c].e = 0;
            va = spill_a;
            vb = spill_b;
            spill_a = zero;
            spill_b = zero;
            sa = sb = 0;
            if (silu_) {
              cur = next;
              if (c + 2 < count) next = flat_coef(u, d0 + c + 2, r_silu_[u]);
            }
          },
          dy, x);
    }
    if (count > 0) dst[0].e = hsum(ve) + se;
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
    if (flat_) {
      apply_flat(u, p);
      return;
    }
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

  // apply_short as one flat walk over the piece's channels (walk_flat): the same
  // dx = c1 * dy' + (c2 * u + c3) per value, c1 (and SiLU's z coefficients) taken per lane.
  GN_HOT void apply_flat(int64_t u, int64_t p) {
    using V = Vectorized<A>;
    const int64_t d0 = p * cpp_, count = std::min(D_, d0 + cpp_) - d0;
    const int64_t off = u * M_ + d0 * HxW_;
    const A mu = a_.mean[u];
    const GroupCoef<A> gc = coef_[u];
    const V vmu(mu), v2(gc.c2), v3(gc.c3);
    const A* kept = keep_g_ ? kept_.get(M_) + d0 * HxW_ : nullptr;
    FlatCoef cur = flat_coef(u, d0, gc.r);
    FlatCoef next = count > 1 ? flat_coef(u, d0 + 1, gc.r) : FlatCoef{};
    const int64_t unit_bytes = M_ * static_cast<int64_t>(sizeof(T));
    const auto end = [&](int64_t c) {
      cur = next;
      if (c + 2 < count) next = flat_coef(u, d0 + c + 2, gc.r);
      if (next_unit_) {
        prefetch_at(a_.x + off + c * HxW_, unit_bytes, HxW_);
        if (!kept) prefetch_at(a_.dy + off + c * HxW_, unit_bytes, HxW_);
      }
    };
    if (kept) {
      walk_channels<T>(
          count * HxW_, HxW_, HxW_, a_.dx + off,
          [&](int64_t i, int64_t, int64_t m, const V& v) {
            return at::vec::fmadd(lanes_of<A>(m, cur.c1, next.c1), V::loadu(kept + i), at::vec::fmadd(v2, v - vmu, v3));
          },
          [&](int64_t i, int64_t, A v) { return cur.c1 * kept[i] + (gc.c2 * (v - mu) + gc.c3); }, end, a_.x + off);
    } else {
      walk_channels<T>(
          count * HxW_, HxW_, HxW_, a_.dx + off,
          [&](int64_t, int64_t, int64_t m, const V& g0, const V& v) {
            const V uu = v - vmu;
            V g = g0;
            if (silu_)
              g = silu_grad_vec<T>(g0, at::vec::fmadd(uu, lanes_of<A>(m, cur.z.zs, next.z.zs), lanes_of<A>(m, cur.z.zb, next.z.zb)));
            return at::vec::fmadd(lanes_of<A>(m, cur.c1, next.c1), g, at::vec::fmadd(v2, uu, v3));
          },
          [&](int64_t, int64_t, A g0, A v) {
            const A uu = v - mu;
            const A g = silu_ ? silu_grad_scalar(g0, uu * cur.z.zs + cur.z.zb) : g0;
            return cur.c1 * g + (gc.c2 * uu + gc.c3);
          },
          end, a_.dy + off, a_.x + off);
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
  const bool flat_;    // short channels walked as one run (walk_flat): stats_flat / apply_flat
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
