// Host-side (ATen) pieces shared by the CPU and CUDA implementations of the ops:
// argument validation with F.group_norm's wording, output allocation, shape bookkeeping.
// Both backends call these so that every device reports the same errors.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <string>

#include "common/activation.h"

namespace groupnorm_cuda {

inline Activation parse_activation(const std::string& name) {
  if (name == "none") return Activation::None;
  if (name == "silu") return Activation::SiLU;
  TORCH_CHECK(false, "groupnorm_cuda: activation must be \"none\" or \"silu\", got \"", name, "\"");
}

// Logical sizes of an (N, C, *) problem.
struct GroupNormShape {
  int64_t N = 0;
  int64_t C = 0;
  int64_t HxW = 1;  // product of the spatial sizes
  int64_t G = 1;
  int64_t D() const { return C / G; }  // channels per group
  int64_t M() const { return D() * HxW; }  // elements per (n, g)
};

// Memory layouts handled natively. Anything else is made contiguous first.
enum class Layout { Contiguous, ChannelsLast };

// The layout the kernels will read `x` in. channels_last / channels_last_3d tensors (and any
// tensor whose strides are those of an NHWC permutation) are read natively.
inline Layout pick_layout(const at::Tensor& x) {
  if (x.dim() >= 3 && x.dim() <= 5) {
    auto fmt = x.dim() == 4 ? at::MemoryFormat::ChannelsLast
               : x.dim() == 5 ? at::MemoryFormat::ChannelsLast3d
                              : at::MemoryFormat::Contiguous;
    // For 3-D (N, C, L) inputs the channels-last layout is (N, L, C): strides (L*C, 1, C).
    if (x.dim() == 3) {
      if (!x.is_contiguous() && x.stride(1) == 1 && x.stride(2) == x.size(1) &&
          x.stride(0) == x.size(1) * x.size(2))
        return Layout::ChannelsLast;
    } else if (!x.is_contiguous() && x.is_contiguous(fmt)) {
      return Layout::ChannelsLast;
    }
  }
  return Layout::Contiguous;
}

// Same strides as `like` (which is dense in `layout`), new storage.
inline at::Tensor empty_in_layout(const at::Tensor& like, Layout layout, at::ScalarType dtype) {
  if (layout == Layout::Contiguous) return at::empty(like.sizes(), like.options().dtype(dtype));
  return at::empty_strided(like.sizes(), like.strides(), like.options().dtype(dtype));
}

// `t` made dense in `layout` (no copy when it already is).
inline at::Tensor to_layout(const at::Tensor& t, Layout layout) {
  if (layout == Layout::Contiguous) return t.contiguous();
  if (t.dim() == 4) return t.contiguous(at::MemoryFormat::ChannelsLast);
  if (t.dim() == 5) return t.contiguous(at::MemoryFormat::ChannelsLast3d);
  // 3-D (N, C, L) channels-last == transpose of a contiguous (N, L, C).
  return t.transpose(1, 2).contiguous().transpose(1, 2);
}

inline bool is_dense_in_layout(const at::Tensor& t, Layout layout) {
  if (layout == Layout::Contiguous) return t.is_contiguous();
  if (t.dim() == 4) return t.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (t.dim() == 5) return t.is_contiguous(at::MemoryFormat::ChannelsLast3d);
  return t.stride(1) == 1 && t.stride(2) == t.size(1) && t.stride(0) == t.size(1) * t.size(2);
}

// dtype of the saved mean / rstd: float64 for float64 input, float32 otherwise.
inline at::ScalarType stats_dtype(at::ScalarType x_dtype) {
  return x_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

inline const at::Tensor* opt_ptr(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? &*t : nullptr;
}

inline void check_param(const c10::optional<at::Tensor>& p, const char* name, const at::Tensor& x,
                        int64_t C) {
  if (!p.has_value() || !p->defined()) return;
  const at::Tensor& t = *p;
  TORCH_CHECK(t.dim() == 1 && t.numel() == C, "Expected ", name,
              " to be a vector of size equal to the number of channels in input, but got ", name,
              " of shape ", t.sizes(), " and input of shape ", x.sizes());
  TORCH_CHECK(t.device() == x.device(), "Expected all tensors to be on the same device, but ",
              name, " is on ", t.device(), " and input is on ", x.device());
  const auto xt = x.scalar_type();
  const bool ok = t.scalar_type() == xt ||
                  (t.scalar_type() == at::kFloat && (xt == at::kHalf || xt == at::kBFloat16));
  TORCH_CHECK(ok, "groupnorm_cuda: expected ", name, " to have dtype ", xt,
              (xt == at::kHalf || xt == at::kBFloat16) ? " or Float" : "", " (the input's), but got ",
              t.scalar_type());
}

// Validates the forward arguments (wording follows F.group_norm) and returns the shape.
inline GroupNormShape check_forward_args(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                         const c10::optional<at::Tensor>& bias, int64_t num_groups) {
  TORCH_CHECK(x.dim() >= 2, "Expected at least 2 dimensions for input tensor but received ", x.dim());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()) &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble ||
                   x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16),
              "groupnorm_cuda: expected input of dtype Float, Double, Half or BFloat16, but got ",
              x.scalar_type());
  TORCH_CHECK(num_groups > 0, "Expected num groups to be greater than 0, got ", num_groups);
  GroupNormShape s;
  s.N = x.size(0);
  s.C = x.size(1);
  s.G = num_groups;
  TORCH_CHECK(s.C > 0, "Expected number of channels to be greater than 0, got ", s.C);
  TORCH_CHECK(s.C % num_groups == 0,
              "Expected number of channels in input to be divisible by num_groups, but got input of shape ",
              x.sizes(), " and num_groups=", num_groups);
  s.HxW = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s.HxW *= x.size(d);
  TORCH_CHECK(s.HxW > 0, "Expected HxW to be greater than 0, got ", s.HxW);
  check_param(weight, "weight", x, s.C);
  check_param(bias, "bias", x, s.C);
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  TORCH_CHECK(!w || !b || w->scalar_type() == b->scalar_type(),
              "groupnorm_cuda: expected weight and bias to have the same dtype, but got ", w ? w->scalar_type() : x.scalar_type(),
              " and ", b ? b->scalar_type() : x.scalar_type());
  return s;
}

