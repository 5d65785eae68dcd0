// Host-side launcher: runs exactly the launch sequence of plan_forward / plan_backward on
// raw pointers. No ATen: the ATen glue (group_norm_cuda.cu) and the CPU emulator harness
// (tests/simt, -DGROUPNORM_SIMT) both call these.
//
// Usage:
//   plan::ForwardPlan fp = plan::plan_forward(problem, overrides);
//   fp = kernels::fit_forward_plan(args, fp);     // scalar path if a pointer is misaligned,
//                                                 // clusters of <= 8 if a larger one does not fit
//   workspace of kernels::forward_workspace_bytes(fp) bytes (any 256-byte aligned memory)
//   kernels::launch_forward(args, fp, workspace, stream);
// and the same with Backward.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/launch_plan.h"
#include "cuda/kernels/backward.cuh"
#include "cuda/kernels/backward_bundle.cuh"
#include "cuda/kernels/backward_rows.cuh"
#include "cuda/kernels/backward_tiled.cuh"
#include "cuda/kernels/forward.cuh"
#include "cuda/kernels/forward_bundle.cuh"

// gn_bwd_sums_nhwc sizes its static shared buffer for the planner's block size.
static_assert(groupnorm_cuda::plan::kNhwcSumsThreads == groupnorm_cuda::kernels::kNhwcSumsMaxThreads,
              "gn_bwd_sums_nhwc red[] is sized for the planner's block");

static_assert(groupnorm_cuda::plan::kMaxClusterBwdTpg == groupnorm_cuda::kernels::kMaxThreadsBwdCluster,
              "gn_bwd_cluster __launch_bounds__ must match the planner's block limit");
static_assert(groupnorm_cuda::plan::kMaxBundleThreads == groupnorm_cuda::kernels::kBundleMaxThreads,
              "gn_fwd_bundle / gn_bwd_bundle __launch_bounds__ must match the planner's block limit");
// gn_fwd_onchip's launch bound is the planner's on-chip forward block limit.
static_assert(groupnorm_cuda::plan::kMaxOnChipTpg == groupnorm_cuda::kernels::kFwdOnChipMaxThreads,
              "gn_fwd_onchip __launch_bounds__ must match the planner's block limit");

