// The forward schedule of the CUDA launch planner: OnChip, Cluster, Bundle, Rows or Split
// (launch_plan.h says when each is chosen), with grid, block, shared memory and workspace of
// every launch.
#pragma once

#include "common/cluster_layout.h"
#include "cuda/plan/types.h"

namespace groupnorm_cuda {
namespace plan {



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
      plan_bundle(p, ov, false, bundle, bundle_smem)) {
    f.schedule = Schedule::Bundle;
    f.vec = 16 / elem_size(p.dtype);
    f.bundle = bundle;
    f.smem_bytes = bundle_smem;
    f.launches.push_back(bundle_launch(Kernel::FwdBundle, bundle, f.vec, bundle_smem));
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
    f.workspace_bytes = part + round_up(NG * 3 * acc, 256);
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
