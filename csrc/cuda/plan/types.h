// Types, tunables and shared helpers of the CUDA launch planner (csrc/cuda/launch_plan.h):
// the plan records that the launcher executes and describe() prints. Pure host C++17.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/cluster_layout.h"
#include "common/problem.h"

namespace groupnorm_cuda {
namespace plan {

// Every kernel a plan can launch. The launcher (kernels/launcher.cuh) switches on it; the
// backward's SiLU pre-pass is FwdStats / FwdStatsRows writing the backward's workspace.
enum class Kernel : int {
  FwdOnChip, FwdCluster, FwdBundle, FwdStats, FwdApply, FwdStatsRows, FwdFinalize, FwdApplyRows,
  BwdOnChip, BwdCluster, BwdBundle, BwdSiluR, BwdSumsNchw, BwdSumsNhwc, BwdSumsRows, BwdCoeffs, BwdParams, BwdDx, BwdDxRows,
  SplitMoments, SplitGiven,  // the split ops' own (split.h)
};

inline const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::FwdOnChip: return "gn_fwd_onchip";
    case Kernel::FwdCluster: return "gn_fwd_cluster";
    case Kernel::FwdBundle: return "gn_fwd_bundle";
    case Kernel::FwdStats: return "gn_fwd_stats";
    case Kernel::FwdApply: return "gn_fwd_apply";
    case Kernel::FwdStatsRows: return "gn_fwd_stats_rows";
    case Kernel::FwdFinalize: return "gn_fwd_finalize";
    case Kernel::FwdApplyRows: return "gn_fwd_apply_rows";
    case Kernel::BwdOnChip: return "gn_bwd_onchip";
    case Kernel::BwdCluster: return "gn_bwd_cluster";
    case Kernel::BwdBundle: return "gn_bwd_bundle";
    case Kernel::BwdSiluR: return "gn_bwd_silu_r";
    case Kernel::BwdSumsNchw: return "gn_bwd_sums_nchw";
    case Kernel::BwdSumsNhwc: return "gn_bwd_sums_nhwc";
    case Kernel::BwdSumsRows: return "gn_bwd_sums_rows";
    case Kernel::BwdCoeffs: return "gn_bwd_coeffs";
    case Kernel::BwdParams: return "gn_bwd_params";
    case Kernel::BwdDx: return "gn_bwd_dx";
    case Kernel::BwdDxRows: return "gn_bwd_dx_rows";
    case Kernel::SplitMoments: return "gn_split_moments";
    case Kernel::SplitGiven: return "gn_split_given";
  }
  return "?";
}

// One kernel launch of a plan: what the launcher passes to <<<grid, block, dynamic_smem_bytes>>>.
struct Launch {
  Kernel id = Kernel::FwdStats;
  std::string kernel;  // kernel_name(id)
  std::array<int64_t, 3> grid{1, 1, 1};
  std::array<int64_t, 3> block{1, 1, 1};
  int64_t dynamic_smem_bytes = 0;  // requested at launch
  int64_t cluster = 1;             // CTAs per thread-block cluster along x (1: no cluster)
  int64_t shared_mem_bytes = 0;    // per CTA in all: dynamic + the kernel's static buffers
  // Global-memory bytes this launch reads and writes (the DRAM-traffic model, traffic.h).
  int64_t bytes_read = 0, bytes_written = 0;
  // Extra facts worth printing (schedule, split factor, ...).
  std::vector<std::pair<std::string, int64_t>> params;
};

