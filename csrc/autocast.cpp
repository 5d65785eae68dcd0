// Autocast of groupnorm_cuda::forward: the policy PyTorch applies to group_norm, per device.
//
//   CUDA: group_norm is on autocast's float32 list. Under torch.autocast("cuda") a float16 /
//         bfloat16 input (and parameters) are computed in float32 and the output is float32, as
//         nn.GroupNorm gives. Registered below for the AutocastCUDA key.
//   CPU:  group_norm is on no autocast list: the op runs on the dtypes it is given (a bf16 input
//         gives a bf16 output, as nn.GroupNorm under torch.autocast("cpu")). Nothing to register:
//         a custom op's Autocast keys fall through.
// The 16-bit input is not cast: the op is asked for a float32 y (out_dtype), which the CUDA
// kernels write from the 16-bit values directly, and whose float32 gradient the backward
// kernels read beside the 16-bit x: no float32 copy of x in either direction. 16-bit
// parameters (C values) are cast to float32, as autocast would; autocast's cast of a float64
// tensor is none, and neither is ours.
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/dispatch.h"
#include "common/op_calls.h"

namespace groupnorm_cuda {
namespace {

using Outputs = OpOutputs;

// Runs on whatever device its tensors are on (the tests redispatch CPU tensors to this key).
Outputs forward_autocast_cuda(const at::Tensor& x, const std::optional<at::Tensor>& w,
                              const std::optional<at::Tensor>& b, int64_t groups, double eps,
                              c10::string_view act, std::optional<at::ScalarType> out_dtype) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  if (x.scalar_type() == at::kDouble) return call_forward(x, w, b, groups, eps, act, out_dtype);
  return call_forward(x, float_param(w), float_param(b), groups, eps, act,
                      is_16bit_float(x.scalar_type()) ? std::optional<at::ScalarType>(at::kFloat) : out_dtype);
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, AutocastCUDA, m) {
  m.impl("forward", &groupnorm_cuda::forward_autocast_cuda);
}
