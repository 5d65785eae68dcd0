// Welford / Chan statistics of the CPU kernels: per-piece moments of contiguous data (NCHW) and
// the per-channel moments of the channels-last forward (blocks of rows, each Chan-merged into
// running moments). The merge formula itself is common/welford.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/welford.h"
#include "cpu/kernels/common.h"
#include "cpu/kernels/schedule.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

using at::vec::Vectorized;

// Moments (count, mean, M2) of data shifted by the group's first element.
template <typename A>
struct Moments {
  int64_t n = 0;
  A mean = 0;  // of the shifted data
  A m2 = 0;    // sum of squared deviations from mean
};

// The split ops' exchange format of one (n, group): [count, shift, mean, M2] in float64
// (common/checks.h check_moments). Exact for the float32 and float64 values written.
template <typename A>
inline void store_moments(double* out, A shift, const Moments<A>& m) {
  out[0] = static_cast<double>(m.n);
  out[1] = static_cast<double>(shift);
  out[2] = static_cast<double>(m.mean);
  out[3] = static_cast<double>(m.m2);
}

// Moments and shift from that format (merged moments: the accumulation type's rounding of them).
template <typename A>
inline Moments<A> load_moments(const double* in, A* shift) {
  Moments<A> m;
  m.n = static_cast<int64_t>(in[0]);
  *shift = static_cast<A>(in[1]);
  m.mean = static_cast<A>(in[2]);
  m.m2 = static_cast<A>(in[3]);
  return m;
}

// Chan merge of b into a (common/welford.h), with the exact division for f = nb / n.
template <typename A>
inline void chan_merge(Moments<A>& a, const Moments<A>& b) {
  if (b.n == 0) return;
  if (a.n == 0) {
    a = b;
    return;
  }
  const int64_t n = a.n + b.n;
  chan_combine(a.mean, a.m2, static_cast<A>(a.n), b.mean, b.m2, static_cast<A>(b.n) / static_cast<A>(n));
  a.n = n;
}

// Exact two-level moments of n values x - s held in cache: the mean first, then the sum of
// squared deviations from it (second touch of L1-resident data, no cancellation). Values of a
// half type are converted in registers on both reads. Two vectors of A per step (two
// independent accumulators), then one, then scalars.
template <typename T>
GN_HOT inline Moments<acc_t<T>> chunk_moments(const T* x, int64_t n, acc_t<T> s) {
  using IO = VecIO<T>;
  using A = acc_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t K = IO::K;
  auto load2 = [](const T* p, V* v) {  // 2 * K values
    if constexpr (IO::kHalf) {
      IO::load(p, v);
    } else {
      v[0] = V::loadu(p);
      v[1] = V::loadu(p + K);
    }
  };
  const V vs(s);
  V v[2], acc0(0), acc1(0);
  int64_t i = 0;
  for (; i + 2 * K <= n; i += 2 * K) {
    load2(x + i, v);
    acc0 += v[0] - vs;
    acc1 += v[1] - vs;
  }
  for (; i + K <= n; i += K) acc0 += IO::load1(x + i) - vs;
  A sum = hsum(acc0 + acc1);
  for (; i < n; ++i) sum += static_cast<A>(x[i]) - s;
  Moments<A> m;
  m.n = n;
  m.mean = sum / static_cast<A>(n);
  const V vmean(m.mean);
  acc0 = V(0);
  acc1 = V(0);
  i = 0;
  for (; i + 2 * K <= n; i += 2 * K) {
    load2(x + i, v);
    const V d0 = (v[0] - vs) - vmean, d1 = (v[1] - vs) - vmean;
    acc0 = at::vec::fmadd(d0, d0, acc0);
    acc1 = at::vec::fmadd(d1, d1, acc1);
  }
  for (; i + K <= n; i += K) {
    const V d0 = (IO::load1(x + i) - vs) - vmean;
    acc0 = at::vec::fmadd(d0, d0, acc0);
  }
  A m2 = hsum(acc0 + acc1);
  for (; i < n; ++i) {
    const A d = (static_cast<A>(x[i]) - s) - m.mean;
    m2 += d * d;
  }
  m.m2 = m2;
  return m;
}

template <typename A>
inline A rstd_from(const Moments<A>& m, double eps) {
  const A var = std::max(m.m2 / static_cast<A>(m.n), A(0));
  return A(1) / std::sqrt(var + static_cast<A>(eps));
}

// The cache line at column c of each row of the block after the one at xb (rows of C values;
// past the end of the tensor a hint is harmless, and prefetch_at forms no pointer there).
template <typename T>
inline void prefetch_column(const T* xb, int64_t C, int64_t c) {
  for (int64_t j = 0; j < kStatBlockRows; ++j)
    prefetch_at(xb, ((kStatBlockRows + j) * C + c) * static_cast<int64_t>(sizeof(T)), 1);
}