// ---------------------------------------------------------------------------------------
// Tunables.
constexpr int64_t kSmemBudgetBytes = 48 * 1024;      // static + dynamic smem per CTA without the opt-in
constexpr int64_t kStaticSmemBytes = 3 * 32 * 8;     // the largest static buffer (red[3][32] of double)
constexpr int64_t kDynSmemBytes = kSmemBudgetBytes - kStaticSmemBytes;  // dynamic smem per CTA, no opt-in
// Shared memory per block with cudaFuncAttributeMaxDynamicSharedMemorySize
// (cudaDevAttrMaxSharedMemoryPerBlockOptin): 227 KiB on sm_90, 163 KiB on sm_80.
constexpr int64_t kSmemOptinSm90 = 232448;
constexpr int64_t kMinChunkElems = 1024;             // smallest piece of a group per CTA
constexpr int64_t kMaxBlock = 256;                   // threads per CTA of the walk kernels
constexpr int64_t kMaxClusterBwdTpg = 512;           // threads per CTA, cluster backward (== kernels::kMaxThreadsBwdCluster)
constexpr int64_t kMaxOnChipTpg = 512;               // threads per CTA, on-chip forward (== kernels::kFwdOnChipMaxThreads;
                                                     // backward: kMaxBlock per group)
constexpr int64_t kMaxBundleThreads = 512;          // threads per CTA, bundle kernels (== kernels::kBundleMaxThreads)
constexpr int64_t kNhwcSumsThreads = 256;            // == kernels::kNhwcSumsMaxThreads
constexpr int64_t kMaxGridX = 2147483647;

enum class Schedule : int { Auto = -1, OnChip = 0, Split = 1, Rows = 2, Cluster = 3, Bundle = 4 };

// What a plan computes: the whole op, or one phase of it for the split ops (split.h).
enum class Part : int { Whole = -1, Stats = 0, Apply = 1, Sums = 2, Dx = 3 };

// The problem (common/problem.h) on a device: what the planner needs to know of the GPU.
struct DeviceProblem : Problem {
  int64_t sm_count = 132;               // streaming multiprocessors
  int64_t smem_optin = kSmemOptinSm90;  // shared memory per block with the opt-in (static included)
  int64_t max_cluster = 8;              // CTAs per thread-block cluster (1: no clusters, < sm_90; 8 portable,
                                        // 16 on sm_90 non-portable: device_limits, fit_*_plan)
};

// 0 / Auto = let the planner choose. Values are clamped to what is legal for the shape.
struct Overrides {
  Schedule schedule = Schedule::Auto;  // forward and backward: OnChip (only where the group fits), Cluster
                                       // (only where it applies) or Split; Rows, Bundle (forward; only
                                       // where they apply)
  int64_t splits = 0;           // walk kernels (forward split, SiLU pre-pass, dx): chunks per group;
                                // forward Rows: pieces per sample; Cluster: CTAs per cluster;
                                // Bundle: CTAs per bundle (1: no cluster)
  int64_t threads_per_group = 0;  // walk kernels: threads per group (multiple of 32, <= 1024)
  int64_t groups_per_block = 0;   // walk kernels when splits == 1 (and the on-chip forward)
  int64_t vec = 0;              // 1 = force scalar loads (else 16-byte vectors when legal)
  int64_t pieces = 0;           // backward sums: pieces of the reduced dimension
  int64_t samples_per_block = 0;  // on-chip backward: samples per CTA whose dweight/dbias terms the CTA adds
                                  // (0 auto, 1: one row of terms per sample)
};

// Work distribution of the element-walking kernels (mirrors kernels::WalkSched).
struct WalkPlan {
  int64_t splits = 1, chunk = 0, max_splits = 1;  // chunk in vectors
  int64_t tpg = 32, gpb = 1;
  int64_t grid = 0;
  int64_t block() const { return tpg * gpb; }
};

// Forward Rows schedule (mirrors kernels::RowsSched).
struct RowsPlan {
  int64_t pieces = 1, piece_len = 0, max_pieces = 1;  // spatial rows per CTA
  int64_t rows_par = 1;                               // row lanes per CTA
  int64_t block = 32, grid = 0;                       // stats / apply kernels
  int64_t smem_bytes = 0;                             // gn_fwd_stats_rows per-channel states
  int64_t finalize_block = 256, finalize_grid = 0;
  int64_t ws_gstat = 0;                               // workspace offset of (s, m, rstd) per group
};

