// Device helpers shared by the forward and backward kernels: accumulation type, conversions,
// math, vector loads, Welford/Chan merges, the 2-D walk over a group.
// Portable CUDA only (see launch.cuh and csrc/README.md): no atomics, no intrinsics beyond
// the math helpers below, shuffles with explicit full masks.
#pragma once

#include <type_traits>

#include <cstdint>
#include <cmath>
#include <cstring>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "common/activation.h"
#include "common/welford.h"
#include "cuda/kernels/launch.cuh"

namespace groupnorm_cuda {
namespace kernels {

// acc_t (common/welford.h): double for double, float otherwise.

__host__ __device__ inline float to_acc(float v) { return v; }
__host__ __device__ inline double to_acc(double v) { return v; }
__device__ inline float to_acc(__half v) { return __half2float(v); }
__device__ inline float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> struct FromAcc;
template <> struct FromAcc<float> { __device__ static float cvt(float v) { return v; } };
template <> struct FromAcc<double> { __device__ static double cvt(double v) { return v; } };
template <> struct FromAcc<__half> { __device__ static __half cvt(float v) { return __float2half(v); } };
template <> struct FromAcc<__nv_bfloat16> {
  __device__ static __nv_bfloat16 cvt(float v) { return __float2bfloat16(v); }
};
template <typename T, typename A> __device__ inline T from_acc(A v) { return FromAcc<T>::cvt(v); }

// ---- math (device intrinsics on the GPU, std:: on the host emulator) ----
__device__ inline float gn_rsqrt(float v) {
#if defined(__CUDA_ARCH__)
  return rsqrtf(v);
#else
  return 1.0f / std::sqrt(v);
#endif
}
__device__ inline double gn_rsqrt(double v) {
#if defined(__CUDA_ARCH__)
  return rsqrt(v);
#else
  return 1.0 / std::sqrt(v);
#endif
}
__device__ inline float gn_exp(float v) {
#if defined(__CUDA_ARCH__)
  return __expf(v);
#else
  return std::exp(v);
#endif
}
__device__ inline double gn_exp(double v) { return std::exp(v); }
// a / b where b > 0 (Welford weights).
__device__ inline float gn_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdividef(a, b);
#else
  return a / b;
#endif
}
__device__ inline double gn_div(double a, double b) { return a / b; }
// The fused activation (common/activation.h) with the device exponential.
template <typename A> __device__ inline A gn_silu(A z) { return silu(z, gn_exp(-z)); }
template <typename A> __device__ inline A gn_silu_grad(A dy, A z) { return silu_grad(dy, z, gn_exp(-z)); }

// ---- warp shuffles (full 32-lane warp, explicit mask) ----
constexpr unsigned kFullMask = 0xffffffffu;
template <typename A> __device__ inline A shfl_xor(A v, int lane_mask) {
  return __shfl_xor_sync(kFullMask, v, lane_mask);
}

// ---- vectors: V elements of T in one aligned load/store (16 bytes when V = 16/sizeof(T)) ----
// A float vector of a 16-bit input's width (8 elements, 32 bytes: the float32 y and dy of
// autocast's output, FwdParams / BwdParams' O) is accessed as two 16-byte halves, so 16 bytes
// is the most any vector needs aligned to.
template <typename T, int V> struct alignas(sizeof(T) * V < 16 ? sizeof(T) * V : 16) Vec { T v[V]; };
template <typename T, int V> constexpr bool kWideVec = sizeof(Vec<T, V>) > 16;

// A vector's bytes as one integer type, so that a load is one instruction: nvcc copies an
// aggregate like Vec member by member (a bf16 tile read back as eight LDS.U16).
template <int Bytes> struct RawBits;
template <> struct RawBits<16> { using type = uint4; };
template <> struct RawBits<8> { using type = uint2; };
template <> struct RawBits<4> { using type = unsigned int; };
template <> struct RawBits<2> { using type = unsigned short; };
template <typename T, int V> using raw_t = typename RawBits<static_cast<int>(sizeof(T)) * V>::type;

// Global memory, p + off aligned to the vector. Loads come out as one LDG.E.128 (two for a
// wide vector).
template <typename T, int V> __device__ inline Vec<T, V> load_vec(const T* __restrict__ p, int64_t off) {
  Vec<T, V> v;
  if constexpr (kWideVec<T, V>) {
    const Vec<T, V / 2> half[2] = {load_vec<T, V / 2>(p, off), load_vec<T, V / 2>(p, off + V / 2)};
    memcpy(&v, half, sizeof(v));
  } else {
    const raw_t<T, V> r = *reinterpret_cast<const raw_t<T, V>*>(p + off);
    memcpy(&v, &r, sizeof(v));
  }
  return v;
}
// Stores of 16 bytes are written as one st.global.v4: from C++ (an aggregate, or even a uint4
// filled by memcpy) nvcc emitted four 4-byte STG.E (tools/check_sass.py checks this). A wider
// vector (a float output of a 16-bit input's 8 elements, FwdParams' O) is two such stores:
// p + off is aligned to the input's vector, so to 32 bytes of the output.
template <typename T, int V> __device__ inline void store_vec(T* __restrict__ p, int64_t off, const Vec<T, V>& v) {
  if constexpr (kWideVec<T, V>) {
    constexpr int H = V / 2;
    Vec<T, H> half[2];
    memcpy(half, &v, sizeof(v));
    store_vec<T, H>(p, off, half[0]);
    store_vec<T, H>(p, off + H, half[1]);
  } else {
#if defined(__CUDA_ARCH__)
    if constexpr (sizeof(Vec<T, V>) == 16) {
      uint32_t w[4];
      memcpy(w, &v, 16);
      asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p + off), "r"(w[0]), "r"(w[1]), "r"(w[2]),
                   "r"(w[3]));
      return;
    }
#endif
    raw_t<T, V> r;
    memcpy(&r, &v, sizeof(r));
    *reinterpret_cast<raw_t<T, V>*>(p + off) = r;
  }
}

