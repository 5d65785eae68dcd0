// The arguments of one CPU forward / backward call, filled once by the glue
// (cpu/group_norm_cpu.cpp) and read by every kernel of that direction.
#pragma once

#include <cstdint>

#include "common/problem.h"
#include "common/welford.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

// One struct for the fused forward and the split ops: moments_in set = take the statistics
// from it (apply: no statistics pass); y null = no normalization pass (stats); moments_out set
// = write the statistics there ((N, G, 4) float64, moments.h store_moments).
template <typename T, typename W>
struct FwdArgs {
  const T* x;
  const W* w;  // nullable
  const W* b;  // nullable
  T* y;        // nullable: statistics only
  acc_t<T>* mean;  // nullable with y
  acc_t<T>* rstd;  // nullable with y
  Problem s;  // sizes, layout, activation
  double eps;
  double* moments_out = nullptr;
  const double* moments_in = nullptr;
};

// Per channel of a unit the backward reduces a = sum(dy'), bs = sum(dy' * u), e = sum(u), u = x - mean.
template <typename T, typename W>
struct BwdArgs {
  const T* dy;
  const T* x;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  const W* w;  // nullable
  const W* b;  // nullable
  T* dx;       // nullable: not wanted
  acc_t<T>* dw_part;  // (N, C) per-sample sum(dy' * xhat), nullable
  acc_t<T>* db_part;  // (N, C) per-sample sum(dy'), nullable
  Problem s;  // sizes, layout, activation
  // The split backward (a shard of a sharded group; all null for the fused backward):
  const acc_t<T>* r_in = nullptr;      // (N, G) the saved mean's residual (no SiLU pre-pass, no sum(e))
  acc_t<T>* group_out = nullptr;       // (N, G, 2) this shard's [Asum, Bsum] (backward_common.h)
  const acc_t<T>* group_in = nullptr;  // (N, G, 2) [Asum, Bsum] over all shards: dx only, no reduction
  int64_t M_total = 0;                 // with group_in: a group's elements over all shards
};

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
