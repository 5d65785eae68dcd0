// Welford / Chan statistics of the CPU kernels: per-piece moments of contiguous data (NCHW) and
// the per-channel row-by-row Welford update of the channels-last forward (register tiles or L1
// arrays, one to four streams of rows). The merge formula itself is common/welford.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/welford.h"
#include "cpu/kernels/common.h"

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

// Per-channel Welford update over `rows` rows of C values (stride C) in each of kS streams
// x[0..kS): continues the running mean and M2 of the data shifted by sh in cmean[k] / cm2[k],
// row r weighted by inv[r] = 1 / (rows seen before + r + 1) (the same in every stream).
// Channels [c, c + kW vectors) form a tile whose mean and M2 stay in registers across the
// rows (independent dependency chains, kS * kW of each); a per-row update of L1 arrays instead
// costs a store and a reload per vector and ran at half the speed on data in cache. With kPF
// each row is prefetched kPrefetchBytes ahead as the tile reaches it (the first tile of a
// block; the others re-read the block from L1). Each channel of each stream gets the same
// arithmetic, row by row, whatever its tile and whatever the other streams, so the result does
// not depend on the tiling or on the grouping of pieces into streams.
template <int kW, int kS, bool kPF, typename T>
GN_HOT inline void welford_tile(const T* const* x, int64_t rows, int64_t C, int64_t c, const acc_t<T>* sh,
                                const acc_t<T>* inv, acc_t<T>* const* cmean, acc_t<T>* const* cm2) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  V vsh[kW], m[kS][kW], q[kS][kW];
  for (int j = 0; j < kW; ++j) vsh[j] = V::loadu(sh + c + j * K);
  for (int k = 0; k < kS; ++k)
    for (int j = 0; j < kW; ++j) {
      m[k][j] = V::loadu(cmean[k] + c + j * K);
      q[k][j] = V::loadu(cm2[k] + c + j * K);
    }
  for (int64_t r = 0; r < rows; ++r) {
    const V vi(inv[r]);
    for (int k = 0; k < kS; ++k) {
      const T* xr = x[k] + r * C;
      if (kPF) prefetch_ahead(xr, C);
      for (int j = 0; j < kW; ++j) {
        const V d = VecIO<T>::load1(xr + c + j * K) - vsh[j];
        const V delta = d - m[k][j];
        m[k][j] = at::vec::fmadd(delta, vi, m[k][j]);
        q[k][j] = at::vec::fmadd(delta, d - m[k][j], q[k][j]);
      }
    }
  }
  for (int k = 0; k < kS; ++k)
    for (int j = 0; j < kW; ++j) {
      m[k][j].store(cmean[k] + c + j * K);
      q[k][j].store(cm2[k] + c + j * K);
    }
}

// A block of rows of kS streams, one channel tile at a time: tiles of kMaxW vectors (4, or 2
// for four streams: the running moments of 2 * kS * kMaxW vectors and kMaxW shift vectors stay
// within the 32 vector registers), then 2 and 1 vectors, then a scalar tail.
template <int kS, typename T>
GN_HOT inline void welford_rows(const T* const* x, int64_t rows, int64_t C, const acc_t<T>* sh, const acc_t<T>* inv,
                                acc_t<T>* const* cmean, acc_t<T>* const* cm2) {
  using A = acc_t<T>;
  constexpr int64_t K = Vectorized<A>::size();
  constexpr int kMaxW = kS >= 4 ? 2 : 4;
  bool first = true;  // the first tile prefetches
  auto tile = [&](auto w, int64_t c) {
    constexpr int kW = decltype(w)::value;
    if (first)
      welford_tile<kW, kS, true>(x, rows, C, c, sh, inv, cmean, cm2);
    else
      welford_tile<kW, kS, false>(x, rows, C, c, sh, inv, cmean, cm2);
    first = false;
  };
  int64_t c = 0;
  for (; c + kMaxW * K <= C; c += kMaxW * K) tile(std::integral_constant<int, kMaxW>{}, c);
  if (kMaxW > 2 && c + 2 * K <= C) {
    tile(std::integral_constant<int, 2>{}, c);
    c += 2 * K;
  }
  if (c + K <= C) {
    tile(std::integral_constant<int, 1>{}, c);
    c += K;
  }
  if (first)  // C < K: nothing prefetched yet
    for (int k = 0; k < kS; ++k) prefetch_ahead(x[k], rows * C);
  for (; c < C; ++c)
    for (int k = 0; k < kS; ++k) {
      A m = cmean[k][c], q = cm2[k][c];
      for (int64_t r = 0; r < rows; ++r) {
        const A d = static_cast<A>(x[k][r * C + c]) - sh[c];
        const A delta = d - m;
        m += delta * inv[r];
        q += delta * (d - m);
      }
      cmean[k][c] = m;
      cm2[k][c] = q;
    }
}

// The same update for kS streams row by row, each row of each stream updating the running
// moments in the L1 arrays cmean[k] / cm2[k] (a load and a store of each per vector of
// channels, instead of walking a block once per channel tile). Same arithmetic per channel
// as welford_rows, so the same bits. With four streams from DRAM this kept the memory system
// busier than the tiles did once a row spans more than two tiles: measured, interleaved
// calls, forward channels-last 1x128x8x128x128 bf16 9.23 -> 9.04 ms, 32x256x56x56 fp32 24.04
// -> 23.72 ms, 2x320x64x64 fp32 0.650 -> 0.628 ms, 2x1280x16x16 bf16 0.131 -> 0.118 ms; with
// rows of 4 vectors (C = 64) it was 0-7% slower, hence welford_streams' choice.
template <int kS, typename T>
GN_HOT inline void welford_rows_l1(const T* const* x, int64_t rows, int64_t C, const acc_t<T>* sh,
                                   const acc_t<T>* inv, acc_t<T>* const* cmean, acc_t<T>* const* cm2) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  for (int64_t r = 0; r < rows; ++r) {
    const V vi(inv[r]);
    for (int k = 0; k < kS; ++k) {
      const T* xr = x[k] + r * C;
      prefetch_ahead(xr, C);
      A* m = cmean[k];
      A* q = cm2[k];
      int64_t c = 0;
      for (; c + K <= C; c += K) {
        const V d = VecIO<T>::load1(xr + c) - V::loadu(sh + c);
        const V m0 = V::loadu(m + c);
        const V delta = d - m0;
        const V m1 = at::vec::fmadd(delta, vi, m0);
        m1.store(m + c);
        at::vec::fmadd(delta, d - m1, V::loadu(q + c)).store(q + c);
      }
      for (; c < C; ++c) {
        const A d = static_cast<A>(xr[c]) - sh[c];
        const A delta = d - m[c];
        m[c] += delta * inv[r];
        q[c] += delta * (d - m[c]);
      }
    }
  }
}

// A block of rows of kS streams: register tiles (welford_rows) for one stream or for rows of
// at most two multi-stream tiles, L1 arrays (welford_rows_l1) for wider rows of several.
template <int kS, typename T>
GN_HOT inline void welford_streams(const T* const* x, int64_t rows, int64_t C, const acc_t<T>* sh,
                                   const acc_t<T>* inv, acc_t<T>* const* cmean, acc_t<T>* const* cm2) {
  constexpr int64_t K = Vectorized<acc_t<T>>::size();
  if (kS > 1 && C > 4 * K)
    welford_rows_l1<kS>(x, rows, C, sh, inv, cmean, cm2);
  else
    welford_rows<kS>(x, rows, C, sh, inv, cmean, cm2);
}

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
