// ATen glue of the CUDA backend: argument checks and outputs (csrc/common, shared with the CPU
// and Meta kernels), workspace from the caching allocator, device guard, current stream, dtype
// dispatch (common/dispatch.h, CUDA element types); the
// launch sequence itself is kernels::launch_forward / launch_backward of the plan made by
// plan::plan_forward / plan_backward (csrc/cuda/launch_plan.h). No host synchronization.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/outputs.h"

#define GN_AFTER_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()
#include "cuda/kernels/launcher.cuh"
#include "cuda/launch_plan.h"

namespace groupnorm_cuda {
namespace {

// What the planner needs to know of a device (plan::DeviceProblem), read once per device.
struct DeviceLimits {
  int64_t sm_count = 0, smem_optin = 0, max_cluster = 1;
};
DeviceLimits device_limits(int device) {
  static std::mutex mu;
  static std::vector<DeviceLimits> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= static_cast<int>(cache.size())) cache.resize(device + 1);
  DeviceLimits& d = cache[device];
  if (d.sm_count == 0) {
    int count = 0, optin = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    // Thread-block clusters (sm_90+): up to 16 CTAs, past the portable 8 with the kernel's
    // non-portable attribute; the launcher's fit_*_plan asks the device whether a cluster of
    // more than 8 with the launch's shared memory can be placed, and re-plans with 8 if not.
    int clusters = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device));
    d.max_cluster = clusters ? 16 : 1;
    d.smem_optin = std::max<int64_t>(optin, plan::kSmemBudgetBytes);
    d.sm_count = count > 0 ? count : 1;
  }
  return d;
}

// The kernels' element type of a dispatch type (common/dispatch.h): CUDA's own half types.
template <typename T> struct CudaType { using type = T; };
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };
template <typename T> using cuda_t = typename CudaType<T>::type;

template <typename P> const P* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const P*>(t.data_ptr()) : nullptr;
}
template <typename P> P* mutable_or_null(const at::Tensor& t, bool want) {
  return want ? reinterpret_cast<P*>(t.data_ptr()) : nullptr;
}
// Workspace from the caching allocator (stream-ordered, graph-safe), or null when none.
void* workspace(at::Tensor& ws, size_t bytes, const at::Tensor& like) {
  if (bytes == 0) return nullptr;
  ws = at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
  return ws.data_ptr();
}

plan::DeviceProblem on_device(const Problem& prob, const at::Tensor& x) {
  plan::DeviceProblem d;
  static_cast<Problem&>(d) = prob;
  const DeviceLimits lim = device_limits(x.get_device());
  d.sm_count = lim.sm_count;
  d.smem_optin = lim.smem_optin;
  d.max_cluster = lim.max_cluster;
  return d;
}

Outputs forward_cuda(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                     c10::string_view activation) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_forward_inputs(input, w, b, num_groups);
  const Problem prob = make_problem(input, num_groups, activation);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = to_layout(input, prob.layout);
  Outputs out = allocate_forward_outputs(x, prob.layout, num_groups);
  if (prob.N == 0) return out;
  const at::Tensor wc = contiguous_or_undefined(w), bc = contiguous_or_undefined(b);
  const plan::DeviceProblem dprob = on_device(prob, x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  dispatch_types(x.scalar_type(), param_dtype(x, w, b), [&]<typename T0, typename W0>() {
    using T = cuda_t<T0>;
    using W = cuda_t<W0>;
    using A = acc_t<T>;
    const kernels::ForwardArgs<T, W> a{ptr_or_null<T>(x), ptr_or_null<W>(wc), ptr_or_null<W>(bc),
                                       mutable_or_null<T>(std::get<0>(out), true),
                                       mutable_or_null<A>(std::get<1>(out), true),
                                       mutable_or_null<A>(std::get<2>(out), true), eps};
    const plan::ForwardPlan fp = kernels::fit_forward_plan(a, plan::plan_forward(dprob));
    at::Tensor ws;
    kernels::launch_forward(a, fp, workspace(ws, kernels::forward_workspace_bytes(fp), x), stream);
  });
  return out;
}

Outputs backward_cuda(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean_in,
                      const at::Tensor& rstd_in, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation,
                      std::array<bool, 3> output_mask) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_inputs(grad_out, input, mean_in, rstd_in, w, b, num_groups);
  const Problem prob = make_problem(input, num_groups, activation);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = to_layout(input, prob.layout);
  const at::Tensor dy = to_layout(grad_out, prob.layout);
  const at::Tensor mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  const bool want_dx = output_mask[0], want_dw = output_mask[1] && w, want_db = output_mask[2] && b;
  Outputs out = allocate_backward_outputs(x, prob.layout, w, b, output_mask);
  auto& [dx, dw, db] = out;
  if (!want_dx && !want_dw && !want_db) return out;
  if (prob.N == 0) {  // empty batch: zero parameter gradients
    if (want_dw) dw.zero_();
    if (want_db) db.zero_();
    return out;
  }
  const at::Tensor wc = contiguous_or_undefined(w), bc = contiguous_or_undefined(b);
  const plan::DeviceProblem dprob = on_device(prob, x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  dispatch_types(x.scalar_type(), param_dtype(x, w, b), [&]<typename T0, typename W0>() {
    using T = cuda_t<T0>;
    using W = cuda_t<W0>;
    using A = acc_t<T>;
    const kernels::BackwardArgs<T, W> a{ptr_or_null<T>(dy),        ptr_or_null<T>(x),
                                        ptr_or_null<A>(mean),      ptr_or_null<A>(rstd),
                                        ptr_or_null<W>(wc),        ptr_or_null<W>(bc),
                                        mutable_or_null<T>(dx, want_dx), mutable_or_null<W>(dw, want_dw),
                                        mutable_or_null<W>(db, want_db)};
    const plan::BackwardPlan bp = kernels::fit_backward_plan(a, plan::plan_backward(dprob));
    at::Tensor ws;
    kernels::launch_backward(a, bp, workspace(ws, kernels::backward_workspace_bytes(bp), x), stream);
  });
  return out;
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, CUDA, m) {
  m.impl("forward", &groupnorm_cuda::forward_cuda);
  m.impl("backward", &groupnorm_cuda::backward_cuda);
}
