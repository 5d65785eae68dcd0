// Self-tests of the SIMT execution layer (simt_runtime.h).
//   selftest correct        -> all correct kernels, compared with host references; exit 0
//   selftest <bug>          -> runs one planted-bug kernel; the layer / a sanitizer must catch it
//   selftest list           -> names of the cases
// Built by build.py in plain / tsan / asan(+ubsan) modes.
#include "simt_runtime.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "SELFTEST FAILED %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                                  \
      std::fprintf(stderr, "\n");                                         \
      std::exit(1);                                                       \
    }                                                                     \
  } while (0)

constexpr unsigned FULL = 0xFFFFFFFFu;

// ============================================================================ correct kernels

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}

// Block reduction: shuffles within warps, partials through static shared memory.
template <int BLOCK>
__global__ void __launch_bounds__(BLOCK) block_sum_kernel(const float* __restrict__ x, float* __restrict__ out,
                                                          int n_per_block) {
  __shared__ float partial[BLOCK / 32];
  const float* xb = x + size_t(blockIdx.x) * n_per_block;
  float v = 0.f;
  for (int i = threadIdx.x; i < n_per_block; i += blockDim.x) v += xb[i];
  v = warp_sum(v);
  const int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < BLOCK / 32 ? partial[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

static void test_block_sum() {
  const int blocks = 5, n = 1000;
  std::vector<float> x(size_t(blocks) * n), out(blocks);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 37) % 101) * 0.01f - 0.5f;
  simt::launch(block_sum_kernel<256>, dim3(blocks), dim3(256), 0, x.data(), out.data(), n);
  for (int b = 0; b < blocks; ++b) {
    double ref = 0;
    for (int i = 0; i < n; ++i) ref += x[size_t(b) * n + i];
    CHECK(std::fabs(out[b] - ref) < 1e-3, "block_sum block %d: %f vs %f", b, out[b], ref);
  }
  std::printf("ok block_sum\n");
}

// Welford: per-thread, merged across lanes with __shfl_down_sync, across warps via smem.
struct W { float mean, m2; int n; };
__device__ __forceinline__ W welford_merge(W a, W b) {
  if (b.n == 0) return a;
  if (a.n == 0) return b;
  const int n = a.n + b.n;
  const float d = b.mean - a.mean;
  const float fb = float(b.n) / float(n);
  return W{a.mean + d * fb, a.m2 + b.m2 + d * d * float(a.n) * fb, n};
}
__device__ __forceinline__ W warp_welford(W w) {
  for (int o = 16; o > 0; o >>= 1) {
    W o_{__shfl_down_sync(FULL, w.mean, o), __shfl_down_sync(FULL, w.m2, o), __shfl_down_sync(FULL, w.n, o)};
    w = welford_merge(w, o_);
  }
  return w;
}
__global__ void welford_kernel(const float* x, int n, float* mean, float* var) {
  __shared__ W parts[32];
  W w{0.f, 0.f, 0};
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = x[size_t(blockIdx.x) * n + i];
    w.n += 1;
    const float d = v - w.mean;
    w.mean += d / float(w.n);
    w.m2 += d * (v - w.mean);
  }
  w = warp_welford(w);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  if (lane == 0) parts[warp] = w;
  __syncthreads();
  if (warp == 0) {
    w = lane < nw ? parts[lane] : W{0.f, 0.f, 0};
    w = warp_welford(w);
    if (lane == 0) {
      mean[blockIdx.x] = w.mean;
      var[blockIdx.x] = w.m2 / float(w.n);
    }
  }
}
static void test_welford() {
  const int blocks = 3, n = 777;
  std::vector<float> x(size_t(blocks) * n), mean(blocks), var(blocks);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * 3.f + 1.f;
  simt::launch(welford_kernel, dim3(blocks), dim3(128), 0, x.data(), n, mean.data(), var.data());
  for (int b = 0; b < blocks; ++b) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; ++i) s += x[size_t(b) * n + i];
    const double m = s / n;
    for (int i = 0; i < n; ++i) s2 += (x[size_t(b) * n + i] - m) * (x[size_t(b) * n + i] - m);
    CHECK(std::fabs(mean[b] - m) < 1e-4 && std::fabs(var[b] - s2 / n) < 1e-3, "welford block %d: %f %f vs %f %f", b,
          mean[b], var[b], m, s2 / n);
  }
  std::printf("ok welford\n");
}

