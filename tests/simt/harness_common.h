// Shared by the SIMT kernel harness's runs (kernel_harness.cpp: the fused ops; split_harness.h:
// the split ops over shards): conversions, tolerances, exact-size buffers, deterministic data,
// the case record, the kernels a plan names, the launch-log check and the long-double
// reference of the whole op. Not a standalone header (included by kernel_harness.cpp after
// the launcher and the planner).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
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
  // Empty: the fused ops. Else the split ops (split_harness.h) over shards of these spatial
  // lengths (summing to HxW; 0: an empty shard), the statistics merged between them.
  std::vector<int64_t> shards = {};
  bool ofloat = false;  // y and dy in float (O = float), 16-bit x, W = float: autocast (fused ops)
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
// vector width of the plan; the Rows kernels exist for vectorized plans only; O: y's and dy's
// element type).
template <typename T, typename W, typename O, int V>
const void* kernel_of_v(P::Kernel id) {
  auto fn = [](auto f) { return reinterpret_cast<const void*>(f); };
  switch (id) {
    case P::Kernel::FwdOnChip: return fn(&K::gn_fwd_onchip<T, W, O, V>);
    case P::Kernel::FwdStats: return fn(&K::gn_fwd_stats<T, V>);
    case P::Kernel::FwdApply: return fn(&K::gn_fwd_apply<T, W, O, V>);
    case P::Kernel::FwdFinalize: return fn(&K::gn_fwd_finalize<T, W, O>);
    case P::Kernel::BwdOnChip: return fn(&K::gn_bwd_onchip<T, W, O, V>);
    case P::Kernel::BwdSiluR: return fn(&K::gn_bwd_silu_r<T, W, O>);
    case P::Kernel::BwdSumsNchw: return fn(&K::gn_bwd_sums_nchw<T, W, O, V>);
    case P::Kernel::BwdSumsNhwc: return fn(&K::gn_bwd_sums_nhwc<T, W, O, V>);
    case P::Kernel::BwdCoeffs: return fn(&K::gn_bwd_coeffs<T, W, O>);
    case P::Kernel::BwdParams: return fn(&K::gn_bwd_params<T, W, O>);
    case P::Kernel::BwdDx: return fn(&K::gn_bwd_dx<T, W, O, V>);
    case P::Kernel::SplitMoments: return fn(&K::gn_split_moments<T>);
    case P::Kernel::SplitGiven: return fn(&K::gn_split_given<T, W, O>);
    default: break;
  }
  if constexpr (V > 1) {
    switch (id) {
      case P::Kernel::FwdStatsRows: return fn(&K::gn_fwd_stats_rows<T, V>);
      case P::Kernel::FwdCluster: return fn(&K::gn_fwd_cluster<T, W, O, V>);
      case P::Kernel::FwdBundle: return fn(&K::gn_fwd_bundle<T, W, O, V>);
      case P::Kernel::BwdBundle: return fn(&K::gn_bwd_bundle<T, W, O, V>);
      case P::Kernel::BwdCluster: return fn(&K::gn_bwd_cluster<T, W, O, V>);
      case P::Kernel::FwdApplyRows: return fn(&K::gn_fwd_apply_rows<T, W, O, V>);
      case P::Kernel::BwdSumsRows: return fn(&K::gn_bwd_sums_rows<T, W, O, V>);
      case P::Kernel::BwdDxRows: return fn(&K::gn_bwd_dx_rows<T, W, O, V>);
      default: break;
    }
  }
  return nullptr;
}
template <typename T, typename W, typename O>
const void* kernel_of(P::Kernel id, int64_t vec) {
  constexpr int VF = static_cast<int>(16 / sizeof(T));
  return vec == 1 ? kernel_of_v<T, W, O, 1>(id) : kernel_of_v<T, W, O, VF>(id);
}

