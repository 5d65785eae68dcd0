// kernel_harness.cpp -- runs the REAL CUDA kernels of csrc/cuda/kernels on the CPU through the
// SIMT emulator (simt_runtime.h) and compares every output with a long-double reference.
//
//   python tests/simt/build.py --mode plain|tsan|asan tests/simt/kernel_harness.cpp -- [options]
//
// Options:
//   --list                 print the case names (with their subset tags) and exit
//   --subset all|quick|tsan|asan|mutation   run the cases carrying that tag (default: all)
//   --case-filter SUBSTR   only cases whose name contains SUBSTR (repeatable: any matches)
//   --quick                same as --subset quick
//
// One line per case:
//   CASE <name> fwd[...] bwd[...] kernels=<k1,k2,..> err[y=.. mean=.. rstd=.. dx=.. dw=.. db=..]
//        tol=<t> hash=<16 hex> PASS|FAIL [why]
// `hash` is an FNV-1a hash of the bytes of every output (y, mean, rstd, dx, dweight, dbias): the
// kernels claim results independent of block order, so it must not change with SIMT_SEED.
// Exit status: 0 when every selected case passes, 1 otherwise (the SIMT layer exits 87 on its
// own errors, the sanitizers with their own codes).
//
// Every tensor is its own exact-size heap allocation (ASan sees a one-element overrun); the
// workspace is exactly *_workspace_bytes() bytes.
//
// Build with -DSIMT_HARNESS_F32_ONLY to instantiate only the float kernels (the planted-bug
// builds of test_simt_kernels.py: much faster to compile).
#include "cuda/kernels/launcher.cuh"
#include "cuda/launch_plan.h"

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using namespace groupnorm_cuda;
namespace K = groupnorm_cuda::kernels;
namespace P = groupnorm_cuda::plan;
using LD = long double;

// ------------------------------------------------------------------------------ conversions
template <typename T> T to_t(double v) { return static_cast<T>(v); }
template <> __half to_t<__half>(double v) { return __float2half(static_cast<float>(v)); }
template <> __nv_bfloat16 to_t<__nv_bfloat16>(double v) { return __float2bfloat16(static_cast<float>(v)); }
inline double from_t(float v) { return v; }
inline double from_t(double v) { return v; }
inline double from_t(__half v) { return __half2float(v); }
inline double from_t(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> const char* tname();
template <> const char* tname<float>() { return "f32"; }
template <> const char* tname<double>() { return "f64"; }
template <> const char* tname<__half>() { return "f16"; }
template <> const char* tname<__nv_bfloat16>() { return "bf16"; }

// Relative tolerance (normwise: max |err| / max |ref|) for outputs stored as T: a few ulps for
// the 16-bit types (the kernels compute in fp32 and round once), accumulation accuracy else.
template <typename T> double tol_of();
template <> double tol_of<float>() { return 1e-5; }
template <> double tol_of<double>() { return 1e-12; }
template <> double tol_of<__half>() { return 0x1p-9; }           // 2 ulp at 1 (ulp = 2^-10)
template <> double tol_of<__nv_bfloat16>() { return 0x1p-6; }    // 2 ulp at 1 (ulp = 2^-7)

// ------------------------------------------------------------------------------ exact-size buffers
template <typename T> struct Buf {
  void* raw = nullptr;
  T* p = nullptr;
  size_t n = 0;
  Buf() = default;
  // `offset` elements of padding in front (a deliberately misaligned tensor); the end is exact.
  Buf(size_t n_, size_t offset = 0) : n(n_) {
    const size_t bytes = (n_ + offset) * sizeof(T);
    if (bytes == 0) return;
    if (posix_memalign(&raw, 64, bytes) != 0) throw std::bad_alloc();
    std::memset(raw, 0, bytes);
    p = static_cast<T*>(raw) + offset;
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { std::free(raw); }
};

// Deterministic data (splitmix64 + Box-Muller): identical in every build and run.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1p-53; }
  double normal() {
    const double u = uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void add(const void* p, size_t bytes) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < bytes; ++i) h = (h ^ c[i]) * 1099511628211ull;
  }
};

