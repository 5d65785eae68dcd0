// The ops' schemas (defined once, here) and their Meta kernels.
//
// Backends register their kernels in their own files:
//   csrc/cpu/group_norm_cpu.cpp    TORCH_LIBRARY_IMPL(groupnorm_cuda, CPU, ...)
//   csrc/cuda/group_norm_cuda.cu   TORCH_LIBRARY_IMPL(groupnorm_cuda, CUDA, ...)
// The Meta kernels below run the very checks and output rules of those backends
// (common/checks.h, common/outputs.h) on tensors without data: FakeTensor and torch.compile
// use them, so a fake result has the real one's shapes, dtypes and strides by construction.
// The Python module (groupnorm_cuda._C) is csrc/module.cpp; the autograd Function is Python
// (groupnorm_cuda/_ops.py).
#include <torch/library.h>

#include <array>
#include <optional>

#include "common/checks.h"
#include "common/outputs.h"

// Contract
//   forward(input, weight?, bias?, num_groups, eps, activation, out_dtype=None) -> (y, mean, rstd)
//     y has input's shape and memory format, and input's dtype unless out_dtype asks for float32
//     of a float16 / bfloat16 input (autocast on CUDA, csrc/autocast.cpp: computed from the
//     16-bit values, never rounded to 16 bits); mean and rstd are (N, num_groups) in float32
//     (float64 for float64 input). activation is "none" or "silu":
//     y = act(groupnorm(x) * weight + bias).
//     The backward takes the float32 grad_out of such a y (and the CUDA kernels read it as it
//     is; dx is in input's dtype, dweight / dbias in their parameters').
//   backward(grad_out, input, mean, rstd, weight?, bias?, num_groups, activation, output_mask)
//     -> (grad_input, grad_weight, grad_bias)
//     grad_out in input's dtype, or float32 for a float16 / bfloat16 input (out_dtype above).
//     output_mask says which of the three are wanted. grad_input keeps input's memory format;
//     grad_weight / grad_bias have their parameter's dtype. An unwanted gradient, or the
//     gradient of an absent parameter, is an empty tensor of shape [0] in the parameter's dtype
//     (the input's when the parameter is absent).
//
// Split ops (a tensor sharded across processes, or processed in chunks; groupnorm_cuda/
// distributed.py): the fused forward's two phases, with the statistics exchanged between them.
//   stats(input, num_groups) -> moments
//     moments of (a shard of) input per (n, group): (N, num_groups, 4) float64 rows
//     [count, shift, mean of (x - shift), M2], shift = the group's first element (0 when empty).
//     A shard may have no spatial elements (count 0).
//   merge_moments(parts) -> moments
//     (P, N, G, 4) -> (N, G, 4): Chan's merge of the parts in order p = 0, 1, ..., P - 1 (so the
//     result is the same bits wherever it runs), about the first non-empty part's shift.
//   apply(input, moments, weight?, bias?, num_groups, eps, activation) -> (y, mean, rstd)
//     the forward's outputs with the statistics of `moments` instead of input's own.
//   backward_sums(grad_out, input, mean, rstd, residual, weight?, bias?, num_groups, activation)
//     -> (group_sums, grad_weight_part, grad_bias_part)
//     this shard's share of the backward's reductions: group_sums (N, G, 2) [Asum, Bsum] and the
//     shard's dweight / dbias contributions (C) (empty [0] for an absent parameter), all in the
//     stats dtype; sums over shards add up. residual (N, G): (the merged mean) - mean, i.e. the
//     rounding error of the saved mean, which the fused backward measures from the data.
//   backward_dx(grad_out, input, mean, rstd, residual, weight?, bias?, group_sums, count,
//               num_groups, activation) -> grad_input
//     dx of this shard from the group sums over all shards; count = a group's elements over all
//     shards.
TORCH_LIBRARY(groupnorm_cuda, m) {
  m.def(
      "forward(Tensor input, Tensor? weight, Tensor? bias, int num_groups, float eps, str activation,"
      " ScalarType? out_dtype=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "backward(Tensor grad_out, Tensor input, Tensor mean, Tensor rstd, Tensor? weight, Tensor? bias,"
      " int num_groups, str activation, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def("stats(Tensor input, int num_groups) -> Tensor");
  m.def("merge_moments(Tensor parts) -> Tensor");
  m.def(
      "apply(Tensor input, Tensor moments, Tensor? weight, Tensor? bias, int num_groups, float eps,"
      " str activation) -> (Tensor, Tensor, Tensor)");
  m.def(
      "backward_sums(Tensor grad_out, Tensor input, Tensor mean, Tensor rstd, Tensor residual, Tensor? weight,"
      " Tensor? bias, int num_groups, str activation) -> (Tensor, Tensor, Tensor)");
  m.def(
      "backward_dx(Tensor grad_out, Tensor input, Tensor mean, Tensor rstd, Tensor residual, Tensor? weight,"
      " Tensor? bias, Tensor group_sums, int count, int num_groups, str activation) -> Tensor");
}

namespace groupnorm_cuda {
namespace {

Outputs forward_meta(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                     c10::string_view activation, std::optional<at::ScalarType> out_dtype) {
  check_forward_inputs(input, opt_ptr(weight), opt_ptr(bias), num_groups);
  (void)parse_activation(activation);
  return allocate_forward_outputs(input, pick_layout(input), num_groups, forward_out_dtype(input, out_dtype));
}

Outputs backward_meta(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                      const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation,
                      std::array<bool, 3> output_mask) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_inputs(grad_out, input, mean, rstd, w, b, num_groups, false, /*float_grad=*/true);
  (void)parse_activation(activation);
  return allocate_backward_outputs(input, pick_layout(input), w, b, output_mask);
}

at::Tensor stats_meta(const at::Tensor& input, int64_t num_groups) {
  check_forward_inputs(input, nullptr, nullptr, num_groups, /*allow_empty_spatial=*/true);
  return allocate_moments(input, num_groups);
}

Outputs apply_meta(const at::Tensor& input, const at::Tensor& moments, const std::optional<at::Tensor>& weight,
                   const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                   c10::string_view activation) {
  check_apply_inputs(input, moments, opt_ptr(weight), opt_ptr(bias), num_groups);
  (void)parse_activation(activation);
  return allocate_forward_outputs(input, pick_layout(input), num_groups);
}

Outputs backward_sums_meta(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                           const at::Tensor& rstd, const at::Tensor& residual, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation) {
  check_backward_sums_inputs(grad_out, input, mean, rstd, residual, opt_ptr(weight), opt_ptr(bias), num_groups);
  (void)parse_activation(activation);
  return allocate_backward_sums(input, num_groups, opt_ptr(weight), opt_ptr(bias));
}

at::Tensor backward_dx_meta(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                            const at::Tensor& rstd, const at::Tensor& residual, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& group_sums, int64_t count,
                            int64_t num_groups, c10::string_view activation) {
  check_backward_dx_inputs(grad_out, input, mean, rstd, residual, opt_ptr(weight), opt_ptr(bias), group_sums, count, num_groups);
  (void)parse_activation(activation);
  return empty_in_layout(input, pick_layout(input), input.scalar_type());
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, Meta, m) {
  m.impl("forward", &groupnorm_cuda::forward_meta);
  m.impl("backward", &groupnorm_cuda::backward_meta);
  m.impl("stats", &groupnorm_cuda::stats_meta);
  m.impl("apply", &groupnorm_cuda::apply_meta);
  m.impl("backward_sums", &groupnorm_cuda::backward_sums_meta);
  m.impl("backward_dx", &groupnorm_cuda::backward_dx_meta);
}
