// Activation fused into the GroupNorm epilogue. Plain C++ (no torch, no CUDA): shared by the
// CPU kernels, the CUDA kernels, the launch planner and the op glue.
#pragma once

namespace groupnorm_cuda {

enum class Activation : int { None = 0, SiLU = 1 };

}  // namespace groupnorm_cuda
