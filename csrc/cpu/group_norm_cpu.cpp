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
// A unit is cut into fixed-size "pieces" (kPieceElems elements, whole rows for NHWC;
// kRowPieceElems in the NHWC forward, whose threads walk four pieces at a time). Partial
// results of pieces are always merged in piece order, whichever thread computed them, so the
// result does not depend on the schedule or the thread count (bitwise deterministic).
// Schedules:
//   fused: units in parallel; one task computes a unit's statistics and then normalizes it
//          (backward: reduces and then writes dx) while the unit is still in L2: the forward
//          moves ~1 read + 1 write of DRAM, the backward ~3 accesses;
//   split: units one after another (so a unit's second pass finds it in L3), pieces of the
//          unit in parallel. Used for units too big for L2 or too few to feed the threads,
//          unless the units divide evenly among the threads and one per thread fits in L3.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/group_norm.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {

using at::vec::Vectorized;

// On the per-chunk loops: inline everything they call. GCC's unit-growth limits otherwise
// leave some per-vector helpers out of line once this translation unit grows (seen with
// perf: VecIO<BFloat16>::store, then at::vec::convert_from_float, called once per vector,
// made the bf16 NCHW forward ~25% slower).
#define GN_HOT __attribute__((flatten))

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int64_t kPieceElems = 16384;         // elements per piece (a multiple of every vector width)
constexpr int64_t kRowPieceElems = 65536;      // NHWC forward: elements per piece (whole rows)
constexpr int64_t kMaxWelfordRows = 4096;       // NHWC forward: rows per piece from kRowPieceElems, at most
constexpr int64_t kFusedUnitBytes = 512 << 10;  // a unit this small stays in a core's L2
constexpr int64_t kFusedL3Bytes = 24 << 20;     // units in flight at once that stay in L3
constexpr int64_t kKeepGradBytes = 1 << 20;     // SiLU backward: a unit's dy' kept for the dx pass
constexpr int64_t kPrefetchBytes = 2048;        // NHWC row walks: prefetch distance, bytes ahead
constexpr int64_t kStatBlockBytes = 16384;      // NHWC statistics: rows walked per channel tile at a time
constexpr int64_t kNextUnitBytes = 64 << 10;    // NCHW fused: a unit this small prefetches the next one
constexpr int kStreams = 4;                     // NHWC forward: pieces one thread walks together

// dst[i] += src[i]
template <typename A>
inline void add_vec(A* dst, const A* src, int64_t n) {
  using V = Vectorized<A>;
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) (V::loadu(dst + i) + V::loadu(src + i)).store(dst + i);
  for (; i < n; ++i) dst[i] += src[i];
}

// Horizontal sum in a fixed shuffle tree (at::vec's reduction: log2(lanes) dependent adds
// in registers): short channels end in one or more of these per channel, so its latency
// matters.
template <typename A>
inline A hsum(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](const Vectorized<A>& x, const Vectorized<A>& y) { return x + y; }, v);
}

// Vectors of the accumulation type read from and written to T memory, converted in
// registers. A step is one Vectorized<T>: kN = 2 vectors of A for half types, else 1.
// Where the build enables AVX512-BF16 (setup.py, on a CPU that has it), float -> bf16 is the
// hardware's round-to-nearest-even conversion (one instruction per 32 values, in place of
// at::vec's ~12 integer operations): the same bits for every normal and zero result; results
// below bf16's smallest normal (~1.2e-38) become zero, and NaNs keep their sign and payload.
// Measured: the 33.5 MB bf16 channels-last forward ~3% faster.
template <typename T>
struct VecIO {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  static constexpr int64_t K = V::size();
  static constexpr bool kHalf = !std::is_same_v<T, A>;
  static constexpr int64_t kN = kHalf ? 2 : 1;
  static constexpr int64_t kStep = kN * K;
  static void load(const T* p, V* v) {
    if constexpr (kHalf) {
      auto [lo, hi] = at::vec::convert_to_float<T>(Vectorized<T>::loadu(p));
      v[0] = lo;
      v[1] = hi;
    } else {
      v[0] = V::loadu(p);
    }
  }
  static void store(T* p, const V* v) {
    if constexpr (kHalf) {
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
      if constexpr (std::is_same_v<T, at::BFloat16>) {
        _mm512_storeu_si512(p, (__m512i)_mm512_cvtne2ps_pbh(v[1], v[0]));
        return;
      }
#endif
      at::vec::convert_from_float<T>(v[0], v[1]).store(p);
    } else {
      v[0].store(p);
    }
  }
  // One vector of A (K values).
  static V load1(const T* p) {
    if constexpr (kHalf) {
      V v;
      at::vec::load_to_float<T>(p, v);
      return v;
    } else {
      return V::loadu(p);
    }
  }
  static void store1(T* p, const V& v) {
    if constexpr (kHalf) {
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
      if constexpr (std::is_same_v<T, at::BFloat16>) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
        return;
      }
#endif
      at::vec::convert_from_float<T>(v, v).store(p, K);
    } else {
      v.store(p);
    }
  }
};