// Dynamic shared memory: poison visible before the first write; block reversal through smem.
__global__ void dyn_smem_kernel(const double* x, double* y, int* poison_ok) {
  double* s = simt::dynamic_shared<double>();
  const int t = threadIdx.x, n = blockDim.x;
  if (t == 0) poison_ok[blockIdx.x] = std::isnan(s[n - 1]) ? 1 : 0;  // nobody has written yet
  __syncthreads();
  s[t] = x[blockIdx.x * n + t];
  __syncthreads();
  y[blockIdx.x * n + t] = s[n - 1 - t];
}
static void test_dynamic_smem() {
  const int blocks = 4, n = 96;
  std::vector<double> x(blocks * n), y(blocks * n);
  std::vector<int> ok(blocks, 0);
  for (int i = 0; i < blocks * n; ++i) x[i] = i * 0.5;
  simt::launch(dyn_smem_kernel, dim3(blocks), dim3(n), n * sizeof(double), x.data(), y.data(), ok.data());
  for (int b = 0; b < blocks; ++b) {
    CHECK(ok[b] == 1, "dynamic smem of block %d not poisoned", b);
    for (int t = 0; t < n; ++t) CHECK(y[b * n + t] == x[b * n + n - 1 - t], "dyn smem %d %d", b, t);
  }
  std::printf("ok dynamic_smem\n");
}

// Early return for out-of-range threads followed by barriers in the remaining threads.
__global__ void early_return_kernel(const float* x, float* y, int n) {
  __shared__ float s[128];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  s[threadIdx.x] = x[i];
  __syncthreads();
  const int valid = std::min(int(blockDim.x), n - int(blockIdx.x * blockDim.x));
  float acc = 0;
  for (int k = 0; k < valid; ++k) acc += s[k];
  __syncthreads();
  s[threadIdx.x] = acc;
  __syncthreads();
  y[i] = s[valid - 1 - threadIdx.x] + x[i];
}
static void test_early_return() {
  const int n = 300, bs = 128, blocks = (n + bs - 1) / bs;
  std::vector<float> x(n), y(n, -1.f);
  for (int i = 0; i < n; ++i) x[i] = float(i % 7);
  simt::launch(early_return_kernel, dim3(blocks), dim3(bs), 0, x.data(), y.data(), n);
  for (int b = 0; b < blocks; ++b) {
    const int valid = std::min(bs, n - b * bs);
    float tot = 0;
    for (int k = 0; k < valid; ++k) tot += x[b * bs + k];
    for (int t = 0; t < valid; ++t) CHECK(y[b * bs + t] == tot + x[b * bs + t], "early_return %d %d", b, t);
  }
  std::printf("ok early_return\n");
}

