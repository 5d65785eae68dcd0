// CPU forward, contiguous (NCHW) layout: a unit is one group (n, g), M contiguous elements;
// exact per-chunk moments merged in piece order, then y = (x - shift) * scale + bias per channel
// run (cpu/kernels/schedule.h decides fused or split).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/kernels/common.h"
#include "cpu/kernels/moments.h"
#include "cpu/kernels/params.h"
#include "cpu/kernels/schedule.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

using at::vec::Vectorized;

// y = act((x - sh) * sc + b) over n values of T, converted in registers.
template <typename T>
GN_HOT_INLINE inline void affine_act(const T* x, T* y, int64_t n, acc_t<T> sh, acc_t<T> sc, acc_t<T> b, Activation act) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const V vsh(sh), vsc(sc), vb(b);
  if (act == Activation::SiLU) {
    walk<T>(
        n, y, [&](int64_t, const V& v) { return silu_vec<T>(at::vec::fmadd(v - vsh, vsc, vb)); },
        [&](int64_t, A v) { return silu_scalar((v - sh) * sc + b); }, x);
  } else {
    walk<T>(
        n, y, [&](int64_t, const V& v) { return at::vec::fmadd(v - vsh, vsc, vb); },
        [&](int64_t, A v) { return (v - sh) * sc + b; }, x);
  }
}

template <typename T, typename W>
class ForwardNchw {
  using A = acc_t<T>;
  static constexpr int64_t kChunk = 2048;  // values per chunk_moments call

 public:
  explicit ForwardNchw(const FwdArgs<T, W>& a)
      : a_(a),
        M_(a.s.M()),
        units_(a.s.N * a.s.G),
        pieces_((M_ + kPieceElems - 1) / kPieceElems),
        sched_(make_schedule(units_, pieces_, M_ * static_cast<int64_t>(sizeof(T)))),
        next_unit_(sched_.fused && next_unit_prefetch(M_ * static_cast<int64_t>(sizeof(T)))),
        partial_(sched_.fused ? 0 : pieces_),
        unit_moments_(units_),
        shift_(units_) {}

  // The fused forward; the split ops (params.h) run a part: the statistics pass unless
  // moments_in is given, the normalization pass unless normalize is false.
  void run() {
    run_schedule(
        sched_, [this](int64_t u, int64_t p) { if (!a_.moments_in) stats(u, p); }, [this](int64_t u) { finish(u); },
        [this](int64_t u, int64_t p) { if (a_.normalize) apply(u, p); });
  }

 private:
  Moments<A> piece_moments(int64_t u, int64_t p) const {
    const T* xg = a_.x + u * M_;
    const A sh = static_cast<A>(xg[0]);
    Moments<A> acc;
    const int64_t end = std::min(M_, (p + 1) * kPieceElems);
    for (int64_t i = p * kPieceElems; i < end; i += kChunk) {
      const int64_t n = std::min(kChunk, end - i);
      chan_merge(acc, chunk_moments(xg + i, n, sh));
    }
    return acc;
  }

  void stats(int64_t u, int64_t p) {
    if (sched_.fused) {
      if (p == 0) unit_moments_[u] = Moments<A>{};
      chan_merge(unit_moments_[u], piece_moments(u, p));
    } else {
      partial_[p] = piece_moments(u, p);
    }
  }

  void finish(int64_t u) {
    if (a_.moments_in) {
      unit_moments_[u] = load_moments(a_.moments_in + 4 * u, &shift_[u]);
    } else {
      if (!sched_.fused) {
        unit_moments_[u] = Moments<A>{};
        for (int64_t p = 0; p < pieces_; ++p) chan_merge(unit_moments_[u], partial_[p]);
      }
      shift_[u] = M_ > 0 ? static_cast<A>(a_.x[u * M_]) : A(0);
    }
    const Moments<A>& m = unit_moments_[u];
    if (a_.moments_out) store_moments(a_.moments_out + 4 * u, shift_[u], m);
    if (a_.normalize) {
      a_.mean[u] = shift_[u] + m.mean;
      a_.rstd[u] = rstd_from(m, a_.eps);
    }
  }

