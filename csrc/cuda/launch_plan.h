// Launch planning for the CUDA kernels: pure host C++17 (no torch, no CUDA headers), so it is
// compiled into every build (CPU-only included), exposed to Python as
// groupnorm_cuda.cuda_launch_plan, unit-tested without a GPU, and used by the simt harness.
//
// plan_forward / plan_backward are the single source of truth: the CUDA launcher
// (csrc/cuda/kernels/launcher.cuh) launches exactly what they return, and describe() prints
// it. Overrides force a schedule, split factor, block size or vector width so that tiny
// tensors can exercise every code path (tests/simt).
//
// Schedules (M = D * HxW elements per group (n, g), NG = N * G groups):
//   forward OnChip : gn_fwd_onchip. gpb groups per CTA, tpg threads per group, each group's
//                    data parked in shared memory between the statistics and the epilogue:
//                    1 read + 1 write. Chosen when a group fits (<= 32 KiB) and either there
//                    are enough CTAs (>= 2 per SM) or the group is too small to split.
//   forward Split  : gn_fwd_stats + gn_fwd_apply. Each group cut into `splits` chunks of
//                    `chunk` vectors; partial (count, mean, M2) in an fp32 (fp64) workspace,
//                    merged in a fixed order by every apply CTA: 2 reads + 1 write.
//   forward Rows   : gn_fwd_stats_rows + gn_fwd_finalize + gn_fwd_apply_rows. Channels-last
//                    only, when a group's channels are not a whole number of 16-byte vectors
//                    but a row of C channels is (the Split walk would load scalars): CTAs take
//                    `piece_len` spatial rows x all C channels of one sample: 2 reads + 1 write.
//   backward OnChip: gn_bwd_onchip + gn_bwd_params. A group's x and dy parked in shared
//                    memory between the reductions and dx: reads x and dy once, writes dx
//                    (3 accesses, SiLU included). Chosen on the same terms as the forward's
//                    on-chip schedule when x and dy of a group fit (<= 24 KiB each).
//   backward Split : [gn_fwd_stats (SiLU pre-pass)] + gn_bwd_sums_{nchw,nhwc} + gn_bwd_coeffs
//                    + gn_bwd_params + gn_bwd_dx: reads x, dy twice, writes dx (5 accesses;
//                    6 with SiLU).
//   backward Rows  : where the forward's Rows schedule applies: [gn_fwd_stats_rows +
//                    gn_bwd_silu_r] + gn_bwd_sums_rows + gn_bwd_coeffs + gn_bwd_params +
//                    gn_bwd_dx_rows, the same accesses with vectors along C.
//   Both reduce dweight/dbias over n in a fixed order (gn_bwd_params): no atomics.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/activation.h"

