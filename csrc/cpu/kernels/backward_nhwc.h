// CPU backward, channels-last layout: a unit is one sample n (HxW rows of C channels). Per
// channel: a = sum(dy'), bs = sum(dy' * u), e = sum(u) in L1 arrays, rows walked in memory order
// (with SiLU, a first pass of e gives each group's r for z); then per-group coefficients
// (backward_common.h) spread to per-channel c1, c2, c3 arrays; then dx row by row.
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

template <typename T, typename W>
class BackwardNhwc {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  // Per-channel arrays of the unit being processed, each C long: sums (3), mu, zs, zb, c1, c2, c3.
  enum { kSums = 0, kMu = 3, kZs = 4, kZb = 5, kC1 = 6, kC2 = 7, kC3 = 8, kArrays = 9 };

 public:
  explicit BackwardNhwc(const BwdArgs<T, W>& a)
      : a_(a),
        C_(a.s.C),
        G_(a.s.G),
        D_(a.s.D()),
        HxW_(a.s.HxW),
        silu_(a.s.act == Activation::SiLU),
        rows_per_piece_(std::max<int64_t>(1, kPieceElems / C_)),
        pieces_((HxW_ + rows_per_piece_ - 1) / rows_per_piece_),
        sched_(make_schedule(a.s.N, pieces_, 2 * HxW_ * C_ * static_cast<int64_t>(sizeof(T)))),
        partial_(sched_.fused ? 0 : pieces_ * 3 * C_),
        chans_(kArrays, C_),
        wv_(params_acc(a.w, C_, A(1))) {}