// Forward Bundle schedule (mirrors kernels::BundleSched): channels-last groups that are not a
// whole number of 16-byte vectors, taken `k` at a time (a bundle of k * D channels is a whole
// number, `cols`, of vectors per spatial row) by one CTA or a thread-block cluster of `cluster`
// CTAs, each parking `chunk_rows` spatial rows of the bundle in shared memory.
struct BundlePlan {
  int64_t k = 1, cols = 1;             // groups per bundle, vectors per row of a bundle
  int64_t rows_par = 1, block = 32;    // row lanes per CTA (rows_par * cols active threads)
  int64_t cluster = 1, max_cluster = 1, chunk_rows = 0;
  int64_t grid = 0;
};

struct ForwardPlan {
  DeviceProblem prob;
  Overrides ov;
  Part part = Part::Whole;
  Schedule schedule = Schedule::Split;
  int64_t vec = 1;
  WalkPlan walk;
  RowsPlan rows;
  BundlePlan bundle;
  int64_t smem_bytes = 0;   // gn_fwd_onchip dynamic shared memory
  int64_t slot_bytes = 0;   // per group, on-chip
  int64_t workspace_bytes = 0;
  std::vector<Launch> launches;
};

struct SumsPlan {
  int64_t lanes = 1, rows_par = 1, row_blocks = 1;
  int64_t pieces = 1, piece_len = 0, max_pieces = 1;
  int64_t block = 32, grid = 0;
};

struct BackwardPlan {
  DeviceProblem prob;
  Overrides ov;
  Part part = Part::Whole;
  Schedule schedule = Schedule::Split;
  int64_t vec = 1;
  bool silu = false;
  WalkPlan walk;  // OnChip: gn_bwd_onchip; Cluster: gn_bwd_cluster; Split: gn_bwd_dx and the SiLU pre-pass gn_fwd_stats
  int64_t smem_bytes = 0;   // gn_bwd_onchip dynamic shared memory (x and dy tiles)
  int64_t chan_lanes = 1;   // gn_bwd_onchip / gn_bwd_cluster: threads per channel in the per-channel sums
  // gn_bwd_onchip: a CTA's gpb groups are the same gpb / nb groups of nb consecutive samples,
  // whose dweight/dbias terms it adds up: one row of terms per nb samples (1: the groups in
  // order, a row per sample).
  int64_t samples_per_block = 1;
  int64_t dwp_rows = 0;     // rows of per-channel dweight/dbias terms that gn_bwd_params adds
  SumsPlan sums;            // Split only
  RowsPlan rows;            // Rows only (sums pieces = rows.pieces)
  BundlePlan bundle;        // Bundle only
  int64_t coeff_block = 256, coeff_grid = 0;
  int64_t params_block = 256, params_grid = 0;
  // Workspace regions (bytes from the start, 256-byte aligned).
  int64_t ws_silu = 0, ws_sums = 0, ws_coef = 0, ws_dwp = 0, ws_r = 0, workspace_bytes = 0;
  std::vector<Launch> launches;
};


// ---------------------------------------------------------------------------------------
namespace detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline int64_t pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}
inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return std::max(lo, std::min(hi, v)); }

inline void validate(const DeviceProblem& p) {
  if (p.N < 0 || p.C <= 0 || p.HxW < 0 || p.G <= 0 || p.C % p.G != 0)
    throw std::invalid_argument("groupnorm_cuda launch plan: need N >= 0, C > 0, G > 0, C % G == 0");
  if (p.sm_count <= 0) throw std::invalid_argument("groupnorm_cuda launch plan: sm_count must be positive");
  if (p.smem_optin < kSmemBudgetBytes)
    throw std::invalid_argument("groupnorm_cuda launch plan: smem_optin must be at least 48 KiB");
  if (p.max_cluster < 1 || p.max_cluster > 16)
    throw std::invalid_argument("groupnorm_cuda launch plan: max_cluster must be in [1, 16]");
}