// Walks n values in vector steps: fv(i, x...) gets the K values at i of each input as
// Vectorized<A> (converted in registers), fs(i, x...) the scalar tail. With an output, the
// value returned is stored at out + i (out may be null: nothing stored, fv returns void).
template <typename T, typename FV, typename FS, typename... In>
inline void walk(int64_t n, T* out, const FV& fv, const FS& fs, const In*... in) {
  using IO = VecIO<T>;
  using A = acc_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t K = IO::K;
  int64_t i = 0;
  for (; i + IO::kStep <= n; i += IO::kStep) {
    V x[sizeof...(In)][IO::kN];
    {
      int64_t k = 0;
      ((IO::load(in + i, x[k++])), ...);
    }
    [&]<size_t... J>(std::index_sequence<J...>) {
      if constexpr (std::is_void_v<decltype(fv(i, x[J][0]...))>) {
        for (int64_t j = 0; j < IO::kN; ++j) fv(i + j * K, x[J][j]...);
      } else {
        V y[IO::kN];
        for (int64_t j = 0; j < IO::kN; ++j) y[j] = fv(i + j * K, x[J][j]...);
        IO::store(out + i, y);
      }
    }(std::index_sequence_for<In...>{});
  }
  for (; i + K <= n; i += K) {
    if constexpr (std::is_void_v<decltype(fv(i, IO::load1(in + i)...))>) {
      fv(i, IO::load1(in + i)...);
    } else {
      IO::store1(out + i, fv(i, IO::load1(in + i)...));
    }
  }
  for (; i < n; ++i) {
    if constexpr (std::is_void_v<decltype(fs(i, static_cast<A>(in[i])...))>) {
      fs(i, static_cast<A>(in[i])...);
    } else {
      out[i] = static_cast<T>(fs(i, static_cast<A>(in[i])...));
    }
  }
}

// Software prefetch of the n values at p + ahead_bytes (prefetch_ahead: p + kPrefetchBytes),
// one hint per cache line. The NHWC
// kernels walk a unit row by row (C values each); with the hardware prefetcher alone the
// reductions' first pass ran ~30% slower than a plain read of the same bytes (measured on a
// 33.5 MB bf16 sample, 2.0 vs 1.6 ms; with the hint they match), and the forward's
// normalization pass over a sample that is not in L2 ~6% slower. A hint past the end of the
// tensor is harmless (prefetches never fault); the address is formed as an integer so that
// no out-of-bounds pointer is.
template <typename T>
inline void prefetch_at(const T* p, int64_t ahead_bytes, int64_t n) {
  const uintptr_t q = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(ahead_bytes);
  const uintptr_t bytes = static_cast<uintptr_t>(n) * sizeof(T);
  for (uintptr_t off = 0; off < bytes; off += 64) __builtin_prefetch(reinterpret_cast<const void*>(q + off), 0, 3);
}
template <typename T>
inline void prefetch_ahead(const T* p, int64_t n) {
  prefetch_at(p, kPrefetchBytes, n);
}

// Vectorized sum of n values of A (fixed order).
template <typename A>
inline A sum_vec(const A* p, int64_t n) {
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  if (n < K) {
    A s = 0;
    for (int64_t i = 0; i < n; ++i) s += p[i];
    return s;
  }
  V acc = V::loadu(p);
  int64_t i = K;
  for (; i + K <= n; i += K) acc += V::loadu(p + i);
  A s = hsum(acc);
  for (; i < n; ++i) s += p[i];
  return s;
}