  // A unit: [SiLU: e sums -> r -> z coefficients], a/bs/e sums, coefficients, dx. Fused: one
  // task per unit, back to back while it is cache-hot; split: units in turn, pieces in parallel
  // (slot 0 holds the unit's per-channel arrays).
  void run() {
    if (sched_.fused) {
      at::parallel_for(0, a_.s.N, sched_.grain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) unit(n);
      });
    } else {
      for (int64_t n = 0; n < a_.s.N; ++n) unit(n);
    }
  }

 private:
  void unit(int64_t n) {
    A* ch = chans_.slot(sched_.fused);
    A* mu = ch + kMu * C_;
    for (int64_t g = 0; g < G_; ++g) std::fill(mu + g * D_, mu + (g + 1) * D_, a_.mean[n * G_ + g]);
    // the split ops (params.h): r_in replaces the SiLU pre-pass, group_in the reduction
    if (silu_) {
      if (!a_.r_in) sums_pass(n, 0, ch);
      set_z(n, ch);
    }
    if (!a_.group_in) sums_pass(n, 1, ch);
    finish(n, ch);
    if (sched_.fused) {
      for (int64_t p = 0; p < pieces_; ++p) apply(n, p, ch);
    } else {
      at::parallel_for(0, pieces_, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) apply(n, p, ch);
      });
    }
  }

  // phase 0: e only (SiLU pre-pass); phase 1: a, bs, e (SiLU: z from the pre-pass r). Rows are
  // walked in memory order, converted in registers, with per-channel sums in L1 arrays.
  void piece_sums(int64_t n, int64_t p, int phase, const A* ch, A* out /* 3 * C */) const {
    const int64_t r0 = p * rows_per_piece_, r1 = std::min(HxW_, r0 + rows_per_piece_);
    const int64_t base = n * HxW_ * C_;
    const A *mu = ch + kMu * C_, *zs = ch + kZs * C_, *zb = ch + kZb * C_;
    A *oa = out, *ob = out + C_, *oe = out + 2 * C_;
    const bool silu = silu_;
    std::fill(out, out + 3 * C_, A(0));
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = a_.x + base + r * C_;
      if (row_prefetch_) prefetch_ahead(xr, C_);
      if (phase == 0) {
        walk<T>(
            C_, nullptr, [&](int64_t c, const V& x) { (V::loadu(oe + c) + (x - V::loadu(mu + c))).store(oe + c); },
            [&](int64_t c, A x) { oe[c] += x - mu[c]; }, xr);
        continue;
      }
      if (row_prefetch_) prefetch_ahead(a_.dy + base + r * C_, C_);
      walk<T>(
          C_, nullptr,
          [&](int64_t c, const V& x, const V& dy) {
            const V u = x - V::loadu(mu + c);
            const V g = silu ? silu_grad_vec<T>(dy, at::vec::fmadd(u, V::loadu(zs + c), V::loadu(zb + c))) : dy;
            (V::loadu(oa + c) + g).store(oa + c);
            at::vec::fmadd(g, u, V::loadu(ob + c)).store(ob + c);
            (V::loadu(oe + c) + u).store(oe + c);
          },
          [&](int64_t c, A x, A dy) {
            const A u = x - mu[c];
            const A g = silu ? silu_grad_scalar(dy, u * zs[c] + zb[c]) : dy;
            oa[c] += g;
            ob[c] += g * u;
            oe[c] += u;
          },
          xr, a_.dy + base + r * C_);
    }
  }

  // One reduction pass over unit n into the slot's sums, pieces merged in piece order.
  void sums_pass(int64_t n, int phase, A* ch) {
    A* sums = ch + kSums * C_;
    std::fill(sums, sums + 3 * C_, A(0));
    if (pieces_ == 1) {
      piece_sums(n, 0, phase, ch, sums);
    } else if (sched_.fused) {
      A* tmp = scratch_.get(3 * C_);
      for (int64_t p = 0; p < pieces_; ++p) {
        piece_sums(n, p, phase, ch, tmp);
        add_vec(sums, tmp, 3 * C_);
      }
    } else {
      at::parallel_for(0, pieces_, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) piece_sums(n, p, phase, ch, partial_.data() + p * 3 * C_);
      });
      for (int64_t p = 0; p < pieces_; ++p) add_vec(sums, partial_.data() + p * 3 * C_, 3 * C_);
    }
  }

  // SiLU: z = u * zs + zb per channel, from each group's r = sum(u) / M of the pre-pass (or r_in).
  void set_z(int64_t n, A* ch) const {
    for (int64_t g = 0; g < G_; ++g) {
      const A r = group_residual(a_, n * G_ + g, ch + 2 * C_ + g * D_);
      for (int64_t d = 0; d < D_; ++d) {
        const ZCoef<A> z = z_coef(a_, n, g * D_ + d, r);
        ch[kZs * C_ + g * D_ + d] = z.zs;
        ch[kZb * C_ + g * D_ + d] = z.zb;
      }
    }
  }

  // dweight / dbias partials of sample n and the per-channel dx coefficients.
  void finish(int64_t n, A* ch) {
    if (D_ < V::size() && !a_.group_in) {
      finish_narrow(n, ch);
      return;
    }
    for (int64_t g = 0; g < G_; ++g) {
      const int64_t c0 = g * D_;
      const GroupCoef<A> gc = finish_group(a_, n, g, ch + c0, ch + C_ + c0, ch + 2 * C_ + c0, wv_.data());
      const A rho = a_.rstd[n * G_ + g];
      walk<A>(
          D_, ch + kC1 * C_ + c0, [&](int64_t, const V& w) { return w * V(rho); },
          [&](int64_t, A w) { return w * rho; }, wv_.data() + c0);
      std::fill(ch + kC2 * C_ + c0, ch + kC2 * C_ + c0 + D_, gc.c2);
      std::fill(ch + kC3 * C_ + c0, ch + kC3 * C_ + c0 + D_, gc.c3);
    }
  }

  // finish for groups narrower than a vector (D < K: 8 channels per group with AVX-512 floats):
  // reduce_group's per-channel products and the dx scale vectorized across the whole row of C
  // channels, each group's sums still added channel by channel in order, so the arithmetic and
  // the bits are finish_group's. At tiny spatial sizes (64x64x1x1) a scalar pass per group was
  // about a third of the backward.
  void finish_narrow(int64_t n, A* ch) {
    const auto& s = a_.s;
    A* t = scratch_.get(4 * C_);
    A *rc = t, *rhoc = t + C_, *pa = t + 2 * C_, *pb = t + 3 * C_;  // r, rho; w * dyxhat, w * a
    const A *sa = ch, *sb = ch + C_, *se = ch + 2 * C_;
    for (int64_t g = 0; g < G_; ++g) {
      const int64_t u = n * G_ + g;
      const A r = group_residual(a_, u, se + g * D_);
      std::fill(rc + g * D_, rc + (g + 1) * D_, r);
      std::fill(rhoc + g * D_, rhoc + (g + 1) * D_, a_.rstd[u]);
    }
    A* dw = a_.dw_part ? a_.dw_part + n * C_ : nullptr;
    A* db = a_.db_part ? a_.db_part + n * C_ : nullptr;
    const A* wv = wv_.data();
    walk<A>(
        C_, nullptr,
        [&](int64_t c, const V& va, const V& vb) {
          const V dyxhat = dweight_term(V::loadu(rhoc + c), V::loadu(rc + c), va, vb);
          const V w = V::loadu(wv + c);
          (w * dyxhat).store(pa + c);
          (w * va).store(pb + c);
          (w * V::loadu(rhoc + c)).store(ch + kC1 * C_ + c);
          if (dw) dyxhat.store(dw + c);
          if (db) va.store(db + c);
        },
        [&](int64_t c, A va, A vb) {
          const A dyxhat = dweight_term(rhoc[c], rc[c], va, vb);
          pa[c] = wv[c] * dyxhat;
          pb[c] = wv[c] * va;
          ch[kC1 * C_ + c] = wv[c] * rhoc[c];
          if (dw) dw[c] = dyxhat;
          if (db) db[c] = va;
        },
        sa, sb);
    for (int64_t g = 0; g < G_; ++g) {
      const int64_t u = n * G_ + g, c0 = g * D_;
      GroupSums<A> gs;
      gs.r = rc[c0];
      for (int64_t d = 0; d < D_; ++d) {
        gs.Asum += pa[c0 + d];
        gs.Bsum += pb[c0 + d];
      }
      store_group_sums(a_, u, gs);
      const GroupCoef<A> gc = group_coef(rhoc[c0], gs, s.M());
      std::fill(ch + kC2 * C_ + c0, ch + kC2 * C_ + c0 + D_, gc.c2);
      std::fill(ch + kC3 * C_ + c0, ch + kC3 * C_ + c0 + D_, gc.c3);
    }
  }

  void apply(int64_t n, int64_t p, const A* ch) const {
    if (!a_.dx) return;
    const int64_t r0 = p * rows_per_piece_, r1 = std::min(HxW_, r0 + rows_per_piece_);
    const int64_t base = n * HxW_ * C_;
    const A *mu = ch + kMu * C_, *zs = ch + kZs * C_, *zb = ch + kZb * C_;
    const A *c1 = ch + kC1 * C_, *c2 = ch + kC2 * C_, *c3 = ch + kC3 * C_;
    const bool silu = silu_;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = base + r * C_;
      walk<T>(
          C_, a_.dx + off,
          [&](int64_t c, const V& x, const V& dy) {
            const V u = x - V::loadu(mu + c);
            const V g = silu ? silu_grad_vec<T>(dy, at::vec::fmadd(u, V::loadu(zs + c), V::loadu(zb + c))) : dy;
            return at::vec::fmadd(V::loadu(c1 + c), g, at::vec::fmadd(V::loadu(c2 + c), u, V::loadu(c3 + c)));
          },
          [&](int64_t c, A x, A dy) {
            const A u = x - mu[c];
            const A g = silu ? silu_grad_scalar(dy, u * zs[c] + zb[c]) : dy;
            return c1[c] * g + (c2[c] * u + c3[c]);
          },
          a_.x + off, a_.dy + off);
    }
  }

  const BwdArgs<T, W>& a_;
  const int64_t C_, G_, D_, HxW_;
  const bool silu_;
  const int64_t rows_per_piece_, pieces_;
  const Schedule sched_;
  // Per-channel sums of a unit, three arrays of C: a, bs, e (partials per piece when split).
  std::vector<A> partial_;
  ChannelSlots<A> chans_;
  Scratch<A> scratch_;
  const bool row_prefetch_ = row_prefetch();  // the sums prefetch each row of x and dy ahead
  const std::vector<A> wv_;
};

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
