// DRAM-traffic model of a launch plan: the bytes each launch reads and writes in global memory
// (tensors, parameters, statistics, workspace), their total, and the ratio to the floor.
//
// Floor (what any implementation must move):
//   forward:  read x once, write y once; read weight and bias, write mean and rstd;
//   backward: read x and dy once, write dx once; read mean, rstd, weight, bias; write dweight
//             and dbias.
// Assumptions:
//   - X = N * C * HxW * sizeof(T) for x and dx, Y the same for y and dy (4 bytes an element
//     when they are float32 of a 16-bit x: Problem::float_out); parameters counted as
//     sizeof(T) per channel each (float32 parameters with a half input move twice that:
//     negligible next to X).
//   - A tensor read by two different launches is read from DRAM twice. (With the whole tensor
//     inside the 60 MB L2 of an H200 the second read may hit L2; the model does not count on
//     it.) Data a CTA parks in shared memory between its statistics and its epilogue (the
//     on-chip schedules) is read once.
//   - Workspace written by one launch and read by the next counts once each way; partials that
//     every CTA of a group re-reads (split forward, dx) count once: they are L2-resident.
//   - Parameters and per-(n, g) statistics read by many CTAs count once per launch.
// Pure host C++17, like the rest of the planner.
#pragma once

#include <string>
#include <vector>

#include "cuda/plan/types.h"

namespace groupnorm_cuda {
namespace plan {

struct Traffic {
  int64_t read = 0, write = 0, floor = 0;
  double ratio() const { return floor > 0 ? static_cast<double>(read + write) / static_cast<double>(floor) : 0.0; }
};

namespace detail {

struct Sizes {
  int64_t X, Y, params, stats, NG, acc, C, N;
};

inline Sizes sizes_of(const DeviceProblem& p) {
  Sizes s;
  s.acc = acc_size(p.dtype);
  s.NG = p.N * p.G;
  s.C = p.C;
  s.N = p.N;
  s.X = p.N * p.C * p.HxW * elem_size(p.dtype);
  s.Y = p.N * p.C * p.HxW * out_elem_size(p);
  s.params = 2 * p.C * elem_size(p.dtype);
  s.stats = 2 * s.NG * s.acc;
  return s;
}

inline void set_bytes(Launch& l, int64_t read, int64_t write, Traffic& t) {
  l.bytes_read = read;
  l.bytes_written = write;
  t.read += read;
  t.write += write;
}

}  // namespace detail

// Fills bytes_read / bytes_written of every forward launch; returns the totals and the floor.
inline Traffic forward_traffic(ForwardPlan& f) {
  const detail::Sizes s = detail::sizes_of(f.prob);
  Traffic t;
  t.floor = s.X + s.Y + s.params + s.stats;
  const int64_t partials = f.schedule == Schedule::Rows ? f.rows.ws_gstat : f.workspace_bytes;
  for (Launch& l : f.launches) {
    switch (l.id) {
      case Kernel::FwdOnChip:
      case Kernel::FwdCluster:
      case Kernel::FwdBundle: detail::set_bytes(l, s.X + s.params, s.Y + s.stats, t); break;
      case Kernel::FwdStats:
      case Kernel::FwdStatsRows: detail::set_bytes(l, s.X, partials, t); break;
      case Kernel::FwdApply: detail::set_bytes(l, s.X + partials + s.params, s.Y + s.stats, t); break;
      case Kernel::FwdFinalize: detail::set_bytes(l, partials, s.stats + 3 * s.NG * s.acc, t); break;  // + (s, m, rstd)
      case Kernel::SplitMoments: detail::set_bytes(l, partials, 4 * s.NG * 8, t); break;
      case Kernel::SplitGiven: detail::set_bytes(l, 4 * s.NG * 8, s.stats + 3 * s.NG * s.acc, t); break;
      case Kernel::FwdApplyRows: detail::set_bytes(l, s.X + s.stats + s.params, s.Y, t); break;
      default: throw std::logic_error("forward_traffic: no model for kernel " + l.kernel);
    }
  }
  return t;
}

// Fills bytes_read / bytes_written of every backward launch; returns the totals and the floor.
inline Traffic backward_traffic(BackwardPlan& b) {
  const detail::Sizes s = detail::sizes_of(b.prob);
  Traffic t;
  const int64_t pgrads = s.params;  // dweight + dbias
  t.floor = 2 * s.X + s.Y + s.stats + s.params + pgrads;
  const int64_t dwp = b.dwp_rows * s.C * 2 * s.acc;  // dweight/dbias terms: a row per sample (or per nb samples)
  const int64_t sums = s.N * s.C * b.sums.pieces * 3 * s.acc;
  const int64_t coef = s.NG * 2 * s.acc;
  // the SiLU pre-pass's partials (the split ops take r per group instead: NG values)
  const int64_t silu_ws = !b.silu ? 0 : b.part == Part::Whole ? s.NG * b.walk.splits * 3 * s.acc : s.NG * s.acc;
  for (Launch& l : b.launches) {
    switch (l.id) {
      case Kernel::BwdOnChip:
      case Kernel::BwdCluster:
      case Kernel::BwdBundle: detail::set_bytes(l, s.X + s.Y + s.stats + s.params, s.X + dwp, t); break;
      case Kernel::FwdStats:  // SiLU pre-pass
      case Kernel::FwdStatsRows: detail::set_bytes(l, s.X, silu_ws, t); break;
      case Kernel::BwdSiluR: detail::set_bytes(l, silu_ws + s.stats, s.NG * s.acc, t); break;
      case Kernel::BwdSumsNchw:
      case Kernel::BwdSumsNhwc:
      case Kernel::BwdSumsRows: detail::set_bytes(l, s.X + s.Y + s.stats + s.params + silu_ws, sums, t); break;
      case Kernel::BwdCoeffs: detail::set_bytes(l, sums + s.stats + s.params, coef + dwp, t); break;
      case Kernel::BwdParams: detail::set_bytes(l, dwp, pgrads, t); break;
      case Kernel::BwdDx:
      case Kernel::BwdDxRows: detail::set_bytes(l, s.X + s.Y + coef + s.stats + s.params + silu_ws, s.X, t); break;
      default: throw std::logic_error("backward_traffic: no model for kernel " + l.kernel);
    }
  }
  return t;
}

}  // namespace plan
}  // namespace groupnorm_cuda
