// CPU forward, channels-last layout: a unit is one sample n, HxW rows of C channels holding all
// G groups. Statistics: per-channel moments of the shifted data, blocks of rows Chan-merged in
// order, then the D channels of each group merged; normalization: per channel shift / scale /
// bias arrays applied row by row, four pieces at once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/kernels/common.h"
#include "cpu/kernels/moments.h"
#include "cpu/kernels/params.h"
#include "cpu/kernels/schedule.h"
#include "cpu/kernels/scratch.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

using at::vec::Vectorized;

// The NHWC loops walk rows in memory order (hardware prefetch keeps up; a column walk across
// rows does not) with per-channel accumulators and coefficients in L1 arrays, and convert half
// types in registers (VecIO). The statistics walk a piece in blocks of 16 rows, a vector of
// channels of all 16 rows at a time (block_moments); the normalization walks four pieces at a
// time per thread (piece_streams).
template <typename T, typename W>
class ForwardNhwc {
  using A = acc_t<T>;
  using V = Vectorized<A>;

 public:
  explicit ForwardNhwc(const FwdArgs<T, W>& a)
      : a_(a),
        C_(a.s.C),
        G_(a.s.G),
        D_(a.s.D()),
        HxW_(a.s.HxW),
        rows_per_piece_(rows_per_piece(a.s.C)),
        pieces_((HxW_ + rows_per_piece_ - 1) / rows_per_piece_),
        full_pieces_(HxW_ / rows_per_piece_),
        sched_(make_schedule(a.s.N, pieces_, HxW_ * C_ * static_cast<int64_t>(sizeof(T)))),
        partial_(sched_.fused ? 0 : pieces_ * G_),
        moments_(a.s.N * G_),
        shifts_(a.s.N * G_),
        chans_(3, C_),
        wv_(params_acc(a.w, C_, A(1))),
        bv_(params_acc(a.b, C_, A(0))),
        stats_prefetch_(stats_prefetch(C_ * static_cast<int64_t>(sizeof(T)),
                                       a.s.N * HxW_ * C_ * static_cast<int64_t>(sizeof(T)))) {}

  // The fused forward; the split ops (params.h) run a part: the statistics pass unless
  // moments_in is given, the normalization pass unless normalize is false.
  void run() {
    run_schedule_ranges(
        sched_, [this](int64_t n, int64_t p0, int64_t p1) { if (!a_.moments_in) stats(n, p0, p1); },
        [this](int64_t n) { finish(n); },
        [this](int64_t n, int64_t p0, int64_t p1) { if (a_.normalize) apply(n, p0, p1); });
  }

 private:
  // Pieces of up to four times kPieceElems: each piece-group costs a per-channel set-up and a
  // G-group merge, each piece a Chan merge per group in finish(). Measured (interleaved calls,
  // 2 threads): 16384 -> 65536 elements, forward 1x128x8x128x128 bf16 9.74 -> 9.47 ms,
  // 32x256x56x56 fp32 24.96 -> 24.54 ms, 2x320x64x64 fp32 0.714 -> 0.679 ms (all channels-last).
  // At most kMaxWelfordRows rows, though, unless kPieceElems / C is more: a channel's running
  // mean takes one rounded update per row (per block now), and 16384-row pieces (C = 4) doubled
  // the fp32 dweight error of 4096-row ones (4.4e-6 against PyTorch's 1.4e-6).
  static int64_t rows_per_piece(int64_t C) {
    return std::max<int64_t>({int64_t{1}, kPieceElems / C, std::min(kRowPieceElems / C, kMaxWelfordRows)});
  }

  // The group's first element (row 0) for each of its channels.
  void fill_shift(const T* xs, A* sh) const {
    for (int64_t g = 0; g < G_; ++g) std::fill(sh + g * D_, sh + (g + 1) * D_, static_cast<A>(xs[g * D_]));
  }

