// CPU implementation of groupnorm_cuda::forward / backward.
//
// Numerics follow csrc/README.md (shared with the CUDA kernels): Welford / Chan merge of
// data shifted by the group's first element, backward that recovers the rounding error of
// the saved mean. Everything is vectorized with at::vec::Vectorized over the accumulation
// type (float, or double for double input) and parallel with at::parallel_for.
//
// Work decomposition. A "unit" is the data one set of statistics needs whole:
//   NCHW  (contiguous):    unit = one group (n, g): M = D * HxW contiguous elements;
//   NHWC  (channels last): unit = one sample n: HxW rows of C contiguous channels, holding
//                          all G groups of that sample.
// A unit is cut into fixed-size "pieces" (kPieceElems elements, whole rows for NHWC). Partial
// results of pieces are always merged in piece order, whichever thread computed them, so the
// result does not depend on the schedule or the thread count (bitwise deterministic).
// Schedules:
//   fused: units in parallel; one task computes a unit's statistics and then normalizes it
//          (backward: reduces and then writes dx) while the unit is still in L2: the forward
//          moves ~1 read + 1 write of DRAM, the backward ~3 accesses;
//   split: units one after another (so a unit's second pass finds it in L3), pieces of the
//          unit in parallel. Used for units too big for L2 or too few to feed the threads.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/group_norm.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {

using at::vec::Vectorized;

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int64_t kPieceElems = 16384;         // elements per piece (a multiple of every vector width)
constexpr int64_t kFusedUnitBytes = 512 << 10;  // a unit this small stays in a core's L2

// ---------------------------------------------------------------------------------------
// Loading T into the accumulation type and storing back.

template <typename T, typename A>
inline void load_acc(const T* src, A* dst, int64_t n) {
  if constexpr (std::is_same_v<T, A>) {
    std::copy(src, src + n, dst);
  } else if constexpr (std::is_same_v<T, at::BFloat16> || std::is_same_v<T, at::Half>) {
    using VT = Vectorized<T>;
    constexpr int64_t K = VT::size();
    int64_t i = 0;
    for (; i + K <= n; i += K) {
      auto [lo, hi] = at::vec::convert_to_float<T>(VT::loadu(src + i));
      lo.store(dst + i);
      hi.store(dst + i + K / 2);
    }
    for (; i < n; ++i) dst[i] = static_cast<A>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<A>(src[i]);
  }
}

template <typename T, typename A>
inline void store_from_acc(const A* src, T* dst, int64_t n) {
  if constexpr (std::is_same_v<T, A>) {
    std::copy(src, src + n, dst);
  } else if constexpr (std::is_same_v<T, at::BFloat16> || std::is_same_v<T, at::Half>) {
    using VA = Vectorized<float>;
    constexpr int64_t K = Vectorized<T>::size();
    int64_t i = 0;
    for (; i + K <= n; i += K) {
      at::vec::convert_from_float<T>(VA::loadu(src + i), VA::loadu(src + i + K / 2)).store(dst + i);
    }
    for (; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

// Pointer to n values of x as A: x itself when T == A, else converted into buf.
template <typename T, typename A>
inline const A* as_acc(const T* x, A* buf, int64_t n) {
  if constexpr (std::is_same_v<T, A>) {
    (void)buf;
    (void)n;
    return x;
  } else {
    load_acc(x, buf, n);
    return buf;
  }
}

// dst[i] += src[i]
template <typename A>
inline void add_vec(A* dst, const A* src, int64_t n) {
  using V = Vectorized<A>;
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) (V::loadu(dst + i) + V::loadu(src + i)).store(dst + i);
  for (; i < n; ++i) dst[i] += src[i];
}

// Horizontal sum as a pairwise tree (log2(lanes) dependent adds rather than one per lane):
// short channels end in one or more of these per channel, so its latency matters.
template <typename A>
inline A hsum(const Vectorized<A>& v) {
  constexpr int64_t K = Vectorized<A>::size();
  alignas(64) A tmp[K];
  v.store(tmp);
  for (int64_t w = K / 2; w >= 1; w /= 2)
    for (int64_t i = 0; i < w; ++i) tmp[i] += tmp[i + w];
  return tmp[0];
}

// ---------------------------------------------------------------------------------------
// Welford / Chan statistics.

template <typename A>
struct Moments {
  int64_t n = 0;
  A mean = 0;  // of the shifted data
  A m2 = 0;    // sum of squared deviations from mean
};

template <typename A>
inline void chan_merge(Moments<A>& a, const Moments<A>& b) {
  if (b.n == 0) return;
  if (a.n == 0) {
    a = b;
    return;
  }
  const int64_t n = a.n + b.n;
  const A nb_over_n = static_cast<A>(b.n) / static_cast<A>(n);
  const A delta = b.mean - a.mean;
  a.mean += delta * nb_over_n;
  a.m2 += b.m2 + delta * delta * static_cast<A>(a.n) * nb_over_n;
  a.n = n;
}

// Exact two-level moments of n values v - s held in cache: the mean first, then the sum of
// squared deviations from it (second touch of L1-resident data, no cancellation).
template <typename A>
inline Moments<A> chunk_moments(const A* v, int64_t n, A s) {
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const V vs(s);
  V acc0(0), acc1(0);
  int64_t i = 0;
  for (; i + 2 * K <= n; i += 2 * K) {
    acc0 += V::loadu(v + i) - vs;
    acc1 += V::loadu(v + i + K) - vs;
  }
  for (; i + K <= n; i += K) acc0 += V::loadu(v + i) - vs;
  A sum = hsum(acc0 + acc1);
  for (; i < n; ++i) sum += v[i] - s;
  Moments<A> m;
  m.n = n;
  m.mean = sum / static_cast<A>(n);
  const V vsh(s), vmean(m.mean);
  acc0 = V(0);
  acc1 = V(0);
  i = 0;
  for (; i + 2 * K <= n; i += 2 * K) {
    V d0 = (V::loadu(v + i) - vsh) - vmean;
    V d1 = (V::loadu(v + i + K) - vsh) - vmean;
    acc0 = at::vec::fmadd(d0, d0, acc0);
    acc1 = at::vec::fmadd(d1, d1, acc1);
  }
  for (; i + K <= n; i += K) {
    V d0 = (V::loadu(v + i) - vsh) - vmean;
    acc0 = at::vec::fmadd(d0, d0, acc0);
  }
  A m2 = hsum(acc0 + acc1);
  for (; i < n; ++i) {
    const A d = (v[i] - s) - m.mean;
    m2 += d * d;
  }
  m.m2 = m2;
  return m;
}

// ---------------------------------------------------------------------------------------
// Epilogue: z = (v - sh) * sc + b, then optional SiLU.

template <typename A>
inline Vectorized<A> silu_vec(const Vectorized<A>& z) {
  using V = Vectorized<A>;
  return z / (V(1) + z.neg().exp());
}

template <typename A>
inline A silu_scalar(A z) {
  return z / (A(1) + std::exp(-z));
}

template <typename A>
inline void affine_act(const A* v, A* out, int64_t n, A sh, A sc, A b, Activation act) {
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const V vsh(sh), vsc(sc), vb(b);
  int64_t i = 0;
  if (act == Activation::SiLU) {
    for (; i + K <= n; i += K) silu_vec(at::vec::fmadd(V::loadu(v + i) - vsh, vsc, vb)).store(out + i);
    for (; i < n; ++i) out[i] = silu_scalar((v[i] - sh) * sc + b);
  } else {
    for (; i + K <= n; i += K) at::vec::fmadd(V::loadu(v + i) - vsh, vsc, vb).store(out + i);
    for (; i < n; ++i) out[i] = (v[i] - sh) * sc + b;
  }
}

// ---------------------------------------------------------------------------------------
// Schedule.

struct Schedule {
  int64_t units = 0;
  int64_t pieces_per_unit = 0;
  bool fused = false;
};

inline Schedule make_schedule(int64_t units, int64_t pieces_per_unit, int64_t unit_bytes) {
  Schedule s;
  s.units = units;
  s.pieces_per_unit = pieces_per_unit;
  const int64_t threads = at::get_num_threads();
  // Fused when a unit stays cache-resident and there are enough units to keep every thread
  // busy, or when a unit is a single piece (nothing to split).
  s.fused = pieces_per_unit <= 1 || (unit_bytes <= kFusedUnitBytes && units >= 2 * threads);
  return s;
}

// Runs `stats(unit, piece)` for every piece, `finish(unit)` once all pieces of a unit are
// done, then `apply(unit, piece)` for every piece, with the schedule above. The callbacks
// must merge piece results in piece order (they receive the piece index).
template <typename Stats, typename Finish, typename Apply>
void run_schedule(const Schedule& s, const Stats& stats, const Finish& finish, const Apply& apply) {
  if (s.units == 0) return;
  if (s.fused) {
    at::parallel_for(0, s.units, 1, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        for (int64_t p = 0; p < s.pieces_per_unit; ++p) stats(u, p);
        finish(u);
        for (int64_t p = 0; p < s.pieces_per_unit; ++p) apply(u, p);
      }
    });
    return;
  }
  for (int64_t u = 0; u < s.units; ++u) {
    at::parallel_for(0, s.pieces_per_unit, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) stats(u, p);
    });
    finish(u);
    at::parallel_for(0, s.pieces_per_unit, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) apply(u, p);
    });
  }
}

