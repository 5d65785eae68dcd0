// The one dtype dispatch of the ops, used by the CPU and the CUDA glue (at the bottom of
// cpu/group_norm_cpu.cpp and cuda/group_norm_cuda.cu, after the layout switch):
// f.template operator()<T, W>() with T the input's element type (float, double, at::Half,
// at::BFloat16) and W the affine parameters' (T, or float for a half T); the CUDA glue's
// dispatch_types_out adds O, the element type of y and dy. The CUDA glue maps at::Half /
// at::BFloat16 to __half / __nv_bfloat16 itself.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <type_traits>

#include "common/outputs.h"

namespace groupnorm_cuda {

// dtype of the affine parameters: weight's, else bias's, else x's (checks.h has made weight and
// bias agree).
inline at::ScalarType param_dtype(const at::Tensor& x, const at::Tensor* w, const at::Tensor* b) {
  return w ? w->scalar_type() : b ? b->scalar_type() : x.scalar_type();
}

// A float32 copy of a float16 / bfloat16 parameter (the same tensor otherwise, undefined when
// absent): a float32 y of a 16-bit input is computed with float32 parameters.
inline at::Tensor float_param(const at::Tensor& p) {
  return p.defined() && is_16bit_float(p.scalar_type()) ? p.to(at::kFloat) : p;
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

// dispatch_types with y's (and dy's) element type: f.template operator()<T, W, O>() with O = T,
// or float when float_out (a float32 y / grad_out of a 16-bit input, forward_out_dtype), which
// takes float32 parameters (wt == kFloat: the glue converts 16-bit ones, float_param).
template <typename F>
void dispatch_types_out(at::ScalarType xt, at::ScalarType wt, bool float_out, const F& f) {
  dispatch_types(xt, wt, [&]<typename T, typename W>() {
    if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double> && std::is_same_v<W, float>) {
      if (float_out) return f.template operator()<T, W, float>();
    }
    TORCH_INTERNAL_ASSERT(!float_out, "groupnorm_cuda: a float32 y of a 16-bit input takes float32 parameters");
    f.template operator()<T, W, T>();
  });
}

}  // namespace groupnorm_cuda