// Dynamic shared memory one CTA of an on-chip kernel may take (the opt-in limit less the
// kernels' static buffers). Only a CTA holding a single group goes past kDynSmemBytes: groups
// small enough to share a CTA are packed within the default 48 KiB, which keeps several CTAs
// per SM.
inline int64_t onchip_smem_limit(const DeviceProblem& p) { return p.smem_optin - kStaticSmemBytes; }

// 16-byte vectors when all vector offsets are multiples of the width (pointer alignment is
// checked at launch) and every vector lies inside one row of the 2-D view of a group, or,
// NCHW, inside the group's contiguous run and across at most two channels (a "flat" group:
// M % V == 0, HxW >= V, e.g. 7x7 with 4 or 8 channels per group). `rows_only`: the per-channel
// row kernels of the split backward, which need the first kind.
inline int64_t pick_vec(const DeviceProblem& p, const Overrides& ov, bool rows_only = false) {
  const int64_t v = 16 / elem_size(p.dtype);
  if (ov.vec == 1) return 1;
  const int64_t D = p.C / p.G;
  const bool flat = !rows_only && (D * p.HxW) % v == 0 && p.HxW >= v;
  const bool ok = p.layout == Layout::Contiguous ? (p.HxW % v == 0 || flat) : (D % v == 0);
  return ok ? v : 1;
}

inline int64_t min_ctas(const DeviceProblem& p) { return 2 * p.sm_count; }
inline int64_t target_ctas(const DeviceProblem& p) { return 4 * p.sm_count; }

inline WalkPlan plan_walk(const DeviceProblem& p, int64_t vec, const Overrides& ov) {
  WalkPlan w;
  const int64_t NG = p.N * p.G;
  const int64_t Mv = (p.C / p.G) * p.HxW / vec;
  const int64_t min_chunk = std::max<int64_t>(1, kMinChunkElems / vec);
  w.max_splits = std::max<int64_t>(1, ceil_div(Mv, min_chunk));
  int64_t splits;
  if (ov.splits > 0) splits = std::min(ov.splits, std::max<int64_t>(1, Mv));
  else if (NG >= min_ctas(p)) splits = 1;
  else splits = std::min(w.max_splits, ceil_div(target_ctas(p), std::max<int64_t>(1, NG)));
  splits = std::max<int64_t>(1, splits);
  w.chunk = std::max<int64_t>(1, ceil_div(Mv, splits));
  w.splits = std::max<int64_t>(1, ceil_div(Mv, w.chunk));
  if (ov.splits <= 0) w.max_splits = std::max(w.max_splits, w.splits);
  w.tpg = clamp64(pow2_ceil(ceil_div(w.chunk, 4)), 32, kMaxBlock);
  w.gpb = 1;
  if (w.splits == 1) {
    w.gpb = std::max<int64_t>(1, kMaxBlock / w.tpg);
    while (w.gpb > 1 && ceil_div(NG, w.gpb) < min_ctas(p)) w.gpb /= 2;
  }
  if (ov.threads_per_group > 0) w.tpg = clamp64(round_up(ov.threads_per_group, 32), 32, 1024);
  if (ov.groups_per_block > 0 && w.splits == 1) w.gpb = ov.groups_per_block;
  if (w.splits > 1) w.gpb = 1;
  w.gpb = std::max<int64_t>(1, std::min(w.gpb, 1024 / w.tpg));
  w.grid = ceil_div(NG, w.gpb) * w.splits;
  if (w.grid > kMaxGridX) throw std::invalid_argument("groupnorm_cuda launch plan: grid too large");
  return w;
}

