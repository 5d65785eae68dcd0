// ATen glue of the CUDA backend, the fused ops and the split ops (mirroring
// cpu/group_norm_cpu.cpp): argument checks and outputs (csrc/common, shared with the CPU and
// Meta kernels), workspace from the caching allocator, device guard, current stream, dtype
// dispatch (common/dispatch.h, CUDA element types); the launch sequence itself is
// kernels::launch_forward / launch_backward of the plan made by plan::plan_forward /
// plan_backward, or plan_forward_part / plan_backward_part for the split ops
// (csrc/cuda/launch_plan.h, plan/split.h). No host synchronization.
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

// What a forward-direction call runs: the fused forward, or a split op's part (plan::Part;
// the CPU backend's ForwardParts): Stats writes moments_out only, Apply reads moments_in.
struct ForwardParts {
  plan::Part part = plan::Part::Whole;
  const at::Tensor* moments_in = nullptr;
  at::Tensor* moments_out = nullptr;
};

// x in the kernels' layout, parameters contiguous (undefined when absent; kernel_params); out
// from allocate_forward_outputs (unused by Stats). y of another dtype than x: float32 of a
// 16-bit x (forward_out_dtype), the kernels' O.
void run_forward(const Problem& prob, const at::Tensor& x, const at::Tensor& wc, const at::Tensor& bc,
                 at::ScalarType wt, double eps, Outputs& out, const ForwardParts& parts) {
  const bool normalize = parts.part != plan::Part::Stats;
  plan::DeviceProblem dprob = on_device(prob, x);
  dprob.float_out = normalize && std::get<0>(out).scalar_type() != x.scalar_type();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  dispatch_types_out(x.scalar_type(), wt, dprob.float_out, [&]<typename T0, typename W0, typename O0>() {
    using T = cuda_t<T0>;
    using W = cuda_t<W0>;
    using O = cuda_t<O0>;
    using A = acc_t<T>;
    kernels::ForwardArgs<T, W, O> a{ptr_or_null<T>(x), ptr_or_null<W>(wc), ptr_or_null<W>(bc),
                                    mutable_or_null<O>(std::get<0>(out), normalize),
                                    mutable_or_null<A>(std::get<1>(out), normalize),
                                    mutable_or_null<A>(std::get<2>(out), normalize), eps};
    a.moments_out = parts.moments_out ? parts.moments_out->data_ptr<double>() : nullptr;
    a.moments_in = parts.moments_in ? parts.moments_in->data_ptr<double>() : nullptr;
    const plan::ForwardPlan p0 = parts.part == plan::Part::Whole ? plan::plan_forward(dprob)
                                                                 : plan::plan_forward_part(dprob, parts.part);
    const plan::ForwardPlan fp = kernels::fit_forward_plan(a, p0);
    at::Tensor ws;
    kernels::launch_forward(a, fp, workspace(ws, kernels::forward_workspace_bytes(fp), x), stream);
  });
}

// The parameters as the kernels take them: contiguous (undefined when absent), and float32 when
// y and dy are float32 of a 16-bit x (float_out); with their dtype for dispatch_types_out.
struct KernelParams {
  at::Tensor w, b;
  at::ScalarType dtype;
};
KernelParams kernel_params(const at::Tensor& x, const at::Tensor* w, const at::Tensor* b, bool float_out) {
  KernelParams p{contiguous_or_undefined(w), contiguous_or_undefined(b), param_dtype(x, w, b)};
  if (float_out) {
    p.w = float_param(p.w);
    p.b = float_param(p.b);
    p.dtype = at::kFloat;
  }
  return p;
}

Outputs forward_cuda(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                     c10::string_view activation, std::optional<at::ScalarType> out_dtype) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_forward_inputs(input, w, b, num_groups);
  const at::ScalarType yt = forward_out_dtype(input, out_dtype);
  const Problem prob = make_problem(input, num_groups, activation);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = to_layout(input, prob.layout);
  Outputs out = allocate_forward_outputs(x, prob.layout, num_groups, yt);
  if (prob.N == 0) return out;
  const KernelParams p = kernel_params(x, w, b, yt != x.scalar_type());
  run_forward(prob, x, p.w, p.b, p.dtype, eps, out, ForwardParts{});
  return out;
}

