// Argument checks of the ops, with F.group_norm's wording where it has one, and the Problem
// they describe. One definition for every backend: the CPU and CUDA kernels and the Meta kernel
// (csrc/ops.cpp, which FakeTensor and torch.compile run) call the same functions, so every
// device, real or fake, reports the same errors.
//
// Sizes are read as SymInt (sym_size), so the checks also run on tensors with symbolic shapes
// (torch.compile with dynamic shapes), where size() would throw; on real tensors a SymInt is a
// plain integer.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/SymBool.h>

#include <optional>
#include <string>

#include "common/outputs.h"
#include "common/problem.h"

namespace groupnorm_cuda {

inline Activation parse_activation(c10::string_view name) {
  Activation act = Activation::None;
  TORCH_CHECK_VALUE(activation_from_name(std::string_view(name.data(), name.size()), &act),
                    "groupnorm_cuda: activation must be \"none\" or \"silu\", got \"", std::string(name), "\"");
  return act;
}

inline DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default:
      TORCH_CHECK(false, "groupnorm_cuda: expected input of dtype Float, Double, Half or BFloat16, but got ", t);
  }
}

inline const at::Tensor* opt_ptr(const std::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? &*t : nullptr;
}

// A present parameter made contiguous for the kernels; undefined when absent.
inline at::Tensor contiguous_or_undefined(const at::Tensor* t) { return t ? t->contiguous() : at::Tensor(); }

// weight or bias: a vector of C values on x's device, of x's dtype or float32 for a half x.
inline void check_param(const at::Tensor* t, const char* name, const at::Tensor& x) {
  if (!t) return;
  const c10::SymInt& C = x.sym_size(1);
  TORCH_SYM_CHECK(c10::SymBool(t->dim() == 1).sym_and(t->sym_numel().sym_eq(C)), "Expected ", name,
                  " to be a vector of size equal to the number of channels in input, but got ", name, " of shape ",
                  t->sym_sizes(), " and input of shape ", x.sym_sizes());
  TORCH_CHECK(t->device() == x.device(), "Expected all tensors to be on the same device, but ", name, " is on ",
              t->device(), " and input is on ", x.device());
  const auto xt = x.scalar_type();
  const bool half = is_16bit_float(xt);
  TORCH_CHECK(t->scalar_type() == xt || (half && t->scalar_type() == at::kFloat), "groupnorm_cuda: expected ", name,
              " to have dtype ", xt, half ? " or Float" : "", " (the input's), but got ", t->scalar_type());
}

// The dtype of forward's y: out_dtype when given, else the input's. out_dtype may be the
// input's own or, for a float16 / bfloat16 input, float32: autocast's float32 policy on CUDA
// (csrc/autocast.cpp), which the kernels write from the 16-bit input directly.
inline at::ScalarType forward_out_dtype(const at::Tensor& x, std::optional<at::ScalarType> out_dtype) {
  const at::ScalarType xt = x.scalar_type();
  if (!out_dtype.has_value() || *out_dtype == xt) return xt;
  TORCH_CHECK(*out_dtype == at::kFloat && is_16bit_float(xt),
              "groupnorm_cuda.forward: expected out_dtype to be the input's dtype (", xt, ")",
              is_16bit_float(xt) ? " or Float" : "", ", but got ", *out_dtype);
  return at::kFloat;
}

// Every check of the forward's arguments (no result: also the Meta kernel's checks).
// allow_empty_spatial: a shard of a sharded tensor may hold no spatial elements (stats / apply).
inline void check_forward_inputs(const at::Tensor& x, const at::Tensor* w, const at::Tensor* b, int64_t num_groups,
                                 bool allow_empty_spatial = false) {
  TORCH_CHECK(x.dim() >= 2, "Expected at least 2 dimensions for input tensor but received ", x.dim());
  (void)dtype_of(x.scalar_type());
  TORCH_CHECK(num_groups > 0, "Expected num groups to be greater than 0, got ", num_groups);
  const c10::SymInt& C = x.sym_size(1);
  TORCH_SYM_CHECK(C.sym_gt(0), "Expected number of channels to be greater than 0, got ", C);
  TORCH_SYM_CHECK((C % num_groups).sym_eq(0),
                  "Expected number of channels in input to be divisible by num_groups, but got input of shape ",
                  x.sym_sizes(), " and num_groups=", num_groups);
  c10::SymInt hxw = 1;
  for (int64_t d = 2; d < x.dim(); ++d) hxw = hxw * x.sym_size(d);
  if (!allow_empty_spatial) TORCH_SYM_CHECK(hxw.sym_gt(0), "Expected HxW to be greater than 0, got ", hxw);
  check_param(w, "weight", x);
  check_param(b, "bias", x);
  TORCH_CHECK(!w || !b || w->scalar_type() == b->scalar_type(),
              "groupnorm_cuda: expected weight and bias to have the same dtype, but got ", w->scalar_type(), " and ",
              b->scalar_type());
}