// On-chip walk: one group per `tpg` (<= max_tpg) threads, `gpb` groups per CTA, each group
// owning `slot_bytes` of dynamic shared memory (gpb > 1 only within kDynSmemBytes), at most
// max_block threads per CTA (the kernel's launch bound), overrides included.
inline WalkPlan plan_onchip_walk(const DeviceProblem& p, int64_t Mv, int64_t slot_bytes, int64_t max_tpg,
                                 int64_t max_block, const Overrides& ov) {
  const int64_t NG = p.N * p.G;
  WalkPlan on;
  on.splits = 1;
  on.max_splits = 1;
  on.chunk = Mv;
  on.tpg = clamp64(pow2_ceil(ceil_div(Mv, 4)), 32, max_tpg);
  on.gpb = std::max<int64_t>(1, std::min(kMaxBlock / on.tpg, kDynSmemBytes / slot_bytes));
  while (on.gpb > 1 && ceil_div(NG, on.gpb) < min_ctas(p)) on.gpb /= 2;
  if (ov.threads_per_group > 0) on.tpg = clamp64(round_up(ov.threads_per_group, 32), 32, max_block);
  if (ov.groups_per_block > 0) on.gpb = ov.groups_per_block;
  on.gpb = std::max<int64_t>(1, std::min({on.gpb, max_block / on.tpg, std::max<int64_t>(1, kDynSmemBytes / slot_bytes)}));
  on.grid = ceil_div(NG, on.gpb);
  return on;
}

// On-chip or not: forced by the override where the data fits, else when it fits and gives
// enough CTAs, or when the split alternative could not have had more of them.
inline bool choose_onchip(const DeviceProblem& p, const Overrides& ov, bool fits, const WalkPlan& on, const WalkPlan& split) {
  if (ov.schedule == Schedule::OnChip) return fits;
  if (ov.schedule == Schedule::Split || ov.schedule == Schedule::Rows || ov.schedule == Schedule::Cluster) return false;
  return fits && (on.grid >= min_ctas(p) || split.max_splits == 1);
}

// Cluster candidate (vector path, devices with clusters): the smallest cluster (a power of two
// up to max_cluster, or the override) whose chunks all hold data and whose shared memory
// (smem_of(chunk, cluster)) fits one CTA, and that gives >= 2 CTAs per SM; else the largest
// that fits. False when none fits.
template <typename SmemOf>
inline bool plan_cluster(const DeviceProblem& p, const Overrides& ov, int64_t vec, int64_t Mv, int64_t max_tpg,
                         WalkPlan& w, int64_t& smem, SmemOf smem_of) {
  if (p.max_cluster < 2 || vec == 1) return false;
  const int64_t NG = p.N * p.G;
  int64_t best = 0;
  auto usable = [&](int64_t cs) {
    const int64_t chunk = ceil_div(Mv, cs);
    return (cs - 1) * chunk < Mv && smem_of(chunk, cs) <= p.smem_optin && NG * cs <= kMaxGridX;
  };
  if (ov.splits > 0) {
    const int64_t cs = clamp64(ov.splits, 2, p.max_cluster);
    if (usable(cs)) best = cs;
  } else {
    for (int64_t cs = 2; cs <= p.max_cluster; cs *= 2) {
      if (!usable(cs)) continue;
      best = cs;
      if (NG * cs >= min_ctas(p)) break;
    }
  }
  if (best == 0) return false;
  w = WalkPlan{};
  w.splits = w.max_splits = best;
  w.chunk = ceil_div(Mv, best);
  w.tpg = clamp64(pow2_ceil(ceil_div(w.chunk, 4)), 32, max_tpg);
  if (ov.threads_per_group > 0) w.tpg = clamp64(round_up(ov.threads_per_group, 32), 32, max_tpg);
  w.gpb = 1;
  w.grid = NG * best;
  smem = smem_of(w.chunk, best);
  return true;
}

