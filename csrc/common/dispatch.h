// The one dtype dispatch of the ops, used by the CPU and the CUDA glue (at the bottom of
// cpu/group_norm_cpu.cpp and cuda/group_norm_cuda.cu, after the layout switch):
// f.template operator()<T, W>() with T the input's element type (float, double, at::Half,
// at::BFloat16) and W the affine parameters' (T, or float for a half T). The CUDA glue maps
// at::Half / at::BFloat16 to __half / __nv_bfloat16 itself.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace groupnorm_cuda {

// dtype of the affine parameters: weight's, else bias's, else x's (checks.h has made weight and
// bias agree).
inline at::ScalarType param_dtype(const at::Tensor& x, const at::Tensor* w, const at::Tensor* b) {
  return w ? w->scalar_type() : b ? b->scalar_type() : x.scalar_type();
}

// A float32 copy of a float16 / bfloat16 parameter (the same tensor otherwise, undefined when
// absent): a float32 y of a 16-bit input is computed with float32 parameters.
inline at::Tensor float_param(const at::Tensor& p) {
  const bool half = p.defined() && (p.scalar_type() == at::kHalf || p.scalar_type() == at::kBFloat16);
  return half ? p.to(at::kFloat) : p;
}
inline std::optional<at::Tensor> float_param(const std::optional<at::Tensor>& p) {
  return p.has_value() ? std::optional<at::Tensor>(float_param(*p)) : std::nullopt;
}

template <typename F>
void dispatch_types(at::ScalarType xt, at::ScalarType wt, const F& f) {
  switch (xt) {
    case at::kFloat: f.template operator()<float, float>(); return;
    case at::kDouble: f.template operator()<double, double>(); return;
    case at::kHalf:
      if (wt == at::kFloat) f.template operator()<at::Half, float>();
      else f.template operator()<at::Half, at::Half>();
      return;
    case at::kBFloat16:
      if (wt == at::kFloat) f.template operator()<at::BFloat16, float>();
      else f.template operator()<at::BFloat16, at::BFloat16>();
      return;
    default: TORCH_CHECK(false, "groupnorm_cuda: unsupported dtype ", xt);
  }
}

}  // namespace groupnorm_cuda
