// The activation fused into the GroupNorm epilogue: its names and its math, one definition for
// every backend. Plain C++17 (no torch): also compiled by nvcc and by the tests/simt harness.
//
// The formulas take e = exp(-z) from the caller, so that each backend picks its exponential (the
// CPU path: at::vec's exp or exp_u20 on vectors, std::exp on scalars; CUDA: __expf) while the
// arithmetic around it, and so its rounding, is written once. A is a scalar or any vector type
// with +, -, *, / and construction from a scalar (at::vec::Vectorized).
#pragma once

#include <string_view>

#include "common/host_device.h"

namespace groupnorm_cuda {

enum class Activation : int { None = 0, SiLU = 1 };

// The op's `activation` argument; false for an unknown name.
inline bool activation_from_name(std::string_view name, Activation* out) {
  if (name == "none") {
    *out = Activation::None;
    return true;
  }
  if (name == "silu") {
    *out = Activation::SiLU;
    return true;
  }
  return false;
}

// silu(z) = z * sigmoid(z) = z / (1 + e).
template <typename A>
GN_HOST_DEVICE inline A silu(const A& z, const A& e) {
  return z / (A(1) + e);
}

// sigmoid(z) = 1 / (1 + e).
template <typename A>
GN_HOST_DEVICE inline A sigmoid_of(const A& e) {
  return A(1) / (A(1) + e);
}

// d silu(z) / dz applied to an upstream gradient: dy * sig * (1 + z * (1 - sig)).
template <typename A>
GN_HOST_DEVICE inline A silu_grad(const A& dy, const A& z, const A& e) {
  const A sig = sigmoid_of(e);
  return dy * sig * (A(1) + z * (A(1) - sig));
}

}  // namespace groupnorm_cuda
