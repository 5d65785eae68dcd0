// Autocast of groupnorm_cuda::forward: the policy PyTorch applies to group_norm, per device.
//
//   CUDA: group_norm is on autocast's float32 list. Under torch.autocast("cuda") a float16 /
//         bfloat16 input (and parameters) are cast to float32 and the output is float32, as
//         nn.GroupNorm gives. Registered below for the AutocastCUDA key.
//   CPU:  group_norm is on no autocast list: the op runs on the dtypes it is given (a bf16 input
//         gives a bf16 output, as nn.GroupNorm under torch.autocast("cpu")). Nothing to register:
//         a custom op's Autocast keys fall through.
// The casts are ordinary differentiable ops, recorded by autograd (autocast dispatches before
// autograd), so gradients flow back to the input in its own dtype. (A cast is a full-size copy;
// reading half data and writing float32 in the kernels themselves would save it: not done yet.)
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/op_calls.h"

namespace groupnorm_cuda {
namespace {

using Outputs = OpOutputs;

// float32 copy of a floating tensor of another dtype (whatever its device: the kernel is also
// exercised on CPU tensors by redispatching to this key in the tests).
at::Tensor to_float(const at::Tensor& t) {
  return (t.defined() && at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kFloat &&
          t.scalar_type() != at::kDouble)
             ? t.to(at::kFloat)
             : t;
}
std::optional<at::Tensor> to_float(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(to_float(*t)) : std::nullopt;
}

Outputs forward_autocast_cuda(const at::Tensor& x, const std::optional<at::Tensor>& w,
                              const std::optional<at::Tensor>& b, int64_t groups, double eps,
                              c10::string_view act) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  return call_forward(to_float(x), to_float(w), to_float(b), groups, eps, act);
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, AutocastCUDA, m) {
  m.impl("forward", &groupnorm_cuda::forward_autocast_cuda);
}