namespace groupnorm_cuda {
namespace kernels {

// The tensors of one call. Sizes, layout and activation are the plan's (plan.prob), so one
// Problem describes the call from the checks to the launch.
// O: y's element type (FwdParams): T, or float for a 16-bit T.
template <typename T, typename W, typename O> struct ForwardArgs {
  const T* x;
  const W* weight;  // nullable
  const W* bias;    // nullable
  O* y;
  acc_t<T>* mean;
  acc_t<T>* rstd;
  double eps;
  // Split ops (plan::Part): Stats writes moments_out (y, mean, rstd unused), Apply reads moments_in.
  double* moments_out = nullptr;
  const double* moments_in = nullptr;
};

// dx / dweight / dbias nullable = not wanted. O: dy's element type (that of the forward's y).
template <typename T, typename W, typename O> struct BackwardArgs {
  const O* dy;
  const T* x;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  const W* weight;
  const W* bias;
  T* dx;
  W* dweight;
  W* dbias;
  // Split ops (plan::Part, kernels::BwdParams): Sums and Dx take r_in; Sums writes group_out and
  // the parameter parts dweight_acc / dbias_acc (nullable); Dx reads group_in, M_total.
  const acc_t<T>* r_in = nullptr;
  acc_t<T>* group_out = nullptr;
  const acc_t<T>* group_in = nullptr;
  int64_t M_total = 0;
  acc_t<T>* dweight_acc = nullptr;
  acc_t<T>* dbias_acc = nullptr;
};

// The DType of a kernel element type (what the planner sizes vectors and workspaces by).
template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::Float32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::Float64; };
template <> struct DTypeOf<__half> { static constexpr DType value = DType::Float16; };
template <> struct DTypeOf<__nv_bfloat16> { static constexpr DType value = DType::BFloat16; };

inline bool aligned16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline size_t forward_workspace_bytes(const plan::ForwardPlan& p) { return static_cast<size_t>(p.workspace_bytes); }
inline size_t backward_workspace_bytes(const plan::BackwardPlan& p) { return static_cast<size_t>(p.workspace_bytes); }

inline Geometry make_geometry(const plan::DeviceProblem& p, int64_t vec) {
  Geometry g;
  g.N = p.N;
  g.C = p.C;
  g.HxW = p.HxW;
  g.G = p.G;
  g.D = p.D();
  g.M = p.M();
  g.Mv = g.M / vec;
  g.channels_last = p.layout == Layout::ChannelsLast;
  g.K = g.channels_last ? g.D / vec : p.HxW / vec;
  g.KE = g.channels_last ? g.D : p.HxW;
  g.RS = g.channels_last ? p.C : p.HxW;
  return g;
}

inline WalkSched make_sched(const plan::WalkPlan& w) {
  WalkSched s;
  s.splits = w.splits;
  s.chunk = w.chunk;
  s.tpg = static_cast<int>(w.tpg);
  s.gpb = static_cast<int>(w.gpb);
  return s;
}

inline BundleSched bundle_sched(const plan::BundlePlan& b) {
  BundleSched s;
  s.chunk_rows = b.chunk_rows;
  s.k = static_cast<int>(b.k);
  s.cols = static_cast<int>(b.cols);
  s.rows_par = static_cast<int>(b.rows_par);
  s.cluster = static_cast<int>(b.cluster);
  return s;
}

inline dim3 dims(const std::array<int64_t, 3>& d) {
  return dim3(static_cast<unsigned>(d[0]), static_cast<unsigned>(d[1]), static_cast<unsigned>(d[2]));
}

// Whether every cluster launch of a plan past the portable size (8 CTAs) fits the current
// device with its shared memory (gn_cluster_fits: cudaOccupancyMaxActiveClusters); the
// portable ones always do.
template <typename T, typename W, typename O, int V>
bool clusters_fit_v(const std::vector<plan::Launch>& launches) {
  for (const plan::Launch& l : launches) {
    if (!gn_cluster_nonportable(static_cast<unsigned>(l.cluster))) continue;
    const dim3 grid = dims(l.grid), block = dims(l.block);
    const size_t smem = static_cast<size_t>(l.dynamic_smem_bytes);
    const unsigned cx = static_cast<unsigned>(l.cluster);
    bool fits = false;
    if constexpr (V > 1) {
      switch (l.id) {
        case plan::Kernel::FwdCluster: fits = gn_cluster_fits(gn_fwd_cluster<T, W, O, V>, grid, block, smem, cx); break;
        case plan::Kernel::FwdBundle: fits = gn_cluster_fits(gn_fwd_bundle<T, W, O, V>, grid, block, smem, cx); break;
        case plan::Kernel::BwdCluster: fits = gn_cluster_fits(gn_bwd_cluster<T, W, O, V>, grid, block, smem, cx); break;
        case plan::Kernel::BwdBundle: fits = gn_cluster_fits(gn_bwd_bundle<T, W, O, V>, grid, block, smem, cx); break;
        default: break;
      }
    }
    if (!fits) return false;
  }
  return true;
}
template <typename T, typename W, typename O>
bool clusters_fit(const std::vector<plan::Launch>& launches, int64_t vec) {
  constexpr int VF = static_cast<int>(16 / sizeof(T));
  return vec == 1 ? clusters_fit_v<T, W, O, 1>(launches) : clusters_fit_v<T, W, O, VF>(launches);
}

// The plan assumes 16-byte aligned tensors and a device that places its clusters: re-plan with
// scalar accesses when the tensors are not aligned, with clusters of at most 8 CTAs when a
// larger one does not fit (replan: plan::plan_forward or plan::plan_backward). Call before
// sizing the workspace.
// O: the type of the forward's y and the backward's dy.
template <typename T, typename W, typename O, typename Plan, typename Replan>
inline Plan fit_plan(const Plan& p, bool aligned, Replan replan) {
  Plan r = p;
  if (p.vec > 1 && !aligned) {
    plan::Overrides ov = p.ov;
    ov.vec = 1;
    r = replan(p.prob, ov);
  }
  if (clusters_fit<T, W, O>(r.launches, r.vec)) return r;
  plan::DeviceProblem q = r.prob;
  q.max_cluster = kGnPortableCluster;
  return replan(q, r.ov);
}
template <typename T, typename W, typename O>
inline plan::ForwardPlan fit_forward_plan(const ForwardArgs<T, W, O>& a, const plan::ForwardPlan& p) {
  return fit_plan<T, W, O>(p, aligned16(a.x) && aligned16(a.y),
                        [part = p.part](const plan::DeviceProblem& q, const plan::Overrides& ov) {
                          return part == plan::Part::Whole ? plan::plan_forward(q, ov) : plan::plan_forward_part(q, part, ov);
                        });
}
template <typename T, typename W, typename O>
inline plan::BackwardPlan fit_backward_plan(const BackwardArgs<T, W, O>& a, const plan::BackwardPlan& p) {
  return fit_plan<T, W, O>(p, aligned16(a.x) && aligned16(a.dy) && aligned16(a.dx),
                        [part = p.part](const plan::DeviceProblem& q, const plan::Overrides& ov) {
                          return part == plan::Part::Whole ? plan::plan_backward(q, ov) : plan::plan_backward_part(q, part, ov);
                        });
}

[[noreturn]] inline void not_in_direction(const plan::Launch& l, const char* direction) {
  throw std::logic_error(std::string("groupnorm_cuda launcher: ") + l.kernel + " in a " + direction + " plan");
}

// The forward's params record, filled once from the plan and the tensors.
template <typename T, typename W, typename O, int V>
FwdParams<T, W, O> forward_params(const ForwardArgs<T, W, O>& a, const plan::ForwardPlan& pl, void* workspace) {
  FwdParams<T, W, O> p;
  p.x = a.x;
  p.weight = a.weight;
  p.bias = a.bias;
  p.y = a.y;
  p.mean = a.mean;
  p.rstd = a.rstd;
  p.ws = static_cast<acc_t<T>*>(workspace);
  p.gstat = reinterpret_cast<acc_t<T>*>(static_cast<unsigned char*>(workspace) + pl.rows.ws_gstat);
  p.geo = make_geometry(pl.prob, V);
  p.sched = make_sched(pl.walk);
  p.rows.pieces = pl.rows.pieces;
  p.rows.piece_len = pl.rows.piece_len;
  p.rows.rows_par = static_cast<int>(pl.rows.rows_par);
  p.bundle = bundle_sched(pl.bundle);
  p.eps = static_cast<acc_t<T>>(a.eps);
  p.silu = pl.prob.act == Activation::SiLU;
  p.moments_out = a.moments_out;
  p.moments_in = a.moments_in;
  return p;
}

// Runs the plan's launch list in order, each with the plan's grid, block and dynamic shared
// memory. The Rows kernels exist for vectorized plans only (the planner makes them so).
template <typename T, typename W, typename O, int V>
void launch_forward_v(const ForwardArgs<T, W, O>& a, const plan::ForwardPlan& pl, void* workspace, cudaStream_t stream) {
  const FwdParams<T, W, O> p = forward_params<T, W, O, V>(a, pl, workspace);
  for (const plan::Launch& l : pl.launches) {
    const dim3 grid = dims(l.grid), block = dims(l.block);
    const size_t smem = static_cast<size_t>(l.dynamic_smem_bytes);
    switch (l.id) {
      case plan::Kernel::FwdOnChip: {
        auto k = gn_fwd_onchip<T, W, O, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::FwdStats: {
        auto k = gn_fwd_stats<T, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p.x, p.ws, p.geo, p.sched);
        break;
      }
      case plan::Kernel::FwdCluster:
        if constexpr (V > 1) {
          auto k = gn_fwd_cluster<T, W, O, V>;
          GN_LAUNCH_CLUSTER(k, grid, block, smem, stream, static_cast<unsigned>(l.cluster), p);
          break;
        }
        not_in_direction(l, "scalar forward");
      case plan::Kernel::FwdBundle:
        if constexpr (V > 1) {
          auto k = gn_fwd_bundle<T, W, O, V>;
          if (l.cluster > 1) GN_LAUNCH_CLUSTER(k, grid, block, smem, stream, static_cast<unsigned>(l.cluster), p);
          else GN_LAUNCH(k, grid, block, smem, stream, p);
          break;
        }
        not_in_direction(l, "scalar forward");
      case plan::Kernel::FwdApply: {
        auto k = gn_fwd_apply<T, W, O, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::FwdFinalize: {
        auto k = gn_fwd_finalize<T, W, O>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::FwdStatsRows:
        if constexpr (V > 1) {
          auto k = gn_fwd_stats_rows<T, V>;
          GN_LAUNCH(k, grid, block, smem, stream, p.x, p.ws, p.geo, p.rows);
          break;
        }
        not_in_direction(l, "scalar forward");
      case plan::Kernel::SplitMoments: {
        auto k = gn_split_moments<T>;
        const int64_t parts = pl.schedule == plan::Schedule::Rows ? pl.rows.pieces : pl.walk.splits;
        GN_LAUNCH(k, grid, block, smem, stream, p.x, p.ws, parts, p.geo, p.moments_out);
        break;
      }
      case plan::Kernel::SplitGiven: {
        auto k = gn_split_given<T, W, O>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::FwdApplyRows:
        if constexpr (V > 1) {
          auto k = gn_fwd_apply_rows<T, W, O, V>;
          GN_LAUNCH(k, grid, block, smem, stream, p);
          break;
        }
        not_in_direction(l, "scalar forward");
      default: not_in_direction(l, "forward");
    }
    GN_AFTER_LAUNCH();
  }
}

template <typename T, typename W, typename O>
void launch_forward(const ForwardArgs<T, W, O>& a, const plan::ForwardPlan& pl, void* workspace, cudaStream_t stream) {
  if (pl.launches.empty()) return;  // N == 0 or empty groups
  if (pl.vec > 1 && !(aligned16(a.x) && aligned16(a.y)))
    throw std::invalid_argument("groupnorm_cuda: vectorized plan for misaligned tensors (call fit_forward_plan)");
  constexpr int VF = static_cast<int>(16 / sizeof(T));
  if (pl.vec == 1) launch_forward_v<T, W, O, 1>(a, pl, workspace, stream);
  else launch_forward_v<T, W, O, VF>(a, pl, workspace, stream);
}

template <typename T, typename W, typename O> bool wants_params(const BackwardArgs<T, W, O>& a) {
  return a.dweight || a.dbias || a.dweight_acc || a.dbias_acc;
}

// The backward's params record, filled once from the plan, the tensors and the workspace.
template <typename T, typename W, typename O, int V>
BwdParams<T, W, O> backward_params(const BackwardArgs<T, W, O>& a, const plan::BackwardPlan& pl, void* workspace) {
  using A = acc_t<T>;
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  BwdParams<T, W, O> p;
  p.dy = a.dy;
  p.x = a.x;
  p.mean = a.mean;
  p.rstd = a.rstd;
  p.weight = a.weight;
  p.bias = a.bias;
  p.dx = a.dx;
  p.dweight = a.dweight;
  p.dbias = a.dbias;
  p.r_in = a.r_in;
  p.group_out = a.group_out;
  p.group_in = a.group_in;
  p.M_total = a.M_total;
  p.dweight_acc = a.dweight_acc;
  p.dbias_acc = a.dbias_acc;
  const bool want_params = wants_params(a);
  p.silu_ws = reinterpret_cast<A*>(ws + pl.ws_silu);
  p.sums = reinterpret_cast<A*>(ws + pl.ws_sums);
  p.coef = reinterpret_cast<A*>(ws + pl.ws_coef);
  p.dwp = want_params ? reinterpret_cast<A*>(ws + pl.ws_dwp) : nullptr;
  p.geo = make_geometry(pl.prob, V);
  p.dx_sched = make_sched(pl.walk);
  p.silu_splits = pl.walk.splits;
  p.pieces = pl.sums.pieces;
  p.piece_len = pl.sums.piece_len;
  p.row_blocks = pl.sums.row_blocks;
  p.lanes = static_cast<int>(pl.sums.lanes);
  p.rows_par = static_cast<int>(pl.sums.rows_par);
  p.chan_lanes = static_cast<int>(pl.chan_lanes);
  p.onchip_nb = static_cast<int>(pl.samples_per_block);
  p.dwp_rows = pl.dwp_rows;
  p.rbuf = reinterpret_cast<A*>(ws + pl.ws_r);
  p.rows.pieces = pl.rows.pieces;
  p.rows.piece_len = pl.rows.piece_len;
  p.rows.rows_par = static_cast<int>(pl.rows.rows_par);
  p.bundle = bundle_sched(pl.bundle);
  p.silu = pl.silu;
  return p;
}

// Runs the plan's launch list in order (launch_plan.h lists the schedules), leaving out only
// the launches whose outputs are not wanted: gn_bwd_params without dweight and dbias,
// gn_bwd_dx{,_rows} without dx. In a backward plan gn_fwd_stats{,_rows} is the SiLU pre-pass:
// the statistics of the activation's input, into the backward's workspace.
template <typename T, typename W, typename O, int V>
void launch_backward_v(const BackwardArgs<T, W, O>& a, const plan::BackwardPlan& pl, void* workspace,
                       cudaStream_t stream) {
  const bool want_params = wants_params(a);
  if (a.dx == nullptr && !want_params && a.group_out == nullptr) return;
  const BwdParams<T, W, O> p = backward_params<T, W, O, V>(a, pl, workspace);
  for (const plan::Launch& l : pl.launches) {
    const dim3 grid = dims(l.grid), block = dims(l.block);
    const size_t smem = static_cast<size_t>(l.dynamic_smem_bytes);
    switch (l.id) {
      case plan::Kernel::BwdOnChip: {
        auto k = gn_bwd_onchip<T, W, O, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::FwdStats: {
        auto k = gn_fwd_stats<T, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p.x, p.silu_ws, p.geo, p.dx_sched);
        break;
      }
      case plan::Kernel::BwdSumsNchw: {
        auto k = gn_bwd_sums_nchw<T, W, O, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::BwdSumsNhwc: {
        auto k = gn_bwd_sums_nhwc<T, W, O, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::BwdSiluR: {
        auto k = gn_bwd_silu_r<T, W, O>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::BwdCoeffs: {
        auto k = gn_bwd_coeffs<T, W, O>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::BwdParams: {
        if (!want_params) continue;
        auto k = gn_bwd_params<T, W, O>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::BwdDx: {
        if (a.dx == nullptr) continue;
        auto k = gn_bwd_dx<T, W, O, V>;
        GN_LAUNCH(k, grid, block, smem, stream, p);
        break;
      }
      case plan::Kernel::FwdStatsRows:
        if constexpr (V > 1) {
          auto k = gn_fwd_stats_rows<T, V>;
          GN_LAUNCH(k, grid, block, smem, stream, p.x, p.silu_ws, p.geo, p.rows);
          break;
        }
        not_in_direction(l, "scalar backward");
      case plan::Kernel::BwdSumsRows:
        if constexpr (V > 1) {
          auto k = gn_bwd_sums_rows<T, W, O, V>;
          GN_LAUNCH(k, grid, block, smem, stream, p);
          break;
        }
        not_in_direction(l, "scalar backward");
      case plan::Kernel::BwdCluster:
        if constexpr (V > 1) {
          auto k = gn_bwd_cluster<T, W, O, V>;
          GN_LAUNCH_CLUSTER(k, grid, block, smem, stream, static_cast<unsigned>(l.cluster), p);
          break;
        }
        not_in_direction(l, "scalar backward");
      case plan::Kernel::BwdBundle:
        if constexpr (V > 1) {
          auto k = gn_bwd_bundle<T, W, O, V>;
          if (l.cluster > 1) GN_LAUNCH_CLUSTER(k, grid, block, smem, stream, static_cast<unsigned>(l.cluster), p);
          else GN_LAUNCH(k, grid, block, smem, stream, p);
          break;
        }
        not_in_direction(l, "scalar backward");
      case plan::Kernel::BwdDxRows:
        if constexpr (V > 1) {
          if (a.dx == nullptr) continue;
          auto k = gn_bwd_dx_rows<T, W, O, V>;
          GN_LAUNCH(k, grid, block, smem, stream, p);
          break;
        }
        not_in_direction(l, "scalar backward");
      default: not_in_direction(l, "backward");
    }
    GN_AFTER_LAUNCH();
  }
}

template <typename T, typename W, typename O>
void launch_backward(const BackwardArgs<T, W, O>& a, const plan::BackwardPlan& pl, void* workspace,
                     cudaStream_t stream) {
  if (pl.launches.empty()) return;
  if (pl.vec > 1 && !(aligned16(a.x) && aligned16(a.dy) && aligned16(a.dx)))
    throw std::invalid_argument("groupnorm_cuda: vectorized plan for misaligned tensors (call fit_backward_plan)");
  constexpr int VF = static_cast<int>(16 / sizeof(T));
  if (pl.vec == 1) launch_backward_v<T, W, O, 1>(a, pl, workspace, stream);
  else launch_backward_v<T, W, O, VF>(a, pl, workspace, stream);
}

}  // namespace kernels
}  // namespace groupnorm_cuda