  // Moments of the G groups over the rows of piece p of sample n, into out[0..G): per-channel
  // moments of the data shifted by the group's first element (block_moments), then the D
  // channels of a group (equal counts) merged.
  void piece_moments(int64_t n, int64_t p, Moments<A>* out) {
    const int64_t r0 = p * rows_per_piece_, seen = std::min(HxW_, r0 + rows_per_piece_) - r0;
    const T* xs = a_.x + n * HxW_ * C_;
    A* sh = scratch_.get(3 * C_);
    A* cmean = sh + C_;
    A* cm2 = cmean + C_;
    fill_shift(xs, sh);
    std::fill(cmean, cmean + 2 * C_, A(0));
    if (stats_prefetch_)
      block_moments<true>(xs + r0 * C_, seen, C_, sh, cmean, cm2);
    else
      block_moments<false>(xs + r0 * C_, seen, C_, sh, cmean, cm2);
    // Groups: D channels of `seen` rows each.
    const A inv_d = A(1) / static_cast<A>(D_);
    for (int64_t g = 0; g < G_; ++g) {
      const A* gm = cmean + g * D_;
      Moments<A> m;
      m.n = seen * D_;
      m.mean = sum_vec(gm, D_) * inv_d;
      m.m2 = sum_vec(cm2 + g * D_, D_) + static_cast<A>(seen) * sum_sq_dev(gm, D_, m.mean);
      out[g] = m;
    }
  }

  // The G groups' moments of sample n from its per-piece moments, merged in piece order.
  void merge_pieces(int64_t n, const Moments<A>* part) {
    Moments<A>* row = moments_.data() + n * G_;
    std::fill(row, row + G_, Moments<A>{});
    for (int64_t p = 0; p < pieces_; ++p)
      for (int64_t g = 0; g < G_; ++g) chan_merge(row[g], part[p * G_ + g]);
  }

  void stats(int64_t n, int64_t p0, int64_t p1) {
    Moments<A>* part = sched_.fused ? unit_partial_.get(pieces_ * G_) : partial_.data();
    for (int64_t p = p0; p < p1; ++p) piece_moments(n, p, part + p * G_);
    if (sched_.fused) merge_pieces(n, part);  // as finish() does for the split schedule
  }

  // Saved statistics of sample n and its per-channel shift, scale and bias.
  void finish(int64_t n) {
    if (!a_.moments_in && !sched_.fused) merge_pieces(n, partial_.data());
    Moments<A>* row = moments_.data() + n * G_;
    A* shifts = shifts_.data() + n * G_;
    const T* xs = a_.x + n * HxW_ * C_;
    for (int64_t g = 0; g < G_; ++g) {
      if (a_.moments_in)
        row[g] = load_moments(a_.moments_in + 4 * (n * G_ + g), &shifts[g]);
      else
        shifts[g] = HxW_ > 0 ? static_cast<A>(xs[g * D_]) : A(0);
      if (a_.moments_out) store_moments(a_.moments_out + 4 * (n * G_ + g), shifts[g], row[g]);
    }
    if (!a_.normalize) return;
    A* ch = chans_.slot(sched_.fused);
    A *sh = ch, *sc = ch + C_, *bb = ch + 2 * C_;
    for (int64_t g = 0; g < G_; ++g) {
      const A shift = shifts[g];
      const A rstd = rstd_from(row[g], a_.eps);
      const A m = row[g].mean;
      a_.mean[n * G_ + g] = shift + m;
      a_.rstd[n * G_ + g] = rstd;
      const int64_t c0 = g * D_;
      std::fill(sh + c0, sh + c0 + D_, shift);
      walk<A>(
          D_, sc + c0, [&](int64_t, const V& w) { return w * V(rstd); }, [&](int64_t, A w) { return w * rstd; },
          wv_.data() + c0);
      walk<A>(
          D_, bb + c0, [&](int64_t d, const V& b) { return b - V(m) * V::loadu(sc + c0 + d); },
          [&](int64_t d, A b) { return b - m * sc[c0 + d]; }, bv_.data() + c0);
    }
  }

