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
// from it (apply: no statistics pass); normalize false = no normalization pass and no y, mean,
// rstd (stats); moments_out set = write the statistics there ((N, G, 4) float64, moments.h
// store_moments). (Not y == nullptr as the flag: an empty shard's y has no data pointer.)
template <typename T, typename W>
struct FwdArgs {
  const T* x;
  const W* w;  // nullable
  const W* b;  // nullable
  T* y;            // null when not normalizing (or empty)
  acc_t<T>* mean;  // null when not normalizing
  acc_t<T>* rstd;  // null when not normalizing
  Problem s;  // sizes, layout, activation
  double eps;
  double* moments_out = nullptr;
  const double* moments_in = nullptr;
  bool normalize = true;
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