// Vectorized sum of (p[i] - m)^2 over n values (fixed order).
template <typename A>
inline A sum_sq_dev(const A* p, int64_t n, A m) {
  using V = Vectorized<A>;
  constexpr int64_t K = V::size();
  const V vm(m);
  V acc(0);
  int64_t i = 0;
  for (; i + K <= n; i += K) {
    const V d = V::loadu(p + i) - vm;
    acc = at::vec::fmadd(d, d, acc);
  }
  A s = i > 0 ? hsum(acc) : A(0);
  for (; i < n; ++i) s += (p[i] - m) * (p[i] - m);
  return s;
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

// ---------------------------------------------------------------------------------------
// Epilogue: z = (v - sh) * sc + b, then optional SiLU.

// SiLU of a vector of the accumulation type of T. For bf16 / fp16 storage the result is
// rounded to 8 or 11 mantissa bits, so at::vec's exp_u20 (about 20 ulp of float, a
// fraction of the cost of the 1-ulp exp) is exact enough; float and double keep exp().
template <typename T>
inline Vectorized<acc_t<T>> vexp(const Vectorized<acc_t<T>>& v) {
  if constexpr (std::is_same_v<T, at::BFloat16> || std::is_same_v<T, at::Half>) {
    return v.exp_u20();
  } else {
    return v.exp();
  }
}

template <typename T>
inline Vectorized<acc_t<T>> silu_vec(const Vectorized<acc_t<T>>& z) {
  using V = Vectorized<acc_t<T>>;
  return z / (V(1) + vexp<T>(z.neg()));
}

template <typename A>
inline A silu_scalar(A z) {
  return z / (A(1) + std::exp(-z));
}

// y = act((x - sh) * sc + b) over n values of T, converted in registers.
template <typename T>
GN_HOT inline void affine_act(const T* x, T* y, int64_t n, acc_t<T> sh, acc_t<T> sc, acc_t<T> b, Activation act) {
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
  // Also fused when the units divide evenly among the threads and one unit per thread still
  // fits the shared L3: the second pass then re-reads from L3 as in the split schedule, but
  // without two barriers and a serial finish per unit (which cost most when a thread is
  // descheduled on a busy machine, or stalls on a page fault of a fresh output).
  // Splitting such a unit so that each thread's share stays in its own L2 does not pay: the
  // second pass's output (or dx) evicts the share as it goes. Measured, 2 threads, 2 MiB L2,
  // fp32 channels-last with 3.2 MiB samples, interleaved in one process: forward fused 5-7%
  // faster from DRAM, 5% slower when the same input stays in L3; 30% faster with huge pages
  // (THP_MEM_ALLOC_ENABLE=1); backward 10-20% faster.
  s.fused = pieces_per_unit <= 1 || (unit_bytes <= kFusedUnitBytes && units >= 2 * threads) ||
            (units % threads == 0 && unit_bytes * threads <= kFusedL3Bytes);
  return s;
}

// Runs `stats(unit, p0, p1)` over ranges of pieces that cover every piece of a unit, then
// `finish(unit)` once all of them are done, then `apply(unit, p0, p1)` likewise, with the
// schedule above: fused, one call of each per unit covering all its pieces; split, one range
// per thread. The callbacks must merge piece results in piece order (they receive the piece
// indices), which makes the result independent of the schedule and the thread count.
template <typename Stats, typename Finish, typename Apply>
void run_schedule_ranges(const Schedule& s, const Stats& stats, const Finish& finish, const Apply& apply) {
  if (s.units == 0) return;
  const int64_t pieces = s.pieces_per_unit;
  if (s.fused) {
    at::parallel_for(0, s.units, 1, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        stats(u, int64_t{0}, pieces);
        finish(u);
        apply(u, int64_t{0}, pieces);
      }
    });
    return;
  }
  for (int64_t u = 0; u < s.units; ++u) {
    at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) { stats(u, begin, end); });
    finish(u);
    at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) { apply(u, begin, end); });
  }
}

// The same with `stats(unit, piece)` and `apply(unit, piece)` called for one piece at a time,
// in piece order within a range.
template <typename Stats, typename Finish, typename Apply>
void run_schedule(const Schedule& s, const Stats& stats, const Finish& finish, const Apply& apply) {
  run_schedule_ranges(
      s, [&](int64_t u, int64_t p0, int64_t p1) { for (int64_t p = p0; p < p1; ++p) stats(u, p); }, finish,
      [&](int64_t u, int64_t p0, int64_t p1) { for (int64_t p = p0; p < p1; ++p) apply(u, p); });
}

// Pieces [p0, p1) of a unit as kStreams far-apart streams of memory per thread: the pieces
// below `full` (those with the whole rows_per_piece rows) go in groups of kStreams, piece
// p0 + i with p0 + i + q, p0 + i + 2q, ... (q = a quarter of them), passed to
// group(const int64_t* ps); the rest go one at a time to one(p). Why: with one stream per
// thread, memory wait and arithmetic added up in the NHWC forward's passes (its statistics
// pass took 2.1 ms on a 33.5 MB bf16 sample that a plain read covers in 1.6 ms); with four
// streams at once, each prefetched a row ahead, they overlap. Measured, 2 threads, 2-core
// AVX-512 VM, variants switched call by call in one process: statistics pass 2.06 -> 1.67 ms
// (2 streams: 1.76, 8: no better than 4); whole forward 1x128x8x128x128 bf16 channels-last
// 10.29 -> 9.54 ms, 32x256x56x56 fp32 channels-last 26.8 -> 24.7 ms. A plain-C++ read of
// 32 MiB behaves alike here (1 stream 1.24 ms, 4 streams with prefetch 1.11 ms; with
// Welford arithmetic 1.7-2.0 vs 1.1 ms).
template <typename Group, typename One>
void piece_streams(int64_t p0, int64_t p1, int64_t full, const Group& group, const One& one) {
  const int64_t q = std::max<int64_t>(0, std::min(p1, full) - p0) / kStreams;
  int64_t ps[kStreams];
  for (int64_t i = 0; i < q; ++i) {
    for (int k = 0; k < kStreams; ++k) ps[k] = p0 + i + k * q;
    group(static_cast<const int64_t*>(ps));
  }
  for (int64_t p = p0 + kStreams * q; p < p1; ++p) one(p);
}

