// Launch planning for the CUDA kernels: pure host C++17 (no torch, no CUDA headers), so it is
// compiled into every build (CPU-only included), exposed to Python as
// groupnorm_cuda.cuda_launch_plan, unit-tested without a GPU, and used by the simt harness.
//
// plan_forward / plan_backward are the single source of truth: the CUDA launcher
// (csrc/cuda/kernels/launcher.cuh) runs their launch lists entry by entry (kernel, grid, block,
// dynamic shared memory; the simt harness checks it against a log of the launches), and
// describe() prints them. Overrides force a schedule, split factor, block size or vector width so that tiny
// tensors can exercise every code path (tests/simt).
//
// Schedules (M = D * HxW elements per group (n, g), NG = N * G groups). Accesses are 16-byte
// vectors where the layout allows (pick_vec: NCHW HxW % V == 0, or a group's run of whole
// vectors with HxW >= V; channels-last D % V == 0, else bundles or rows), scalars otherwise:
//   forward OnChip : gn_fwd_onchip. gpb groups per CTA, tpg threads per group, each group's
//                    data parked in shared memory between the statistics and the epilogue:
//                    1 read + 1 write. Chosen when a group fits (up to the opt-in limit, 227
//                    KiB on sm_90, 163 KiB on sm_80, less the static buffers; several groups
//                    share a CTA only within 48 KiB) and either there are enough CTAs (>= 2
//                    per SM) or the group is too small to split.
//   forward Cluster: gn_fwd_cluster (sm_90). Where the on-chip schedule does not apply (the group
//                    does not fit one CTA, or too few groups) and the group is a whole number of
//                    16-byte vectors: a group per thread-block cluster of 2-16 CTAs (past 8,
//                    non-portable, where the device places it: fit_forward_plan), each CTA
//                    parking one chunk in its shared memory, the partial statistics exchanged
//                    through distributed shared memory: 1 read + 1 write.
//   forward Bundle : gn_fwd_bundle. Channels-last groups that are not a whole number of 16-byte
//                    vectors (C / G % V != 0, C % V == 0: SD UNet's 10 channels per group), k =
//                    V / gcd(D, V) groups at a time (whole vectors per spatial row, no vector
//                    touching more than two groups) on one CTA or a thread-block cluster (sm_90),
//                    parked in shared memory between the statistics and the epilogue: 1 read +
//                    1 write. Chosen before the others wherever it applies and fits.
//   forward Split  : gn_fwd_stats + gn_fwd_apply. Each group cut into `splits` chunks of
//                    `chunk` vectors; partial (count, mean, M2) in an fp32 (fp64) workspace,
//                    merged in a fixed order by every apply CTA: 2 reads + 1 write.
//   forward Rows   : gn_fwd_stats_rows + gn_fwd_finalize + gn_fwd_apply_rows. Channels-last
//                    only, when a group's channels are not a whole number of 16-byte vectors
//                    but a row of C channels is (the Split walk would load scalars) and the
//                    Bundle schedule does not apply: CTAs take `piece_len` spatial rows x all C
//                    channels of one sample: 2 reads + 1 write.
//   backward OnChip: gn_bwd_onchip + gn_bwd_params. A group's x and dy parked in shared
//                    memory between the reductions and dx: reads x and dy once, writes dx
//                    (3 accesses, SiLU included). Chosen on the same terms as the forward's
//                    on-chip schedule when x and dy of a group fit together. A CTA of several
//                    groups holds the same groups of `samples_per_block` samples and adds
//                    their dweight/dbias terms: one row of terms per CTA of samples.
//   backward Cluster: gn_bwd_cluster + gn_bwd_params (sm_90), on the forward's cluster terms with
//                    x and dy of a chunk per CTA: reads x and dy once, writes dx; the SiLU
//                    statistics and the group sums go through distributed shared memory, the
//                    dweight/dbias terms per (n, rank, c) to gn_bwd_params.
//   backward Bundle: gn_bwd_bundle + gn_bwd_params, on the forward's bundle terms with x and dy
//                    of a chunk per CTA (at most 256 threads for 16-bit types): reads x and dy
//                    once, writes dx; the dweight/dbias terms per (n, rank, c).
//   backward Split : [gn_fwd_stats (SiLU pre-pass)] + gn_bwd_sums_{nchw,nhwc} + gn_bwd_coeffs
//                    + gn_bwd_params + gn_bwd_dx: reads x, dy twice, writes dx (5 accesses;
//                    6 with SiLU).
//   backward Rows  : where the forward's Rows schedule applies (and the Bundle one does not):
//                    [gn_fwd_stats_rows + gn_bwd_silu_r] + gn_bwd_sums_rows + gn_bwd_coeffs +
//                    gn_bwd_params + gn_bwd_dx_rows, the same accesses with vectors along C.
//   Both reduce dweight/dbias over n in a fixed order (gn_bwd_params): no atomics.
//   split ops      : stats, apply, backward_sums, backward_dx (a shard of a group, csrc/ops.cpp)
//                    run parts of the Rows schedule where it applies, else of the Split one,
//                    plus gn_split_moments (partials -> float64 moments) and gn_split_given
//                    (given moments -> per-group statistics): plan/split.h.
#pragma once

#include <vector>

#include "cuda/plan/backward.h"
#include "cuda/plan/forward.h"
#include "cuda/plan/split.h"
#include "cuda/plan/traffic.h"
#include "cuda/plan/types.h"

namespace groupnorm_cuda {
namespace plan {

// Both directions' launches for a problem, with their modeled DRAM traffic
// (groupnorm_cuda.cuda_launch_plan).
struct Described {
  std::vector<Launch> forward, backward;
  Traffic forward_traffic, backward_traffic;
};
inline Described describe(const DeviceProblem& p) {
  ForwardPlan f = plan_forward(p);
  BackwardPlan b = plan_backward(p);
  Described out;
  out.forward_traffic = forward_traffic(f);
  out.backward_traffic = backward_traffic(b);
  out.forward = f.launches;
  out.backward = b.launches;
  return out;
}

// The split ops' launches (split.h) for a shard like p, each with its modeled traffic
// (groupnorm_cuda.cuda_launch_plan()["split_ops"]).
struct DescribedSplit {
  std::vector<Launch> stats, apply, backward_sums, backward_dx;
};
inline DescribedSplit describe_split(const DeviceProblem& p) {
  ForwardPlan st = plan_forward_part(p, Part::Stats), ap = plan_forward_part(p, Part::Apply);
  BackwardPlan su = plan_backward_part(p, Part::Sums), dx = plan_backward_part(p, Part::Dx);
  forward_traffic(st);
  forward_traffic(ap);
  backward_traffic(su);
  backward_traffic(dx);
  return {st.launches, ap.launches, su.launches, dx.launches};
}

}  // namespace plan
}  // namespace groupnorm_cuda
