// Autograd of groupnorm_cuda::forward, registered with the dispatcher (the Autograd key), the
// way torchvision registers its ops' autograd: the derivative belongs to the op, whoever calls
// it (Python, TorchScript, torch.compile, C++), with no Python autograd.Function per call.
//
//   first derivative:  groupnorm_cuda::backward (the hand-written kernels), asked only for the
//                      gradients autograd needs (output_mask);
//   create_graph=True: the same first derivative through a differentiable composite of the
//                      same function (at::group_norm, then SiLU), so that autograd can
//                      differentiate it again (double backward).
// mean and rstd are outputs for the backward, not differentiable. groupnorm_cuda::backward
// itself is a derivative, not differentiated again: its Autograd key falls through.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/op_calls.h"

namespace groupnorm_cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Outputs = OpOutputs;

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// create_graph=True: the gradients of act(group_norm(x) * w + b) through ATen's differentiable
// ops, for the inputs that need them.
variable_list composite_grads(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                              int64_t groups, double eps, const std::string& act, std::array<bool, 3> need) {
  const std::array<at::Tensor, 3> candidates{x, w, b};
  variable_list inputs;
  for (int i = 0; i < 3; ++i)
    if (need[i]) inputs.push_back(candidates[i]);
  at::Tensor y = at::group_norm(x, groups, opt(w), opt(b), eps);
  if (act == "silu") y = at::silu(y);
  variable_list grads = torch::autograd::grad({y}, inputs, {dy}, /*retain_graph=*/true, /*create_graph=*/true,
                                              /*allow_unused=*/true);
  variable_list out(3);
  for (int i = 0, k = 0; i < 3; ++i)
    if (need[i]) out[i] = grads[k++];
  return out;
}

class GroupNormAutograd : public torch::autograd::Function<GroupNormAutograd> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& w,
                               const std::optional<at::Tensor>& b, int64_t groups, double eps,
                               const std::string& act) {
    at::AutoDispatchBelowADInplaceOrView guard;  // run the backend kernel, not this one again
    auto [y, mean, rstd] = call_forward(x, w, b, groups, eps, act);
    ctx->save_for_backward({x, mean, rstd, w.value_or(at::Tensor()), b.value_or(at::Tensor())});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["act"] = act;
    ctx->mark_non_differentiable({mean, rstd});
    return {y, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &mean = saved[1], &rstd = saved[2], &w = saved[3], &b = saved[4];
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const double eps = ctx->saved_data["eps"].toDouble();
    const std::string act = ctx->saved_data["act"].toStringRef();
    // needs_input_grad counts the tensor inputs that were given: absent parameters have no edge.
    const std::array<bool, 3> need{ctx->needs_input_grad(0), w.defined() && ctx->needs_input_grad(1),
                                   b.defined() && ctx->needs_input_grad(w.defined() ? 2 : 1)};
    variable_list out(6);
    if (!need[0] && !need[1] && !need[2]) return out;
    if (torch::autograd::GradMode::is_enabled()) {  // create_graph=True
      const variable_list g = composite_grads(grads[0], x, w, b, groups, eps, act, need);
      std::copy(g.begin(), g.end(), out.begin());
      return out;
    }
    auto [dx, dw, db] = call_backward(grads[0], x, mean, rstd, opt(w), opt(b), groups, act, need);
    if (need[0]) out[0] = dx;
    if (need[1]) out[1] = dw;
    if (need[2]) out[2] = db;
    return out;
  }
};

bool requires_grad(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined() && t->requires_grad(); }

Outputs forward_autograd(const at::Tensor& x, const std::optional<at::Tensor>& w, const std::optional<at::Tensor>& b,
                         int64_t groups, double eps, c10::string_view act) {
  if (!torch::autograd::GradMode::is_enabled() || !(x.requires_grad() || requires_grad(w) || requires_grad(b))) {
    at::AutoDispatchBelowADInplaceOrView guard;  // nothing to differentiate: no graph node
    return call_forward(x, w, b, groups, eps, act);
  }
  const variable_list out = GroupNormAutograd::apply(x, w, b, groups, eps, std::string(act));
  return {out[0], out[1], out[2]};
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, Autograd, m) {
  m.impl("forward", &groupnorm_cuda::forward_autograd);
  m.impl("backward", torch::CppFunction::makeFallthrough());
}