// Allocator for per-call scratch whose vector loads and stores must not straddle cache lines:
// std::vector's 16-byte-aligned storage made every 64-byte access to the channels-last
// per-channel arrays touch two lines. Measured with these arrays 64-byte aligned
// (interleaved calls, channels-last forward): video VAE bf16 9.47 -> 9.24 and 9.58 -> 9.46 ms,
// 32x256x56x56 fp32 25.79 -> 25.58 ms.
template <typename A>
struct CacheAligned {
  using value_type = A;
  CacheAligned() = default;
  template <typename B>
  CacheAligned(const CacheAligned<B>&) {}
  A* allocate(size_t n) { return static_cast<A*>(::operator new(n * sizeof(A), std::align_val_t(64))); }
  void deallocate(A* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename B>
  bool operator==(const CacheAligned<B>&) const { return true; }
  template <typename B>
  bool operator!=(const CacheAligned<B>&) const { return false; }
};
template <typename A>
using AlignedVec = std::vector<A, CacheAligned<A>>;

// Per-thread scratch: one vector per thread id, grown on demand.
template <typename A>
struct Scratch {
  std::vector<AlignedVec<A>> per_thread;
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
  constexpr int64_t kChunk = 2048;
  // Fused, small units: the normalization pass of a unit (from L1/L2) prefetches the same
  // range of the next unit, whose statistics pass then finds it in cache; without it a
  // thread reads DRAM only during statistics passes. Measured, fp32, G = 32, 2 threads,
  // interleaved calls: forward 32x2048x7x7 (12 KiB units) 1.58 -> 1.31 ms, 32x1024x14x14 (24
  // KiB) 3.15 -> 2.63 ms, 8x512x32x32 (64 KiB) 1.85 -> 1.55 ms, 32x512x28x28 (49 KiB) -3%;
  // larger units lost: 32x256x56x56 (98 KiB) +2%, 1x512x128x128 (1 MiB) +8%.
  const bool next_unit = sched.fused && M * static_cast<int64_t>(sizeof(T)) <= kNextUnitBytes;

