// Layout rules and output allocation of the ops, one definition for the CPU, CUDA and Meta
// kernels: which layout the kernels read an input in, and the shape, dtype and strides of every
// output (y, mean, rstd; dx, dweight, dbias). Works on symbolic shapes too (see checks.h).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/problem.h"

namespace groupnorm_cuda {

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The layout the kernels read `x` in: channels-last when x is dense in the channels_last /
// channels_last_3d format (or, 3-D, in (N, L, C) order: strides (L*C, 1, C)) without being
// contiguous; Contiguous otherwise (other strided inputs are made contiguous first).
inline Layout pick_layout(const at::Tensor& x) {
  if (x.dim() < 3 || x.dim() > 5 || x.is_contiguous()) return Layout::Contiguous;
  if (x.dim() == 4) return x.is_contiguous(at::MemoryFormat::ChannelsLast) ? Layout::ChannelsLast : Layout::Contiguous;
  if (x.dim() == 5)
    return x.is_contiguous(at::MemoryFormat::ChannelsLast3d) ? Layout::ChannelsLast : Layout::Contiguous;
  const auto sz = x.sym_sizes();
  const auto st = x.sym_strides();
  return (st[1] == 1 && st[2] == sz[1] && st[0] == sz[1] * sz[2]) ? Layout::ChannelsLast : Layout::Contiguous;
}

// `t` made dense in `layout` (no copy when it already is).
inline at::Tensor to_layout(const at::Tensor& t, Layout layout) {
  if (layout == Layout::Contiguous) return t.contiguous();
  if (t.dim() == 4) return t.contiguous(at::MemoryFormat::ChannelsLast);
  if (t.dim() == 5) return t.contiguous(at::MemoryFormat::ChannelsLast3d);
  // 3-D (N, C, L) channels-last == transpose of a contiguous (N, L, C).
  return t.transpose(1, 2).contiguous().transpose(1, 2);
}

// A new tensor of `like`'s shape, dense in `layout`: contiguous, or `like`'s own strides (which
// are dense channels-last whenever pick_layout chose that layout).
inline at::Tensor empty_in_layout(const at::Tensor& like, Layout layout, at::ScalarType dtype) {
  if (layout == Layout::Contiguous) return at::empty_symint(like.sym_sizes(), like.options().dtype(dtype));
  return at::empty_strided_symint(like.sym_sizes(), like.sym_strides(), like.options().dtype(dtype));
}

// float16 or bfloat16: the input dtypes whose parameters may be float32 and whose y (and dy)
// may be float32 (forward_out_dtype).
inline bool is_16bit_float(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// dtype of the saved mean / rstd: float64 for float64 input, float32 otherwise.
inline at::ScalarType stats_dtype(at::ScalarType x_dtype) {
  return x_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// y in x's layout and y_dtype (forward_out_dtype: x's unless the forward was asked for float32);
// mean and rstd (N, G) in stats_dtype.
inline Outputs allocate_forward_outputs(const at::Tensor& x, Layout layout, int64_t num_groups,
                                        std::optional<at::ScalarType> y_dtype = std::nullopt) {
  const auto opts = x.options().dtype(stats_dtype(x.scalar_type()));
  return {empty_in_layout(x, layout, y_dtype.value_or(x.scalar_type())),
          at::empty_symint({x.sym_size(0), num_groups}, opts), at::empty_symint({x.sym_size(0), num_groups}, opts)};
}

// The moments of x per (n, group) (check_moments): (N, num_groups, 4) float64.
inline at::Tensor allocate_moments(const at::Tensor& x, int64_t num_groups) {
  return at::empty_symint({x.sym_size(0), num_groups, 4}, x.options().dtype(at::kDouble));
}

// The split backward's sums of a shard (csrc/ops.cpp): group sums (N, G, 2) and this shard's
// dweight / dbias contributions (C) (empty [0] for an absent parameter), all in stats_dtype.
inline Outputs allocate_backward_sums(const at::Tensor& x, int64_t num_groups, const at::Tensor* w,
                                      const at::Tensor* b) {
  const auto opts = x.options().dtype(stats_dtype(x.scalar_type()));
  auto part = [&](const at::Tensor* p) { return p ? at::empty_symint({x.sym_size(1)}, opts) : at::empty({0}, opts); };
  return {at::empty_symint({x.sym_size(0), num_groups, 2}, opts), part(w), part(b)};
}

// dx in x's dtype and layout; dweight / dbias (C) in their parameter's dtype. An unwanted
// gradient, or the gradient of an absent parameter, is an empty tensor of shape [0] in the
// parameter's dtype (the input's when the parameter is absent).
inline Outputs allocate_backward_outputs(const at::Tensor& x, Layout layout, const at::Tensor* w,
                                         const at::Tensor* b, std::array<bool, 3> mask) {
  auto grad = [&](const at::Tensor* p, bool want) {
    const auto opts = (p ? *p : x).options();
    return want && p ? at::empty_symint({x.sym_size(1)}, opts) : at::empty({0}, opts);
  };
  return {mask[0] ? empty_in_layout(x, layout, x.scalar_type()) : at::empty({0}, x.options()), grad(w, mask[1]),
          grad(b, mask[2])};
}

// The backward of a float32 grad_out of a 16-bit input x runs with float32 parameters (the
// backends' float_param copies) and so computes dweight / dbias in float32: each returned in
// its parameter's dtype, a placeholder of an absent one in x's (allocate_backward_outputs'
// rule; no copy where the dtype is already right).
inline void cast_param_grads(Outputs& out, const at::Tensor& x, const at::Tensor* w, const at::Tensor* b) {
  std::get<1>(out) = std::get<1>(out).to(w ? w->scalar_type() : x.scalar_type());
  std::get<2>(out) = std::get<2>(out).to(b ? b->scalar_type() : x.scalar_type());
}

}  // namespace groupnorm_cuda