// ------------------------------------------------------------------------------ cases
enum class DT { F32, F64, F16, BF16 };
enum Mask { ALL = 0, DX_ONLY = 1, PARAMS_ONLY = 2 };
enum Tag : unsigned { T_QUICK = 1, T_TSAN = 2, T_ASAN = 4, T_MUT = 8 };

struct Expect {  // what the plan must look like (else the case FAILS: coverage is asserted)
  int fwd_sched = -1;     // -1 any, 0 on-chip, 1 split, 2 rows, 3 cluster, 4 bundle
  int bwd_sched = -1;     // -1 any, 0 on-chip, 1 split, 2 rows, 3 cluster, 4 bundle
  int vec = 0;            // 0 any, 1 scalar, 2 vectorized (> 1)
  bool gpb_gt1 = false;   // on-chip: several groups per CTA
  bool splits_gt1 = false;
  bool pieces_gt1 = false;
  int64_t min_block = 0;  // the forward walk block must be at least this many threads
  int64_t cluster = 0;    // the first launch of both directions: CTAs per cluster (0 any)
  int64_t samples = 0;    // on-chip backward: samples per CTA whose dweight/dbias terms it adds (0 any)
};

struct Case {
  std::string name;
  DT dt;
  bool wfloat;  // W = float with a 16-bit x
  int64_t N, C, HxW, G;
  bool cl, silu, hasw, hasb;
  P::Overrides ov;
  int64_t sm;
  double mean0, std0;
  Mask mask;
  bool misalign;
  unsigned tags;
  Expect ex;
  int64_t max_cluster = 8;  // thread-block clusters the planner may use (1: none, as sm_80)
  unsigned device_cluster = 16;  // the largest cluster the emulated device places
};

static int g_failures = 0;

static const char* sched_name(P::Schedule s) {
  return s == P::Schedule::OnChip ? "onchip"
         : s == P::Schedule::Rows  ? "rows"
         : s == P::Schedule::Cluster ? "cluster"
         : s == P::Schedule::Bundle ? "bundle"
                                     : "split";
}

// The kernel a plan entry names, instantiated here independently of the launcher (vec: the
// vector width of the plan; the Rows kernels exist for vectorized plans only).
template <typename T, typename W, int V>
const void* kernel_of_v(P::Kernel id) {
  auto fn = [](auto f) { return reinterpret_cast<const void*>(f); };
  switch (id) {
    case P::Kernel::FwdOnChip: return fn(&K::gn_fwd_onchip<T, W, V>);
    case P::Kernel::FwdStats: return fn(&K::gn_fwd_stats<T, V>);
    case P::Kernel::FwdApply: return fn(&K::gn_fwd_apply<T, W, V>);
    case P::Kernel::FwdFinalize: return fn(&K::gn_fwd_finalize<T, W>);
    case P::Kernel::BwdOnChip: return fn(&K::gn_bwd_onchip<T, W, V>);
    case P::Kernel::BwdSiluR: return fn(&K::gn_bwd_silu_r<T, W>);
    case P::Kernel::BwdSumsNchw: return fn(&K::gn_bwd_sums_nchw<T, W, V>);
    case P::Kernel::BwdSumsNhwc: return fn(&K::gn_bwd_sums_nhwc<T, W, V>);
    case P::Kernel::BwdCoeffs: return fn(&K::gn_bwd_coeffs<T, W>);
    case P::Kernel::BwdParams: return fn(&K::gn_bwd_params<T, W>);
    case P::Kernel::BwdDx: return fn(&K::gn_bwd_dx<T, W, V>);
    default: break;
  }
  if constexpr (V > 1) {
    switch (id) {
      case P::Kernel::FwdStatsRows: return fn(&K::gn_fwd_stats_rows<T, V>);
      case P::Kernel::FwdCluster: return fn(&K::gn_fwd_cluster<T, W, V>);
      case P::Kernel::FwdBundle: return fn(&K::gn_fwd_bundle<T, W, V>);
      case P::Kernel::BwdBundle: return fn(&K::gn_bwd_bundle<T, W, V>);
      case P::Kernel::BwdCluster: return fn(&K::gn_bwd_cluster<T, W, V>);
      case P::Kernel::FwdApplyRows: return fn(&K::gn_fwd_apply_rows<T, W, V>);
      case P::Kernel::BwdSumsRows: return fn(&K::gn_bwd_sums_rows<T, W, V>);
      case P::Kernel::BwdDxRows: return fn(&K::gn_bwd_dx_rows<T, W, V>);
      default: break;
    }
  }
  return nullptr;
}
template <typename T, typename W>
const void* kernel_of(P::Kernel id, int64_t vec) {
  constexpr int VF = static_cast<int>(16 / sizeof(T));
  return vec == 1 ? kernel_of_v<T, W, 1>(id) : kernel_of_v<T, W, VF>(id);
}