// A launch of `k` with `dynamic_smem` bytes of dynamic and `static_smem` of static shared memory.
inline Launch make_launch(Kernel k, int64_t dynamic_smem = 0, int64_t static_smem = 0) {
  Launch l;
  l.id = k;
  l.kernel = kernel_name(k);
  l.dynamic_smem_bytes = dynamic_smem;
  l.shared_mem_bytes = dynamic_smem + static_smem;
  return l;
}

inline Launch plain_launch(Kernel k, int64_t grid, int64_t block) {
  Launch l = make_launch(k);
  l.grid = {grid, 1, 1};
  l.block = {block, 1, 1};
  return l;
}

inline Launch rows_launch(Kernel k, const RowsPlan& r, int64_t vec, int64_t dynamic_smem) {
  Launch l = plain_launch(k, r.grid, r.block);
  l.dynamic_smem_bytes = l.shared_mem_bytes = dynamic_smem;
  l.params = {{"vec", vec},
              {"pieces", r.pieces},
              {"max_pieces", r.max_pieces},
              {"piece_len", r.piece_len},
              {"rows_par", r.rows_par},
              {"schedule", static_cast<int64_t>(Schedule::Rows)}};
  return l;
}

inline void walk_params(Launch& l, const WalkPlan& w, int64_t vec) {
  l.grid = {w.grid, 1, 1};
  l.block = {w.block(), 1, 1};
  l.params.push_back({"vec", vec});
  l.params.push_back({"splits", w.splits});
  l.params.push_back({"max_splits", w.max_splits});
  l.params.push_back({"chunk_vectors", w.chunk});
  l.params.push_back({"threads_per_group", w.tpg});
  l.params.push_back({"groups_per_block", w.gpb});
}

// Rows schedule, if it applies: channels-last, a group is not a whole number of 16-byte
// vectors, a row of C channels is, and the per-channel states of a CTA fit in shared memory.
inline bool plan_rows(const DeviceProblem& p, const Overrides& ov, RowsPlan& r, int64_t& vec) {
  const int64_t v = 16 / elem_size(p.dtype);
  const int64_t D = p.C / p.G;
  if (p.layout != Layout::ChannelsLast || ov.vec == 1 || D % v == 0 || p.C % v != 0) return false;
  const int64_t cw = p.C / v;
  if (cw > 2 * kMaxBlock) return false;
  const int64_t min_rows = std::max<int64_t>(1, ceil_div(kMinChunkElems, p.C));
  r.max_pieces = std::max<int64_t>(1, ceil_div(p.HxW, min_rows));
  int64_t pieces;
  if (ov.splits > 0) pieces = std::min(ov.splits, p.HxW);
  else if (p.N >= min_ctas(p)) pieces = 1;
  else pieces = std::min(r.max_pieces, ceil_div(target_ctas(p), p.N));
  pieces = std::max<int64_t>(1, pieces);
  r.piece_len = ceil_div(p.HxW, pieces);
  r.pieces = ceil_div(p.HxW, r.piece_len);
  r.max_pieces = std::max(r.max_pieces, r.pieces);
  r.rows_par = clamp64(kMaxBlock / cw, 1, r.piece_len);
  r.block = round_up(cw * r.rows_par, 32);
  r.grid = p.N * r.pieces;
  r.smem_bytes = r.block * v * 3 * acc_size(p.dtype);
  if (r.smem_bytes > kDynSmemBytes || r.grid > kMaxGridX) return false;
  r.finalize_grid = ceil_div(p.N * p.G, r.finalize_block / 32);
  vec = v;
  return true;
}