// max that keeps a NaN (std::max(a, NaN) returns a: a NaN output would vanish from the error).
static LD nanmax(LD a, LD b) { return (std::isnan(a) || b > a || std::isnan(b)) ? (std::isnan(a) ? a : b) : a; }
// ------------------------------------------------------------------------------ data
// The case's tensors (exact-size, `mis` elements of padding in front of x, dy) and their values
// as long doubles, from a seed of the case's name: identical in every build and run. dy in O
// (y's type): a float dy of a 16-bit x holds values no 16-bit type rounds to.
template <typename T, typename W, typename O> struct CaseData {
  const Case& cs;
  int64_t N, C, HxW, G, D, M;
  size_t numel;
  Buf<T> x;
  Buf<O> dy;
  Buf<W> w, b;
  std::vector<LD> xd, dyd, wd, bd;
  CaseData(const Case& c, size_t mis)
      : cs(c), N(c.N), C(c.C), HxW(c.HxW), G(c.G), D(c.C / c.G), M(c.C / c.G * c.HxW),
        numel(static_cast<size_t>(c.N * c.C * c.HxW)), x(numel, mis), dy(numel, mis), w(c.hasw ? c.C : 0),
        b(c.hasb ? c.C : 0), xd(numel), dyd(numel), wd(c.C, 1), bd(c.C, 0) {
    Rng rng(0x5eed0000ull + std::hash<std::string>{}(cs.name) % 1000003);
    for (size_t i = 0; i < numel; ++i) {
      x.p[i] = to_t<T>(cs.mean0 + cs.std0 * rng.normal());
      xd[i] = from_t(x.p[i]);
      dy.p[i] = to_t<O>(rng.normal());
      dyd[i] = from_t(dy.p[i]);
    }
    for (int64_t ch = 0; ch < C; ++ch) {
      if (cs.hasw) { w.p[ch] = to_t<W>(1.0 + 0.5 * rng.normal()); wd[ch] = from_t(w.p[ch]); }
      if (cs.hasb) { b.p[ch] = to_t<W>(0.5 * rng.normal()); bd[ch] = from_t(b.p[ch]); }
    }
  }
  // Offset of element (n, c, s) in a tensor of this case's layout with `hw` spatial positions.
  size_t at(int64_t n, int64_t c, int64_t s, int64_t hw) const {
    return static_cast<size_t>(cs.cl ? (n * hw + s) * C + c : (n * C + c) * hw + s);
  }
  size_t idx(int64_t n, int64_t c, int64_t s) const { return at(n, c, s, HxW); }
};

// The problem of a case (hw spatial positions: a shard's) for the planner.
template <typename T> P::DeviceProblem device_problem(const Case& cs, int64_t hw) {
  P::DeviceProblem pb;
  pb.N = cs.N;
  pb.C = cs.C;
  pb.HxW = hw;
  pb.G = cs.G;
  pb.dtype = K::DTypeOf<T>::value;
  pb.layout = cs.cl ? groupnorm_cuda::Layout::ChannelsLast : groupnorm_cuda::Layout::Contiguous;
  pb.act = cs.silu ? Activation::SiLU : Activation::None;
  pb.float_out = cs.ofloat;
  pb.sm_count = cs.sm;
  pb.max_cluster = cs.max_cluster;
  return pb;
}

// ------------------------------------------------------------------------------ launch log
// The launcher must run the planned launches (a launch and the vector width of its plan) in
// order, each kernel with the plan's grid, block, dynamic shared memory and cluster: compares
// with the SIMT launch log from entry `from` on; appends the kernel names to `kern`.
template <typename T, typename W, typename O>
void check_launch_log(const std::vector<std::pair<const P::Launch*, int64_t>>& planned, size_t from,
                      std::string& why, std::vector<std::string>& kern) {
  const std::vector<simt::LaunchRecord>& ran = simt::launch_log();
  if (ran.size() != from + planned.size()) why += " launcher:launch-count";
  for (size_t i = 0; i < planned.size(); ++i) {
    const P::Launch& l = *planned[i].first;
    kern.push_back(l.kernel);
    if (from + i >= ran.size()) continue;
    const simt::LaunchRecord& r = ran[from + i];
    if (r.kernel != kernel_of<T, W, O>(l.id, planned[i].second)) why += " launcher:kernel:" + l.kernel;
    if (r.grid.x != l.grid[0] || r.grid.y != l.grid[1] || r.grid.z != l.grid[2]) why += " launcher:grid:" + l.kernel;
    if (r.block.x != l.block[0] || r.block.y != l.block[1] || r.block.z != l.block[2])
      why += " launcher:block:" + l.kernel;
    if (static_cast<int64_t>(r.smem_bytes) != l.dynamic_smem_bytes) why += " launcher:smem:" + l.kernel;
    if (static_cast<int64_t>(r.cluster_x) != l.cluster) why += " launcher:cluster:" + l.kernel;
  }
}

// ------------------------------------------------------------------------------ reference
// Normwise relative errors (max |err| / max |ref|; mean: relative to |mu| + std; rstd: relative)
// of the whole op's outputs against a long-double reference. dx, dw, db null: not checked.
struct Errors {
  double y = 0, mean = 0, rstd = 0, dx = 0, dw = 0, db = 0;
};