// (N, num_groups) statistics (mean, rstd; the split backward's residual) in stats_dtype; with
// pairs, (N, num_groups, 2) (the split backward's group sums).
inline void check_stats(const at::Tensor& stat, const char* name, const at::Tensor& x, int64_t num_groups,
                        bool pairs = false) {
  const bool rank_ok = stat.dim() == (pairs ? 3 : 2) && (!pairs || stat.size(2) == 2);
  TORCH_CHECK(rank_ok, "groupnorm_cuda.backward: expected ", name, " of shape [", x.sym_size(0), ", ", num_groups,
              pairs ? ", 2" : "", "], but got ", stat.sym_sizes());
  TORCH_SYM_CHECK(stat.sym_size(0).sym_eq(x.sym_size(0)).sym_and(stat.sym_size(1).sym_eq(num_groups)),
                  "groupnorm_cuda.backward: expected ", name, " of shape [", x.sym_size(0), ", ", num_groups,
                  pairs ? ", 2" : "", "], but got ", stat.sym_sizes());
  TORCH_CHECK(stat.scalar_type() == stats_dtype(x.scalar_type()), "groupnorm_cuda.backward: expected ", name,
              " of dtype ", stats_dtype(x.scalar_type()), ", but got ", stat.scalar_type());
  TORCH_CHECK(stat.device() == x.device(), "Expected all tensors to be on the same device, but ", name, " is on ",
              stat.device(), " and input is on ", x.device());
}

// Moments of (a shard of) x per (n, group), the split ops' exchange format: (N, num_groups, 4)
// float64 rows [count, shift, mean of (x - shift), M2] (cpu/kernels/moments.h, store_moments).
inline void check_moments(const at::Tensor& m, const at::Tensor& x, int64_t num_groups, const char* op) {
  TORCH_SYM_CHECK(c10::SymBool(m.dim() == 3)
                      .sym_and(m.sym_size(0).sym_eq(x.sym_size(0)))
                      .sym_and(m.sym_size(1).sym_eq(num_groups))
                      .sym_and(m.sym_size(2).sym_eq(4)),
                  "groupnorm_cuda.", op, ": expected moments of shape [", x.sym_size(0), ", ", num_groups,
                  ", 4], but got ", m.sym_sizes());
  TORCH_CHECK(m.scalar_type() == at::kDouble, "groupnorm_cuda.", op, ": expected moments of dtype Double, but got ",
              m.scalar_type());
  TORCH_CHECK(m.device() == x.device(), "Expected all tensors to be on the same device, but moments is on ",
              m.device(), " and input is on ", x.device());
}

// Every check of the backward's arguments. float_grad: the fused backward also takes a float32
// grad_out of a float16 / bfloat16 input (the gradient of a float32 y, forward_out_dtype).
inline void check_backward_inputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                  const at::Tensor& rstd, const at::Tensor* w, const at::Tensor* b,
                                  int64_t num_groups, bool allow_empty_spatial = false, bool float_grad = false) {
  check_forward_inputs(x, w, b, num_groups, allow_empty_spatial);
  TORCH_CHECK(dy.dim() == x.dim(), "groupnorm_cuda.backward: expected grad_output of shape ", x.sym_sizes(),
              ", but got ", dy.sym_sizes());
  for (int64_t d = 0; d < x.dim(); ++d)
    TORCH_SYM_CHECK(dy.sym_size(d).sym_eq(x.sym_size(d)), "groupnorm_cuda.backward: expected grad_output of shape ",
                    x.sym_sizes(), ", but got ", dy.sym_sizes());
  const bool half = is_16bit_float(x.scalar_type());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type() || (float_grad && half && dy.scalar_type() == at::kFloat),
              "groupnorm_cuda.backward: expected grad_output of dtype ", x.scalar_type(),
              float_grad && half ? " or Float" : "", ", but got ", dy.scalar_type());
  TORCH_CHECK(dy.device() == x.device(), "Expected all tensors to be on the same device, but grad_output is on ",
              dy.device(), " and input is on ", x.device());
  check_stats(mean, "mean", x, num_groups);
  check_stats(rstd, "rstd", x, num_groups);
}

// Every check of the split ops' arguments (ops.cpp), shared by their CPU, CUDA, Meta and
// reference kernels: a shard may have no spatial elements.
inline void check_apply_inputs(const at::Tensor& x, const at::Tensor& moments, const at::Tensor* w,
                               const at::Tensor* b, int64_t num_groups) {
  check_forward_inputs(x, w, b, num_groups, /*allow_empty_spatial=*/true);
  check_moments(moments, x, num_groups, "apply");
}
inline void check_backward_sums_inputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                       const at::Tensor& rstd, const at::Tensor& residual, const at::Tensor* w,
                                       const at::Tensor* b, int64_t num_groups) {
  check_backward_inputs(dy, x, mean, rstd, w, b, num_groups, /*allow_empty_spatial=*/true);
  check_stats(residual, "residual", x, num_groups);
}
inline void check_backward_dx_inputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                     const at::Tensor& rstd, const at::Tensor& residual, const at::Tensor* w,
                                     const at::Tensor* b, const at::Tensor& group_sums, int64_t count,
                                     int64_t num_groups) {
  check_backward_sums_inputs(dy, x, mean, rstd, residual, w, b, num_groups);
  check_stats(group_sums, "group_sums", x, num_groups, /*pairs=*/true);
  TORCH_CHECK(count > 0, "groupnorm_cuda.backward_dx: expected a positive count, got ", count);
}

// The Problem of a checked input with real sizes (the kernels' view of it).
inline Problem make_problem(const at::Tensor& x, int64_t num_groups, c10::string_view activation) {
  Problem p;
  p.N = x.size(0);
  p.C = x.size(1);
  p.HxW = 1;
  for (int64_t d = 2; d < x.dim(); ++d) p.HxW *= x.size(d);
  p.G = num_groups;
  p.dtype = dtype_of(x.scalar_type());
  p.layout = pick_layout(x);
  p.act = parse_activation(activation);
  return p;
}

}  // namespace groupnorm_cuda
