// The split ops' plans (csrc/ops.cpp: stats, apply, backward_sums, backward_dx, the phases of a
// GroupNorm over a tensor sharded across processes or cut into chunks): parts of the Rows
// schedule where it applies, else of the Split schedule, of plan_forward / plan_backward, so
// the split ops run the fused op's own kernels and vector widths. Between the parts the
// statistics leave the device (moments, group sums) and come back merged:
//   Stats : gn_fwd_stats{,_rows} + gn_split_moments         partials -> float64 moments
//   Apply : gn_split_given + gn_fwd_apply{,_rows}            given moments -> y, mean, rstd
//   Sums  : gn_bwd_sums_{nchw,nhwc,rows} + gn_bwd_coeffs + gn_bwd_params
//                                                            given r -> group sums, parameter parts
//   Dx    : gn_bwd_coeffs + gn_bwd_dx{,_rows}                given sums -> dx
// No SiLU pre-pass: the backward parts take the residual r given per group. A shard with no
// elements in its groups launches only what still has outputs (Apply: gn_split_given).
#pragma once

#include "cuda/plan/backward.h"
#include "cuda/plan/forward.h"
#include "cuda/plan/types.h"

namespace groupnorm_cuda {
namespace plan {

namespace detail {

// The split ops take the Rows schedule where it applies and the Split one elsewhere (or the
// Split one when the overrides ask for it: tests/simt), never the on-chip ones, whose phases
// are not separate launches.
inline Overrides part_overrides(Overrides ov) {
  if (ov.schedule != Schedule::Split) ov.schedule = Schedule::Rows;
  return ov;
}

inline bool keeps(Part part, Kernel k) {
  switch (part) {
    case Part::Stats: return k == Kernel::FwdStats || k == Kernel::FwdStatsRows;
    case Part::Apply: return k == Kernel::FwdApply || k == Kernel::FwdApplyRows;
    case Part::Sums:
      return k == Kernel::BwdSumsNchw || k == Kernel::BwdSumsNhwc || k == Kernel::BwdSumsRows ||
             k == Kernel::BwdCoeffs || k == Kernel::BwdParams;
    case Part::Dx: return k == Kernel::BwdCoeffs || k == Kernel::BwdDx || k == Kernel::BwdDxRows;
    case Part::Whole: return true;
  }
  return false;
}

template <typename Plan> void keep_part(Plan& pl, Part part) {
  std::vector<Launch> kept;
  for (const Launch& l : pl.launches)
    if (keeps(part, l.id)) kept.push_back(l);
  pl.launches = kept;
}

}  // namespace detail

// Stats or Apply. Workspace: Stats the partials ([NG][parts][3]); Apply (s, m, rstd) per group.
inline ForwardPlan plan_forward_part(const DeviceProblem& p, Part part, const Overrides& ov = {}) {
  using namespace detail;
  if (part != Part::Stats && part != Part::Apply)
    throw std::invalid_argument("groupnorm_cuda launch plan: plan_forward_part takes Stats or Apply");
  ForwardPlan f = plan_forward(p, part_overrides(ov));
  f.part = part;
  const int64_t NG = p.N * p.G, acc = acc_size(p.dtype);
  keep_part(f, part);
  if (part == Part::Stats) {
    if (f.launches.empty()) return f;  // no elements: the caller writes count 0
    const int64_t parts = f.schedule == Schedule::Rows ? f.rows.pieces : f.walk.splits;
    Launch l = plain_launch(Kernel::SplitMoments, ceil_div(NG, 256 / 32), 256);
    l.params.push_back({"parts", parts});
    f.launches.push_back(l);
    if (f.schedule == Schedule::Rows) f.workspace_bytes = f.rows.ws_gstat;  // the partials only
    return f;
  }
  if (NG == 0) return f;
  f.rows.ws_gstat = 0;
  f.workspace_bytes = round_up(NG * 3 * acc, 256);
  f.launches.insert(f.launches.begin(), plain_launch(Kernel::SplitGiven, ceil_div(NG, 256), 256));
  return f;
}

// Sums or Dx. Workspace: the backward's own regions (sums, coefficients, dweight/dbias terms).
inline BackwardPlan plan_backward_part(const DeviceProblem& p, Part part, const Overrides& ov = {}) {
  if (part != Part::Sums && part != Part::Dx)
    throw std::invalid_argument("groupnorm_cuda launch plan: plan_backward_part takes Sums or Dx");
  BackwardPlan b = plan_backward(p, detail::part_overrides(ov));
  b.part = part;
  detail::keep_part(b, part);
  return b;
}

}  // namespace plan
}  // namespace groupnorm_cuda