namespace groupnorm_cuda {
namespace plan {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };
enum class MemLayout : int { Contiguous = 0, ChannelsLast = 1 };

struct Launch {
  std::string kernel;
  std::array<int64_t, 3> grid{1, 1, 1};
  std::array<int64_t, 3> block{1, 1, 1};
  int64_t shared_mem_bytes = 0;
  // Extra facts worth printing (schedule, split factor, ...).
  std::vector<std::pair<std::string, int64_t>> params;
};

struct Plans {
  std::vector<Launch> forward;
  std::vector<Launch> backward;
};

// ---------------------------------------------------------------------------------------
// Tunables.
constexpr int64_t kOnChipMaxGroupBytes = 32 * 1024;  // a group parked in shared memory
constexpr int64_t kSmemBudgetBytes = 48 * 1024;      // static + dynamic smem per CTA (no opt-in)
constexpr int64_t kStaticSmemBytes = 3 * 32 * 8;     // the largest static buffer (red[3][32] of double)
constexpr int64_t kDynSmemBytes = kSmemBudgetBytes - kStaticSmemBytes;  // dynamic smem per CTA
constexpr int64_t kMinChunkElems = 1024;             // smallest piece of a group per CTA
constexpr int64_t kMaxBlock = 256;                   // threads per CTA of the walk kernels
constexpr int64_t kMaxOnChipTpg = 512;               // threads per group, on-chip forward (backward: kMaxBlock)
constexpr int64_t kNhwcSumsThreads = 256;            // == kernels::kNhwcSumsMaxThreads
constexpr int64_t kMaxGridX = 2147483647;

enum class Schedule : int { Auto = -1, OnChip = 0, Split = 1, Rows = 2 };

struct Problem {
  int64_t N = 0, C = 0, HxW = 1, G = 1;
  DType dtype = DType::Float32;
  MemLayout layout = MemLayout::Contiguous;
  int64_t sm_count = 132;
  Activation act = Activation::None;
};

// 0 / Auto = let the planner choose. Values are clamped to what is legal for the shape.
struct Overrides {
  Schedule schedule = Schedule::Auto;  // forward and backward: OnChip (only where the group fits) or Split;
                                       // forward Rows (only where it applies, else Split)
  int64_t splits = 0;           // walk kernels (forward split, SiLU pre-pass, dx): chunks per group;
                                // forward Rows: pieces per sample
  int64_t threads_per_group = 0;  // walk kernels: threads per group (multiple of 32, <= 1024)
  int64_t groups_per_block = 0;   // walk kernels when splits == 1 (and the on-chip forward)
  int64_t vec = 0;              // 1 = force scalar loads (else 16-byte vectors when legal)
  int64_t pieces = 0;           // backward sums: pieces of the reduced dimension
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
  int64_t ws_gstat = 0;                               // workspace offset of (m, rstd) per group
};

struct ForwardPlan {
  Problem prob;
  Overrides ov;
  Schedule schedule = Schedule::Split;
  int64_t vec = 1;
  WalkPlan walk;
  RowsPlan rows;
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
  Problem prob;
  Overrides ov;
  Schedule schedule = Schedule::Split;
  int64_t vec = 1;
  bool silu = false;
  WalkPlan walk;  // OnChip: gn_bwd_onchip; Split: gn_bwd_dx and the SiLU pre-pass gn_fwd_stats
  int64_t smem_bytes = 0;   // gn_bwd_onchip dynamic shared memory (x and dy tiles)
  int64_t chan_lanes = 1;   // gn_bwd_onchip: threads per channel in the per-channel sums
  SumsPlan sums;            // Split only
  RowsPlan rows;            // Rows only (sums pieces = rows.pieces)
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

inline int64_t elem_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::Float16:
    case DType::BFloat16: return 2;
  }
  return 4;
}
inline int64_t acc_size(DType t) { return t == DType::Float64 ? 8 : 4; }

inline void validate(const Problem& p) {
  if (p.N < 0 || p.C <= 0 || p.HxW < 0 || p.G <= 0 || p.C % p.G != 0)
    throw std::invalid_argument("groupnorm_cuda launch plan: need N >= 0, C > 0, G > 0, C % G == 0");
  if (p.sm_count <= 0) throw std::invalid_argument("groupnorm_cuda launch plan: sm_count must be positive");
}

// 16-byte vectors when every vector lies inside one row of the 2-D view of a group and
// all vector offsets are multiples of the width (pointer alignment is checked at launch).
inline int64_t pick_vec(const Problem& p, const Overrides& ov) {
  const int64_t v = 16 / elem_size(p.dtype);
  if (ov.vec == 1) return 1;
  const int64_t D = p.C / p.G;
  const bool ok = p.layout == MemLayout::Contiguous ? (p.HxW % v == 0) : (D % v == 0);
  return ok ? v : 1;
}

inline int64_t min_ctas(const Problem& p) { return 2 * p.sm_count; }
inline int64_t target_ctas(const Problem& p) { return 4 * p.sm_count; }

