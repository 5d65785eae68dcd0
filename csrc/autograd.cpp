// Autograd of groupnorm_cuda::forward, registered with the dispatcher (the Autograd key), the
// way torchvision registers its ops' autograd: the derivative belongs to the op, whoever calls
// it (Python, TorchScript, torch.compile, C++), with no Python autograd.Function per call. The
// graph node is written directly (GroupNormBackward, as PyTorch's generated nodes are), not
// through torch::autograd::Function, whose generic bookkeeping cost ~1 us a call.
//
//   first derivative:  groupnorm_cuda::backward (the hand-written kernels), asked only for the
//                      gradients autograd needs (output_mask);
//   create_graph=True: the same first derivative through a differentiable composite of the
//                      same function (at::group_norm, then SiLU), so that autograd can
//                      differentiate it again (double backward).
// mean and rstd are outputs for the backward, not differentiable. groupnorm_cuda::backward
// itself is a derivative, not differentiated again: its Autograd key falls through.
//
// A float32 y of a 16-bit x (out_dtype, autocast on CUDA) gets a float32 grad_out: the node
// keeps x in its own dtype (no float32 copy lives from the forward to the backward) and hands
// both to the backward op, which returns each gradient in its input's dtype (the CUDA kernels
// read the 16-bit x and the float32 grad_out as they are). create_graph=True differentiates the
// composite on a float32 copy of x instead.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/dispatch.h"
#include "common/op_calls.h"

namespace groupnorm_cuda {
namespace {

using torch::autograd::variable_list;
using Outputs = OpOutputs;

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// x, weight and bias in grad_out's dtype when it is wider than x's (a float32 y of a 16-bit x),
// for the composite.
struct Widened {
  at::Tensor x, w, b;
};
Widened widen(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (dy.scalar_type() == x.scalar_type()) return {x, w, b};
  return {x.to(dy.scalar_type()), float_param(w), float_param(b)};
}

// create_graph=True: the gradients of act(group_norm(x) * w + b) through ATen's differentiable
// ops (the widening casts among them), for the inputs that need them.
variable_list composite_grads(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                              int64_t groups, double eps, const std::string& act, std::array<bool, 3> need) {
  const std::array<at::Tensor, 3> candidates{x, w, b};
  variable_list inputs;
  for (int i = 0; i < 3; ++i)
    if (need[i]) inputs.push_back(candidates[i]);
  const Widened f = widen(dy, x, w, b);
  at::Tensor y = at::group_norm(f.x, groups, opt(f.w), opt(f.b), eps);
  if (act == "silu") y = at::silu(y);
  variable_list grads = torch::autograd::grad({y}, inputs, {dy}, /*retain_graph=*/true, /*create_graph=*/true,
                                              /*allow_unused=*/true);
  variable_list out(3);
  for (int i = 0, k = 0; i < 3; ++i)
    if (need[i]) out[i] = grads[k++];
  return out;
}

// The graph node of one forward call: what torch::autograd::Function would record, without its
// generic bookkeeping (per-input metadata, a map of named saved values, output wrapping), which
// cost about 1 us a call on tiny tensors (RESULTS.md, per-call overhead). Edges: x, weight, bias
// (an absent parameter's edge is empty); saved: x, weight, bias (versions checked on unpack),
// mean and rstd (outputs of the forward that do not require grad).
struct GroupNormBackward : public torch::autograd::Node {
  torch::autograd::SavedVariable x_, w_, b_, mean_, rstd_;
  int64_t groups_ = 0;
  double eps_ = 0;
  std::string act_;

  std::string name() const override { return "GroupNormBackward"; }
  void release_variables() override {
    for (auto* v : {&x_, &w_, &b_, &mean_, &rstd_}) v->reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    const at::Tensor x = x_.unpack(), w = w_.unpack(), b = b_.unpack();
    const at::Tensor mean = mean_.unpack(), rstd = rstd_.unpack();
    const std::array<bool, 3> need{task_should_compute_output(0), w.defined() && task_should_compute_output(1),
                                   b.defined() && task_should_compute_output(2)};
    variable_list out(3);
    if ((!need[0] && !need[1] && !need[2]) || !grads[0].defined()) return out;
    if (torch::autograd::GradMode::is_enabled()) {  // create_graph=True
      return composite_grads(grads[0], x, w, b, groups_, eps_, act_, need);
    }
    auto [dx, dw, db] = call_backward(grads[0], x, mean, rstd, opt(w), opt(b), groups_, act_, need);
    if (need[0]) out[0] = dx;
    if (need[1]) out[1] = dw;
    if (need[2]) out[2] = db;
    return out;
  }
};

bool requires_grad(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined() && t->requires_grad(); }

Outputs forward_autograd(const at::Tensor& x, const std::optional<at::Tensor>& w, const std::optional<at::Tensor>& b,
                         int64_t groups, double eps, c10::string_view act, std::optional<at::ScalarType> out_dtype) {
  Outputs out;
  {
    at::AutoDispatchBelowADInplaceOrView guard;  // run the backend kernel, not this one again
    out = call_forward(x, w, b, groups, eps, act, out_dtype);
  }
  if (!torch::autograd::GradMode::is_enabled() || !(x.requires_grad() || requires_grad(w) || requires_grad(b)))
    return out;  // nothing to differentiate: no graph node
  const at::Tensor wt = w.value_or(at::Tensor()), bt = b.value_or(at::Tensor());
  auto node = c10::make_intrusive<GroupNormBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, wt, bt));
  node->x_ = torch::autograd::SavedVariable(x, false);
  node->w_ = torch::autograd::SavedVariable(wt, false);
  node->b_ = torch::autograd::SavedVariable(bt, false);
  node->mean_ = torch::autograd::SavedVariable(std::get<1>(out), false);
  node->rstd_ = torch::autograd::SavedVariable(std::get<2>(out), false);
  node->groups_ = groups;
  node->eps_ = eps;
  node->act_ = std::string(act);
  torch::autograd::set_history(std::get<0>(out), node);
  return out;
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, Autograd, m) {
  m.impl("forward", &groupnorm_cuda::forward_autograd);
  m.impl("backward", torch::CppFunction::makeFallthrough());
}