// Split op: the moments of (a shard of) input per (n, group).
at::Tensor stats_cuda(const at::Tensor& input, int64_t num_groups) {
  check_forward_inputs(input, nullptr, nullptr, num_groups, /*allow_empty_spatial=*/true);
  at::Tensor moments = allocate_moments(input, num_groups);
  const Problem prob = make_problem(input, num_groups, "none");
  if (prob.N == 0) return moments;
  if (prob.HxW == 0) return moments.zero_();  // an empty shard: count 0
  const c10::cuda::CUDAGuard guard(input.device());
  Outputs none;
  ForwardParts parts;
  parts.part = plan::Part::Stats;
  parts.moments_out = &moments;
  run_forward(prob, to_layout(input, prob.layout), at::Tensor(), at::Tensor(), input.scalar_type(), 0.0, none, parts);
  return moments;
}

// Split op: y, mean and rstd of input normalized with the given (merged) moments.
Outputs apply_cuda(const at::Tensor& input, const at::Tensor& moments, const std::optional<at::Tensor>& weight,
                   const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                   c10::string_view activation) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_apply_inputs(input, moments, w, b, num_groups);
  const Problem prob = make_problem(input, num_groups, activation);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = to_layout(input, prob.layout);
  Outputs out = allocate_forward_outputs(x, prob.layout, num_groups);
  if (prob.N == 0) return out;
  const at::Tensor m = moments.contiguous();
  ForwardParts parts;
  parts.part = plan::Part::Apply;
  parts.moments_in = &m;
  const KernelParams p = kernel_params(x, w, b, false);
  run_forward(prob, x, p.w, p.b, p.dtype, eps, out, parts);
  return out;
}

// What a backward-direction call runs: the fused backward, or a split op's part (the CPU
// backend's BackwardParts): Sums takes r_in, writes group_out and the parameter parts in the
// statistics dtype; Dx takes r_in, group_in and M_total.
struct BackwardParts {
  plan::Part part = plan::Part::Whole;
  const at::Tensor* r_in = nullptr;
  at::Tensor* group_out = nullptr;
  const at::Tensor* group_in = nullptr;
  int64_t M_total = 0;
};

// dy and x in the kernels' layout, mean and rstd contiguous, parameters contiguous (undefined
// when absent; kernel_params); out = (dx, dweight, dbias), each written where want[i]. dy of
// another dtype than x: float32 of a 16-bit x (the fused backward only), the kernels' O.
void run_backward(const Problem& prob, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                  const at::Tensor& rstd, const at::Tensor& wc, const at::Tensor& bc, at::ScalarType wt,
                  Outputs& out, std::array<bool, 3> want, const BackwardParts& parts) {
  auto& [dx, dw, db] = out;
  plan::DeviceProblem dprob = on_device(prob, x);
  dprob.float_out = dy.scalar_type() != x.scalar_type();
  TORCH_INTERNAL_ASSERT(!dprob.float_out || parts.part == plan::Part::Whole,
                        "groupnorm_cuda: a float32 grad_out is for the fused backward only");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  const bool acc_params = parts.part == plan::Part::Sums;
  dispatch_types_out(x.scalar_type(), wt, dprob.float_out, [&]<typename T0, typename W0, typename O0>() {
    using T = cuda_t<T0>;
    using W = cuda_t<W0>;
    using O = cuda_t<O0>;
    using A = acc_t<T>;
    kernels::BackwardArgs<T, W, O> a{ptr_or_null<O>(dy),       ptr_or_null<T>(x),
                                     ptr_or_null<A>(mean),     ptr_or_null<A>(rstd),
                                     ptr_or_null<W>(wc),       ptr_or_null<W>(bc),
                                     mutable_or_null<T>(dx, want[0]), mutable_or_null<W>(dw, want[1] && !acc_params),
                                     mutable_or_null<W>(db, want[2] && !acc_params)};
    a.dweight_acc = mutable_or_null<A>(dw, want[1] && acc_params);
    a.dbias_acc = mutable_or_null<A>(db, want[2] && acc_params);
    a.r_in = parts.r_in ? ptr_or_null<A>(*parts.r_in) : nullptr;
    a.group_out = parts.group_out ? mutable_or_null<A>(*parts.group_out, true) : nullptr;
    a.group_in = parts.group_in ? ptr_or_null<A>(*parts.group_in) : nullptr;
    a.M_total = parts.M_total;
    const plan::BackwardPlan p0 = parts.part == plan::Part::Whole ? plan::plan_backward(dprob)
                                                                  : plan::plan_backward_part(dprob, parts.part);
    const plan::BackwardPlan bp = kernels::fit_backward_plan(a, p0);
    at::Tensor ws;
    kernels::launch_backward(a, bp, workspace(ws, kernels::backward_workspace_bytes(bp), x), stream);
  });
}