inline WalkPlan plan_walk(const Problem& p, int64_t vec, const Overrides& ov) {
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
// owning `slot_bytes` of dynamic shared memory.
inline WalkPlan plan_onchip_walk(const Problem& p, int64_t Mv, int64_t slot_bytes, int64_t max_tpg,
                                 const Overrides& ov) {
  const int64_t NG = p.N * p.G;
  WalkPlan on;
  on.splits = 1;
  on.max_splits = 1;
  on.chunk = Mv;
  on.tpg = clamp64(pow2_ceil(ceil_div(Mv, 4)), 32, max_tpg);
  on.gpb = std::max<int64_t>(1, std::min(kMaxBlock / on.tpg, kDynSmemBytes / slot_bytes));
  while (on.gpb > 1 && ceil_div(NG, on.gpb) < min_ctas(p)) on.gpb /= 2;
  if (ov.threads_per_group > 0) on.tpg = clamp64(round_up(ov.threads_per_group, 32), 32, 1024);
  if (ov.groups_per_block > 0) on.gpb = ov.groups_per_block;
  on.gpb = std::max<int64_t>(1, std::min({on.gpb, 1024 / on.tpg, kDynSmemBytes / slot_bytes}));
  on.grid = ceil_div(NG, on.gpb);
  return on;
}

// On-chip or not: forced by the override where the data fits, else when it fits and gives
// enough CTAs, or when the split alternative could not have had more of them.
inline bool choose_onchip(const Problem& p, const Overrides& ov, bool fits, const WalkPlan& on, const WalkPlan& split) {
  if (ov.schedule == Schedule::OnChip) return fits;
  if (ov.schedule == Schedule::Split || ov.schedule == Schedule::Rows) return false;
  return fits && (on.grid >= min_ctas(p) || split.max_splits == 1);
}

inline Launch plain_launch(const char* kernel, int64_t grid, int64_t block, int64_t smem = 0) {
  Launch l;
  l.kernel = kernel;
  l.grid = {grid, 1, 1};
  l.block = {block, 1, 1};
  l.shared_mem_bytes = smem;
  return l;
}

inline Launch rows_launch(const char* kernel, const RowsPlan& r, int64_t vec, int64_t smem) {
  Launch l = plain_launch(kernel, r.grid, r.block, smem);
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
inline bool plan_rows(const Problem& p, const Overrides& ov, RowsPlan& r, int64_t& vec) {
  const int64_t v = 16 / elem_size(p.dtype);
  const int64_t D = p.C / p.G;
  if (p.layout != MemLayout::ChannelsLast || ov.vec == 1 || D % v == 0 || p.C % v != 0) return false;
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

}  // namespace detail

// ---------------------------------------------------------------------------------------
inline ForwardPlan plan_forward(const Problem& p, const Overrides& ov = {}) {
  using namespace detail;
  validate(p);
  ForwardPlan f;
  f.prob = p;
  f.ov = ov;
  f.vec = pick_vec(p, ov);
  const int64_t NG = p.N * p.G;
  const int64_t D = p.C / p.G;
  const int64_t Mv = D * p.HxW / f.vec;
  if (NG == 0 || Mv == 0) return f;  // nothing to launch

  // On-chip candidate.
  f.slot_bytes = round_up(Mv * f.vec * elem_size(p.dtype), 16);
  const bool fits = f.slot_bytes <= kOnChipMaxGroupBytes;
  const WalkPlan on = plan_onchip_walk(p, Mv, f.slot_bytes, kMaxOnChipTpg, ov);
  const WalkPlan split = plan_walk(p, f.vec, ov);
  const bool use_onchip = choose_onchip(p, ov, fits, on, split);

  const int64_t acc = acc_size(p.dtype);
  RowsPlan rows;
  int64_t rows_vec = 1;
  if (!use_onchip && (ov.schedule == Schedule::Auto || ov.schedule == Schedule::Rows) &&
      plan_rows(p, ov, rows, rows_vec)) {
    f.schedule = Schedule::Rows;
    f.vec = rows_vec;
    f.rows = rows;
    const int64_t part = round_up(NG * rows.pieces * 3 * acc, 256);
    f.rows.ws_gstat = part;
    f.workspace_bytes = part + round_up(NG * 2 * acc, 256);
    f.launches = {rows_launch("gn_fwd_stats_rows", rows, rows_vec, rows.smem_bytes),
                   plain_launch("gn_fwd_finalize", rows.finalize_grid, rows.finalize_block),
                   rows_launch("gn_fwd_apply_rows", rows, rows_vec, 0)};
    return f;
  }
  if (use_onchip) {
    f.schedule = Schedule::OnChip;
    f.walk = on;
    f.smem_bytes = on.gpb * f.slot_bytes;
    Launch l;
    l.kernel = "gn_fwd_onchip";
    walk_params(l, on, f.vec);
    // max_splits of the alternative: a split schedule could not have had more CTAs.
    for (auto& kv : l.params)
      if (kv.first == "max_splits") kv.second = split.max_splits;
    l.shared_mem_bytes = f.smem_bytes + 3 * 32 * acc;  // + static reduction buffer
    l.params.push_back({"schedule", static_cast<int64_t>(Schedule::OnChip)});
    f.launches.push_back(l);
  } else {
    f.schedule = Schedule::Split;
    f.walk = split;
    f.workspace_bytes = round_up(NG * split.splits * 3 * acc, 256);
    Launch s;
    s.kernel = "gn_fwd_stats";
    walk_params(s, split, f.vec);
    s.shared_mem_bytes = 3 * 32 * acc;
    s.params.push_back({"schedule", static_cast<int64_t>(Schedule::Split)});
    Launch a;
    a.kernel = "gn_fwd_apply";
    walk_params(a, split, f.vec);
    a.params.push_back({"schedule", static_cast<int64_t>(Schedule::Split)});
    f.launches.push_back(s);
    f.launches.push_back(a);
  }
  return f;
}

inline BackwardPlan plan_backward(const Problem& p, const Overrides& ov = {}) {
  using namespace detail;
  validate(p);
  BackwardPlan b;
  b.prob = p;
  b.ov = ov;
  b.vec = pick_vec(p, ov);
  b.silu = p.act == Activation::SiLU;
  const int64_t NG = p.N * p.G;
  const int64_t D = p.C / p.G;
  const int64_t V = b.vec;
  if (NG == 0 || D * p.HxW == 0) return b;
  const int64_t acc = acc_size(p.dtype);
  b.params_block = 256;
  b.params_grid = ceil_div(p.C, b.params_block);

  b.walk = plan_walk(p, V, ov);

  // On-chip candidate: x and dy tiles of a group side by side.
  const int64_t Mv = D * p.HxW / V;
  const int64_t slot2 = 2 * round_up(Mv * V * elem_size(p.dtype), 16);
  // At most 256 threads: gn_bwd_onchip takes up to 80 registers (RESULTS.md), so 512-thread
  // CTAs would leave one CTA per SM.
  const WalkPlan on = plan_onchip_walk(p, Mv, slot2, kMaxBlock, ov);
  if (choose_onchip(p, ov, slot2 <= kDynSmemBytes, on, b.walk)) {
    const int64_t split_max = b.walk.max_splits;
    b.schedule = Schedule::OnChip;
    b.walk = on;
    b.smem_bytes = on.gpb * slot2;
    // Channels of a group shared out over its threads: as many lanes per channel as the
    // threads allow (a power of two <= 32, so the lanes of a channel are within one warp).
    b.chan_lanes = clamp64(on.tpg / std::max<int64_t>(1, D), 1, 32);
    while (b.chan_lanes & (b.chan_lanes - 1)) b.chan_lanes &= b.chan_lanes - 1;
    b.ws_dwp = 0;
    b.workspace_bytes = round_up(p.N * p.C * 2 * acc, 256);
    Launch l;
    l.kernel = "gn_bwd_onchip";
    walk_params(l, on, V);
    for (auto& kv : l.params)  // as in the forward: what the split alternative could reach
      if (kv.first == "max_splits") kv.second = split_max;
    l.shared_mem_bytes = b.smem_bytes + 3 * 32 * acc;  // + static reduction buffer
    l.params.push_back({"chan_lanes", b.chan_lanes});
    l.params.push_back({"schedule", static_cast<int64_t>(Schedule::OnChip)});
    b.launches.push_back(l);
    b.launches.push_back(plain_launch("gn_bwd_params", b.params_grid, b.params_block));
    return b;
  }

  SumsPlan& s = b.sums;
  int64_t rows_vec = 1;
  const bool rows = (ov.schedule == Schedule::Auto || ov.schedule == Schedule::Rows) &&
                    plan_rows(p, ov, b.rows, rows_vec);
  if (rows) {
    b.schedule = Schedule::Rows;
    b.vec = rows_vec;
    s.pieces = s.max_pieces = b.rows.pieces;
    s.piece_len = b.rows.piece_len;
    s.grid = b.rows.grid;
    s.block = b.rows.block;
    b.walk.splits = b.rows.pieces;  // SiLU pre-pass partials per group
  } else if (p.layout == MemLayout::Contiguous) {
    // Rows = channels of the group (D), K = HxW / V vector-columns; `lanes` threads per
    // row (a power of two <= 32, sub-warp shuffle reduce), pieces split the columns.
    const int64_t K = p.HxW / V;
    const int64_t min_piece = std::max<int64_t>(1, kMinChunkElems / V);
    s.max_pieces = std::max<int64_t>(1, ceil_div(K, min_piece));
    const int64_t lanes0 = std::min<int64_t>(32, pow2_ceil(K));
    const int64_t rows0 = std::min(D, std::max<int64_t>(1, kMaxBlock / lanes0));
    const int64_t base = NG * ceil_div(D, rows0);
    int64_t pieces;
    if (ov.pieces > 0) pieces = std::min(ov.pieces, K);
    else if (base >= min_ctas(p)) pieces = 1;
    else pieces = std::min(s.max_pieces, ceil_div(target_ctas(p), base));
    pieces = std::max<int64_t>(1, pieces);
    s.piece_len = ceil_div(K, pieces);
    s.pieces = ceil_div(K, s.piece_len);
    s.max_pieces = std::max(s.max_pieces, s.pieces);
    s.lanes = std::min<int64_t>(32, pow2_ceil(s.piece_len));
    s.rows_par = std::min(D, std::max<int64_t>(1, kMaxBlock / s.lanes));
    s.row_blocks = ceil_div(D, s.rows_par);
    s.block = round_up(s.lanes * s.rows_par, 32);
    s.grid = NG * s.row_blocks * s.pieces;
  } else {
    // Rows = spatial positions, K = D / V vector-columns; `lanes` columns x `rows_par`
    // rows of threads, pieces split the rows.
    const int64_t K = D / V;
    const int64_t min_rows = std::max<int64_t>(1, ceil_div(kMinChunkElems, D));
    s.max_pieces = std::max<int64_t>(1, ceil_div(p.HxW, min_rows));
    int64_t pieces;
    if (ov.pieces > 0) pieces = std::min(ov.pieces, p.HxW);
    else if (NG >= min_ctas(p)) pieces = 1;
    else pieces = std::min(s.max_pieces, ceil_div(target_ctas(p), NG));
    pieces = std::max<int64_t>(1, pieces);
    s.piece_len = ceil_div(p.HxW, pieces);
    s.pieces = ceil_div(p.HxW, s.piece_len);
    s.max_pieces = std::max(s.max_pieces, s.pieces);
    s.lanes = std::min(K, kNhwcSumsThreads);
    s.rows_par = std::max<int64_t>(1, std::min(kNhwcSumsThreads / s.lanes, s.piece_len));
    s.row_blocks = 1;
    s.block = round_up(s.lanes * s.rows_par, 32);
    s.grid = NG * s.pieces;
  }
  b.coeff_block = 256;
  b.coeff_grid = ceil_div(NG, b.coeff_block / 32);

  int64_t off = 0;
  auto region = [&](int64_t bytes) {
    const int64_t at = off;
    off += round_up(bytes, 256);
    return at;
  };
  b.ws_silu = region(b.silu ? NG * b.walk.splits * 3 * acc : 0);
  b.ws_sums = region(p.N * p.C * s.pieces * 3 * acc);
  b.ws_coef = region(NG * 2 * acc);
  b.ws_dwp = region(p.N * p.C * 2 * acc);
  b.ws_r = region(rows && b.silu ? NG * acc : 0);
  b.workspace_bytes = off;

  if (rows) {
    const RowsPlan& r = b.rows;
    if (b.silu) {
      b.launches.push_back(rows_launch("gn_fwd_stats_rows", r, rows_vec, r.smem_bytes));
      b.launches.push_back(plain_launch("gn_bwd_silu_r", r.finalize_grid, r.finalize_block));
    }
    b.launches.push_back(rows_launch("gn_bwd_sums_rows", r, rows_vec, r.smem_bytes));
    b.launches.push_back(plain_launch("gn_bwd_coeffs", b.coeff_grid, b.coeff_block));
    b.launches.push_back(plain_launch("gn_bwd_params", b.params_grid, b.params_block));
    b.launches.push_back(rows_launch("gn_bwd_dx_rows", r, rows_vec, 0));
    return b;
  }

  if (b.silu) {
    Launch l;
    l.kernel = "gn_fwd_stats";
    walk_params(l, b.walk, V);
    l.shared_mem_bytes = 3 * 32 * acc;
    l.params.push_back({"silu_prepass", 1});
    b.launches.push_back(l);
  }
  {
    Launch l;
    l.kernel = p.layout == MemLayout::Contiguous ? "gn_bwd_sums_nchw" : "gn_bwd_sums_nhwc";
    l.grid = {s.grid, 1, 1};
    l.block = {s.block, 1, 1};
    l.shared_mem_bytes = p.layout == MemLayout::Contiguous ? 0 : kNhwcSumsThreads * 8 * acc;
    l.params = {{"vec", V},           {"lanes", s.lanes},           {"rows_par", s.rows_par},
                {"row_blocks", s.row_blocks}, {"pieces", s.pieces}, {"max_pieces", s.max_pieces},
                {"piece_len", s.piece_len}};
    b.launches.push_back(l);
  }
  b.launches.push_back(plain_launch("gn_bwd_coeffs", b.coeff_grid, b.coeff_block));
  b.launches.push_back(plain_launch("gn_bwd_params", b.params_grid, b.params_block));
  {
    Launch l;
    l.kernel = "gn_bwd_dx";
    walk_params(l, b.walk, V);
    b.launches.push_back(l);
  }
  return b;
}

inline Problem make_problem(const std::vector<int64_t>& shape, int64_t num_groups, DType dtype, MemLayout layout,
                            int64_t sm_count, Activation act) {
  if (shape.size() < 2) throw std::invalid_argument("groupnorm_cuda launch plan: shape needs at least 2 dims");
  Problem p;
  p.N = shape[0];
  p.C = shape[1];
  p.HxW = 1;
  for (size_t i = 2; i < shape.size(); ++i) p.HxW *= shape[i];
  p.G = num_groups;
  p.dtype = dtype;
  p.layout = layout;
  p.sm_count = sm_count;
  p.act = act;
  return p;
}

inline Plans describe(const std::vector<int64_t>& shape, int64_t num_groups, DType dtype, MemLayout layout,
                      int64_t sm_count, Activation act) {
  const Problem p = make_problem(shape, num_groups, dtype, layout, sm_count, act);
  Plans out;
  out.forward = plan_forward(p).launches;
  out.backward = plan_backward(p).launches;
  return out;
}

}  // namespace plan
}  // namespace groupnorm_cuda