// Bytes in flight: the on-chip kernels stream a group from global memory in batches of
// kLoadBatch vectors per thread (per tensor), every load of a batch issued before the first is
// used. A single-group CTA can be the only one on its SM (the shared-memory opt-in), and one
// 16-byte load per thread in flight is far from what the memory system needs to run at full
// bandwidth. The order in which the loaded values are used, and so every sum, is unchanged.
// Four vectors for float, two for the 16-bit types (8 elements per vector), one for double:
// larger batches do not fit gn_fwd_onchip's 64 registers without spills (tools/check_ptxas.py).
template <typename T>
constexpr int kLoadBatch = std::is_same<T, float>::value ? 4 : std::is_same<T, double>::value ? 1 : 2;

// Element e of a shared-memory tile of vectors. Writes are one STS.128 from C++; reads of 16
// bytes are one ld.shared.v4 (the "memory" clobber keeps them after this thread's writes). A
// wide vector is two 16-byte elements of the same tile seen as halves.
template <typename T, int V> __device__ inline void store_tile(Vec<T, V>* tile, int64_t e, const Vec<T, V>& v) {
  if constexpr (kWideVec<T, V>) {
    Vec<T, V / 2> half[2];
    memcpy(half, &v, sizeof(v));
    Vec<T, V / 2>* t = reinterpret_cast<Vec<T, V / 2>*>(tile);
    store_tile<T, V / 2>(t, 2 * e, half[0]);
    store_tile<T, V / 2>(t, 2 * e + 1, half[1]);
  } else {
    tile[e] = v;
  }
}
template <typename T, int V> __device__ inline Vec<T, V> load_tile(const Vec<T, V>* tile, int64_t e) {
  if constexpr (kWideVec<T, V>) {
    const Vec<T, V / 2>* t = reinterpret_cast<const Vec<T, V / 2>*>(tile);
    const Vec<T, V / 2> half[2] = {load_tile<T, V / 2>(t, 2 * e), load_tile<T, V / 2>(t, 2 * e + 1)};
    Vec<T, V> v;
    memcpy(&v, half, sizeof(v));
    return v;
  }
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(Vec<T, V>) == 16) {
    uint32_t w[4];
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                 : "r"(static_cast<unsigned>(__cvta_generic_to_shared(tile + e)))
                 : "memory");
    Vec<T, V> v;
    memcpy(&v, w, 16);
    return v;
  }
#endif
  return tile[e];
}

// ---- Welford / Chan merges ----
template <typename A> struct Welford {
  A n, mean, m2;
};
template <typename A> __device__ inline Welford<A> welford_zero() {
  Welford<A> w;
  w.n = A(0); w.mean = A(0); w.m2 = A(0);
  return w;
}
// Chan et al. merge of (nb, mb, m2b) into a (common/welford.h), f = nb / n by the fast
// division. Zero counts are allowed on either side.
template <typename A> __device__ inline void welford_merge(Welford<A>& a, A nb, A mb, A m2b) {
  const A n = a.n + nb;
  if (nb == A(0)) return;
  chan_combine(a.mean, a.m2, a.n, mb, m2b, gn_div(nb, n));
  a.n = n;
}
// Adds V shifted values d[] (one vector) to a thread's state: local two-pass then Chan merge.
template <typename A, int V> __device__ inline void welford_add_vec(Welford<A>& a, const A (&d)[V]) {
  A sum = A(0);
#pragma unroll
  for (int j = 0; j < V; ++j) sum += d[j];
  const A mv = sum * (A(1) / A(V));
  A m2v = A(0);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const A t = d[j] - mv;
    m2v += t * t;
  }
  welford_merge(a, A(V), mv, m2v);
}
// Adds the vector v shifted by s.
template <typename T, int V>
__device__ inline void accumulate_vec(Welford<acc_t<T>>& st, const Vec<T, V>& v, acc_t<T> s) {
  using A = acc_t<T>;
  A d[V];
#pragma unroll
  for (int j = 0; j < V; ++j) d[j] = to_acc(v.v[j]) - s;
  welford_add_vec<A, V>(st, d);
}