inline void check_stats(const at::Tensor& stat, const char* name, const at::Tensor& x,
                        const GroupNormShape& s) {
  TORCH_CHECK(stat.dim() == 2 && stat.size(0) == s.N && stat.size(1) == s.G, "groupnorm_cuda.backward: expected ",
              name, " of shape [", s.N, ", ", s.G, "], but got ", stat.sizes());
  TORCH_CHECK(stat.scalar_type() == stats_dtype(x.scalar_type()), "groupnorm_cuda.backward: expected ", name,
              " of dtype ", stats_dtype(x.scalar_type()), ", but got ", stat.scalar_type());
  TORCH_CHECK(stat.device() == x.device(), "Expected all tensors to be on the same device, but ", name,
              " is on ", stat.device(), " and input is on ", x.device());
}

inline GroupNormShape check_backward_args(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                          const at::Tensor& rstd, const c10::optional<at::Tensor>& weight,
                                          const c10::optional<at::Tensor>& bias, int64_t num_groups) {
  GroupNormShape s = check_forward_args(x, weight, bias, num_groups);
  TORCH_CHECK(dy.sizes() == x.sizes(), "groupnorm_cuda.backward: expected grad_output of shape ", x.sizes(),
              ", but got ", dy.sizes());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "groupnorm_cuda.backward: expected grad_output of dtype ",
              x.scalar_type(), ", but got ", dy.scalar_type());
  TORCH_CHECK(dy.device() == x.device(), "Expected all tensors to be on the same device, but grad_output is on ",
              dy.device(), " and input is on ", x.device());
  check_stats(mean, "mean", x, s);
  check_stats(rstd, "rstd", x, s);
  return s;
}


}  // namespace groupnorm_cuda