// One block of nb rows at xb (rows r0 .. r0 + nb of the walk) merged into the running moments.
// The first block (kFirst: nothing merged yet, so s = sh) takes its M2 in a second pass over
// the rows (from L1) as the squared deviations from its mean: its shift is the group's first
// element, which may lie far from this channel's values (an outlier, another channel), and
// d^2 - mean^2 would cancel there. kPF: each vector of channels that starts a cache line
// prefetches that line of the next block's rows (prefetch_column), so the prefetches go out
// evenly with the loads; issued as one burst at the start of a block, they were slower from
// DRAM (2x320x64x64 bf16 statistics: 0.31 ms burst, 0.15-0.17 spread; fp32 0.31 vs 0.22-0.29).
template <bool kFirst, bool kPF, typename T>
GN_HOT_INLINE inline void moments_block(const T* xb, int64_t nb, int64_t r0, int64_t C, const acc_t<T>* sh,
                                        acc_t<T>* cmean, acc_t<T>* cm2) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const A inv_nb = A(1) / static_cast<A>(nb);
  const A w1 = static_cast<A>(nb) / static_cast<A>(r0 + nb);  // the block's weight in the mean
  const A w2 = static_cast<A>(r0) * w1;                       // r0 * nb / (r0 + nb)
  int64_t c = 0;
  for (; c + K <= C; c += K) {
    const V s0 = V::loadu(sh + c), m = V::loadu(cmean + c);
    const V s = s0 + m;
    const V e = (s - s0) - m;
    V s1(0), s2(0);
    if (kPF && (c * static_cast<int64_t>(sizeof(T))) % 64 == 0) prefetch_column(xb, C, c);
    for (int64_t j = 0; j < nb; ++j) {
      const V d = VecIO<T>::load1(xb + j * C + c) - s;
      s1 = s1 + d;
      if (!kFirst) s2 = at::vec::fmadd(d, d, s2);
    }
    const V mb = s1 * V(inv_nb);
    if (kFirst)
      for (int64_t j = 0; j < nb; ++j) {
        const V d = (VecIO<T>::load1(xb + j * C + c) - s) - mb;
        s2 = at::vec::fmadd(d, d, s2);
      }
    const V m2b = kFirst ? s2 : at::vec::fnmadd(s1, mb, s2);
    const V delta = mb + e;
    at::vec::fmadd(delta, V(w1), m).store(cmean + c);
    at::vec::fmadd(delta * V(w2), delta, V::loadu(cm2 + c) + m2b).store(cm2 + c);
  }
  if (kPF && c < C) prefetch_column(xb, C, c);
  for (; c < C; ++c) {
    const A s0 = sh[c], m = cmean[c];
    const A s = s0 + m;
    const A e = (s - s0) - m;
    A s1 = 0, s2 = 0;
    for (int64_t j = 0; j < nb; ++j) {
      const A d = static_cast<A>(xb[j * C + c]) - s;
      s1 += d;
      if (!kFirst) s2 = std::fma(d, d, s2);
    }
    const A mb = s1 * inv_nb;
    if (kFirst)
      for (int64_t j = 0; j < nb; ++j) {
        const A d = (static_cast<A>(xb[j * C + c]) - s) - mb;
        s2 = std::fma(d, d, s2);
      }
    const A m2b = kFirst ? s2 : std::fma(-s1, mb, s2);
    const A delta = mb + e;
    cmean[c] = std::fma(delta, w1, m);
    cm2[c] = std::fma(delta * w2, delta, cm2[c] + m2b);
  }
}

// Per-channel moments over `rows` rows of C values (stride C) at x, of the data shifted by
// sh[c], into cmean[c] (mean) and cm2[c] (M2), which start at zero. The rows go in blocks of
// kStatBlockRows: a block's sums of d = x - s and of d^2, taken around the running mean s = sh +
// cmean (so that they do not cancel: after the first block s is within a block's spread of the
// channel's mean), give the block's exact mean and M2, which are Chan-merged into the running
// moments (e, the rounding error of s, is added back, so that the mean relative to sh does not
// take that rounding); the first block's M2 comes from a second pass (moments_block).
// Per element that is a subtraction, an addition and an FMA, against the five operations of a
// row-by-row Welford update, whose running mean and M2 also had to be loaded and stored per row
// once a row spans more vectors than the registers hold (a store-bound loop). Measured on one
// core of the AMD EPYC (Zen 5) with a standalone copy of both loops over a 5.2 MB sample of 320
// fp32 channels, against a one-stream plain read of the same data: the row-by-row update (four
// streams of rows, each prefetched 2 KiB ahead) took 2.5-2.8x the read in cache and 1.7-2.1x
// from DRAM; these blocks 1.2-1.3x in cache and 1.0-1.06x from DRAM (64 and 1280 channels: 1.23
// and 1.44x in cache, 1.25 and 1.13x from DRAM). The 16 rows a vector of channels walks at once
// are 16 streams for the hardware prefetcher when rows are long; for rows shorter than a page a
// software prefetch one block ahead (kPF) is needed from DRAM: a bf16 sample of 128 channels
// (a block is then one 4 KiB page) took 2.4-3.0x a read without, 1.06-1.11x with
// (1x128x8x128x128, 2 threads); it costs 10-45% in cache. When kPF is on: stats_prefetch
// (schedule.h). (8-row blocks: as fast in cache, 1.25-1.46x from DRAM; 32-row blocks: 1.3-2.0x
// in cache, 1.76-2.13x from DRAM.)
// Every channel gets the same arithmetic whichever part of the row it is in; blocks start at the
// first of the `rows` rows (a piece's first row), so a piece's result does not depend on the
// thread that walks it.
template <bool kPF, typename T>
GN_HOT inline void block_moments(const T* x, int64_t rows, int64_t C, const acc_t<T>* sh, acc_t<T>* cmean,
                                 acc_t<T>* cm2) {
  if (rows <= 0) return;
  moments_block<true, kPF>(x, std::min(kStatBlockRows, rows), 0, C, sh, cmean, cm2);
  for (int64_t r0 = kStatBlockRows; r0 < rows; r0 += kStatBlockRows)
    moments_block<false, kPF>(x + r0 * C, std::min(kStatBlockRows, rows - r0), r0, C, sh, cmean, cm2);
}

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