// Shuffle widths < 32, all four kinds, several types, plus two disjoint half-warp groups.
template <typename T>
__global__ void width_kernel(T* out, int width) {
  const int lane = threadIdx.x % 32;
  const T v = T(threadIdx.x * 3 + 1);
  T* o = out + threadIdx.x * 4;
  o[0] = __shfl_sync(FULL, v, 3, width);
  o[1] = __shfl_up_sync(FULL, v, 2, width);
  o[2] = __shfl_down_sync(FULL, v, 2, width);
  o[3] = __shfl_xor_sync(FULL, v, width / 2 > 0 ? width / 2 : 0, width);
  (void)lane;
}
template <typename T>
static void check_width(int width) {
  const int n = 64;
  std::vector<T> out(n * 4);
  simt::launch(width_kernel<T>, dim3(1), dim3(n), 0, out.data(), width);
  for (int t = 0; t < n; ++t) {
    const int lane = t % 32, base = t - lane, seg = lane / width * width, in = lane % width;
    auto val = [&](int l) { return T((base + l) * 3 + 1); };
    const T e0 = val(seg + 3 % width);
    const T e1 = in >= 2 ? val(lane - 2) : val(lane);
    const T e2 = in + 2 < width ? val(lane + 2) : val(lane);
    const T e3 = val(lane ^ (width / 2));
    CHECK(out[t * 4 + 0] == e0 && out[t * 4 + 1] == e1 && out[t * 4 + 2] == e2 && out[t * 4 + 3] == e3,
          "width %d sizeof %zu thread %d: got %g %g %g %g want %g %g %g %g", width, sizeof(T), t,
          double(out[t * 4]), double(out[t * 4 + 1]), double(out[t * 4 + 2]), double(out[t * 4 + 3]), double(e0),
          double(e1), double(e2), double(e3));
  }
}
__global__ void half_groups_kernel(float* out, __half* hout) {
  const int lane = threadIdx.x % 32;
  float v = float(lane);
  // lanes 0-15 and 16-31 run different collectives with disjoint masks (legal on sm_70+)
  if (lane < 16) v += __shfl_xor_sync(0x0000FFFFu, v, 1);
  else v += __shfl_down_sync(0xFFFF0000u, v, 1, 16);
  out[threadIdx.x] = v;
  const unsigned ballot = __ballot_sync(FULL, lane % 3 == 0);
  if (lane == 0) out[64 + threadIdx.x / 32] = float(ballot == 0x49249249u);
  __syncwarp();
  __half h = __float2half(float(lane));
  h = __shfl_xor_sync(FULL, h, 5);
  hout[threadIdx.x] = h;
}
static void test_widths() {
  for (int w : {1, 2, 4, 8, 16, 32}) {
    check_width<float>(w);
    check_width<double>(w);
    check_width<int>(w);
    check_width<unsigned>(w);
    check_width<long long>(w);
  }
  std::vector<float> out(66);
  std::vector<__half> h(64);
  simt::launch(half_groups_kernel, dim3(1), dim3(64), 0, out.data(), h.data());
  for (int t = 0; t < 64; ++t) {
    const int l = t % 32;
    const float e = l < 16 ? float(l + (l ^ 1)) : float(l + ((l % 16) + 1 < 16 ? l + 1 : l));
    CHECK(out[t] == e, "half groups thread %d: %f vs %f", t, out[t], e);
    CHECK(__half2float(h[t]) == float(l ^ 5), "half shuffle %d", t);
  }
  CHECK(out[64] == 1.f && out[65] == 1.f, "ballot");
  std::printf("ok widths\n");
}

// 3-D blocks: lanes come from the linear thread index; 2-D grid indices.
__global__ void dims_kernel(int* out) {
  const int lin = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const int first = __shfl_sync(FULL, lin, 0);
  const int blk = blockIdx.x + blockIdx.y * gridDim.x;
  out[blk * 64 + lin] = first * 1000 + lin + int(blockDim.x * blockDim.y * blockDim.z) * 100000;
}
static void test_dims() {
  std::vector<int> out(6 * 64);
  simt::launch(dims_kernel, dim3(3, 2), dim3(8, 4, 2), 0, out.data());
  for (int b = 0; b < 6; ++b)
    for (int l = 0; l < 64; ++l) CHECK(out[b * 64 + l] == (l / 32 * 32) * 1000 + l + 6400000, "dims %d %d", b, l);
  std::printf("ok dims\n");
}