// Per-thread scratch: one vector per thread id, grown on demand.
template <typename A>
struct Scratch {
  std::vector<std::vector<A>> per_thread;
  Scratch() : per_thread(at::get_num_threads() + 1) {}
  A* get(int64_t n) {
    auto& v = per_thread[at::get_thread_num()];
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    return v.data();
  }
};

template <typename W, typename A>
inline A param_at(const W* p, int64_t c, A dflt) {
  return p ? static_cast<A>(p[c]) : dflt;
}

// ---------------------------------------------------------------------------------------
// Forward.

template <typename T, typename W>
struct FwdArgs {
  const T* x;
  const W* w;  // nullable
  const W* b;  // nullable
  T* y;
  acc_t<T>* mean;
  acc_t<T>* rstd;
  GroupNormShape s;
  double eps;
  Activation act;
};

template <typename A>
inline A rstd_from(const Moments<A>& m, double eps) {
  const A var = std::max(m.m2 / static_cast<A>(m.n), A(0));
  return A(1) / std::sqrt(var + static_cast<A>(eps));
}

template <typename T, typename W>
void forward_nchw(const FwdArgs<T, W>& a) {
  using A = acc_t<T>;
  const auto& s = a.s;
  const int64_t M = s.M(), D = s.D(), HxW = s.HxW;
  const int64_t units = s.N * s.G;
  const int64_t pieces = (M + kPieceElems - 1) / kPieceElems;
  const Schedule sched = make_schedule(units, pieces, M * static_cast<int64_t>(sizeof(T)));

  std::vector<Moments<A>> partial(sched.fused ? 0 : pieces);
  std::vector<Moments<A>> unit_moments(units);
  std::vector<A> shift(units);
  Scratch<A> scratch;
  constexpr int64_t kChunk = 2048;

  auto piece_moments = [&](int64_t u, int64_t p) {
    const T* xg = a.x + u * M;
    const A sh = static_cast<A>(xg[0]);
    A* buf = scratch.get(kChunk);
    Moments<A> acc;
    const int64_t end = std::min(M, (p + 1) * kPieceElems);
    for (int64_t i = p * kPieceElems; i < end; i += kChunk) {
      const int64_t n = std::min(kChunk, end - i);
      chan_merge(acc, chunk_moments(as_acc(xg + i, buf, n), n, sh));
    }
    return acc;
  };
  auto stats = [&](int64_t u, int64_t p) {
    if (sched.fused) {
      if (p == 0) unit_moments[u] = Moments<A>{};
      chan_merge(unit_moments[u], piece_moments(u, p));
    } else {
      partial[p] = piece_moments(u, p);
    }
  };
  auto finish = [&](int64_t u) {
    if (!sched.fused) {
      unit_moments[u] = Moments<A>{};
      for (int64_t p = 0; p < pieces; ++p) chan_merge(unit_moments[u], partial[p]);
    }
    const Moments<A>& m = unit_moments[u];
    shift[u] = static_cast<A>(a.x[u * M]);
    a.mean[u] = shift[u] + m.mean;
    a.rstd[u] = rstd_from(m, a.eps);
  };
  auto apply = [&](int64_t u, int64_t p) {
    const int64_t g = u % s.G;
    const T* xg = a.x + u * M;
    T* yg = a.y + u * M;
    const A sh = shift[u];
    const A m = unit_moments[u].mean;
    const A rstd = a.rstd[u];
    A* buf = scratch.get(2 * kChunk);
    const int64_t end = std::min(M, (p + 1) * kPieceElems);
    for (int64_t i = p * kPieceElems; i < end;) {
      // A run within one channel: y = (x - sh) * sc + (b - m * sc).
      const int64_t c = g * D + i / HxW;
      const int64_t run_end = std::min({end, (i / HxW + 1) * HxW, i + kChunk});
      const int64_t n = run_end - i;
      const A sc = rstd * param_at(a.w, c, A(1));
      const A bb = param_at(a.b, c, A(0)) - m * sc;
      const A* v = as_acc(xg + i, buf, n);
      if constexpr (std::is_same_v<T, A>) {
        affine_act(v, yg + i, n, sh, sc, bb, a.act);
      } else {
        A* out = buf + kChunk;
        affine_act(v, out, n, sh, sc, bb, a.act);
        store_from_acc(out, yg + i, n);
      }
      i = run_end;
    }
  };
  run_schedule(sched, stats, finish, apply);
}

