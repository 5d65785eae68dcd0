// The Python module groupnorm_cuda._C: build facts, the activation check of the Python API and
// the CUDA launch planner (a pure host function, so it answers on machines without a GPU).
// Loading this module also loads the ops (csrc/ops.cpp) and their CPU / CUDA kernels.
#include <torch/extension.h>

#include <string>

#include "common/checks.h"
#include "cpu/tuning.h"
#include "cuda/launch_plan.h"

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
    d["dynamic_shared_mem_bytes"] = l.dynamic_smem_bytes;
    d["cluster"] = py::make_tuple(l.cluster, 1, 1);
    d["dram_read_bytes"] = l.bytes_read;
    d["dram_write_bytes"] = l.bytes_written;
    for (const auto& kv : l.params) d[py::str(kv.first)] = kv.second;
    out.append(std::move(d));
  }
  return out;
}

// The launches the CUDA backend would make for `input` (any device, meta included): the same
// checks and Problem as the op (common/checks.h), planned for a GPU of `sm_count` SMs and
// `smem_optin` bytes of shared memory per block with the opt-in, clusters of up to `max_cluster` CTAs.
py::dict cuda_launch_plan(const at::Tensor& input, int64_t num_groups, const std::string& activation,
                          int64_t sm_count, int64_t smem_optin, int64_t max_cluster,
                          std::optional<at::ScalarType> out_dtype) {
  groupnorm_cuda::check_forward_inputs(input, nullptr, nullptr, num_groups);
  TORCH_CHECK_VALUE(sm_count > 0, "cuda_launch_plan: sm_count must be positive, got ", sm_count);
  TORCH_CHECK_VALUE(smem_optin >= plan::kSmemBudgetBytes,
                    "cuda_launch_plan: max_shared_mem_per_block must be at least 49152, got ", smem_optin);
  plan::DeviceProblem p;
  static_cast<groupnorm_cuda::Problem&>(p) = groupnorm_cuda::make_problem(input, num_groups, activation);
  p.float_out = groupnorm_cuda::forward_out_dtype(input, out_dtype) != input.scalar_type();
  p.sm_count = sm_count;
  p.smem_optin = smem_optin;
  TORCH_CHECK_VALUE(max_cluster >= 1 && max_cluster <= 16, "cuda_launch_plan: max_cluster_size must be in [1, 16], got ",
                    max_cluster);
  p.max_cluster = max_cluster;
  const plan::Described plans = plan::describe(p);
  auto traffic = [](const plan::Traffic& t) {
    py::dict d;
    d["read_bytes"] = t.read;
    d["write_bytes"] = t.write;
    d["floor_bytes"] = t.floor;
    d["ratio"] = t.ratio();
    return d;
  };
  py::dict d;
  d["forward"] = launches_to_py(plans.forward);
  d["backward"] = launches_to_py(plans.backward);
  py::dict t;
  t["forward"] = traffic(plans.forward_traffic);
  t["backward"] = traffic(plans.backward_traffic);
  d["traffic"] = t;
  const plan::DescribedSplit split = plan::describe_split(p);
  py::dict sp;
  sp["stats"] = launches_to_py(split.stats);
  sp["apply"] = launches_to_py(split.apply);
  sp["backward_sums"] = launches_to_py(split.backward_sums);
  sp["backward_dx"] = launches_to_py(split.backward_dx);
  d["split_ops"] = sp;
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
  m.def(
      "check_activation", [](const std::string& name) { (void)groupnorm_cuda::parse_activation(name); },
      "Raises ValueError unless name is an activation the ops accept", py::arg("name"));
  m.def("cpu_tuning", &groupnorm_cuda::cpu::tuning_report,
        "The cache sizes, huge-page policy and thread count the CPU kernels derive their tuning from");
  m.def("set_cpu_huge_pages", &groupnorm_cuda::cpu::set_huge_pages, py::arg("on"),
        "Huge pages for fresh CPU outputs on / off (where the machine gives them; for A/B measurements)");
  m.def("cuda_launch_plan", &cuda_launch_plan, "Launch plan of the CUDA kernels for an input (pure host function)",
        py::arg("input"), py::arg("num_groups"), py::arg("activation"), py::arg("sm_count"), py::arg("smem_optin"),
        py::arg("max_cluster"), py::arg("out_dtype"));
}