  // y = act((x - sh) * sc + bb) over the rows xr[0..kS) -> yr[0..kS) (the same row of kS
  // pieces), channel vector by channel vector: each vector of the three per-channel arrays is
  // loaded once for all kS rows. The per-element arithmetic is walk's in apply (the same bits);
  // what changes is the loads per output vector, 1 + 3 / kS instead of 4 (L1 load ports bound
  // this pass when x is in cache).
  template <int kS, bool kSilu>
  GN_HOT void affine_rows(const T* const* xr, T* const* yr, const A* sh, const A* sc, const A* bb) const {
    using IO = VecIO<T>;
    constexpr int64_t K = IO::K;
    auto f = [](const V& x, const V& s, const V& m, const V& b) {
      const V z = at::vec::fmadd(x - s, m, b);
      if constexpr (kSilu) return silu_vec<T>(z); else return z;
    };
    int64_t c = 0;
    for (; c + IO::kStep <= C_; c += IO::kStep) {
      V vs[IO::kN], vm[IO::kN], vb[IO::kN];
      for (int64_t j = 0; j < IO::kN; ++j) {
        vs[j] = V::loadu(sh + c + j * K);
        vm[j] = V::loadu(sc + c + j * K);
        vb[j] = V::loadu(bb + c + j * K);
      }
      for (int k = 0; k < kS; ++k) {
        V x[IO::kN], y[IO::kN];
        IO::load(xr[k] + c, x);
        for (int64_t j = 0; j < IO::kN; ++j) y[j] = f(x[j], vs[j], vm[j], vb[j]);
        IO::store(yr[k] + c, y);
      }
    }
    for (; c + K <= C_; c += K) {
      const V vs = V::loadu(sh + c), vm = V::loadu(sc + c), vb = V::loadu(bb + c);
      for (int k = 0; k < kS; ++k) IO::store1(yr[k] + c, f(IO::load1(xr[k] + c), vs, vm, vb));
    }
    for (; c < C_; ++c)
      for (int k = 0; k < kS; ++k) {
        const A z = (static_cast<A>(xr[k][c]) - sh[c]) * sc[c] + bb[c];
        yr[k][c] = static_cast<T>(kSilu ? silu_scalar(z) : z);
      }
  }

  // Rows of kS pieces of sample n, taken in turn (row k of each piece, then row k + 1).
  template <int kS>
  void apply_pieces(int64_t n, const int64_t* ps) {
    const T* xs = a_.x + n * HxW_ * C_;
    T* ys = a_.y + n * HxW_ * C_;
    const A* ch = chans_.slot(sched_.fused);
    const A *sh = ch, *sc = ch + C_, *bb = ch + 2 * C_;
    const bool silu = a_.s.act == Activation::SiLU;
    const int64_t rows = std::min(HxW_, ps[0] * rows_per_piece_ + rows_per_piece_) - ps[0] * rows_per_piece_;
    const T* xr[kS];
    T* yr[kS];
    for (int64_t i = 0; i < rows; ++i) {
      for (int k = 0; k < kS; ++k) {
        const int64_t r = ps[k] * rows_per_piece_ + i;
        xr[k] = xs + r * C_;
        yr[k] = ys + r * C_;
        if (row_prefetch_) prefetch_ahead(xr[k], C_);
      }
      if (silu)
        affine_rows<kS, true>(xr, yr, sh, sc, bb);
      else
        affine_rows<kS, false>(xr, yr, sh, sc, bb);
    }
  }

  void apply(int64_t n, int64_t p0, int64_t p1) {
    piece_streams(
        p0, p1, full_pieces_, [&](const int64_t* ps) { apply_pieces<kStreams>(n, ps); },
        [&](int64_t p) { apply_pieces<1>(n, &p); });
  }

  const FwdArgs<T, W>& a_;
  const int64_t C_, G_, D_, HxW_;
  const int64_t rows_per_piece_, pieces_, full_pieces_;  // full: pieces with all rows_per_piece rows
  const Schedule sched_;
  std::vector<Moments<A>> partial_;  // split: per-piece moments of the unit in progress
  std::vector<Moments<A>> moments_;  // (N, G)
  std::vector<A> shifts_;            // (N, G): each group's first element (or the given shift)
  ChannelSlots<A> chans_;            // shift, scale, bias per channel
  Scratch<A> scratch_;
  Scratch<Moments<A>> unit_partial_;  // fused: one unit's per-piece moments per thread
  const std::vector<A> wv_, bv_;
  const bool row_prefetch_ = row_prefetch();  // the normalization prefetches each row ahead
  const bool stats_prefetch_;  // the statistics prefetch a block of rows ahead (block_moments)
};

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