// Butterfly merge over the whole warp: every lane ends with the warp total (fixed order).
template <typename A> __device__ inline void warp_welford(Welford<A>& a) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    const A nb = shfl_xor(a.n, off);
    const A mb = shfl_xor(a.mean, off);
    const A m2b = shfl_xor(a.m2, off);
    welford_merge(a, nb, mb, m2b);
  }
}
// Merge across the threads of one group: a group is `tpg` consecutive threads (tpg a
// multiple of 32), a block holds blockDim.x / tpg groups. `red` is a [3][32] shared array of
// the calling kernel. Every thread of the group ends with the group total (same bits).
template <typename A>
__device__ inline void group_welford(Welford<A>& a, A (*red)[32], int tpg) {
  warp_welford(a);
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int wpg = tpg >> 5;
  if (wpg > 1) {
    if (lane == 0) {
      red[0][warp] = a.n;
      red[1][warp] = a.mean;
      red[2][warp] = a.m2;
    }
    __syncthreads();
    const int first = (warp / wpg) * wpg;
    a = welford_zero<A>();
    if (lane < wpg) {
      a.n = red[0][first + lane];
      a.mean = red[1][first + lane];
      a.m2 = red[2][first + lane];
    }
    warp_welford(a);
    __syncthreads();  // red may be reused by the caller
  }
}
// Plain sums of three values over the threads of one group (same layout and contract as
// group_welford: fixed order, every thread of the group ends with the same bits).
template <typename A>
__device__ inline void group_sum3(A& a, A& b, A& c, A (*red)[32], int tpg) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    a += shfl_xor(a, off);
    b += shfl_xor(b, off);
    c += shfl_xor(c, off);
  }
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int wpg = tpg >> 5;
  if (wpg > 1) {
    if (lane == 0) {
      red[0][warp] = a;
      red[1][warp] = b;
      red[2][warp] = c;
    }
    __syncthreads();
    const int first = (warp / wpg) * wpg;
    a = b = c = A(0);
    if (lane < wpg) {
      a = red[0][first + lane];
      b = red[1][first + lane];
      c = red[2][first + lane];
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) {
      a += shfl_xor(a, off);
      b += shfl_xor(b, off);
      c += shfl_xor(c, off);
    }
    __syncthreads();  // red may be reused by the caller
  }
}
// Warp-redundant merge of `count` partials (n, mean, M2) stored consecutively at p:
// lane l merges l, l+32, ... in order, then a butterfly. Same bits in every warp and CTA.
template <typename A> __device__ inline Welford<A> merge_partials(const A* __restrict__ p, int64_t count, bool active) {
  Welford<A> a = welford_zero<A>();
  const int lane = static_cast<int>(threadIdx.x) & 31;
  if (active) {
    for (int64_t k = lane; k < count; k += 32) welford_merge(a, p[3 * k], p[3 * k + 1], p[3 * k + 2]);
  }
  warp_welford(a);
  return a;
}

template <typename A> __device__ inline A warp_sum(A v) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) v += shfl_xor(v, off);
  return v;
}

// ---- the 2-D view of one group ----
// A group (n, g) is R rows x KE elements, row stride RS elements, walked in vectors of V:
//   NCHW: rows = the D channels, KE = HxW, RS = HxW      (one contiguous run)
//   NHWC: rows = the HxW positions, KE = D, RS = C        (D channels per row)
// Vector e holds the group's elements e * V ... e * V + V - 1 in walk order; a thread walks
// e0, e0 + step, ... keeping (row, col) of its first element incrementally (no division in the
// loop): Walk::init(V * e0, V * step, KE), element offset row * RS + col. Rows are whole
// vectors (K = KE / V vector-columns), except NCHW groups whose HxW is not a multiple of V
// but whose run is (M % V == 0, HxW >= V: "flat" groups, e.g. 7x7): there a vector may end in
// the next channel (col + j >= HxW), which the epilogues handle; the per-channel-row kernels
// (gn_bwd_sums_nchw) never see such a group.
struct Walk {
  int64_t row, col, drow, dcol, K;
  __device__ inline void init(int64_t e0, int64_t step, int64_t K_) {
    K = K_;
    row = e0 / K;
    col = e0 - row * K;
    drow = step / K;
    dcol = step - drow * K;
  }
  __device__ inline void advance() {
    row += drow;
    col += dcol;
    if (col >= K) {
      col -= K;
      ++row;
    }
  }
};