// Static __shared__ reused by consecutive blocks of different launches/sizes; atomics.
__global__ void static_reuse_kernel(int* out, float* total) {
  __shared__ int s[1024];
  s[threadIdx.x] = int(blockIdx.x * 10000 + threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
  atomicAdd(total, 1.0f);
}
static void test_static_reuse() {
  for (int bs : {32, 1024, 200}) {
    const int blocks = 3;
    std::vector<int> out(blocks * bs);
    float total = 0;
    simt::launch(static_reuse_kernel, dim3(blocks), dim3(bs), 0, out.data(), &total);
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < bs; ++t) CHECK(out[b * bs + t] == b * 10000 + bs - 1 - t, "static reuse");
    CHECK(total == float(blocks * bs), "atomicAdd %f", total);
  }
  std::printf("ok static_reuse\n");
}


// Kernel parameters passed as a struct by value, template kernel with a non-type parameter,
// dynamic smem typed differently from its allocation (the real launchers do this).
struct AxpyArgs {
  const float* x;
  float* y;
  int n;
  float a;
};
template <typename T, int VEC>
__global__ void axpy_kernel(const AxpyArgs args) {
  T* s = simt::dynamic_shared<T>();
  const int i = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
  for (int v = 0; v < VEC; ++v) s[threadIdx.x * VEC + v] = i + v < args.n ? T(args.x[i + v]) : T(0);
  __syncthreads();
  for (int v = 0; v < VEC; ++v)
    if (i + v < args.n) args.y[i + v] += args.a * float(s[threadIdx.x * VEC + v]);
}
static void test_struct_args() {
  const int n = 1000, bs = 64, vec = 4, blocks = (n + bs * vec - 1) / (bs * vec);
  std::vector<float> x(n), y(n, 1.f);
  for (int i = 0; i < n; ++i) x[i] = float(i);
  AxpyArgs a{x.data(), y.data(), n, 2.f};
  simt::launch(axpy_kernel<double, vec>, dim3(blocks), dim3(bs), bs * vec * sizeof(double), a);
  for (int i = 0; i < n; ++i) CHECK(y[i] == 1.f + 2.f * float(i), "axpy %d", i);
  std::printf("ok struct_args\n");
}