// Rows per block in the NHWC kernels: a block of rows stays in L1 while it is read twice
// (statistics) or converted (half precision); loops run channels-outer, rows-inner so that
// per-channel accumulators and parameters live in registers.
inline int64_t nhwc_block_rows(int64_t C) { return std::clamp<int64_t>(8192 / C, 1, 64); }

// Per-channel scratch of one unit (sample) in the NHWC kernels. A fused task owns one slot
// per thread; the split schedule uses slot 0, filled by finish() before the parallel apply.
template <typename A>
struct ChannelSlots {
  int64_t width;
  std::vector<A> data;
  ChannelSlots(int64_t arrays, int64_t C) : width(arrays * C), data((at::get_num_threads() + 1) * arrays * C) {}
  A* slot(bool fused) { return data.data() + (fused ? at::get_thread_num() : 0) * width; }
};

template <typename T, typename W>
void forward_nhwc(const FwdArgs<T, W>& a) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const auto& s = a.s;
  const int64_t C = s.C, G = s.G, D = s.D(), HxW = s.HxW;
  const int64_t rows_per_piece = std::max<int64_t>(1, kPieceElems / C);
  const int64_t pieces = (HxW + rows_per_piece - 1) / rows_per_piece;
  const int64_t blk_rows = nhwc_block_rows(C);
  const Schedule sched = make_schedule(s.N, pieces, HxW * C * static_cast<int64_t>(sizeof(T)));

  std::vector<Moments<A>> partial(sched.fused ? 0 : pieces * G);
  std::vector<Moments<A>> moments(s.N * G);
  ChannelSlots<A> chans(3, C);  // shift, scale, bias per channel
  Scratch<A> scratch;

  auto fill_shift = [&](const T* xs, A* sh) {  // the group's first element (row 0)
    for (int64_t g = 0; g < G; ++g) std::fill(sh + g * D, sh + (g + 1) * D, static_cast<A>(xs[g * D]));
  };
  // Moments of the G groups over rows [r0, r1) of sample n, one block of rows at a time:
  // exact two-level moments of the block (its mean, then squared deviations from it),
  // Chan-merged into `out`; no running sum grows longer than a block.
  auto piece_moments = [&](int64_t n, int64_t p, Moments<A>* out /* G entries */) {
    const int64_t r0 = p * rows_per_piece, r1 = std::min(HxW, r0 + rows_per_piece);
    const T* xs = a.x + n * HxW * C;
    A* buf = scratch.get(blk_rows * C + 3 * C);
    A* sh = buf + blk_rows * C;
    A* csum = sh + C;
    A* cm = csum + C;
    fill_shift(xs, sh);
    for (int64_t g = 0; g < G; ++g) out[g] = Moments<A>{};
    for (int64_t rb = r0; rb < r1; rb += blk_rows) {
      const int64_t rows = std::min(blk_rows, r1 - rb);
      const A* v = as_acc(xs + rb * C, buf, rows * C);
      int64_t c = 0;
      for (; c + K <= C; c += K) {
        const V vsh = V::loadu(sh + c);
        V acc(0);
        for (int64_t r = 0; r < rows; ++r) acc += V::loadu(v + r * C + c) - vsh;
        acc.store(csum + c);
      }
      for (; c < C; ++c) {
        A acc = 0;
        for (int64_t r = 0; r < rows; ++r) acc += v[r * C + c] - sh[c];
        csum[c] = acc;
      }
      const A cnt = static_cast<A>(rows * D);
      for (int64_t g = 0; g < G; ++g) {
        A sum = 0;
        for (int64_t d = 0; d < D; ++d) sum += csum[g * D + d];
        std::fill(cm + g * D, cm + (g + 1) * D, sum / cnt);
      }
      c = 0;
      for (; c + K <= C; c += K) {
        const V vsh = V::loadu(sh + c), vcm = V::loadu(cm + c);
        V acc(0);
        for (int64_t r = 0; r < rows; ++r) {
          const V d = (V::loadu(v + r * C + c) - vsh) - vcm;
          acc = at::vec::fmadd(d, d, acc);
        }
        acc.store(csum + c);
      }
      for (; c < C; ++c) {
        A acc = 0;
        for (int64_t r = 0; r < rows; ++r) {
          const A d = (v[r * C + c] - sh[c]) - cm[c];
          acc += d * d;
        }
        csum[c] = acc;
      }
      for (int64_t g = 0; g < G; ++g) {
        Moments<A> blk;
        blk.n = rows * D;
        blk.mean = cm[g * D];
        for (int64_t d = 0; d < D; ++d) blk.m2 += csum[g * D + d];
        chan_merge(out[g], blk);
      }
    }
  };
  auto stats = [&](int64_t n, int64_t p) {
    if (sched.fused) {
      Moments<A>* row = moments.data() + n * G;
      if (p == 0) std::fill(row, row + G, Moments<A>{});
      std::vector<Moments<A>> tmp(G);
      piece_moments(n, p, tmp.data());
      for (int64_t g = 0; g < G; ++g) chan_merge(row[g], tmp[g]);
    } else {
      piece_moments(n, p, partial.data() + p * G);
    }
  };
  auto finish = [&](int64_t n) {
    Moments<A>* row = moments.data() + n * G;
    if (!sched.fused) {
      std::fill(row, row + G, Moments<A>{});
      for (int64_t p = 0; p < pieces; ++p)
        for (int64_t g = 0; g < G; ++g) chan_merge(row[g], partial[p * G + g]);
    }
    const T* xs = a.x + n * HxW * C;
    A* ch = chans.slot(sched.fused);
    A *sh = ch, *sc = ch + C, *bb = ch + 2 * C;
    for (int64_t g = 0; g < G; ++g) {
      const A shift = static_cast<A>(xs[g * D]);
      const A rstd = rstd_from(row[g], a.eps);
      a.mean[n * G + g] = shift + row[g].mean;
      a.rstd[n * G + g] = rstd;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d;
        sh[c] = shift;
        sc[c] = rstd * param_at(a.w, c, A(1));
        bb[c] = param_at(a.b, c, A(0)) - row[g].mean * sc[c];
      }
    }
  };
  const bool silu = a.act == Activation::SiLU;
  auto apply = [&](int64_t n, int64_t p) {
    const int64_t r0 = p * rows_per_piece, r1 = std::min(HxW, r0 + rows_per_piece);
    const T* xs = a.x + n * HxW * C;
    T* ys = a.y + n * HxW * C;
    const A* ch = chans.slot(sched.fused);
    const A *sh = ch, *sc = ch + C, *bb = ch + 2 * C;
    A* buf = scratch.get(2 * blk_rows * C);
    for (int64_t rb = r0; rb < r1; rb += blk_rows) {
      const int64_t rows = std::min(blk_rows, r1 - rb);
      const A* v = as_acc(xs + rb * C, buf, rows * C);
      A* out;
      if constexpr (std::is_same_v<T, A>) {
        out = ys + rb * C;
      } else {
        out = buf + blk_rows * C;
      }
      int64_t c = 0;
      for (; c + K <= C; c += K) {
        const V vsh = V::loadu(sh + c), vsc = V::loadu(sc + c), vb = V::loadu(bb + c);
        if (silu) {
          for (int64_t r = 0; r < rows; ++r)
            silu_vec(at::vec::fmadd(V::loadu(v + r * C + c) - vsh, vsc, vb)).store(out + r * C + c);
        } else {
          for (int64_t r = 0; r < rows; ++r)
            at::vec::fmadd(V::loadu(v + r * C + c) - vsh, vsc, vb).store(out + r * C + c);
        }
      }
      for (; c < C; ++c) {
        for (int64_t r = 0; r < rows; ++r) {
          const A z = (v[r * C + c] - sh[c]) * sc[c] + bb[c];
          out[r * C + c] = silu ? silu_scalar(z) : z;
        }
      }
      if constexpr (!std::is_same_v<T, A>) store_from_acc(out, ys + rb * C, rows * C);
    }
  };
  run_schedule(sched, stats, finish, apply);
}

