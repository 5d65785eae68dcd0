// Calls of the ops through the dispatcher from C++ (the autograd and autocast kernels
// redispatch to them): their C++ signatures written once, next to the schemas' meaning
// (csrc/ops.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <optional>
#include <tuple>

namespace groupnorm_cuda {

using OpOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

inline OpOutputs call_forward(const at::Tensor& x, const std::optional<at::Tensor>& w,
                              const std::optional<at::Tensor>& b, int64_t groups, double eps, c10::string_view act,
                              std::optional<at::ScalarType> out_dtype) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("groupnorm_cuda::forward", "")
                       .typed<OpOutputs(const at::Tensor&, const std::optional<at::Tensor>&,
                                        const std::optional<at::Tensor>&, int64_t, double, c10::string_view,
                                        std::optional<at::ScalarType>)>();
  return op.call(x, w, b, groups, eps, act, out_dtype);
}

inline OpOutputs call_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                               const at::Tensor& rstd, const std::optional<at::Tensor>& w,
                               const std::optional<at::Tensor>& b, int64_t groups, c10::string_view act,
                               std::array<bool, 3> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("groupnorm_cuda::backward", "")
                       .typed<OpOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, int64_t,
                                        c10::string_view, std::array<bool, 3>)>();
  return op.call(dy, x, mean, rstd, w, b, groups, act, mask);
}

}  // namespace groupnorm_cuda
