// The backward schedule of the CUDA launch planner: OnChip, Cluster, Bundle, Rows or Split
// (launch_plan.h says when each is chosen), with grid, block, shared memory and workspace
// regions of every launch.
#pragma once

#include "common/cluster_layout.h"
#include "cuda/plan/types.h"

namespace groupnorm_cuda {
namespace plan {

namespace detail {

// Channels of a group shared out over its `tpg` threads in the per-channel sums of the tiled
// kernels: as many lanes per channel as the threads allow (a power of two <= 32, so the lanes
// of a channel are within one warp).
inline int64_t chan_lanes(int64_t tpg, int64_t D) {
  int64_t l = clamp64(tpg / std::max<int64_t>(1, D), 1, 32);
  while (l & (l - 1)) l &= l - 1;
  return l;
}

// Samples per CTA of gn_bwd_onchip (a divisor of gpb, at most N): the largest, unless
// overridden, so that the CTA adds the dweight/dbias terms of that many samples and
// gn_bwd_params reads ceil(N / nb) rows of them instead of N. What it saves is 2 * (N - N / nb)
// * C terms written and read: where HxW is small they outweigh the tensors (spatial size 1:
// 2.3x the floor in fp32 with a row per sample).
inline int64_t onchip_samples(const DeviceProblem& p, const Overrides& ov, int64_t gpb) {
  int64_t nb = 1;
  const int64_t want = ov.samples_per_block > 0 ? ov.samples_per_block : gpb;
  for (int64_t d = 1; d <= gpb; ++d)
    if (gpb % d == 0 && d <= p.N && d <= want) nb = d;
  return nb;
}

// OnChip: gn_bwd_onchip (+ gn_bwd_params), x and dy tiles of `on.gpb` groups in shared memory
// (and, with nb > 1 samples per CTA, their per-channel terms: gpb x D x 2).
inline void plan_backward_onchip(BackwardPlan& b, const WalkPlan& on, int64_t slot2, int64_t split_max) {
  const DeviceProblem& p = b.prob;
  const int64_t acc = acc_size(p.dtype);
  int64_t nb = onchip_samples(p, b.ov, on.gpb);
  if (nb > 1 && on.gpb * slot2 + on.gpb * p.D() * 2 * acc > onchip_smem_limit(p)) nb = 1;
  b.schedule = Schedule::OnChip;
  b.walk = on;
  b.samples_per_block = nb;
  b.dwp_rows = ceil_div(p.N, nb);
  b.smem_bytes = on.gpb * slot2 + (nb > 1 ? on.gpb * p.D() * 2 * acc : 0);
  if (nb > 1) b.walk.grid = ceil_div(p.N, nb) * ceil_div(p.G, on.gpb / nb);
  b.chan_lanes = chan_lanes(on.tpg, p.D());
  b.ws_dwp = 0;
  b.workspace_bytes = round_up(p.N * p.C * 2 * acc, 256);
  Launch l = make_launch(Kernel::BwdOnChip, b.smem_bytes, 3 * 32 * acc);  // + static reduction buffer
  walk_params(l, b.walk, b.vec);
  for (auto& kv : l.params)  // as in the forward: what the split alternative could reach
    if (kv.first == "max_splits") kv.second = split_max;
  l.params.push_back({"samples_per_block", nb});
  l.params.push_back({"chan_lanes", b.chan_lanes});
  l.params.push_back({"schedule", static_cast<int64_t>(Schedule::OnChip)});
  b.launches.push_back(l);
  b.launches.push_back(plain_launch(Kernel::BwdParams, b.params_grid, b.params_block));
}

// Cluster: gn_bwd_cluster (+ gn_bwd_params).
inline void plan_backward_cluster(BackwardPlan& b, const WalkPlan& cw, int64_t smem) {
  const DeviceProblem& p = b.prob;
  const int64_t acc = acc_size(p.dtype);
  b.schedule = Schedule::Cluster;
  b.walk = cw;
  b.smem_bytes = smem;
  b.chan_lanes = chan_lanes(cw.tpg, p.D());
  b.ws_dwp = 0;
  b.workspace_bytes = round_up(p.N * p.C * 2 * acc, 256);
  Launch l = make_launch(Kernel::BwdCluster, smem, 0);
  walk_params(l, cw, b.vec);
  l.cluster = cw.splits;
  l.params.push_back({"chan_lanes", b.chan_lanes});
  l.params.push_back({"schedule", static_cast<int64_t>(Schedule::Cluster)});
  b.launches.push_back(l);
  b.launches.push_back(plain_launch(Kernel::BwdParams, b.params_grid, b.params_block));
}

// Bundle: gn_bwd_bundle (+ gn_bwd_params).
inline void plan_backward_bundle(BackwardPlan& b, const BundlePlan& bp, int64_t smem) {
  const DeviceProblem& p = b.prob;
  b.schedule = Schedule::Bundle;
  b.vec = 16 / elem_size(p.dtype);
  b.bundle = bp;
  b.smem_bytes = smem;
  b.ws_dwp = 0;
  b.workspace_bytes = round_up(p.N * p.C * 2 * acc_size(p.dtype), 256);
  b.launches.push_back(bundle_launch(Kernel::BwdBundle, bp, b.vec, smem));
  b.launches.push_back(plain_launch(Kernel::BwdParams, b.params_grid, b.params_block));
}

// gn_bwd_sums_nchw: rows = channels of the group (D), K = HxW / V vector-columns; `lanes`
// threads per row (a power of two <= 32, sub-warp shuffle reduce), pieces split the columns.
inline void plan_sums_nchw(const DeviceProblem& p, const Overrides& ov, int64_t V, SumsPlan& s) {
  const int64_t NG = p.N * p.G, D = p.D();
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
}

// gn_bwd_sums_nhwc: rows = spatial positions, K = D / V vector-columns; `lanes` columns x
// `rows_par` rows of threads, pieces split the rows.
inline void plan_sums_nhwc(const DeviceProblem& p, const Overrides& ov, int64_t V, SumsPlan& s) {
  const int64_t NG = p.N * p.G, D = p.D();
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

// Workspace regions of the Split and Rows schedules (bytes from the start, 256-byte aligned).
inline void plan_backward_workspace(BackwardPlan& b, bool rows) {
  const DeviceProblem& p = b.prob;
  const int64_t NG = p.N * p.G, acc = acc_size(p.dtype);
  int64_t off = 0;
  auto region = [&](int64_t bytes) {
    const int64_t at = off;
    off += round_up(bytes, 256);
    return at;
  };
  b.ws_silu = region(b.silu ? NG * b.walk.splits * 3 * acc : 0);
  b.ws_sums = region(p.N * p.C * b.sums.pieces * 3 * acc);
  b.ws_coef = region(NG * 2 * acc);
  b.ws_dwp = region(p.N * p.C * 2 * acc);
  b.ws_r = region(rows && b.silu ? NG * acc : 0);
  b.workspace_bytes = off;
}

// Rows: [gn_fwd_stats_rows + gn_bwd_silu_r] + gn_bwd_sums_rows + coeffs + params + gn_bwd_dx_rows.
inline void rows_backward_launches(BackwardPlan& b) {
  const RowsPlan& r = b.rows;
  if (b.silu) {
    b.launches.push_back(rows_launch(Kernel::FwdStatsRows, r, b.vec, r.smem_bytes));
    b.launches.push_back(plain_launch(Kernel::BwdSiluR, r.finalize_grid, r.finalize_block));
  }
  b.launches.push_back(rows_launch(Kernel::BwdSumsRows, r, b.vec, r.smem_bytes));
  b.launches.push_back(plain_launch(Kernel::BwdCoeffs, b.coeff_grid, b.coeff_block));
  b.launches.push_back(plain_launch(Kernel::BwdParams, b.params_grid, b.params_block));
  b.launches.push_back(rows_launch(Kernel::BwdDxRows, r, b.vec, 0));
}

// Split: [gn_fwd_stats (SiLU pre-pass)] + gn_bwd_sums_{nchw,nhwc} + coeffs + params + gn_bwd_dx.
inline void split_backward_launches(BackwardPlan& b) {
  const DeviceProblem& p = b.prob;
  const SumsPlan& s = b.sums;
  const int64_t V = b.vec, acc = acc_size(p.dtype);
  if (b.silu) {
    Launch l = make_launch(Kernel::FwdStats, 0, 3 * 32 * acc);
    walk_params(l, b.walk, V);
    l.params.push_back({"silu_prepass", 1});
    b.launches.push_back(l);
  }
  const bool nchw = p.layout == Layout::Contiguous;
  Launch sums = make_launch(nchw ? Kernel::BwdSumsNchw : Kernel::BwdSumsNhwc, 0, nchw ? 0 : kNhwcSumsThreads * 8 * acc);
  sums.grid = {s.grid, 1, 1};
  sums.block = {s.block, 1, 1};
  sums.params = {{"vec", V},           {"lanes", s.lanes},           {"rows_par", s.rows_par},
                 {"row_blocks", s.row_blocks}, {"pieces", s.pieces}, {"max_pieces", s.max_pieces},
                 {"piece_len", s.piece_len}};
  b.launches.push_back(sums);
  b.launches.push_back(plain_launch(Kernel::BwdCoeffs, b.coeff_grid, b.coeff_block));
  b.launches.push_back(plain_launch(Kernel::BwdParams, b.params_grid, b.params_block));
  Launch dx = make_launch(Kernel::BwdDx);
  walk_params(dx, b.walk, V);
  b.launches.push_back(dx);
}

}  // namespace detail

inline BackwardPlan plan_backward(const DeviceProblem& p, const Overrides& ov = {}) {
  using namespace detail;
  validate(p);
  BackwardPlan b;
  b.prob = p;
  b.ov = ov;
  b.vec = pick_vec(p, ov);
  b.silu = p.act == Activation::SiLU;
  b.dwp_rows = p.N;
  const int64_t NG = p.N * p.G, D = p.D(), V = b.vec;
  if (NG == 0 || D * p.HxW == 0) return b;
  b.params_block = 256;
  b.params_grid = ceil_div(p.C, b.params_block);
  b.walk = plan_walk(p, V, ov);

  BundlePlan bundle;
  int64_t bundle_smem = 0;
  if ((ov.schedule == Schedule::Auto || ov.schedule == Schedule::Bundle) &&
      plan_bundle(p, ov, true, bundle, bundle_smem)) {
    plan_backward_bundle(b, bundle, bundle_smem);
    return b;
  }

  // On-chip candidate: x and dy tiles of a group side by side. At most 256 threads:
  // gn_bwd_onchip takes up to 80 registers (RESULTS.md), so 512-thread CTAs would leave one
  // CTA per SM.
  const int64_t Mv = D * p.HxW / V;
  const int64_t slot2 = onchip_bwd_slot_bytes(Mv, V * elem_size(p.dtype), V * out_elem_size(p));
  const WalkPlan on = plan_onchip_walk(p, Mv, slot2, kMaxBlock, 1024, ov);
  if (choose_onchip(p, ov, slot2 <= onchip_smem_limit(p), on, b.walk)) {
    plan_backward_onchip(b, on, slot2, b.walk.max_splits);
    return b;
  }
  WalkPlan cw;
  int64_t cluster_smem = 0;
  if ((ov.schedule == Schedule::Auto || ov.schedule == Schedule::Cluster) &&
      plan_cluster(p, ov, V, Mv, kMaxClusterBwdTpg, cw, cluster_smem, [&](int64_t chunk, int64_t cs) {
        return cluster_bwd_smem_layout(chunk, V * elem_size(p.dtype), V * out_elem_size(p), acc_size(p.dtype), cs,
                                       D).bytes;
      })) {
    plan_backward_cluster(b, cw, cluster_smem);
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
  } else if (p.layout == Layout::Contiguous) {
    if (b.vec != pick_vec(p, ov, true)) {  // a flat group: the per-channel sums need scalars
      b.vec = 1;
      b.walk = plan_walk(p, 1, ov);
    }
    plan_sums_nchw(p, ov, b.vec, s);
  } else {
    plan_sums_nhwc(p, ov, V, s);
  }
  b.coeff_block = 256;
  b.coeff_grid = ceil_div(NG, b.coeff_block / 32);
  plan_backward_workspace(b, rows);
  if (rows)
    rows_backward_launches(b);
  else
    split_backward_launches(b);
  return b;
}

}  // namespace plan
}  // namespace groupnorm_cuda