// Cost measurement: 512-thread blocks, 4 barriers and 10 shuffle rounds each.
__global__ void bench_kernel(float* out) {
  __shared__ float s[512];
  float v = float(threadIdx.x);
  for (int r = 0; r < 2; ++r) {
    v = warp_sum(v) * 1e-3f;
    s[threadIdx.x] = v;
    __syncthreads();
    v += s[(threadIdx.x + 1) % blockDim.x];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
static void bench() {
  const int blocks = 8;
  std::vector<float> out(blocks * 512);
  simt::launch(bench_kernel, dim3(1), dim3(512), 0, out.data());  // warm-up: creates the pool
  const auto t0 = std::chrono::steady_clock::now();
  simt::launch(bench_kernel, dim3(blocks), dim3(512), 0, out.data());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("bench: %.2f ms per 512-thread block (4 barriers, 10 shuffles per thread)\n", ms / blocks);
}


// The launch path the real kernels use: csrc/cuda/kernels/launch.cuh defines (in SIMT mode)
//   GN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) and gn_dynamic_smem<T>().
// Replicated here verbatim so this file does not depend on that header existing yet.
#define GN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  ::simt::launch((kernel), (grid), (block), (smem_bytes), __VA_ARGS__)
template <typename T>
inline T* gn_dynamic_smem() {
  return ::simt::dynamic_shared<T>();
}
template <typename T, int THREADS>
__global__ void __launch_bounds__(THREADS) gn_style_kernel(const T* __restrict__ x, float* __restrict__ out, int64_t n) {
  float* red = gn_dynamic_smem<float>();
  float v = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += THREADS) v += float(x[blockIdx.x * n + i]);
  v = warp_sum(v);
  if (threadIdx.x % warpSize == 0) red[threadIdx.x / warpSize] = v;
  __syncthreads();
  if (threadIdx.x < warpSize) {
    v = threadIdx.x < THREADS / warpSize ? red[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
  }
}
template <typename T>
static void gn_style_run() {
  const int rows = 3;
  const int64_t n = 300;
  std::vector<T> x(rows * n);
  for (int64_t i = 0; i < rows * n; ++i) x[i] = T(float(i % 5) * 0.25f);
  std::vector<float> out(rows);
  cudaStream_t stream = nullptr;
  (void)stream;  // GN_LAUNCH drops the stream in SIMT mode
  const dim3 grid(rows), block(128);
  // A template-id with a comma must be parenthesized inside the macro.
  GN_LAUNCH((gn_style_kernel<T, 128>), grid, block, (128 / 32) * sizeof(float), stream, x.data(), out.data(), n);
  for (int r = 0; r < rows; ++r) {
    float ref = 0;
    for (int64_t i = 0; i < n; ++i) ref += float(x[r * n + i]);
    CHECK(std::fabs(out[r] - ref) < 1e-3f, "gn_style %d: %f vs %f", r, out[r], ref);
  }
}
static void test_gn_launch_macro() {
  gn_style_run<float>();
  gn_style_run<__half>();
  gn_style_run<__nv_bfloat16>();
  std::printf("ok gn_launch_macro\n");
}


// Intra-warp exchange through shared memory made safe by __syncwarp; __syncthreads_count/and/or.
__global__ void syncwarp_kernel(int* out) {
  __shared__ int s[64];
  const int lane = threadIdx.x % 32;
  s[threadIdx.x] = int(threadIdx.x) * 7;
  __syncwarp();
  const int v = s[(threadIdx.x & ~31u) + (lane ^ 1)];
  const int cnt = __syncthreads_count(threadIdx.x % 3 == 0);
  const int all = __syncthreads_and(threadIdx.x < 64);
  const int any = __syncthreads_or(threadIdx.x == 5);
  const int none = __syncthreads_or(0);
  out[threadIdx.x] = v + 1000 * cnt + 100000 * all + 1000000 * any + 10000000 * none;
}
static void test_syncwarp() {
  std::vector<int> out(64);
  simt::launch(syncwarp_kernel, dim3(1), dim3(64), 0, out.data());
  for (int t = 0; t < 64; ++t)
    CHECK(out[t] == ((t & ~31) + ((t % 32) ^ 1)) * 7 + 1000 * 22 + 100000 + 1000000, "syncwarp %d: %d", t, out[t]);
  std::printf("ok syncwarp\n");
}

static void run_correct() {
  test_block_sum();
  test_welford();
  test_dynamic_smem();
  test_early_return();
  test_widths();
  test_dims();
  test_static_reuse();
  test_struct_args();
  test_gn_launch_macro();
  test_syncwarp();
  std::printf("ALL CORRECT KERNELS PASSED\n");
}

// ============================================================================ planted bugs

// (a) missing __syncthreads between the shared-memory writes and the reads of other threads.
__global__ void race_kernel(const float* x, float* out) {
  __shared__ float s[256];
  s[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
  // BUG: __syncthreads() missing here
  if (threadIdx.x < 128) s[threadIdx.x] += s[threadIdx.x + 128];
  __syncthreads();
  if (threadIdx.x == 0) {
    float acc = 0;
    for (int i = 0; i < 128; ++i) acc += s[i];
    out[blockIdx.x] = acc;
  }
}
static void bug_race() {
  std::vector<float> x(512, 1.f), out(2);
  simt::launch(race_kernel, dim3(2), dim3(256), 0, x.data(), out.data());
  std::printf("race result %f %f (expected 256)\n", out[0], out[1]);
}


// (a') warp shuffles do not order different warps: warp 1 reads what warp 0 wrote, with only
// shuffles (no __syncthreads) in between -> still a data race.
__global__ void race_across_warps_kernel(float* out) {
  __shared__ float s[32];
  const int lane = threadIdx.x % 32;
  if (threadIdx.x < 32) s[lane] = float(lane);
  const float w = warp_sum(1.f);  // warp-synchronous, but only within each warp
  if (threadIdx.x >= 32) out[lane] = s[lane] + w;  // BUG: needs __syncthreads()
}
static void bug_race_across_warps() {
  std::vector<float> out(32);
  simt::launch(race_across_warps_kernel, dim3(1), dim3(64), 0, out.data());
}
// (a'') intra-warp exchange through shared memory without __syncwarp (a race since Volta).
__global__ void race_in_warp_kernel(int* out) {
  __shared__ int s[32];
  s[threadIdx.x] = int(threadIdx.x);
  // BUG: __syncwarp() missing
  out[threadIdx.x] = s[threadIdx.x ^ 1];
}
static void bug_race_in_warp() {
  std::vector<int> out(32);
  simt::launch(race_in_warp_kernel, dim3(1), dim3(32), 0, out.data());
}

// (b) off by one past the end of a global buffer.
__global__ void oob_kernel(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] + x[i + 1];  // BUG: reads x[n] for the last element
}
static void bug_oob() {
  const int n = 100;
  float* x = new float[n];
  float* y = new float[n];
  for (int i = 0; i < n; ++i) x[i] = 1.f;
  simt::launch(oob_kernel, dim3(1), dim3(128), 0, x, y, n);
  std::printf("oob y[%d] = %f\n", n - 1, y[n - 1]);
  delete[] x;
  delete[] y;
}

// (c) misaligned float4 load.
__global__ void misaligned_kernel(const float* x, float* y) {
  const float4 v = reinterpret_cast<const float4*>(x + 1)[threadIdx.x];  // BUG: x+1 is not 16-byte aligned
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}
static void bug_misaligned() {
  std::vector<float4> buf(40);  // 16-byte aligned storage
  float* x = reinterpret_cast<float*>(buf.data());
  for (int i = 0; i < 160; ++i) x[i] = 1.f;
  std::vector<float> y(32);
  simt::launch(misaligned_kernel, dim3(1), dim3(32), 0, x, y.data());
  std::printf("misaligned %f\n", y[0]);
}

// (d) shuffle whose mask names lanes that do not take part.
__global__ void bad_mask_kernel(float* y) {
  const int lane = threadIdx.x % 32;
  float v = float(lane);
  if (lane < 16) v += __shfl_down_sync(FULL, v, 8);  // BUG: mask should be 0xFFFF
  v = warp_sum(v);
  y[threadIdx.x] = v;
}
static void bug_bad_mask() {
  std::vector<float> y(32);
  simt::launch(bad_mask_kernel, dim3(1), dim3(32), 0, y.data());
  std::printf("bad mask %f\n", y[0]);
}
// (d') variant: the named lanes exit instead of joining.
__global__ void bad_mask_exit_kernel(float* y) {
  const int lane = threadIdx.x % 32;
  if (lane >= 16) return;
  y[lane] = __shfl_xor_sync(FULL, float(lane), 1);  // BUG: lanes 16-31 exited
}
static void bug_bad_mask_exit() {
  std::vector<float> y(32);
  simt::launch(bad_mask_exit_kernel, dim3(1), dim3(32), 0, y.data());
}
// (d'') variant: the mask does not name the calling lane.
__global__ void mask_self_kernel(float* y) { y[threadIdx.x] = __shfl_xor_sync(0x1u, 1.f, 1); }
static void bug_mask_self() {
  std::vector<float> y(32);
  simt::launch(mask_self_kernel, dim3(1), dim3(32), 0, y.data());
}

// (e) inter-block dependency inside one launch: block b reads what block b-1 writes.
__global__ void interblock_kernel(int* data) {
  if (threadIdx.x != 0) return;
  const int b = blockIdx.x;
  data[b] = (b == 0 ? 1 : data[b - 1] * 3 + b) % 1000003;  // BUG: depends on block execution order
}
static void bug_interblock() {
  std::vector<int> data(16, 0);
  simt::launch(interblock_kernel, dim3(16), dim3(32), 0, data.data());
  long long h = 0;
  for (int v : data) h = h * 31 + v;
  std::printf("interblock checksum %lld\n", h);
}

// (f) deadlock: __syncthreads inside a divergent branch.
__global__ void divergent_barrier_kernel(float* y) {
  __shared__ float s[64];
  s[threadIdx.x] = 1.f;
  if (threadIdx.x < 32) {
    __syncthreads();  // BUG: only warp 0 reaches this barrier
    y[threadIdx.x] = s[threadIdx.x + 32];
  }
  __syncthreads();
}
static void bug_divergent_barrier() {
  std::vector<float> y(64);
  simt::launch(divergent_barrier_kernel, dim3(1), dim3(64), 0, y.data());
}
// (f') deadlock between a shuffle and a barrier: lane 31 goes to the barrier, its warp waits.
__global__ void shfl_barrier_deadlock_kernel(float* y) {
  float v = float(threadIdx.x);
  if (threadIdx.x % 32 != 31) v = __shfl_xor_sync(FULL, v, 1);  // BUG: lane 31 is named but absent
  __syncthreads();
  y[threadIdx.x] = v;
}
static void bug_shfl_barrier_deadlock() {
  std::vector<float> y(64);
  simt::launch(shfl_barrier_deadlock_kernel, dim3(1), dim3(64), 0, y.data());
}
// (f'') a spin-wait on another thread that never comes: caught by the timeout (SIMT_TIMEOUT).
__global__ void spin_kernel(volatile int* flag) {
  if (threadIdx.x == 0)
    while (*flag == 0) {
    }
}
static void bug_spin() {
  int flag = 0;
  simt::launch(spin_kernel, dim3(1), dim3(32), 0, &flag);
}

// (g) invalid launch configuration.
__global__ void noop_kernel(int) {}
static void bug_bad_launch() { simt::launch(noop_kernel, dim3(1), dim3(2048), 0, 0); }

// (h) dynamic shared memory overrun (ASan: the block's smem allocation has exactly the asked size).
__global__ void smem_overrun_kernel(float* y) {
  float* s = simt::dynamic_shared<float>();
  s[threadIdx.x + 1] = 1.f;  // BUG: thread 31 writes one past the 32 floats asked for
  __syncthreads();
  y[threadIdx.x] = s[threadIdx.x];
}
static void bug_smem_overrun() {
  std::vector<float> y(32);
  simt::launch(smem_overrun_kernel, dim3(1), dim3(32), 32 * sizeof(float), y.data());
}

int main(int argc, char** argv) {
  const std::map<std::string, void (*)()> cases = {
      {"correct", run_correct},
      {"bench", bench},
      {"race", bug_race},
      {"race_across_warps", bug_race_across_warps},
      {"race_in_warp", bug_race_in_warp},
      {"oob", bug_oob},
      {"misaligned", bug_misaligned},
      {"bad_mask", bug_bad_mask},
      {"bad_mask_exit", bug_bad_mask_exit},
      {"mask_self", bug_mask_self},
      {"interblock", bug_interblock},
      {"divergent_barrier", bug_divergent_barrier},
      {"shfl_barrier_deadlock", bug_shfl_barrier_deadlock},
      {"spin", bug_spin},
      {"bad_launch", bug_bad_launch},
      {"smem_overrun", bug_smem_overrun},
  };
  const std::string which = argc > 1 ? argv[1] : "correct";
  if (which == "list") {
    for (auto& c : cases) std::printf("%s\n", c.first.c_str());
    return 0;
  }
  auto it = cases.find(which);
  if (it == cases.end()) {
    std::fprintf(stderr, "unknown case %s (try: list)\n", which.c_str());
    return 2;
  }
  it->second();
  return 0;
}
