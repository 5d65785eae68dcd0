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
//   forward(input, weight?, bias?, num_groups, eps, activation) -> (y, mean, rstd)
//     y has input's shape, dtype and memory format; mean and rstd are (N, num_groups) in
//     float32 (float64 for float64 input). activation is "none" or "silu":
//     y = act(groupnorm(x) * weight + bias).
//   backward(grad_out, input, mean, rstd, weight?, bias?, num_groups, activation, output_mask)
//     -> (grad_input, grad_weight, grad_bias)
//     output_mask says which of the three are wanted. grad_input keeps input's memory format;
//     grad_weight / grad_bias have their parameter's dtype. An unwanted gradient, or the
//     gradient of an absent parameter, is an empty tensor of shape [0] in the parameter's dtype
//     (the input's when the parameter is absent).
TORCH_LIBRARY(groupnorm_cuda, m) {
  m.def(
      "forward(Tensor input, Tensor? weight, Tensor? bias, int num_groups, float eps, str activation)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "backward(Tensor grad_out, Tensor input, Tensor mean, Tensor rstd, Tensor? weight, Tensor? bias,"
      " int num_groups, str activation, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

namespace groupnorm_cuda {
namespace {

Outputs forward_meta(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                     c10::string_view activation) {
  check_forward_inputs(input, opt_ptr(weight), opt_ptr(bias), num_groups);
  (void)parse_activation(activation);
  return allocate_forward_outputs(input, pick_layout(input), num_groups);
}

Outputs backward_meta(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                      const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation,
                      std::array<bool, 3> output_mask) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_inputs(grad_out, input, mean, rstd, w, b, num_groups);
  (void)parse_activation(activation);
  return allocate_backward_outputs(input, pick_layout(input), w, b, output_mask);
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, Meta, m) {
  m.impl("forward", &groupnorm_cuda::forward_meta);
  m.impl("backward", &groupnorm_cuda::backward_meta);
}