Outputs backward_cuda(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                      const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation,
                      std::array<bool, 3> output_mask) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_inputs(grad_out, input, mean, rstd, w, b, num_groups, false, /*float_grad=*/true);
  const Problem prob = make_problem(input, num_groups, activation);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = to_layout(input, prob.layout);
  const std::array<bool, 3> want{output_mask[0], output_mask[1] && w, output_mask[2] && b};
  // The float32 gradient of a float32 y of the 16-bit x, read by the kernels as it is, with
  // float32 parameters (C values): dweight / dbias in float32, then in their parameters' dtypes.
  const bool dy_float = grad_out.scalar_type() != input.scalar_type();
  const KernelParams p = kernel_params(x, w, b, dy_float);
  Outputs out = allocate_backward_outputs(x, prob.layout, w ? &p.w : nullptr, b ? &p.b : nullptr, output_mask);
  if (prob.N == 0) {  // empty batch: zero parameter gradients
    if (want[1]) std::get<1>(out).zero_();
    if (want[2]) std::get<2>(out).zero_();
  } else if (want[0] || want[1] || want[2]) {
    run_backward(prob, to_layout(grad_out, prob.layout), x, mean.contiguous(), rstd.contiguous(), p.w, p.b, p.dtype,
                 out, want, BackwardParts{});
  }
  if (dy_float) cast_param_grads(out, input, w, b);
  return out;
}

// Split op of the sharded backward: this shard's group sums and dweight / dbias contributions.
Outputs backward_sums_cuda(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                           const at::Tensor& rstd, const at::Tensor& residual, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_sums_inputs(grad_out, input, mean, rstd, residual, w, b, num_groups);
  const Problem prob = make_problem(input, num_groups, activation);
  Outputs out = allocate_backward_sums(input, num_groups, w, b);
  if (prob.N == 0 || prob.HxW == 0) {  // nothing of the groups here: zero sums
    for (at::Tensor* o : {&std::get<0>(out), &std::get<1>(out), &std::get<2>(out)}) o->zero_();
    return out;
  }
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor r = residual.contiguous();
  Outputs grads{at::Tensor(), std::get<1>(out), std::get<2>(out)};
  BackwardParts parts;
  parts.part = plan::Part::Sums;
  parts.r_in = &r;
  parts.group_out = &std::get<0>(out);
  const KernelParams p = kernel_params(input, w, b, false);
  run_backward(prob, to_layout(grad_out, prob.layout), to_layout(input, prob.layout), mean.contiguous(),
               rstd.contiguous(), p.w, p.b, p.dtype, grads, {false, w != nullptr, b != nullptr}, parts);
  return out;
}

// Split op of the sharded backward: dx of this shard from the group sums over all shards.
at::Tensor backward_dx_cuda(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                            const at::Tensor& rstd, const at::Tensor& residual, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& group_sums, int64_t count,
                            int64_t num_groups, c10::string_view activation) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_dx_inputs(grad_out, input, mean, rstd, residual, w, b, group_sums, count, num_groups);
  const Problem prob = make_problem(input, num_groups, activation);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = to_layout(input, prob.layout);
  Outputs out{empty_in_layout(x, prob.layout, input.scalar_type()), at::Tensor(), at::Tensor()};
  if (input.numel() == 0) return std::get<0>(out);
  const at::Tensor r = residual.contiguous(), sums = group_sums.contiguous();
  BackwardParts parts;
  parts.part = plan::Part::Dx;
  parts.r_in = &r;
  parts.group_in = &sums;
  parts.M_total = count;
  const KernelParams p = kernel_params(x, w, b, false);
  run_backward(prob, to_layout(grad_out, prob.layout), x, mean.contiguous(), rstd.contiguous(), p.w, p.b, p.dtype,
               out, {true, false, false}, parts);
  return std::get<0>(out);
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, CUDA, m) {
  m.impl("forward", &groupnorm_cuda::forward_cuda);
  m.impl("backward", &groupnorm_cuda::backward_cuda);
  m.impl("stats", &groupnorm_cuda::stats_cuda);
  m.impl("apply", &groupnorm_cuda::apply_cuda);
  m.impl("backward_sums", &groupnorm_cuda::backward_sums_cuda);
  m.impl("backward_dx", &groupnorm_cuda::backward_dx_cuda);
}
