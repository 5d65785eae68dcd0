// The split ops (schemas and contract: csrc/ops.cpp) on any device, in ATen ops:
//
//   merge_moments   the merge itself, for every device (CompositeExplicitAutograd): a few
//                   element-wise ops over (N, G) per part, in part order;
//   stats / apply / backward_sums / backward_dx
//                   the reference implementation, used on devices whose backend has no kernel
//                   of its own (CUDA, for now): float64 arithmetic, correct but not fused. The
//                   CPU backend's kernels (cpu/group_norm_cpu.cpp) override it on CPU.
//
// Autograd: the split ops are phases of a function whose derivative its caller defines
// (groupnorm_cuda/distributed.py); differentiating through them raises.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

#include "common/checks.h"
#include "common/outputs.h"

namespace groupnorm_cuda {
namespace {

// Field f of (..., 4) moments.
at::Tensor field(const at::Tensor& m, int64_t f) { return m.select(-1, f); }

at::Tensor merge_moments(const at::Tensor& parts) {
  TORCH_CHECK(parts.dim() == 4 && parts.size(3) == 4,
              "groupnorm_cuda.merge_moments: expected parts of shape [P, N, G, 4], but got ", parts.sizes());
  TORCH_CHECK(parts.scalar_type() == at::kDouble,
              "groupnorm_cuda.merge_moments: expected parts of dtype Double, but got ", parts.scalar_type());
  TORCH_CHECK(parts.size(0) >= 1, "groupnorm_cuda.merge_moments: expected at least one part");
  at::Tensor acc = parts[0].clone();
  for (int64_t p = 1; p < parts.size(0); ++p) {
    const at::Tensor b = parts[p];
    const at::Tensor na = field(acc, 0), nb = field(b, 0), n = na + nb;
    // b's mean about acc's shift (both shifts are values of the input: exact in float64)
    const at::Tensor delta = (field(b, 1) - field(acc, 1)) + field(b, 2) - field(acc, 2);
    const at::Tensor f = at::where(n > 0, nb / at::clamp_min(n, 1), at::zeros_like(n));
    const at::Tensor merged = at::stack(
        {n, field(acc, 1), field(acc, 2) + delta * f, field(acc, 3) + field(b, 3) + delta * delta * na * f}, -1);
    // an empty part changes nothing; after empty parts only, the first non-empty one is taken whole
    acc = at::where((na == 0).unsqueeze(-1), b, at::where((nb == 0).unsqueeze(-1), acc, merged));
  }
  return acc;
}

// input as (N, G, D * HxW) in float64, in the logical (NCHW) order of its elements.
at::Tensor grouped_double(const at::Tensor& input, int64_t num_groups) {
  return input.to(at::kDouble).reshape({input.size(0), num_groups, -1});
}

at::Tensor stats_reference(const at::Tensor& input, int64_t num_groups) {
  check_forward_inputs(input, nullptr, nullptr, num_groups, /*allow_empty_spatial=*/true);
  at::Tensor out = allocate_moments(input, num_groups);
  const at::Tensor xg = grouped_double(input, num_groups);
  const int64_t count = xg.size(2);
  if (count == 0 || input.size(0) == 0) return out.zero_();
  // the same quantities as the kernels: shift = the group's first element, then exact two-pass
  // moments of the shifted data
  const at::Tensor shift = xg.select(2, 0);
  const at::Tensor d = xg - shift.unsqueeze(2);
  const at::Tensor mean = d.mean(2);
  const at::Tensor m2 = (d - mean.unsqueeze(2)).square().sum(2);
  out.copy_(at::stack({at::full_like(mean, static_cast<double>(count)), shift, mean, m2}, -1));
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> apply_reference(const at::Tensor& input, const at::Tensor& moments,
                                                               const std::optional<at::Tensor>& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               int64_t num_groups, double eps,
                                                               c10::string_view activation) {
  check_apply_inputs(input, moments, opt_ptr(weight), opt_ptr(bias), num_groups);
  const Activation act = parse_activation(activation);
  auto [y, mean, rstd] = allocate_forward_outputs(input, pick_layout(input), num_groups);
  const at::Tensor count = field(moments, 0), shift = field(moments, 1), m = field(moments, 2);
  const at::Tensor r = at::rsqrt(at::clamp_min(field(moments, 3) / count, 0.0) + eps);
  mean.copy_(shift + m);
  rstd.copy_(r);
  if (input.numel() == 0) return {y, mean, rstd};
  const int64_t N = input.size(0), C = input.size(1);
  at::Tensor z = (grouped_double(input, num_groups) - (shift + m).unsqueeze(2)) * r.unsqueeze(2);
  z = z.reshape({N, C, -1});
  if (weight) z = z * weight->to(at::kDouble).reshape({1, C, 1});
  if (bias) z = z + bias->to(at::kDouble).reshape({1, C, 1});
  if (act == Activation::SiLU) z = z * at::sigmoid(z);
  y.copy_(z.reshape(input.sizes()));
  return {y, mean, rstd};
}

// The backward's per-element quantities in float64, (N, C, S) views: u = x - mean, the
// SiLU-adjusted gradient g = dy' (z from the given residual, as the kernels), and per channel
// rho, w, r.
struct BackwardTerms {
  at::Tensor u, g, rho, w, r;  // u, g (N, C, S); rho, r (N, C, 1); w (1, C, 1)
};

BackwardTerms backward_terms(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                             const at::Tensor& rstd, const at::Tensor& residual,
                             const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                             int64_t num_groups, Activation act) {
  const int64_t N = input.size(0), C = input.size(1), D = C / num_groups;
  auto per_channel = [&](const at::Tensor& t) {  // (N, G) -> (N, C, 1)
    return t.to(at::kDouble).repeat_interleave(D, 1).unsqueeze(2);
  };
  BackwardTerms bt;
  bt.rho = per_channel(rstd);
  bt.r = per_channel(residual);
  bt.w = weight ? weight->to(at::kDouble).reshape({1, C, 1}) : at::ones({1, C, 1}, input.options().dtype(at::kDouble));
  bt.u = input.to(at::kDouble).reshape({N, C, -1}) - per_channel(mean);
  bt.g = grad_out.to(at::kDouble).reshape({N, C, -1});
  if (act == Activation::SiLU) {
    at::Tensor z = (bt.u - bt.r) * bt.rho * bt.w;
    if (bias) z = z + bias->to(at::kDouble).reshape({1, C, 1});
    const at::Tensor sg = at::sigmoid(z);
    bt.g = bt.g * sg * (1 + z * (1 - sg));
  }
  return bt;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_sums_reference(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    const at::Tensor& residual, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    int64_t num_groups, c10::string_view activation) {
  check_backward_sums_inputs(grad_out, input, mean, rstd, residual, opt_ptr(weight), opt_ptr(bias), num_groups);
  auto [sums, dwp, dbp] = allocate_backward_sums(input, num_groups, opt_ptr(weight), opt_ptr(bias));
  const int64_t N = input.size(0), C = input.size(1);
  const BackwardTerms bt =
      backward_terms(grad_out, input, mean, rstd, residual, weight, bias, num_groups, parse_activation(activation));
  const at::Tensor a = bt.g.sum(2);                                             // (N, C)
  const at::Tensor dyxhat = bt.rho.squeeze(2) * ((bt.g * bt.u).sum(2) - bt.r.squeeze(2) * a);
  const at::Tensor w = bt.w.reshape({1, C});
  sums.copy_(at::stack({(w * dyxhat).reshape({N, num_groups, -1}).sum(2), (w * a).reshape({N, num_groups, -1}).sum(2)},
                       -1));
  if (weight) dwp.copy_(dyxhat.sum(0));
  if (bias) dbp.copy_(a.sum(0));
  return {sums, dwp, dbp};
}

at::Tensor backward_dx_reference(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                                 const at::Tensor& rstd, const at::Tensor& residual,
                                 const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                 const at::Tensor& group_sums, int64_t count, int64_t num_groups,
                                 c10::string_view activation) {
  check_backward_dx_inputs(grad_out, input, mean, rstd, residual, opt_ptr(weight), opt_ptr(bias), group_sums, count, num_groups);
  at::Tensor dx = empty_in_layout(input, pick_layout(input), input.scalar_type());
  if (input.numel() == 0) return dx;
  const int64_t D = input.size(1) / num_groups;
  const BackwardTerms bt =
      backward_terms(grad_out, input, mean, rstd, residual, weight, bias, num_groups, parse_activation(activation));
  auto per_channel = [&](const at::Tensor& t) { return t.repeat_interleave(D, 1).unsqueeze(2); };
  const at::Tensor gs = group_sums.to(at::kDouble);
  const at::Tensor A = per_channel(gs.select(2, 0)), B = per_channel(gs.select(2, 1));
  const double M = static_cast<double>(count);
  const at::Tensor c2 = -bt.rho * bt.rho * A / M;
  const at::Tensor c3 = bt.rho * (bt.r * bt.rho * A - B) / M;
  dx.copy_((bt.rho * bt.w * bt.g + c2 * bt.u + c3).reshape(input.sizes()));
  return dx;
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, CompositeExplicitAutograd, m) {
  m.impl("merge_moments", &groupnorm_cuda::merge_moments);
  m.impl("stats", &groupnorm_cuda::stats_reference);
  m.impl("apply", &groupnorm_cuda::apply_reference);
  m.impl("backward_sums", &groupnorm_cuda::backward_sums_reference);
  m.impl("backward_dx", &groupnorm_cuda::backward_dx_reference);
}

TORCH_LIBRARY_IMPL(groupnorm_cuda, Autograd, m) {
  m.impl("merge_moments", torch::autograd::autogradNotImplementedFallback());
  m.impl("stats", torch::autograd::autogradNotImplementedFallback());
  m.impl("apply", torch::autograd::autogradNotImplementedFallback());
  m.impl("backward_sums", torch::autograd::autogradNotImplementedFallback());
  m.impl("backward_dx", torch::autograd::autogradNotImplementedFallback());
}