// ---------------------------------------------------------------------------------------
// Backward. Per channel of a unit: a = sum(dy'), bs = sum(dy' * u), e = sum(u), u = x - mean.

template <typename T, typename W>
struct BwdArgs {
  const T* dy;
  const T* x;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  const W* w;  // nullable
  const W* b;  // nullable
  T* dx;       // nullable: not wanted
  acc_t<T>* dw_part;  // (N, C) per-sample sum(dy' * xhat), nullable
  acc_t<T>* db_part;  // (N, C) per-sample sum(dy'), nullable
  GroupNormShape s;
  Activation act;
};

template <typename A>
struct ChanSums {
  A a = 0, bs = 0, e = 0;
  void add(const ChanSums& o) {
    a += o.a;
    bs += o.bs;
    e += o.e;
  }
};

// dy' for SiLU: dy * sig(z) * (1 + z * (1 - sig(z))), z = (u - r) * rho * w + b.
template <typename A>
inline Vectorized<A> silu_grad_vec(const Vectorized<A>& dy, const Vectorized<A>& z) {
  using V = Vectorized<A>;
  const V sig = V(1) / (V(1) + z.neg().exp());
  return dy * sig * (V(1) + z * (V(1) - sig));
}
template <typename A>
inline A silu_grad_scalar(A dy, A z) {
  const A sig = A(1) / (A(1) + std::exp(-z));
  return dy * sig * (A(1) + z * (A(1) - sig));
}

// Coefficients of one channel for the SiLU pre-activation z = u * zs + zb.
template <typename A>
struct ZCoef {
  A zs = 0, zb = 0;
};

// Sums over n values of one channel (u = v - mu). With SiLU, z = u * zc.zs + zc.zb.
template <typename A>
inline ChanSums<A> channel_sums(const A* dy, const A* v, int64_t n, A mu, bool silu, ZCoef<A> zc, bool only_e) {
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const V vmu(mu);
  V va(0), vb(0), ve(0);
  int64_t i = 0;
  ChanSums<A> out;
  if (only_e) {
    for (; i + K <= n; i += K) ve += V::loadu(v + i) - vmu;
    out.e = hsum(ve);
    for (; i < n; ++i) out.e += v[i] - mu;
    return out;
  }
  if (silu) {
    const V zs(zc.zs), zb(zc.zb);
    for (; i + K <= n; i += K) {
      const V u = V::loadu(v + i) - vmu;
      const V g = silu_grad_vec(V::loadu(dy + i), at::vec::fmadd(u, zs, zb));
      va += g;
      vb = at::vec::fmadd(g, u, vb);
      ve += u;
    }
  } else {
    for (; i + K <= n; i += K) {
      const V u = V::loadu(v + i) - vmu;
      const V g = V::loadu(dy + i);
      va += g;
      vb = at::vec::fmadd(g, u, vb);
      ve += u;
    }
  }
  out.a = hsum(va);
  out.bs = hsum(vb);
  out.e = hsum(ve);
  for (; i < n; ++i) {
    const A u = v[i] - mu;
    const A g = silu ? silu_grad_scalar(dy[i], u * zc.zs + zc.zb) : dy[i];
    out.a += g;
    out.bs += g * u;
    out.e += u;
  }
  return out;
}