  auto piece_moments = [&](int64_t u, int64_t p) {
    const T* xg = a.x + u * M;
    const A sh = static_cast<A>(xg[0]);
    Moments<A> acc;
    const int64_t end = std::min(M, (p + 1) * kPieceElems);
    for (int64_t i = p * kPieceElems; i < end; i += kChunk) {
      const int64_t n = std::min(kChunk, end - i);
      chan_merge(acc, chunk_moments(xg + i, n, sh));
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
    const int64_t end = std::min(M, (p + 1) * kPieceElems);
    for (int64_t i = p * kPieceElems; i < end;) {
      // A run within one channel: y = (x - sh) * sc + (b - m * sc).
      const int64_t c = g * D + i / HxW;
      const int64_t run_end = std::min(end, (i / HxW + 1) * HxW);
      const A sc = rstd * param_at(a.w, c, A(1));
      const A bb = param_at(a.b, c, A(0)) - m * sc;
      if (next_unit) prefetch_at(xg + i, M * static_cast<int64_t>(sizeof(T)), run_end - i);
      affine_act(xg + i, yg + i, run_end - i, sh, sc, bb, a.act);
      i = run_end;
    }
  };
  run_schedule(sched, stats, finish, apply);
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

// The NHWC loops walk rows in memory order (hardware prefetch keeps up; a column walk across
// rows does not) with per-channel accumulators and coefficients in L1 arrays, and convert half
// types in registers (VecIO). The forward statistics walk a block of rows in L1 per channel
// tile instead (welford_rows; its first tile prefetches each row ahead), and the forward's
// two passes walk four pieces at a time per thread (piece_streams).

// Per-channel scratch of one unit (sample) in the NHWC kernels. A fused task owns one slot
// per thread; the split schedule uses slot 0, filled by finish() before the parallel apply.
// Slots start on a cache line, and so do the arrays in a slot when C fills whole lines.
template <typename A>
struct ChannelSlots {
  int64_t width;  // a slot's values, rounded up to whole cache lines
  AlignedVec<A> data;
  ChannelSlots(int64_t arrays, int64_t C)
      : width((arrays * C * static_cast<int64_t>(sizeof(A)) + 63) / 64 * 64 / static_cast<int64_t>(sizeof(A))),
        data((at::get_num_threads() + 1) * width) {}
  A* slot(bool fused) { return data.data() + (fused ? at::get_thread_num() : 0) * width; }
};

// Weight and bias of C channels in the accumulation type (1 and 0 when absent), so that
// per-channel coefficients are computed with vector loops.
template <typename W, typename A>
inline std::vector<A> params_acc(const W* p, int64_t C, A dflt) {
  std::vector<A> out(C, dflt);
  if (p)
    for (int64_t c = 0; c < C; ++c) out[c] = static_cast<A>(p[c]);
  return out;
}

template <typename T, typename W>
void forward_nhwc(const FwdArgs<T, W>& a) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const auto& s = a.s;
  const int64_t C = s.C, G = s.G, D = s.D(), HxW = s.HxW;
  // Pieces of up to four times kPieceElems: each piece-group costs a per-channel set-up and a
  // G-group merge, each piece a Chan merge per group in finish(). Measured (interleaved calls,
  // 2 threads): 16384 -> 65536 elements, forward 1x128x8x128x128 bf16 9.74 -> 9.47 ms,
  // 32x256x56x56 fp32 24.96 -> 24.54 ms, 2x320x64x64 fp32 0.714 -> 0.679 ms (all channels-last).
  // At most kMaxWelfordRows rows, though, unless kPieceElems / C is more: a channel's running
  // mean takes one rounded update per row, and 16384-row pieces (C = 4) doubled the fp32
  // dweight error of 4096-row ones (4.4e-6 against PyTorch's 1.4e-6).
  const int64_t rows_per_piece =
      std::max<int64_t>({int64_t{1}, kPieceElems / C, std::min(kRowPieceElems / C, kMaxWelfordRows)});
  const int64_t pieces = (HxW + rows_per_piece - 1) / rows_per_piece;
  const Schedule sched = make_schedule(s.N, pieces, HxW * C * static_cast<int64_t>(sizeof(T)));

  std::vector<Moments<A>> partial(sched.fused ? 0 : pieces * G);
  std::vector<Moments<A>> moments(s.N * G);
  ChannelSlots<A> chans(3, C);  // shift, scale, bias per channel
  Scratch<A> scratch;
  const std::vector<A> wv = params_acc(a.w, C, A(1)), bv = params_acc(a.b, C, A(0));

  // Welford weights 1 / k of a piece's k-th row (one division per row of a piece, per call).
  std::vector<A> inv_rows(std::min(rows_per_piece, HxW));
  for (size_t k = 0; k < inv_rows.size(); ++k) inv_rows[k] = A(1) / static_cast<A>(k + 1);
  const int64_t full_pieces = HxW / rows_per_piece;  // pieces with all rows_per_piece rows
  auto fill_shift = [&](const T* xs, A* sh) {  // the group's first element (row 0)
    for (int64_t g = 0; g < G; ++g) std::fill(sh + g * D, sh + (g + 1) * D, static_cast<A>(xs[g * D]));
  };
  // Moments of the G groups over the rows of kS pieces ps[0..kS) of sample n (with the same
  // number of rows), walked together, into out[k][0..G): a per-channel Welford update per row on
  // the shifted data (every channel has seen the same number of rows, so the update weight 1/k
  // is a scalar), then the D channels of a group (equal counts) are merged. The rows go in
  // blocks of about kStatBlockBytes over all streams, which welford_streams walks either once
  // per channel tile (re-reads from L1) with the tile's running mean and M2 in registers, or
  // row by row with them in L1. The result of a piece is the same whether it went alone or with
  // others, and whichever walk it got.
  auto pieces_moments = [&](auto streams, int64_t n, const int64_t* ps, Moments<A>* const* out) {
    constexpr int kS = decltype(streams)::value;
    const int64_t r0 = ps[0] * rows_per_piece, seen = std::min(HxW, r0 + rows_per_piece) - r0;
    const int64_t block_rows =
        std::max<int64_t>(1, kStatBlockBytes / (kS * C * static_cast<int64_t>(sizeof(T))));
    const T* xs = a.x + n * HxW * C;
    A* sh = scratch.get((1 + 2 * kS) * C);
    fill_shift(xs, sh);
    std::fill(sh + C, sh + (1 + 2 * kS) * C, A(0));
    const T* xb[kS];
    A* cmean[kS];  // per-channel moments of the rows seen so far
    A* cm2[kS];
    for (int k = 0; k < kS; ++k) {
      cmean[k] = sh + (1 + 2 * k) * C;
      cm2[k] = cmean[k] + C;
    }
    for (int64_t rb = 0; rb < seen; rb += block_rows) {
      const int64_t rows = std::min(block_rows, seen - rb);
      for (int k = 0; k < kS; ++k) xb[k] = xs + (ps[k] * rows_per_piece + rb) * C;
      welford_streams<kS>(xb, rows, C, sh, inv_rows.data() + rb, cmean, cm2);
    }
    // Groups: D channels of `seen` rows each.
    const A inv_d = A(1) / static_cast<A>(D);
    for (int k = 0; k < kS; ++k)
      for (int64_t g = 0; g < G; ++g) {
        const A* gm = cmean[k] + g * D;
        Moments<A> m;
        m.n = seen * D;
        m.mean = sum_vec(gm, D) * inv_d;
        m.m2 = sum_vec(cm2[k] + g * D, D) + static_cast<A>(seen) * sum_sq_dev(gm, D, m.mean);
        out[k][g] = m;
      }
  };
  // Pieces [p0, p1) of sample n into out[(p - p0) * G ...], as streams (piece_streams).
  auto range_moments = [&](int64_t n, int64_t p0, int64_t p1, Moments<A>* out) {
    piece_streams(
        p0, p1, full_pieces,
        [&](const int64_t* ps) {
          Moments<A>* outs[kStreams];
          for (int k = 0; k < kStreams; ++k) outs[k] = out + (ps[k] - p0) * G;
          pieces_moments(std::integral_constant<int, kStreams>{}, n, ps, outs);
        },
        [&](int64_t p) {
          Moments<A>* o = out + (p - p0) * G;
          pieces_moments(std::integral_constant<int, 1>{}, n, &p, &o);
        });
  };
  Scratch<Moments<A>> unit_partial;  // fused: one unit's per-piece moments per thread
  auto stats = [&](int64_t n, int64_t p0, int64_t p1) {
    Moments<A>* part = sched.fused ? unit_partial.get(pieces * G) : partial.data();
    range_moments(n, p0, p1, part + p0 * G);
    if (sched.fused) {  // merged in piece order, as finish() does for the split schedule
      Moments<A>* row = moments.data() + n * G;
      std::fill(row, row + G, Moments<A>{});
      for (int64_t p = 0; p < pieces; ++p)
        for (int64_t g = 0; g < G; ++g) chan_merge(row[g], part[p * G + g]);
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
      const A m = row[g].mean;
      a.mean[n * G + g] = shift + m;
      a.rstd[n * G + g] = rstd;
      const int64_t c0 = g * D;
      std::fill(sh + c0, sh + c0 + D, shift);
      walk<A>(
          D, sc + c0, [&](int64_t d, const V& w) { return w * V(rstd); }, [&](int64_t, A w) { return w * rstd; },
          wv.data() + c0);
      walk<A>(
          D, bb + c0, [&](int64_t d, const V& b) { return b - V(m) * V::loadu(sc + c0 + d); },
          [&](int64_t d, A b) { return b - m * sc[c0 + d]; }, bv.data() + c0);
    }
  };
  const bool silu = a.act == Activation::SiLU;
  // Rows of kS pieces of sample n, taken in turn (row k of each piece, then row k + 1).
  auto apply_pieces = [&](int64_t n, const int64_t* ps, int kS) {
    const T* xs = a.x + n * HxW * C;
    T* ys = a.y + n * HxW * C;
    const A* ch = chans.slot(sched.fused);
    const A *sh = ch, *sc = ch + C, *bb = ch + 2 * C;
    const int64_t rows = std::min(HxW, ps[0] * rows_per_piece + rows_per_piece) - ps[0] * rows_per_piece;
    for (int64_t i = 0; i < rows; ++i)
      for (int k = 0; k < kS; ++k) {
        const int64_t r = ps[k] * rows_per_piece + i;
        prefetch_ahead(xs + r * C, C);
        if (silu) {
          walk<T>(
              C, ys + r * C,
              [&](int64_t c, const V& x) {
                return silu_vec<T>(at::vec::fmadd(x - V::loadu(sh + c), V::loadu(sc + c), V::loadu(bb + c)));
              },
              [&](int64_t c, A x) { return silu_scalar((x - sh[c]) * sc[c] + bb[c]); }, xs + r * C);
        } else {
          walk<T>(
              C, ys + r * C,
              [&](int64_t c, const V& x) { return at::vec::fmadd(x - V::loadu(sh + c), V::loadu(sc + c), V::loadu(bb + c)); },
              [&](int64_t c, A x) { return (x - sh[c]) * sc[c] + bb[c]; }, xs + r * C);
        }
      }
  };
  auto apply = [&](int64_t n, int64_t p0, int64_t p1) {
    piece_streams(
        p0, p1, full_pieces, [&](const int64_t* ps) { apply_pieces(n, ps, kStreams); },
        [&](int64_t p) { apply_pieces(n, &p, 1); });
  };
  run_schedule_ranges(sched, stats, finish, apply);
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
template <typename T>
inline Vectorized<acc_t<T>> silu_grad_vec(const Vectorized<acc_t<T>>& dy, const Vectorized<acc_t<T>>& z) {
  using V = Vectorized<acc_t<T>>;
  const V sig = V(1) / (V(1) + vexp<T>(z.neg()));
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

// Sums over n values of one channel (u = x - mu), read as T and converted in registers.
// With SiLU, z = u * zc.zs + zc.zb, and dy' is also stored to g_out when it is not null.
// e is accumulated in the same order with and without only_e (the SiLU pre-pass relies on
// getting the same bits).
template <typename T>
GN_HOT inline ChanSums<acc_t<T>> channel_sums(const T* dy, const T* x, int64_t n, acc_t<T> mu, bool silu,
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
GN_HOT inline void channel_dx(const T* dy, const T* x, T* out, int64_t n, acc_t<T> mu, acc_t<T> c1, acc_t<T> c2,
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
GN_HOT inline void channel_dx_kept(const acc_t<T>* g, const T* x, T* out, int64_t n, acc_t<T> mu, acc_t<T> c1,
                            acc_t<T> c2, acc_t<T> c3) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const V vmu(mu), v1(c1), v2(c2), v3(c3);
  walk<T>(
      n, out,
      [&](int64_t i, const V& v) { return at::vec::fmadd(v1, V::loadu(g + i), at::vec::fmadd(v2, v - vmu, v3)); },
      [&](int64_t i, A v) { return c1 * g[i] + (c2 * (v - mu) + c3); }, x);
}

// Per-group result of the reduction, turned into dx coefficients.
template <typename A>
struct GroupCoef {
  A r = 0;   // sum(u) / M: rounding error of the saved mean
  A c2 = 0;  // dx = rho * w * dy' + c2 * u + c3
  A c3 = 0;
};

// Given per-channel sums of one group (D channels of sample n, as three arrays a, bs, e),
// writes the dweight/dbias partials and returns the dx coefficients. wv: the weight in the
// accumulation type (params_acc). Vector loops over the channels.
template <typename T, typename W>
GroupCoef<acc_t<T>> finish_group(const BwdArgs<T, W>& a, int64_t n, int64_t g, const acc_t<T>* sa,
                                 const acc_t<T>* sb, const acc_t<T>* se, const acc_t<T>* wv) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const auto& s = a.s;
  const int64_t D = s.D();
  const A M = static_cast<A>(s.M());
  const A rho = a.rstd[n * s.G + g];
  GroupCoef<A> gc;
  gc.r = sum_vec(se, D) / M;
  const A* w = wv + g * D;
  A* dw = a.dw_part ? a.dw_part + n * s.C + g * D : nullptr;
  A* db = a.db_part ? a.db_part + n * s.C + g * D : nullptr;
  V vA(0), vB(0);
  A Asum = 0, Bsum = 0;
  walk<A>(
      D, nullptr,
      [&](int64_t d, const V& va, const V& vb) {
        const V dyxhat = V(rho) * (vb - V(gc.r) * va);
        const V vw = V::loadu(w + d);
        vA = at::vec::fmadd(vw, dyxhat, vA);
        vB = at::vec::fmadd(vw, va, vB);
        if (dw) dyxhat.store(dw + d);
        if (db) va.store(db + d);
      },
      [&](int64_t d, A va, A vb) {
        const A dyxhat = rho * (vb - gc.r * va);
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
  // SiLU, fused schedule (one thread runs a whole unit): the r pre-pass runs per unit just
  // before its reduction, while the unit is cache-hot, and when the unit's dy' is at most
  // kKeepGradBytes the reduction keeps it (per-thread scratch) for the dx pass instead of
  // evaluating the sigmoid a second time.
  const bool pre_in_unit = silu && sched.fused;
  const bool keep_g = pre_in_unit && a.dx && M * static_cast<int64_t>(sizeof(A)) <= kKeepGradBytes;
  // Fused, small units: the dx pass of a unit prefetches the same range of the next unit's x
  // and dy (as forward_nchw does). Measured as there: 32x2048x7x7 2.50 -> 2.39 ms,
  // 32x1024x14x14 3.98 -> 3.70 ms, 8x512x32x32 2.39 -> 2.24 ms.
  const bool next_unit = sched.fused && M * static_cast<int64_t>(sizeof(T)) <= kNextUnitBytes;

  std::vector<ChanSums<A>> partial(direct ? 0 : pieces);
  std::vector<ChanSums<A>> sums(units * D);                // a, bs, e per (n, c)
  std::vector<ChanSums<A>> esums(silu ? units * D : 0);    // SiLU pre-pass: e per (n, c)
  std::vector<A> r_silu(silu ? units : 0);
  std::vector<GroupCoef<A>> coef(units);
  Scratch<A> scratch;
  Scratch<A> kept;  // keep_g: dy' of the unit a thread is working on, M values
  const std::vector<A> wv = params_acc(a.w, s.C, A(1));

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
    A* g_out = keep_g && !only_e ? kept.get(M) + d * HxW : nullptr;
    ChanSums<A> acc;
    for (int64_t h = h0; h < h1; h += kChunk) {  // chunked: shorter float sums
      const int64_t cnt = std::min(kChunk, h1 - h);
      acc.add(channel_sums(a.dy + off + h, a.x + off + h, cnt, mu, silu, zc, only_e, g_out ? g_out + h : nullptr));
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
  // SiLU: r per group, needed by z before the main reduction.
  auto pre_stats = make_stats(esums, true);
  auto pre_finish = [&](int64_t u) {
    merge(esums, u);
    // r exactly as finish_group computes it from the same e sums (same summation), so the z
    // of the reduction (and of a kept dy') equals the z of a recomputing dx pass bit for bit:
    // dx must not depend on whether dy' was kept, i.e. on the schedule.
    A* se = scratch.get(D);
    for (int64_t d = 0; d < D; ++d) se[d] = esums[u * D + d].e;
    r_silu[u] = sum_vec(se, D) / static_cast<A>(M);
  };
  if (silu && !pre_in_unit) run_schedule(sched, pre_stats, pre_finish, [](int64_t, int64_t) {});
  auto main_stats = make_stats(sums, false);
  auto stats = [&](int64_t u, int64_t p) {
    if (pre_in_unit && p == 0) {
      for (int64_t q = 0; q < pieces; ++q) pre_stats(u, q);
      pre_finish(u);
    }
    main_stats(u, p);
  };
  auto finish = [&](int64_t u) {
    merge(sums, u);
    // With SiLU the e sums equal the pre-pass ones bit for bit, and finish_group sums them
    // as pre_finish did, so coef[u].r == r_silu[u].
    A* soa = scratch.get(3 * D);
    for (int64_t d = 0; d < D; ++d) {
      const ChanSums<A>& cs = sums[u * D + d];
      soa[d] = cs.a;
      soa[D + d] = cs.bs;
      soa[2 * D + d] = cs.e;
    }
    coef[u] = finish_group(a, u / s.G, u % s.G, soa, soa + D, soa + 2 * D, wv.data());
  };
  auto apply = [&](int64_t u, int64_t p) {
    if (!a.dx) return;
    const int64_t n = u / s.G, g = u % s.G;
    const A mu = a.mean[u];
    for_segments(p, [&](int64_t d, int64_t h0, int64_t h1, bool) {
      const int64_t c = g * D + d;
      const int64_t off = u * M + d * HxW + h0;
      const A c1 = a.rstd[u] * param_at(a.w, c, A(1));
      if (next_unit) {
        prefetch_at(a.x + off, M * static_cast<int64_t>(sizeof(T)), h1 - h0);
        if (!keep_g) prefetch_at(a.dy + off, M * static_cast<int64_t>(sizeof(T)), h1 - h0);
      }
      if (keep_g) {
        channel_dx_kept(kept.get(M) + d * HxW + h0, a.x + off, a.dx + off, h1 - h0, mu, c1, coef[u].c2, coef[u].c3);
        return;
      }
      const ZCoef<A> zc = silu ? z_coef(a, n, c, coef[u].r) : ZCoef<A>{};
      channel_dx(a.dy + off, a.x + off, a.dx + off, h1 - h0, mu, c1, coef[u].c2, coef[u].c3, silu, zc);
    });
  };
  run_schedule(sched, stats, finish, apply);
}

template <typename T, typename W>
void backward_nhwc(const BwdArgs<T, W>& a) {
  using A = acc_t<T>;
  using V = Vectorized<A>;
  const auto& s = a.s;
  const int64_t C = s.C, G = s.G, D = s.D(), HxW = s.HxW;
  const bool silu = a.act == Activation::SiLU;
  const int64_t rows_per_piece = std::max<int64_t>(1, kPieceElems / C);
  const int64_t pieces = (HxW + rows_per_piece - 1) / rows_per_piece;
  const Schedule sched = make_schedule(s.N, pieces, 2 * HxW * C * static_cast<int64_t>(sizeof(T)));

  // Per-channel sums of a unit, three arrays of C: a, bs, e (partials per piece when split).
  std::vector<A> partial(sched.fused ? 0 : pieces * 3 * C);
  // Per-channel arrays of the unit being processed: sums (3), mu, zs, zb, c1, c2, c3.
  ChannelSlots<A> chans(9, C);
  Scratch<A> scratch;
  const std::vector<A> wv = params_acc(a.w, C, A(1));
  enum { kSums = 0, kMu = 3, kZs = 4, kZb = 5, kC1 = 6, kC2 = 7, kC3 = 8 };

  auto init_unit = [&](int64_t n, A* ch) {
    A* mu = ch + kMu * C;
    for (int64_t g = 0; g < G; ++g) std::fill(mu + g * D, mu + (g + 1) * D, a.mean[n * G + g]);
  };
  // phase 0: e only (SiLU pre-pass); phase 1: a, bs, e (SiLU: z from the pre-pass r). Rows
  // are walked in memory order, converted in registers, with per-channel sums in L1 arrays.
  auto piece_sums = [&](int64_t n, int64_t p, int phase, const A* ch, A* out /* 3*C */) {
    const int64_t r0 = p * rows_per_piece, r1 = std::min(HxW, r0 + rows_per_piece);
    const int64_t base = n * HxW * C;
    const A *mu = ch + kMu * C, *zs = ch + kZs * C, *zb = ch + kZb * C;
    A *oa = out, *ob = out + C, *oe = out + 2 * C;
    std::fill(out, out + 3 * C, A(0));
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = a.x + base + r * C;
      prefetch_ahead(xr, C);
      if (phase == 0) {
        walk<T>(
            C, nullptr,
            [&](int64_t c, const V& x) { (V::loadu(oe + c) + (x - V::loadu(mu + c))).store(oe + c); },
            [&](int64_t c, A x) { oe[c] += x - mu[c]; }, xr);
        continue;
      }
      prefetch_ahead(a.dy + base + r * C, C);
      walk<T>(
          C, nullptr,
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
          xr, a.dy + base + r * C);
    }
  };
  // One reduction pass over unit n into the slot's sums, pieces merged in piece order.
  auto sums_pass = [&](int64_t n, int phase, A* ch) {
    A* sums = ch + kSums * C;
    std::fill(sums, sums + 3 * C, A(0));
    if (pieces == 1) {
      piece_sums(n, 0, phase, ch, sums);
    } else if (sched.fused) {
      A* tmp = scratch.get(3 * C);
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
    return sum_vec(ch + 2 * C + g * D, D) / static_cast<A>(s.M());
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
    for (int64_t g = 0; g < G; ++g) {
      const int64_t c0 = g * D;
      const GroupCoef<A> gc = finish_group(a, n, g, ch + c0, ch + C + c0, ch + 2 * C + c0, wv.data());
      const A rho = a.rstd[n * G + g];
      walk<A>(
          D, ch + kC1 * C + c0, [&](int64_t, const V& w) { return w * V(rho); }, [&](int64_t, A w) { return w * rho; },
          wv.data() + c0);
      std::fill(ch + kC2 * C + c0, ch + kC2 * C + c0 + D, gc.c2);
      std::fill(ch + kC3 * C + c0, ch + kC3 * C + c0 + D, gc.c3);
    }
  };
  auto apply = [&](int64_t n, int64_t p) {
    if (!a.dx) return;
    const int64_t r0 = p * rows_per_piece, r1 = std::min(HxW, r0 + rows_per_piece);
    const int64_t base = n * HxW * C;
    const A* ch = chans.slot(sched.fused);
    const A *mu = ch + kMu * C, *zs = ch + kZs * C, *zb = ch + kZb * C;
    const A *c1 = ch + kC1 * C, *c2 = ch + kC2 * C, *c3 = ch + kC3 * C;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = base + r * C;
      walk<T>(
          C, a.dx + off,
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
          a.x + off, a.dy + off);
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

#undef GN_HOT

}  // namespace

TORCH_LIBRARY_IMPL(groupnorm_cuda, CPU, m) {
  m.impl("forward", &forward_cpu);
  m.impl("backward", &backward_cpu);
}

}  // namespace cpu
}  // namespace groupnorm_cuda