template <typename T, typename W, typename O>
Errors reference_errors(const CaseData<T, W, O>& d, const O* y, const acc_t<T>* mean, const acc_t<T>* rstd, const T* dx,
                        const W* dw, const W* db) {
  const Case& cs = d.cs;
  const int64_t N = d.N, C = d.C, HxW = d.HxW, G = d.G, D = d.D, M = d.M;
  LD ey = 0, sy = 0, ex = 0, sx = 0, emean = 0, erstd = 0;
  std::vector<LD> dwr(C, 0), dbr(C, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      LD s = 0, ss = 0;
      for (int64_t c = g * D; c < (g + 1) * D; ++c)
        for (int64_t p = 0; p < HxW; ++p) s += d.xd[d.idx(n, c, p)];
      const LD mu = s / M;
      for (int64_t c = g * D; c < (g + 1) * D; ++c)
        for (int64_t p = 0; p < HxW; ++p) {
          const LD t = d.xd[d.idx(n, c, p)] - mu;
          ss += t * t;
        }
      const LD var = ss / M;
      const LD rs = 1.0L / std::sqrt(var + 1e-5L);
      const int64_t ng = n * G + g;
      emean = nanmax(emean, std::fabs((LD)from_t(mean[ng]) - mu) / (std::fabs(mu) + std::sqrt(var + 1e-5L)));
      erstd = nanmax(erstd, std::fabs((LD)from_t(rstd[ng]) / rs - 1));
      LD Ag = 0, Bg = 0;
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t c = g * D; c < (g + 1) * D; ++c)
          for (int64_t p = 0; p < HxW; ++p) {
            const size_t i = d.idx(n, c, p);
            const LD xh = (d.xd[i] - mu) * rs;
            const LD z = xh * d.wd[c] + d.bd[c];
            LD yr = z, dd = d.dyd[i];
            if (cs.silu) {
              const LD sg = 1.0L / (1.0L + std::exp(-z));
              yr = z * sg;
              dd = dd * sg * (1 + z * (1 - sg));
            }
            if (pass == 0) {
              ey = nanmax(ey, std::fabs((LD)from_t(y[i]) - yr));
              sy = nanmax(sy, std::fabs(yr));
              dbr[c] += dd;
              dwr[c] += dd * xh;
              Ag += dd * d.wd[c] * xh;
              Bg += dd * d.wd[c];
            } else if (dx) {
              const LD dxr = rs * (dd * d.wd[c] - (Bg + xh * Ag) / M);
              ex = nanmax(ex, std::fabs((LD)from_t(dx[i]) - dxr));
              sx = nanmax(sx, std::fabs(dxr));
            }
          }
    }
  LD ew = 0, sw = 0, eb = 0, sb = 0;
  for (int64_t c = 0; c < C; ++c) {
    if (dw) { ew = nanmax(ew, std::fabs((LD)from_t(dw[c]) - dwr[c])); sw = nanmax(sw, std::fabs(dwr[c])); }
    if (db) { eb = nanmax(eb, std::fabs((LD)from_t(db[c]) - dbr[c])); sb = nanmax(sb, std::fabs(dbr[c])); }
  }
  auto rel = [](LD e, LD s) { return static_cast<double>(e / (s > 0 ? s : 1)); };
  Errors r;
  r.y = rel(ey, sy);
  r.mean = static_cast<double>(emean);
  r.rstd = static_cast<double>(erstd);
  r.dx = dx ? rel(ex, sx) : 0;
  r.dw = dw ? rel(ew, sw) : 0;
  r.db = db ? rel(eb, sb) : 0;
  return r;
}

// The outputs over their tolerances (NaN fails too: !(err <= tol)), appended to `why`. y is
// judged by its own type O: a float y of a 16-bit x must not carry a 16-bit rounding.
template <typename T, typename W, typename O> void judge(const Errors& e, std::string& why) {
  const double tT = tol_of<T>(), tA = tol_of<acc_t<T>>(), tW = tol_of<W>();
  auto bad = [](double err, double tol) { return !(err <= tol); };
  if (bad(e.y, tol_of<O>())) why += " y";
  if (bad(e.mean, tA)) why += " mean";
  if (bad(e.rstd, tA)) why += " rstd";
  if (bad(e.dx, tT)) why += " dx";
  if (bad(e.dw, tW)) why += " dweight";
  if (bad(e.db, tW)) why += " dbias";
}