// dx = c1 * dy' + c2 * u + c3 over n values of one channel.
template <typename A>
inline void channel_dx(const A* dy, const A* v, A* out, int64_t n, A mu, A c1, A c2, A c3, bool silu, ZCoef<A> zc) {
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const V vmu(mu), v1(c1), v2(c2), v3(c3), zs(zc.zs), zb(zc.zb);
  int64_t i = 0;
  for (; i + K <= n; i += K) {
    const V u = V::loadu(v + i) - vmu;
    V g = V::loadu(dy + i);
    if (silu) g = silu_grad_vec(g, at::vec::fmadd(u, zs, zb));
    at::vec::fmadd(v1, g, at::vec::fmadd(v2, u, v3)).store(out + i);
  }
  for (; i < n; ++i) {
    const A u = v[i] - mu;
    const A g = silu ? silu_grad_scalar(dy[i], u * zc.zs + zc.zb) : dy[i];
    out[i] = c1 * g + (c2 * u + c3);
  }
}

// Per-group result of the reduction, turned into dx coefficients.
template <typename A>
struct GroupCoef {
  A r = 0;   // sum(u) / M: rounding error of the saved mean
  A c2 = 0;  // dx = rho * w * dy' + c2 * u + c3
  A c3 = 0;
};

// Given per-channel sums of one group (D channels starting at channel c0 of sample n),
// writes the dweight/dbias partials and returns the dx coefficients.
template <typename T, typename W>
GroupCoef<acc_t<T>> finish_group(const BwdArgs<T, W>& a, int64_t n, int64_t g, const ChanSums<acc_t<T>>* sums) {
  using A = acc_t<T>;
  const auto& s = a.s;
  const int64_t D = s.D();
  const A M = static_cast<A>(s.M());
  const A rho = a.rstd[n * s.G + g];
  A e = 0;
  for (int64_t d = 0; d < D; ++d) e += sums[d].e;
  GroupCoef<A> gc;
  gc.r = e / M;
  A Asum = 0, Bsum = 0;
  for (int64_t d = 0; d < D; ++d) {
    const int64_t c = g * D + d;
    const A dyxhat = rho * (sums[d].bs - gc.r * sums[d].a);
    const A w = param_at(a.w, c, A(1));
    Asum += w * dyxhat;
    Bsum += w * sums[d].a;
    if (a.dw_part) a.dw_part[n * s.C + c] = dyxhat;
    if (a.db_part) a.db_part[n * s.C + c] = sums[d].a;
  }
  gc.c2 = -rho * rho * Asum / M;
  gc.c3 = rho * (gc.r * rho * Asum - Bsum) / M;
  return gc;
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

template <typename T, typename W>
void backward_nchw(const BwdArgs<T, W>& a) {
  using A = acc_t<T>;
  const auto& s = a.s;
  const int64_t D = s.D(), HxW = s.HxW, M = s.M();
  const bool silu = a.act == Activation::SiLU;
  // Pieces hold whole channels when a channel is short (several channels per piece), else a
  // range of one channel (several pieces per channel, merged in order).
  const bool whole = HxW <= kPieceElems;
  const int64_t cpp = whole ? std::max<int64_t>(1, kPieceElems / HxW) : 1;  // channels per piece
  const int64_t ppc = whole ? 1 : (HxW + kPieceElems - 1) / kPieceElems;     // pieces per channel
  const int64_t pieces = whole ? (D + cpp - 1) / cpp : D * ppc;
  const int64_t units = s.N * s.G;
  const Schedule sched = make_schedule(units, pieces, 2 * M * static_cast<int64_t>(sizeof(T)));
  // Where piece results go: straight into the per-channel sums when no other piece touches
  // the channel concurrently, else into per-piece partials merged in finish.
  const bool direct = whole || sched.fused;
  constexpr int64_t kChunk = 2048;

  std::vector<ChanSums<A>> partial(direct ? 0 : pieces);
  std::vector<ChanSums<A>> sums(units * D);                // a, bs, e per (n, c)
  std::vector<ChanSums<A>> esums(silu ? units * D : 0);    // SiLU pre-pass: e per (n, c)
  std::vector<A> r_silu(silu ? units : 0);
  std::vector<GroupCoef<A>> coef(units);
  Scratch<A> scratch;

  // Calls f(d, h0, h1, first) for the channel segments of piece p.
  auto for_segments = [&](int64_t p, auto&& f) {
    if (whole) {
      for (int64_t d = p * cpp; d < std::min(D, (p + 1) * cpp); ++d) f(d, int64_t(0), HxW, true);
    } else {
      const int64_t h0 = (p % ppc) * kPieceElems;
      f(p / ppc, h0, std::min(HxW, h0 + kPieceElems), p % ppc == 0);
    }
  };
  auto segment_sums = [&](int64_t u, int64_t d, int64_t h0, int64_t h1, bool only_e) {
    const int64_t off = u * M + d * HxW;
    const A mu = a.mean[u];
    const ZCoef<A> zc = silu && !only_e ? z_coef(a, u / s.G, (u % s.G) * D + d, r_silu[u]) : ZCoef<A>{};
    A* buf = scratch.get(2 * kChunk);
    ChanSums<A> acc;
    for (int64_t h = h0; h < h1; h += kChunk) {
      const int64_t cnt = std::min(kChunk, h1 - h);
      const A* v = as_acc(a.x + off + h, buf, cnt);
      const A* dy = only_e ? nullptr : as_acc(a.dy + off + h, buf + kChunk, cnt);
      acc.add(channel_sums(dy, v, cnt, mu, silu, zc, only_e));
    }
    return acc;
  };
  auto make_stats = [&](std::vector<ChanSums<A>>& target, bool only_e) {
    return [&, only_e](int64_t u, int64_t p) {
      for_segments(p, [&](int64_t d, int64_t h0, int64_t h1, bool first) {
        const ChanSums<A> part = segment_sums(u, d, h0, h1, only_e);
        if (direct) {
          ChanSums<A>& dst = target[u * D + d];
          if (first) dst = ChanSums<A>{};
          dst.add(part);
        } else {
          partial[p] = part;
        }
      });
    };
  };
  auto merge = [&](std::vector<ChanSums<A>>& target, int64_t u) {
    if (direct) return;
    for (int64_t d = 0; d < D; ++d) {
      ChanSums<A>& dst = target[u * D + d];
      dst = ChanSums<A>{};
      for (int64_t q = 0; q < ppc; ++q) dst.add(partial[d * ppc + q]);
    }
  };
  if (silu) {  // r per group, needed by z before the main reduction
    run_schedule(
        sched, make_stats(esums, true),
        [&](int64_t u) {
          merge(esums, u);
          A e = 0;
          for (int64_t d = 0; d < D; ++d) e += esums[u * D + d].e;
          r_silu[u] = e / static_cast<A>(M);
        },
        [](int64_t, int64_t) {});
  }
  auto finish = [&](int64_t u) {
    merge(sums, u);
    // With SiLU the e sums equal the pre-pass ones bit for bit, so r matches the z used above.
    coef[u] = finish_group(a, u / s.G, u % s.G, sums.data() + u * D);
  };
  auto apply = [&](int64_t u, int64_t p) {
    if (!a.dx) return;
    const int64_t n = u / s.G, g = u % s.G;
    const A mu = a.mean[u];
    A* buf = scratch.get(3 * kChunk);
    for_segments(p, [&](int64_t d, int64_t h0, int64_t h1, bool) {
      const int64_t c = g * D + d;
      const int64_t off = u * M + d * HxW;
      const A c1 = a.rstd[u] * param_at(a.w, c, A(1));
      const ZCoef<A> zc = silu ? z_coef(a, n, c, coef[u].r) : ZCoef<A>{};
      for (int64_t h = h0; h < h1; h += kChunk) {
        const int64_t cnt = std::min(kChunk, h1 - h);
        const A* v = as_acc(a.x + off + h, buf, cnt);
        const A* dy = as_acc(a.dy + off + h, buf + kChunk, cnt);
        if constexpr (std::is_same_v<T, A>) {
          channel_dx(dy, v, a.dx + off + h, cnt, mu, c1, coef[u].c2, coef[u].c3, silu, zc);
        } else {
          A* out = buf + 2 * kChunk;
          channel_dx(dy, v, out, cnt, mu, c1, coef[u].c2, coef[u].c3, silu, zc);
          store_from_acc(out, a.dx + off + h, cnt);
        }
      }
    });
  };
  run_schedule(sched, make_stats(sums, false), finish, apply);
}

template <typename T, typename W>
void backward_nhwc(const BwdArgs<T, W>& a) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const auto& s = a.s;
  const int64_t C = s.C, G = s.G, D = s.D(), HxW = s.HxW;
  const bool silu = a.act == Activation::SiLU;
  const int64_t rows_per_piece = std::max<int64_t>(1, kPieceElems / C);
  const int64_t pieces = (HxW + rows_per_piece - 1) / rows_per_piece;
  const int64_t blk_rows = nhwc_block_rows(C);
  const Schedule sched = make_schedule(s.N, pieces, 2 * HxW * C * static_cast<int64_t>(sizeof(T)));

  // Per-channel sums of a unit, three arrays of C: a, bs, e (partials per piece when split).
  std::vector<A> partial(sched.fused ? 0 : pieces * 3 * C);
  // Per-channel arrays of the unit being processed: sums (3), mu, zs, zb, c1, c2, c3.
  ChannelSlots<A> chans(9, C);
  Scratch<A> scratch;
  enum { kSums = 0, kMu = 3, kZs = 4, kZb = 5, kC1 = 6, kC2 = 7, kC3 = 8 };

  auto init_unit = [&](int64_t n, A* ch) {
    A* mu = ch + kMu * C;
    for (int64_t g = 0; g < G; ++g) std::fill(mu + g * D, mu + (g + 1) * D, a.mean[n * G + g]);
  };
  // phase 0: e only (SiLU pre-pass); phase 1: a, bs, e (SiLU: z from the pre-pass r). Sums
  // are two-level: a block of rows in registers, blocks added into `out`.
  auto piece_sums = [&](int64_t n, int64_t p, int phase, const A* ch, A* out /* 3*C */) {
    const int64_t r0 = p * rows_per_piece, r1 = std::min(HxW, r0 + rows_per_piece);
    const int64_t base = n * HxW * C;
    const A *mu = ch + kMu * C, *zs = ch + kZs * C, *zb = ch + kZb * C;
    A* buf = scratch.get(2 * blk_rows * C);
    A *oa = out, *ob = out + C, *oe = out + 2 * C;
    std::fill(out, out + 3 * C, A(0));
    for (int64_t rb = r0; rb < r1; rb += blk_rows) {
      const int64_t rows = std::min(blk_rows, r1 - rb);
      const A* v = as_acc(a.x + base + rb * C, buf, rows * C);
      const A* dy = phase == 0 ? nullptr : as_acc(a.dy + base + rb * C, buf + blk_rows * C, rows * C);
      int64_t c = 0;
      for (; c + K <= C; c += K) {
        const V vmu = V::loadu(mu + c);
        V ve(0);
        if (phase == 0) {
          for (int64_t r = 0; r < rows; ++r) ve += V::loadu(v + r * C + c) - vmu;
        } else {
          V va(0), vb(0);
          const V vzs = V::loadu(zs + c), vzb = V::loadu(zb + c);
          for (int64_t r = 0; r < rows; ++r) {
            const V u = V::loadu(v + r * C + c) - vmu;
            V g = V::loadu(dy + r * C + c);
            if (silu) g = silu_grad_vec(g, at::vec::fmadd(u, vzs, vzb));
            va += g;
            vb = at::vec::fmadd(g, u, vb);
            ve += u;
          }
          (V::loadu(oa + c) + va).store(oa + c);
          (V::loadu(ob + c) + vb).store(ob + c);
        }
        (V::loadu(oe + c) + ve).store(oe + c);
      }
      for (; c < C; ++c) {
        A sa = 0, sb = 0, se = 0;
        for (int64_t r = 0; r < rows; ++r) {
          const A u = v[r * C + c] - mu[c];
          se += u;
          if (phase == 0) continue;
          const A g = silu ? silu_grad_scalar(dy[r * C + c], u * zs[c] + zb[c]) : dy[r * C + c];
          sa += g;
          sb += g * u;
        }
        oa[c] += sa;
        ob[c] += sb;
        oe[c] += se;
      }
    }
  };
  // One reduction pass over unit n into the slot's sums, pieces merged in piece order.
  auto sums_pass = [&](int64_t n, int phase, A* ch) {
    A* sums = ch + kSums * C;
    std::fill(sums, sums + 3 * C, A(0));
    if (sched.fused) {
      A* tmp = scratch.get(2 * blk_rows * C + 3 * C) + 2 * blk_rows * C;
      for (int64_t p = 0; p < pieces; ++p) {
        piece_sums(n, p, phase, ch, tmp);
        add_vec(sums, tmp, 3 * C);
      }
    } else {
      at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) piece_sums(n, p, phase, ch, partial.data() + p * 3 * C);
      });
      for (int64_t p = 0; p < pieces; ++p) add_vec(sums, partial.data() + p * 3 * C, 3 * C);
    }
  };
  auto group_r = [&](const A* ch, int64_t g) {
    const A* e = ch + 2 * C;
    A sum = 0;
    for (int64_t d = 0; d < D; ++d) sum += e[g * D + d];
    return sum / static_cast<A>(s.M());
  };
  auto set_z = [&](int64_t n, A* ch) {
    for (int64_t g = 0; g < G; ++g) {
      const A r = group_r(ch, g);
      for (int64_t d = 0; d < D; ++d) {
        const ZCoef<A> z = z_coef(a, n, g * D + d, r);
        ch[kZs * C + g * D + d] = z.zs;
        ch[kZb * C + g * D + d] = z.zb;
      }
    }
  };
  auto finish = [&](int64_t n) {
    A* ch = chans.slot(sched.fused);
    std::vector<ChanSums<A>> grp(D);
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d;
        grp[d].a = ch[c];
        grp[d].bs = ch[C + c];
        grp[d].e = ch[2 * C + c];
      }
      const GroupCoef<A> gc = finish_group(a, n, g, grp.data());
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d;
        ch[kC1 * C + c] = a.rstd[n * G + g] * param_at(a.w, c, A(1));
        ch[kC2 * C + c] = gc.c2;
        ch[kC3 * C + c] = gc.c3;
      }
    }
  };
  auto apply = [&](int64_t n, int64_t p) {
    if (!a.dx) return;
    const int64_t r0 = p * rows_per_piece, r1 = std::min(HxW, r0 + rows_per_piece);
    const int64_t base = n * HxW * C;
    const A* ch = chans.slot(sched.fused);
    const A *mu = ch + kMu * C, *zs = ch + kZs * C, *zb = ch + kZb * C;
    const A *c1 = ch + kC1 * C, *c2 = ch + kC2 * C, *c3 = ch + kC3 * C;
    A* buf = scratch.get(3 * blk_rows * C);
    for (int64_t rb = r0; rb < r1; rb += blk_rows) {
      const int64_t rows = std::min(blk_rows, r1 - rb);
      const A* v = as_acc(a.x + base + rb * C, buf, rows * C);
      const A* dy = as_acc(a.dy + base + rb * C, buf + blk_rows * C, rows * C);
      A* out;
      if constexpr (std::is_same_v<T, A>) {
        out = a.dx + base + rb * C;
      } else {
        out = buf + 2 * blk_rows * C;
      }
      int64_t c = 0;
      for (; c + K <= C; c += K) {
        const V vmu = V::loadu(mu + c), v1 = V::loadu(c1 + c), v2 = V::loadu(c2 + c), v3 = V::loadu(c3 + c);
        const V vzs = V::loadu(zs + c), vzb = V::loadu(zb + c);
        for (int64_t r = 0; r < rows; ++r) {
          const V u = V::loadu(v + r * C + c) - vmu;
          V g = V::loadu(dy + r * C + c);
          if (silu) g = silu_grad_vec(g, at::vec::fmadd(u, vzs, vzb));
          at::vec::fmadd(v1, g, at::vec::fmadd(v2, u, v3)).store(out + r * C + c);
        }
      }
      for (; c < C; ++c) {
        for (int64_t r = 0; r < rows; ++r) {
          const A u = v[r * C + c] - mu[c];
          const A g = silu ? silu_grad_scalar(dy[r * C + c], u * zs[c] + zb[c]) : dy[r * C + c];
          out[r * C + c] = c1[c] * g + (c2[c] * u + c3[c]);
        }
      }
      if constexpr (!std::is_same_v<T, A>) store_from_acc(out, a.dx + base + rb * C, rows * C);
    }
  };
  // A unit: [SiLU: e sums -> r -> z coefficients], a/bs/e sums, coefficients, dx. Fused:
  // one task per unit, back to back while it is cache-hot; split: units in turn, pieces in
  // parallel (slot 0 holds the unit's per-channel arrays).
  auto unit = [&](int64_t n) {
    A* ch = chans.slot(sched.fused);
    init_unit(n, ch);
    if (silu) {
      sums_pass(n, 0, ch);
      set_z(n, ch);
    }
    sums_pass(n, 1, ch);
    finish(n);
    if (sched.fused) {
      for (int64_t p = 0; p < pieces; ++p) apply(n, p);
    } else {
      at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) apply(n, p);
      });
    }
  };
  if (sched.fused) {
    at::parallel_for(0, s.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) unit(n);
    });
  } else {
    for (int64_t n = 0; n < s.N; ++n) unit(n);
  }
}

