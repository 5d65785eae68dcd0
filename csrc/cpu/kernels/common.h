// Vector I/O of the CPU kernels: Vectorized<acc_t<T>> loads and stores of T memory (half types
// converted in registers), the `walk` loop every elementwise pass is written with, fixed-order
// sums, software prefetch, and the vector forms of the shared activation math
// (common/activation.h). The CUDA counterpart is cuda/kernels/common.cuh.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "common/activation.h"
#include "common/welford.h"

// On the per-chunk loops: inline everything they call. GCC's unit-growth limits otherwise
// leave some per-vector helpers out of line once this translation unit grows (seen with
// perf: VecIO<BFloat16>::store, then at::vec::convert_from_float, called once per vector,
// made the bf16 NCHW forward ~25% slower).
#define GN_HOT __attribute__((flatten))
// The same on per-channel helpers that run once per short channel (NCHW with HxW of a few
// vectors): inlined into the caller's channel loop, no call per channel.
#define GN_HOT_INLINE __attribute__((always_inline, flatten))

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

using at::vec::Vectorized;

constexpr int64_t kPrefetchBytes = 2048;  // NHWC row walks: prefetch distance, bytes ahead

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

// All-ones in the lanes below m, zero in the others (a mask for Vectorized<A>::blendv).
template <typename A>
inline Vectorized<A> lanes_below(int64_t m) {
  return Vectorized<A>::arange(A(0), A(1)) < Vectorized<A>(static_cast<A>(m));
}

// A per-channel coefficient as walk_channels' fv needs it: cur (channel c's) in the lanes
// below m, next (channel c + 1's) in the others; m == K (all lanes in c) costs no blend.
template <typename A>
inline Vectorized<A> lanes_of(int64_t m, A cur, A next) {
  using V = Vectorized<A>;
  return m == V::size() ? V(cur) : V::blendv(V(next), V(cur), lanes_below<A>(m));
}

// Whether the NCHW kernels walk channels of L values as one flat run (walk_channels, below):
// short channels (at most 2048 values, the backward's short_ limit) of at least a vector, in
// float / double. Half types keep the per-channel walk, whose steps are a whole Vectorized<T>
// (two float vectors): with the flat walk's one-vector steps the bf16 NCHW forward of
// 2x320x64x64 / 1x512x128x128 ran at 1.24-1.31x / 1.01-1.23x of ATen's speed instead of
// 1.39-1.59x / 1.26-1.30x, and the bf16 backward of 2x640x24x24 at 1.14-1.26x instead of
// 1.39-1.46x (2 threads, interleaved, Zen 4).
template <typename T>
constexpr bool walk_flat(int64_t L) {
  return std::is_same_v<T, acc_t<T>> && L >= Vectorized<acc_t<T>>::size() && L <= 2048;
}

// `walk` over consecutive channels of one contiguous run, n values in all: the first channel
// has `first` values (it may have begun before the run), every later one L >= K (K: lanes of
// Vectorized<A>). The run is walked as one flat sequence of vectors instead of channel by
// channel, so a short channel (NCHW with HxW of a few vectors: 7x7, 14x14) costs no scalar
// tail and no vector split across cache lines by a channel start that is not line-aligned.
// fv(i, c, m, x...) gets the vector at i: its lanes below m belong to channel c (counted from
// 0), the others to channel c + 1 (m == K: all lanes in c; with L >= K a vector meets at most
// two channels). fs(i, c, x...) gets a value of the scalar tail (the last n % K values). Once
// a channel's last value has been passed to fv or fs, end(c) is called, in channel order; a
// vector that ends channel c and begins c + 1 comes before end(c).
template <typename T, typename FV, typename FS, typename FE, typename... In>
inline void walk_channels(int64_t n, int64_t first, int64_t L, T* out, const FV& fv, const FS& fs, const FE& end,
                          const In*... in) {
  using IO = VecIO<T>;
  using A = acc_t<T>;
  constexpr int64_t K = IO::K;
  int64_t c = 0, c_end = first;  // the current channel and the run offset where it ends
  bool open = false;             // channel c has values passed on and no end(c) yet
  int64_t i = 0;
  for (; i + K <= n; i += K) {
    const int64_t m = std::min<int64_t>(K, c_end - i);
    if constexpr (std::is_void_v<decltype(fv(i, c, m, IO::load1(in + i)...))>) {
      fv(i, c, m, IO::load1(in + i)...);
    } else {
      IO::store1(out + i, fv(i, c, m, IO::load1(in + i)...));
    }
    open = true;
    if (i + K >= c_end) {
      end(c);
      ++c;
      c_end += L;
      open = m < K;  // the lanes from m on began channel c + 1
    }
  }
  for (; i < n; ++i) {
    if (i >= c_end) {
      end(c);
      ++c;
      c_end += L;
    }
    if constexpr (std::is_void_v<decltype(fs(i, c, static_cast<A>(in[i])...))>) {
      fs(i, c, static_cast<A>(in[i])...);
    } else {
      out[i] = static_cast<T>(fs(i, c, static_cast<A>(in[i])...));
    }
    open = true;
  }
  if (open) end(c);
}

// Software prefetch of the n values at p + ahead_bytes (prefetch_ahead: p + kPrefetchBytes),
// one hint per cache line. The NHWC
// kernels walk a unit row by row (C values each); on an Intel VM, with the hardware
// prefetcher alone the reductions' first pass ran ~30% slower than a plain read of the same
// bytes (measured on a 33.5 MB bf16 sample, 2.0 vs 1.6 ms; with the hint they match), and the
// forward's normalization pass over a sample that is not in L2 ~6% slower (where the machine
// gains from it: row_prefetch, next_unit_prefetch in schedule.h). A hint past the end of the
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

// ---- the fused activation (common/activation.h) on vectors and scalars of acc_t<T> ----
// exp(v) for the SiLU of T data. For bf16 / fp16 storage the result is rounded to 8 or 11
// mantissa bits, so at::vec's exp_u20 (about 20 ulp of float, a fraction of the cost of the
// 1-ulp exp) is exact enough; float and double keep exp().
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
  return silu(z, vexp<T>(z.neg()));
}
template <typename A>
inline A silu_scalar(A z) {
  return silu(z, std::exp(-z));
}

// dy * silu'(z).
template <typename T>
inline Vectorized<acc_t<T>> silu_grad_vec(const Vectorized<acc_t<T>>& dy, const Vectorized<acc_t<T>>& z) {
  return silu_grad(dy, z, vexp<T>(z.neg()));
}
template <typename A>
inline A silu_grad_scalar(A dy, A z) {
  return silu_grad(dy, z, std::exp(-z));
}

template <typename W, typename A>
inline A param_at(const W* p, int64_t c, A dflt) {
  return p ? static_cast<A>(p[c]) : dflt;
}

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
