// Op schemas (defined once, here) and the Python module of groupnorm_cuda._C.
//
// Backends register their kernels in their own files:
//   csrc/cpu/group_norm_cpu.cpp    TORCH_LIBRARY_IMPL(groupnorm_cuda, CPU, ...)
//   csrc/cuda/group_norm_cuda.cu   TORCH_LIBRARY_IMPL(groupnorm_cuda, CUDA, ...)
// Fake (meta) kernels and the autograd Function live in Python: groupnorm_cuda/_ops.py.
#include <torch/extension.h>
#include <torch/library.h>

#include "cuda/launch_plan.h"

// Contract
//   forward(input, weight?, bias?, num_groups, eps, activation) -> (y, mean, rstd)
//     y has input's shape, dtype and memory format; mean and rstd are (N, num_groups) in
//     float32 (float64 for float64 input). activation is "none" or "silu":
//     y = act(groupnorm(x) * weight + bias).
//   backward(grad_out, input, mean, rstd, weight?, bias?, num_groups, activation, output_mask)
//     -> (grad_input, grad_weight, grad_bias)
//     output_mask says which of the three are wanted; an unwanted (or, for weight/bias,
//     absent-parameter) gradient is returned as an empty tensor of shape [0].
//     grad_input keeps input's memory format; grad_weight / grad_bias have weight's dtype
//     (bias's), or input's when the parameter is absent.
TORCH_LIBRARY(groupnorm_cuda, m) {
  m.def(
      "forward(Tensor input, Tensor? weight, Tensor? bias, int num_groups, float eps, str activation)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "backward(Tensor grad_out, Tensor input, Tensor mean, Tensor rstd, Tensor? weight, Tensor? bias,"
      " int num_groups, str activation, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

namespace {

namespace plan = groupnorm_cuda::plan;

py::list launches_to_py(const std::vector<plan::Launch>& launches) {
  py::list out;
  for (const auto& l : launches) {
    py::dict d;
    d["kernel"] = l.kernel;
    d["grid"] = py::make_tuple(l.grid[0], l.grid[1], l.grid[2]);
    d["block"] = py::make_tuple(l.block[0], l.block[1], l.block[2]);
    d["shared_mem_bytes"] = l.shared_mem_bytes;
    for (const auto& kv : l.params) d[py::str(kv.first)] = kv.second;
    out.append(std::move(d));
  }
  return out;
}

// Exposed as groupnorm_cuda.cuda_launch_plan (the Python wrapper maps dtypes and formats).
py::dict cuda_launch_plan(const std::vector<int64_t>& shape, int64_t num_groups, int dtype, bool channels_last,
                          int64_t sm_count, bool silu) {
  const auto plans = plan::describe(shape, num_groups, static_cast<plan::DType>(dtype),
                                    channels_last ? plan::MemLayout::ChannelsLast : plan::MemLayout::Contiguous,
                                    sm_count, silu ? groupnorm_cuda::Activation::SiLU : groupnorm_cuda::Activation::None);
  py::dict d;
  d["forward"] = launches_to_py(plans.forward);
  d["backward"] = launches_to_py(plans.backward);
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "groupnorm_cuda compiled ops (registered under torch.ops.groupnorm_cuda)";
#ifdef GROUPNORM_WITH_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  m.def("cuda_launch_plan", &cuda_launch_plan, "Launch plan of the CUDA kernels (pure host function)",
        py::arg("shape"), py::arg("num_groups"), py::arg("dtype"), py::arg("channels_last"),
        py::arg("sm_count"), py::arg("silu"));
}