// ---------------------------------------------------------------------------------------
// Op entry points.

// Calls f.template operator()<T, W>() with T = x's type and W = the parameters' type.
template <typename F>
void dispatch_types(const at::Tensor& x, const at::Tensor* w, const at::Tensor* b, const F& f) {
  const at::Tensor* p = w ? w : b;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "groupnorm_cuda_cpu", [&] {
    using T = scalar_t;
    if constexpr (std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>) {
      if (p && p->scalar_type() == at::kFloat) {
        f.template operator()<T, float>();
        return;
      }
    }
    f.template operator()<T, T>();
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& input,
                                                          const c10::optional<at::Tensor>& weight,
                                                          const c10::optional<at::Tensor>& bias, int64_t num_groups,
                                                          double eps, c10::string_view activation) {
  const GroupNormShape s = check_forward_args(input, weight, bias, num_groups);
  const Activation act = parse_activation(std::string(activation));
  const Layout layout = pick_layout(input);
  const at::Tensor x = to_layout(input, layout);
  at::Tensor y = empty_in_layout(x, layout, x.scalar_type());
  const auto sdt = stats_dtype(x.scalar_type());
  at::Tensor mean = at::empty({s.N, s.G}, x.options().dtype(sdt));
  at::Tensor rstd = at::empty({s.N, s.G}, x.options().dtype(sdt));
  if (s.N == 0) return {y, mean, rstd};
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  const at::Tensor wc = w ? w->contiguous() : at::Tensor();
  const at::Tensor bc = b ? b->contiguous() : at::Tensor();
  dispatch_types(x, w, b, [&]<typename T, typename W>() {
    FwdArgs<T, W> args{x.const_data_ptr<T>(),
                       w ? wc.const_data_ptr<W>() : nullptr,
                       b ? bc.const_data_ptr<W>() : nullptr,
                       y.mutable_data_ptr<T>(),
                       mean.mutable_data_ptr<acc_t<T>>(),
                       rstd.mutable_data_ptr<acc_t<T>>(),
                       s,
                       eps,
                       act};
    // With HxW == 1 both layouts are the same memory: the row (NHWC) kernels vectorize
    // across channels instead of running one-element channels.
    if (layout == Layout::ChannelsLast || s.HxW == 1)
      forward_nhwc(args);
    else
      forward_nchw(args);
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& input,
                                                           const at::Tensor& mean, const at::Tensor& rstd,
                                                           const c10::optional<at::Tensor>& weight,
                                                           const c10::optional<at::Tensor>& bias, int64_t num_groups,
                                                           c10::string_view activation, std::array<bool, 3> mask) {
  const GroupNormShape s = check_backward_args(grad_out, input, mean, rstd, weight, bias, num_groups);
  const Activation act = parse_activation(std::string(activation));
  const Layout layout = pick_layout(input);
  const at::Tensor x = to_layout(input, layout);
  const at::Tensor dy = to_layout(grad_out, layout);
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  const bool want_dw = mask[1] && w, want_db = mask[2] && b;
  at::Tensor dx = mask[0] ? empty_in_layout(x, layout, x.scalar_type()) : at::empty({0}, x.options());
  at::Tensor dw = want_dw ? at::empty({s.C}, w->options()) : at::empty({0}, x.options());
  at::Tensor db = want_db ? at::empty({s.C}, b->options()) : at::empty({0}, x.options());
  if (s.N == 0) {
    if (want_dw) dw.zero_();
    if (want_db) db.zero_();
    return {dx, dw, db};
  }
  const at::Tensor wc = w ? w->contiguous() : at::Tensor();
  const at::Tensor bc = b ? b->contiguous() : at::Tensor();
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const auto sdt = stats_dtype(x.scalar_type());
  at::Tensor dw_part = want_dw ? at::empty({s.N, s.C}, x.options().dtype(sdt)) : at::Tensor();
  at::Tensor db_part = want_db ? at::empty({s.N, s.C}, x.options().dtype(sdt)) : at::Tensor();
  if (!mask[0] && !want_dw && !want_db) return {dx, dw, db};
  dispatch_types(x, w, b, [&]<typename T, typename W>() {
    using A = acc_t<T>;
    BwdArgs<T, W> args{dy.const_data_ptr<T>(),
                       x.const_data_ptr<T>(),
                       mean_c.const_data_ptr<A>(),
                       rstd_c.const_data_ptr<A>(),
                       w ? wc.const_data_ptr<W>() : nullptr,
                       b ? bc.const_data_ptr<W>() : nullptr,
                       mask[0] ? dx.mutable_data_ptr<T>() : nullptr,
                       want_dw ? dw_part.mutable_data_ptr<A>() : nullptr,
                       want_db ? db_part.mutable_data_ptr<A>() : nullptr,
                       s,
                       act};
    if (layout == Layout::ChannelsLast || s.HxW == 1)
      backward_nhwc(args);
    else
      backward_nchw(args);
    // dweight / dbias: reduce the (N, C) partials over n in order, parallel over channel
    // ranges. Rows are added whole (contiguous, vectorized): walking one channel down the
    // column strides by C and thrashes L1 sets when C is a large power of two.
    at::parallel_for(0, s.C, 512, [&](int64_t c0, int64_t c1) {
      const int64_t len = c1 - c0;
      std::vector<A> sw(want_dw ? len : 0, A(0)), sb(want_db ? len : 0, A(0));
      for (int64_t n = 0; n < s.N; ++n) {
        if (want_dw) add_vec(sw.data(), args.dw_part + n * s.C + c0, len);
        if (want_db) add_vec(sb.data(), args.db_part + n * s.C + c0, len);
      }
      for (int64_t c = c0; c < c1; ++c) {
        if (want_dw) dw.mutable_data_ptr<W>()[c] = static_cast<W>(sw[c - c0]);
        if (want_db) db.mutable_data_ptr<W>()[c] = static_cast<W>(sb[c - c0]);
      }
    });
  });
  return {dx, dw, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(groupnorm_cuda, CPU, m) {
  m.impl("forward", &forward_cpu);
  m.impl("backward", &backward_cpu);
}

}  // namespace cpu
}  // namespace groupnorm_cuda