// Bundle schedule (gn_fwd_bundle / gn_bwd_bundle), if it applies: channels-last, vectorized, a
// group is not a whole number of 16-byte vectors but k = V / gcd(D, V) groups are (k divides G
// when C % V == 0), no vector touches more than two groups, a row of the bundle fits a CTA's
// threads, and the bundle (x; backward: x and dy) fits shared memory on one CTA or on a
// cluster (powers of two up to max_cluster; every CTA of a cluster holding rows, at least
// kMinChunkElems elements): the smallest such cluster size that gives >= 2 CTAs per SM, else
// the largest. The backward keeps 2 sums per lane and 2 per thread in shared memory: 256
// threads at most for the 16-bit types (18 KiB).
inline bool plan_bundle(const DeviceProblem& p, const Overrides& ov, bool backward, BundlePlan& b, int64_t& smem) {
  const int64_t v = 16 / elem_size(p.dtype);
  const int64_t D = p.C / p.G;
  if (p.layout != Layout::ChannelsLast || ov.vec == 1 || D % v == 0 || p.C % v != 0 || p.HxW == 0) return false;
  const int64_t k = v / std::gcd(D, v);
  const int64_t cols = k * D / v;
  if (p.G % k != 0 || cols > kMaxBundleThreads) return false;
  const int64_t max_span = backward && v == 8 ? kMaxBundleThreads / 2 : kMaxBundleThreads;
  for (int64_t c = 0; c < cols; ++c)
    if ((c * v + v - 1) / D - c * v / D > 1) return false;
  const int64_t NB = p.N * p.G / k;
  auto rows_of = [&](int64_t cs) { return ceil_div(p.HxW, cs); };
  auto rows_par_of = [&](int64_t cs) { return clamp64(max_span / cols, 1, rows_of(cs)); };
  auto smem_of = [&](int64_t cs) {
    return bundle_smem_layout(backward, rows_of(cs) * cols, v, elem_size(p.dtype), out_elem_size(p), acc_size(p.dtype),
                              rows_par_of(cs) * cols, k, cols, cs).bytes;
  };
  // a CTA of a cluster gets at least kMinChunkElems elements: more CTAs for a tiny bundle buy
  // nothing and cost a row of dweight/dbias terms per CTA in the backward
  auto big_enough = [&](int64_t cs) { return cs == 1 || rows_of(cs) * cols * v >= kMinChunkElems; };
  auto usable = [&](int64_t cs) {
    return (cs - 1) * rows_of(cs) < p.HxW && smem_of(cs) <= p.smem_optin && NB * cs <= kMaxGridX;
  };
  int64_t best = 0, largest = 0;
  if (ov.splits > 0) {
    const int64_t cs = clamp64(ov.splits, 1, p.max_cluster);
    if (usable(cs)) best = largest = cs;
  } else {
    for (int64_t cs = 1; cs <= p.max_cluster; cs *= 2) {
      if (!usable(cs) || !big_enough(cs)) continue;
      largest = cs;
      if (best == 0 && NB * cs >= min_ctas(p)) best = cs;
    }
    if (best == 0) best = largest;
  }
  if (best == 0) return false;
  b.k = k;
  b.cols = cols;
  b.cluster = best;
  b.max_cluster = largest;
  b.chunk_rows = rows_of(best);
  b.rows_par = rows_par_of(best);
  b.block = round_up(b.rows_par * cols, 32);
  b.grid = NB * best;
  smem = smem_of(best);
  return true;
}


inline Launch bundle_launch(Kernel k, const BundlePlan& b, int64_t vec, int64_t smem) {
  Launch l = make_launch(k, smem, 0);
  l.grid = {b.grid, 1, 1};
  l.block = {b.block, 1, 1};
  l.cluster = b.cluster;
  l.params = {{"vec", vec},
              {"groups_per_bundle", b.k},
              {"bundle_cols", b.cols},
              {"rows_par", b.rows_par},
              {"chunk_rows", b.chunk_rows},
              {"splits", b.cluster},
              {"max_splits", b.max_cluster},
              {"schedule", static_cast<int64_t>(Schedule::Bundle)}};
  return l;
}

}  // namespace detail

}  // namespace plan
}  // namespace groupnorm_cuda