// max that keeps a NaN (std::max(a, NaN) returns a: a NaN output would vanish from the error).
static LD nanmax(LD a, LD b) { return (std::isnan(a) || b > a || std::isnan(b)) ? (std::isnan(a) ? a : b) : a; }

template <typename T, typename W>
static void run_case(const Case& cs) {
  using A = groupnorm_cuda::acc_t<T>;
  const int64_t N = cs.N, C = cs.C, HxW = cs.HxW, G = cs.G, D = C / G, M = D * HxW;
  const size_t numel = static_cast<size_t>(N * C * HxW);
  const size_t mis = cs.misalign ? 1 : 0;
  const bool want_dx = cs.mask != PARAMS_ONLY;
  const bool want_dw = cs.mask != DX_ONLY && cs.hasw;
  const bool want_db = cs.mask != DX_ONLY && cs.hasb;

  Buf<T> x(numel, mis), dy(numel, mis), y(numel, mis);
  Buf<T> dx(want_dx ? numel : 0, want_dx ? mis : 0);
  Buf<W> w(cs.hasw ? C : 0), b(cs.hasb ? C : 0), dw(want_dw ? C : 0), db(want_db ? C : 0);
  Buf<A> mean(N * G), rstd(N * G);

  Rng rng(0x5eed0000ull + std::hash<std::string>{}(cs.name) % 1000003);
  std::vector<LD> xd(numel), dyd(numel), wd(C, 1), bd(C, 0);
  for (size_t i = 0; i < numel; ++i) {
    x.p[i] = to_t<T>(cs.mean0 + cs.std0 * rng.normal());
    xd[i] = from_t(x.p[i]);
    dy.p[i] = to_t<T>(rng.normal());
    dyd[i] = from_t(dy.p[i]);
  }
  for (int64_t c = 0; c < C; ++c) {
    if (cs.hasw) { w.p[c] = to_t<W>(1.0 + 0.5 * rng.normal()); wd[c] = from_t(w.p[c]); }
    if (cs.hasb) { b.p[c] = to_t<W>(0.5 * rng.normal()); bd[c] = from_t(b.p[c]); }
  }
  auto idx = [&](int64_t n, int64_t c, int64_t s) -> size_t {
    return static_cast<size_t>(cs.cl ? (n * HxW + s) * C + c : (n * C + c) * HxW + s);
  };

  // ---------------------------------------------------------------- plan + launch (the real API)
  const Activation act = cs.silu ? Activation::SiLU : Activation::None;
  P::DeviceProblem pb;
  pb.N = N;
  pb.C = C;
  pb.HxW = HxW;
  pb.G = G;
  pb.dtype = K::DTypeOf<T>::value;
  pb.layout = cs.cl ? groupnorm_cuda::Layout::ChannelsLast : groupnorm_cuda::Layout::Contiguous;
  pb.act = act;
  pb.sm_count = cs.sm;
  pb.max_cluster = cs.max_cluster;
  simt::set_device_max_cluster(cs.device_cluster);
  K::ForwardArgs<T, W> fa{x.p, w.p, b.p, y.p, mean.p, rstd.p, 1e-5};
  const P::ForwardPlan fp0 = P::plan_forward(pb, cs.ov);
  const P::ForwardPlan fp = K::fit_forward_plan(fa, fp0);
  std::string why;
  if (cs.misalign) {
    if (fp0.vec == 1) why += " misaligned-case-needs-a-vector-plan";
    bool threw = false;
    try {
      Buf<unsigned char> dummy(1);
      K::launch_forward(fa, fp0, dummy.p, nullptr);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    if (!threw) why += " launch_forward-accepted-a-vector-plan-for-misaligned-tensors";
  }
  Buf<unsigned char> fws(K::forward_workspace_bytes(fp));
  const auto t0 = std::chrono::steady_clock::now();
  simt::launch_log().clear();
  K::launch_forward(fa, fp, fws.p, nullptr);

  K::BackwardArgs<T, W> ba{dy.p, x.p, mean.p, rstd.p, w.p, b.p, dx.p, dw.p, db.p};
  const P::BackwardPlan bp = K::fit_backward_plan(ba, P::plan_backward(pb, cs.ov));
  Buf<unsigned char> bws(K::backward_workspace_bytes(bp));
  K::launch_backward(ba, bp, bws.p, nullptr);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // ---------------------------------------------------------------- which kernels ran
  // The launcher must run the plans' launch lists (less the launches of unwanted outputs), each
  // kernel with the plan's grid, block and dynamic shared memory.
  std::vector<std::pair<const P::Launch*, int64_t>> planned;  // launch, vector width of its plan
  for (const auto& l : fp.launches) planned.push_back({&l, fp.vec});
  for (const auto& l : bp.launches) {
    if (l.id == P::Kernel::BwdParams && !want_dw && !want_db) continue;
    if ((l.id == P::Kernel::BwdDx || l.id == P::Kernel::BwdDxRows) && !want_dx) continue;
    planned.push_back({&l, bp.vec});
  }
  std::vector<std::string> kern;
  const std::vector<simt::LaunchRecord>& ran = simt::launch_log();
  if (ran.size() != planned.size()) why += " launcher:launch-count";
  for (size_t i = 0; i < planned.size(); ++i) {
    const P::Launch& l = *planned[i].first;
    kern.push_back(l.kernel);
    if (i >= ran.size()) continue;
    const simt::LaunchRecord& r = ran[i];
    if (r.kernel != kernel_of<T, W>(l.id, planned[i].second)) why += " launcher:kernel:" + l.kernel;
    if (r.grid.x != l.grid[0] || r.grid.y != l.grid[1] || r.grid.z != l.grid[2]) why += " launcher:grid:" + l.kernel;
    if (r.block.x != l.block[0] || r.block.y != l.block[1] || r.block.z != l.block[2])
      why += " launcher:block:" + l.kernel;
    if (static_cast<int64_t>(r.smem_bytes) != l.dynamic_smem_bytes) why += " launcher:smem:" + l.kernel;
    if (static_cast<int64_t>(r.cluster_x) != l.cluster) why += " launcher:cluster:" + l.kernel;
  }

  // ---------------------------------------------------------------- reference (long double)
  LD ey = 0, sy = 0, ex = 0, sx = 0, emean = 0, erstd = 0;
  std::vector<LD> dwr(C, 0), dbr(C, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      LD s = 0, ss = 0;
      for (int64_t c = g * D; c < (g + 1) * D; ++c)
        for (int64_t p = 0; p < HxW; ++p) s += xd[idx(n, c, p)];
      const LD mu = s / M;
      for (int64_t c = g * D; c < (g + 1) * D; ++c)
        for (int64_t p = 0; p < HxW; ++p) {
          const LD t = xd[idx(n, c, p)] - mu;
          ss += t * t;
        }
      const LD var = ss / M;
      const LD rs = 1.0L / std::sqrt(var + 1e-5L);
      const int64_t ng = n * G + g;
      emean = nanmax(emean, std::fabs((LD)from_t(mean.p[ng]) - mu) / (std::fabs(mu) + std::sqrt(var + 1e-5L)));
      erstd = nanmax(erstd, std::fabs((LD)from_t(rstd.p[ng]) / rs - 1));
      LD Ag = 0, Bg = 0;
      std::vector<LD> dprime(static_cast<size_t>(M));
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t c = g * D; c < (g + 1) * D; ++c)
          for (int64_t p = 0; p < HxW; ++p) {
            const size_t i = idx(n, c, p);
            const LD xh = (xd[i] - mu) * rs;
            const LD z = xh * wd[c] + bd[c];
            LD yr = z, d = dyd[i];
            if (cs.silu) {
              const LD sg = 1.0L / (1.0L + std::exp(-z));
              yr = z * sg;
              d = d * sg * (1 + z * (1 - sg));
            }
            if (pass == 0) {
              ey = nanmax(ey, std::fabs((LD)from_t(y.p[i]) - yr));
              sy = nanmax(sy, std::fabs(yr));
              dbr[c] += d;
              dwr[c] += d * xh;
              Ag += d * wd[c] * xh;
              Bg += d * wd[c];
            } else if (want_dx) {
              const LD dxr = rs * (d * wd[c] - (Bg + xh * Ag) / M);
              ex = nanmax(ex, std::fabs((LD)from_t(dx.p[i]) - dxr));
              sx = nanmax(sx, std::fabs(dxr));
            }
          }
    }
  LD ew = 0, sw = 0, eb = 0, sb = 0;
  for (int64_t c = 0; c < C; ++c) {
    if (want_dw) { ew = nanmax(ew, std::fabs((LD)from_t(dw.p[c]) - dwr[c])); sw = nanmax(sw, std::fabs(dwr[c])); }
    if (want_db) { eb = nanmax(eb, std::fabs((LD)from_t(db.p[c]) - dbr[c])); sb = nanmax(sb, std::fabs(dbr[c])); }
  }
  auto rel = [](LD e, LD s) { return static_cast<double>(e / (s > 0 ? s : 1)); };
  const double ry = rel(ey, sy), rx = want_dx ? rel(ex, sx) : 0, rw = want_dw ? rel(ew, sw) : 0,
               rb = want_db ? rel(eb, sb) : 0;
  const double tT = tol_of<T>(), tA = tol_of<A>(), tW = tol_of<W>();
  // NaN compares false: !(err <= tol) fails on NaN too.
  auto bad = [](double e, double t) { return !(e <= t); };
  if (bad(ry, tT)) why += " y";
  if (bad((double)emean, tA)) why += " mean";
  if (bad((double)erstd, tA)) why += " rstd";
  if (bad(rx, tT)) why += " dx";
  if (bad(rw, tW)) why += " dweight";
  if (bad(rb, tW)) why += " dbias";

  // ---------------------------------------------------------------- plan expectations (coverage)
  const Expect& e = cs.ex;
  const bool rows = fp.schedule == P::Schedule::Rows, bun = fp.schedule == P::Schedule::Bundle;
  if (e.fwd_sched >= 0 && static_cast<int>(fp.schedule) != e.fwd_sched) why += " plan:fwd-schedule";
  if (e.bwd_sched >= 0 && static_cast<int>(bp.schedule) != e.bwd_sched) why += " plan:bwd-schedule";
  if (e.vec == 1 && (fp.vec != 1 || bp.vec != 1)) why += " plan:not-scalar";
  if (e.vec == 2 && (fp.vec == 1 || bp.vec == 1)) why += " plan:not-vectorized";
  if (e.gpb_gt1 && fp.walk.gpb <= 1) why += " plan:gpb";
  if (e.splits_gt1 && !bun && (fp.walk.splits <= 1 || bp.schedule != P::Schedule::Split || bp.walk.splits <= 1))
    why += " plan:splits";
  if (e.pieces_gt1 && (bp.schedule != P::Schedule::Split || bp.sums.pieces <= 1)) why += " plan:pieces";
  if ((bun ? fp.bundle.block : fp.walk.block()) < e.min_block) why += " plan:block";
  if (e.cluster && (fp.launches.empty() || fp.launches[0].cluster != e.cluster || bp.launches.empty() ||
                    bp.launches[0].cluster != e.cluster))
    why += " plan:cluster";
  if (e.splits_gt1 && bun && fp.bundle.cluster <= 1) why += " plan:bundle-cluster";
  if (e.samples && (bp.schedule != P::Schedule::OnChip || bp.samples_per_block != e.samples)) why += " plan:samples";

  Fnv h;
  h.add(y.p, numel * sizeof(T));
  h.add(mean.p, N * G * sizeof(A));
  h.add(rstd.p, N * G * sizeof(A));
  if (want_dx) h.add(dx.p, numel * sizeof(T));
  if (want_dw) h.add(dw.p, C * sizeof(W));
  if (want_db) h.add(db.p, C * sizeof(W));

  std::string ks;
  for (const auto& k : kern) ks += (ks.empty() ? "" : ",") + k;
  const bool ok = why.empty();
  // fwd[splits=] prints the Rows schedule's pieces per sample, the Bundle schedule's cluster size
  if (!ok) ++g_failures;
  std::printf(
      "CASE %-34s fwd[%s vec=%lld splits=%lld tpg=%lld gpb=%lld grid=%lld block=%lld] "
      "bwd[%s %s vec=%lld pieces=%lld sums_grid=%lld sums_block=%lld dx_splits=%lld dx_grid=%lld nb=%lld] kernels=%s "
      "err[y=%.2e mean=%.2e rstd=%.2e dx=%.2e dw=%.2e db=%.2e] tol=%.1e hash=%016llx ms=%.0f %s%s\n",
      cs.name.c_str(), sched_name(fp.schedule), (long long)fp.vec,
      (long long)(rows ? fp.rows.pieces : bun ? fp.bundle.cluster : fp.walk.splits), (long long)fp.walk.tpg,
      (long long)fp.walk.gpb, (long long)(rows ? fp.rows.grid : bun ? fp.bundle.grid : fp.walk.grid),
      (long long)(rows ? fp.rows.block : bun ? fp.bundle.block : fp.walk.block()),
      sched_name(bp.schedule), cs.cl ? "nhwc" : "nchw", (long long)bp.vec, (long long)bp.sums.pieces, (long long)bp.sums.grid,
      (long long)bp.sums.block, (long long)bp.walk.splits, (long long)bp.walk.grid, (long long)bp.samples_per_block, ks.c_str(), ry,
      (double)emean, (double)erstd, rx, rw, rb, tT, (unsigned long long)h.h, ms, ok ? "PASS" : "FAIL", why.c_str());
  std::fflush(stdout);
}