// Shape facts every kernel needs (all int64: products can exceed 2^31).
struct Geometry {
  int64_t N, C, HxW, G, D, M;  // M = D * HxW elements per group
  int64_t Mv;                  // vectors per group
  int64_t K;                   // vector-columns of the 2-D view (rows of whole vectors only)
  int64_t KE;                  // elements per row of the 2-D view
  int64_t RS;                  // row stride (elements)
  bool channels_last;
  __device__ inline int64_t group_base(int64_t ng) const {
    if (!channels_last) return ng * M;
    const int64_t n = ng / G, g = ng - n * G;
    return n * C * HxW + g * D;
  }
};

// Work distribution shared by the element-walking kernels (forward stats/apply, on-chip
// forward, backward dx): either `gpb` groups per CTA (`tpg` threads each, splits == 1) or one
// group split into `splits` chunks of `chunk` vectors (gpb == 1).
struct WalkSched {
  int64_t splits, chunk;
  int tpg, gpb;
};
struct GroupSlot {
  int64_t ng, split, e_begin, e_end;
  int lt;  // thread index within the group
  bool active;
};
__device__ inline GroupSlot slot_of(const WalkSched& s, const Geometry& geo) {
  GroupSlot r;
  const int64_t NG = geo.N * geo.G;
  const int64_t bid = blockIdx.x;
  const int slot = static_cast<int>(threadIdx.x) / s.tpg;
  r.lt = static_cast<int>(threadIdx.x) - slot * s.tpg;
  if (s.splits == 1) {
    r.ng = bid * s.gpb + slot;
    r.split = 0;
  } else if (geo.channels_last) {
    // (n, split, g) with g fastest: concurrent CTAs read the same rows of one sample.
    const int64_t g = bid % geo.G, t = bid / geo.G;
    r.split = t % s.splits;
    r.ng = (t / s.splits) * geo.G + g;
  } else {
    r.ng = bid / s.splits;
    r.split = bid - r.ng * s.splits;
  }
  r.active = r.ng < NG;
  r.e_begin = r.split * s.chunk;
  r.e_end = r.e_begin + s.chunk < geo.Mv ? r.e_begin + s.chunk : geo.Mv;
  if (!r.active) r.e_end = r.e_begin;
  return r;
}

// Channels-last bundle schedule (gn_fwd_bundle): k groups of D channels per bundle (cols
// vectors per spatial row), `cluster` CTAs per bundle with chunk_rows spatial rows each,
// rows_par x cols working threads per CTA.
struct BundleSched {
  int64_t chunk_rows;
  int k, cols, rows_par, cluster;
};

// The lanes of vector column `col` of a bundle: the group (within the bundle) of lane 0, and
// the first lane js (<= V) of the next group.
template <int V> struct BundleLanes {
  int glo, ghi, js;
  __device__ inline BundleLanes(int col, int64_t D) {
    glo = static_cast<int>(static_cast<int64_t>(col) * V / D);
    const int64_t next = (glo + 1) * D - static_cast<int64_t>(col) * V;
    js = next < V ? static_cast<int>(next) : V;
    ghi = js < V ? glo + 1 : glo;
  }
};

// Channels-last rows schedule (gn_fwd_*_rows): CTA (n, piece) covers spatial rows
// [piece * piece_len, ...) of sample n, all C channels; thread = (row lane rl, vector column
// lc of C / V), rows_par row lanes x (C / V) columns, extra threads idle.
struct RowsSched {
  int64_t pieces, piece_len;
  int rows_par;
};
struct RowSlot {
  int64_t n, piece, sample, r0, r1, c0;
  int rl;
  bool valid;
};
template <int V> __device__ inline RowSlot row_slot(const RowsSched& s, const Geometry& geo) {
  RowSlot r;
  const int64_t bid = blockIdx.x;
  r.n = bid / s.pieces;
  r.piece = bid - r.n * s.pieces;
  r.sample = r.n * geo.HxW * geo.C;
  r.r0 = r.piece * s.piece_len;
  r.r1 = r.r0 + s.piece_len < geo.HxW ? r.r0 + s.piece_len : geo.HxW;
  const int64_t cw = geo.C / V;
  const int tid = static_cast<int>(threadIdx.x);
  r.rl = static_cast<int>(tid / cw);
  r.c0 = (tid - r.rl * cw) * V;
  r.valid = r.rl < s.rows_par;
  return r;
}

}  // namespace kernels
}  // namespace groupnorm_cuda
