// The problem description shared by every part of the project: the argument checks fill it
// (common/checks.h), the CPU path and the CUDA glue run it, the CUDA launch planner plans it.
// Plain C++17 (no torch, no CUDA), so the planner and tests/simt use it too.
#pragma once

#include <cstdint>

#include "common/activation.h"

namespace groupnorm_cuda {

// Element types of the input (the affine parameters may be float32 for a half input).
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// Memory layouts read natively; any other strided input is made contiguous first.
//   Contiguous:   (N, C, *) row-major, a group (n, g) is one run of D * HxW elements.
//   ChannelsLast: (N, *, C) in memory (channels_last, channels_last_3d, or (N, L, C) for a 3-D
//                 input), a group is D channels of each of HxW rows of C.
enum class Layout : int { Contiguous = 0, ChannelsLast = 1 };

inline int64_t elem_size(DType t) { return t == DType::Float64 ? 8 : t == DType::Float32 ? 4 : 2; }
// Bytes of the accumulation type (and of the saved mean / rstd).
inline int64_t acc_size(DType t) { return t == DType::Float64 ? 8 : 4; }

// An input of shape (N, C, *) normalized over G groups.
struct Problem {
  int64_t N = 0;
  int64_t C = 0;
  int64_t HxW = 1;  // product of the spatial sizes
  int64_t G = 1;
  DType dtype = DType::Float32;
  Layout layout = Layout::Contiguous;
  Activation act = Activation::None;
  // y, and so dy, in float32 of a 16-bit input (the forward's out_dtype: autocast's float32
  // output on CUDA); else in the input's dtype.
  bool float_out = false;
  int64_t D() const { return C / G; }      // channels per group
  int64_t M() const { return D() * HxW; }  // elements per group (n, g)
};

inline int64_t out_elem_size(const Problem& p) { return p.float_out ? 4 : elem_size(p.dtype); }

}  // namespace groupnorm_cuda