  GN_HOT void apply(int64_t u, int64_t p) const {
    const int64_t HxW = a_.s.HxW;
    const int64_t begin = p * kPieceElems, end = std::min(M_, begin + kPieceElems);
    if (walk_flat<T>(HxW)) {
      apply_flat(u, begin, end);
      return;
    }
    const int64_t g = u % a_.s.G, D = a_.s.D();
    const T* xg = a_.x + u * M_;
    T* yg = a_.y + u * M_;
    const A sh = shift_[u];
    for (int64_t i = begin; i < end;) {
      // A run within one channel: y = (x - sh) * sc + (b - m * sc).
      const int64_t c = g * D + i / HxW;
      const int64_t run_end = std::min(end, (i / HxW + 1) * HxW);
      const ChanAffine k = chan_affine(u, c);
      if (next_unit_) prefetch_at(xg + i, M_ * static_cast<int64_t>(sizeof(T)), run_end - i);
      affine_act(xg + i, yg + i, run_end - i, sh, k.sc, k.bb, a_.s.act);
      i = run_end;
    }
  }

  // y = (x - sh) * sc + bb of channel c of unit u.
  struct ChanAffine {
    A sc = 0, bb = 0;
  };
  ChanAffine chan_affine(int64_t u, int64_t c) const {
    ChanAffine k;
    k.sc = a_.rstd[u] * param_at(a_.w, c, A(1));
    k.bb = param_at(a_.b, c, A(0)) - unit_moments_[u].mean * k.sc;
    return k;
  }

  // apply over values [begin, end) of unit u with short channels (walk_flat): one flat walk
  // (walk_channels), sc / bb taken per lane where a vector straddles two channels; the same
  // y = (x - sh) * sc + bb per value as affine_act.
  GN_HOT void apply_flat(int64_t u, int64_t begin, int64_t end) const {
    using V = Vectorized<A>;
    const int64_t HxW = a_.s.HxW, c0 = (u % a_.s.G) * a_.s.D() + begin / HxW;
    const int64_t last = (u % a_.s.G) * a_.s.D() + a_.s.D() - 1;
    const T* x = a_.x + u * M_ + begin;
    const A sh = shift_[u];
    const V vsh(sh);
    const bool silu = a_.s.act == Activation::SiLU;
    ChanAffine cur = chan_affine(u, c0), next = chan_affine(u, std::min(c0 + 1, last));
    const int64_t unit_bytes = M_ * static_cast<int64_t>(sizeof(T));
    walk_channels<T>(
        end - begin, (begin / HxW + 1) * HxW - begin, HxW, a_.y + u * M_ + begin,
        [&](int64_t, int64_t, int64_t m, const V& v) {
          const V y = at::vec::fmadd(v - vsh, lanes_of<A>(m, cur.sc, next.sc), lanes_of<A>(m, cur.bb, next.bb));
          return silu ? silu_vec<T>(y) : y;
        },
        [&](int64_t, int64_t, A v) {
          const A y = (v - sh) * cur.sc + cur.bb;
          return silu ? silu_scalar(y) : y;
        },
        [&](int64_t c) {
          cur = next;
          next = chan_affine(u, std::min(c0 + c + 2, last));
          if (next_unit_) {
            const int64_t i0 = c == 0 ? 0 : (begin / HxW + c) * HxW - begin;
            const int64_t i1 = std::min(end - begin, (begin / HxW + c + 1) * HxW - begin);
            prefetch_at(x + i0, unit_bytes, i1 - i0);
          }
        },
        x);
  }

  const FwdArgs<T, W>& a_;
  const int64_t M_, units_, pieces_;
  const Schedule sched_;
  // Fused, small units: the normalization pass of a unit (from L1/L2) prefetches the same
  // range of the next unit, whose statistics pass then finds it in cache, where the machine
  // gains from it (next_unit_prefetch, schedule.h, with the measurements).
  const bool next_unit_;
  std::vector<Moments<A>> partial_;       // split: per-piece moments of the unit in progress
  std::vector<Moments<A>> unit_moments_;  // (N * G)
  std::vector<A> shift_;                  // (N * G): each group's first element
};

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
