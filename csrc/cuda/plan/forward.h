// The forward schedule of the CUDA launch planner: OnChip, Cluster, Bundle, Rows or Split
// (launch_plan.h says when each is chosen), with grid, block, shared memory and workspace of
// every launch.
#pragma once

#include <numeric>

#include "common/cluster_layout.h"
#include "cuda/plan/types.h"

namespace groupnorm_cuda {
namespace plan {


namespace detail {

// Bundle schedule, if it applies: channels-last, vectorized, a group is not a whole number of
// 16-byte vectors but k = V / gcd(D, V) groups are (k divides G when C % V == 0), no vector
// touches more than two groups, a row of the bundle fits a CTA's threads, and the bundle fits
// shared memory on one CTA or on a cluster (powers of two up to max_cluster, every CTA holding
// rows): the smallest such cluster size that gives >= 2 CTAs per SM, else the largest.
inline bool plan_bundle(const DeviceProblem& p, const Overrides& ov, BundlePlan& b, int64_t& smem) {
  const int64_t v = 16 / elem_size(p.dtype);
  const int64_t D = p.C / p.G;
  if (p.layout != Layout::ChannelsLast || ov.vec == 1 || D % v == 0 || p.C % v != 0 || p.HxW == 0) return false;
  const int64_t k = v / std::gcd(D, v);
  const int64_t cols = k * D / v;
  if (p.G % k != 0 || cols > kMaxOnChipTpg) return false;
  for (int64_t c = 0; c < cols; ++c)
    if ((c * v + v - 1) / D - c * v / D > 1) return false;
  const int64_t NB = p.N * p.G / k;
  auto rows_of = [&](int64_t cs) { return ceil_div(p.HxW, cs); };
  auto rows_par_of = [&](int64_t cs) { return clamp64(kMaxOnChipTpg / cols, 1, rows_of(cs)); };
  auto smem_of = [&](int64_t cs) {
    return bundle_smem_layout(rows_of(cs) * cols, 16, acc_size(p.dtype), rows_par_of(cs) * cols, k, cs).bytes;
  };
  auto usable = [&](int64_t cs) {
    return (cs - 1) * rows_of(cs) < p.HxW && smem_of(cs) <= p.smem_optin && NB * cs <= kMaxGridX;
  };
  int64_t best = 0, largest = 0;
  if (ov.splits > 0) {
    const int64_t cs = clamp64(ov.splits, 1, p.max_cluster);
    if (usable(cs)) best = largest = cs;
  } else {
    for (int64_t cs = 1; cs <= p.max_cluster; cs *= 2) {
      if (!usable(cs)) continue;
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

}  // namespace detail

// ---------------------------------------------------------------------------------------
inline ForwardPlan plan_forward(const DeviceProblem& p, const Overrides& ov = {}) {
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
  const bool fits = f.slot_bytes <= onchip_smem_limit(p);
  const WalkPlan on = plan_onchip_walk(p, Mv, f.slot_bytes, kMaxOnChipTpg, kMaxOnChipTpg, ov);
  const WalkPlan split = plan_walk(p, f.vec, ov);
  const bool use_onchip = choose_onchip(p, ov, fits, on, split);

  const int64_t acc = acc_size(p.dtype);
  BundlePlan bundle;
  int64_t bundle_smem = 0;
  if ((ov.schedule == Schedule::Auto || ov.schedule == Schedule::Bundle) &&
      plan_bundle(p, ov, bundle, bundle_smem)) {
    f.schedule = Schedule::Bundle;
    f.vec = 16 / elem_size(p.dtype);
    f.bundle = bundle;
    f.smem_bytes = bundle_smem;
    Launch l = make_launch(Kernel::FwdBundle, bundle_smem, 0);
    l.grid = {bundle.grid, 1, 1};
    l.block = {bundle.block, 1, 1};
    l.cluster = bundle.cluster;
    l.params = {{"vec", f.vec},
                {"groups_per_bundle", bundle.k},
                {"bundle_cols", bundle.cols},
                {"rows_par", bundle.rows_par},
                {"chunk_rows", bundle.chunk_rows},
                {"splits", bundle.cluster},
                {"max_splits", bundle.max_cluster},
                {"schedule", static_cast<int64_t>(Schedule::Bundle)}};
    f.launches.push_back(l);
    return f;
  }
  WalkPlan cw;
  int64_t cluster_smem = 0;
  if (!use_onchip && (ov.schedule == Schedule::Auto || ov.schedule == Schedule::Cluster) &&
      plan_cluster(p, ov, f.vec, Mv, kMaxOnChipTpg, cw, cluster_smem, [&](int64_t chunk, int64_t cs) {
        return cluster_smem_layout(chunk, f.vec * elem_size(p.dtype), acc_size(p.dtype), cs).bytes;
      })) {
    f.schedule = Schedule::Cluster;
    f.walk = cw;
    f.smem_bytes = cluster_smem;
    Launch l = make_launch(Kernel::FwdCluster, cluster_smem, 0);
    walk_params(l, cw, f.vec);
    l.cluster = cw.splits;
    l.params.push_back({"schedule", static_cast<int64_t>(Schedule::Cluster)});
    f.launches.push_back(l);
    return f;
  }
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
    f.launches = {rows_launch(Kernel::FwdStatsRows, rows, rows_vec, rows.smem_bytes),
                   plain_launch(Kernel::FwdFinalize, rows.finalize_grid, rows.finalize_block),
                   rows_launch(Kernel::FwdApplyRows, rows, rows_vec, 0)};
    return f;
  }
  if (use_onchip) {
    f.schedule = Schedule::OnChip;
    f.walk = on;
    f.smem_bytes = on.gpb * f.slot_bytes;
    Launch l = make_launch(Kernel::FwdOnChip, f.smem_bytes, 3 * 32 * acc);  // + static reduction buffer
    walk_params(l, on, f.vec);
    // max_splits of the alternative: a split schedule could not have had more CTAs.
    for (auto& kv : l.params)
      if (kv.first == "max_splits") kv.second = split.max_splits;
    l.params.push_back({"schedule", static_cast<int64_t>(Schedule::OnChip)});
    f.launches.push_back(l);
  } else {
    f.schedule = Schedule::Split;
    f.walk = split;
    f.workspace_bytes = round_up(NG * split.splits * 3 * acc, 256);
    Launch s = make_launch(Kernel::FwdStats, 0, 3 * 32 * acc);
    walk_params(s, split, f.vec);
    s.params.push_back({"schedule", static_cast<int64_t>(Schedule::Split)});
    Launch a = make_launch(Kernel::FwdApply);
    walk_params(a, split, f.vec);
    a.params.push_back({"schedule", static_cast<int64_t>(Schedule::Split)});
    f.launches.push_back(s);
    f.launches.push_back(a);
  }
  return f;
}


}  // namespace plan
}  // namespace groupnorm_cuda