static void dispatch(const Case& cs) {
  switch (cs.dt) {
    case DT::F32: return run_case<float, float>(cs);
#if !defined(SIMT_HARNESS_F32_ONLY)
    case DT::F64: return run_case<double, double>(cs);
    case DT::F16: return cs.wfloat ? run_case<__half, float>(cs) : run_case<__half, __half>(cs);
    case DT::BF16: return cs.wfloat ? run_case<__nv_bfloat16, float>(cs) : run_case<__nv_bfloat16, __nv_bfloat16>(cs);
#else
    default:
      std::printf("CASE %-34s SKIP (built with SIMT_HARNESS_F32_ONLY)\n", cs.name.c_str());
      return;
#endif
  }
}

// ------------------------------------------------------------------------------ the case table
#include "kernel_cases.h"  // make_cases()

int main(int argc, char** argv) {
  std::string subset = "all";
  std::vector<std::string> filters;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--list") list = true;
    else if (a == "--quick") subset = "quick";
    else if (a == "--subset" && i + 1 < argc) subset = argv[++i];
    else if (a == "--case-filter" && i + 1 < argc) filters.push_back(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--list] [--subset all|quick|tsan|asan|mutation] [--quick] "
                           "[--case-filter SUBSTR]...\n", argv[0]);
      return 2;
    }
  }
  unsigned need = 0;
  if (subset == "quick") need = T_QUICK;
  else if (subset == "tsan") need = T_TSAN;
  else if (subset == "asan") need = T_ASAN;
  else if (subset == "mutation") need = T_MUT;
  else if (subset != "all") {
    std::fprintf(stderr, "unknown subset %s\n", subset.c_str());
    return 2;
  }
  const std::vector<Case> cases = make_cases();
  std::set<std::string> names;
  int ran = 0;
  for (const Case& c : cases) {
    if (!names.insert(c.name).second) {
      std::fprintf(stderr, "duplicate case name %s\n", c.name.c_str());
      return 2;
    }
    if (need && !(c.tags & need)) continue;
    if (!filters.empty()) {
      bool m = false;
      for (const auto& f : filters) m = m || c.name.find(f) != std::string::npos;
      if (!m) continue;
    }
    if (list) {
      std::printf("%s%s%s%s%s\n", c.name.c_str(), c.tags & T_QUICK ? " quick" : "", c.tags & T_TSAN ? " tsan" : "",
                  c.tags & T_ASAN ? " asan" : "", c.tags & T_MUT ? " mutation" : "");
      continue;
    }
    dispatch(c);
    ++ran;
  }
  if (list) return 0;
  std::printf("SUMMARY %d cases, %d failures\n", ran, g_failures);
  return g_failures ? 1 : 0;
}
