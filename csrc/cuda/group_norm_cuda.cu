// ATen glue of the CUDA backend: argument checks (common/group_norm.h), layouts, outputs,
// workspace from the caching allocator, device guard, current stream, dtype dispatch; the
// launch sequence itself is kernels::launch_forward / launch_backward of the plan made by
// plan::plan_forward / plan_backward (csrc/cuda/launch_plan.h). No host synchronization.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "common/group_norm.h"

#define GN_AFTER_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()
#include "cuda/kernels/launcher.cuh"
#include "cuda/launch_plan.h"

namespace groupnorm_cuda {
namespace {

int64_t sm_count(int device) {
  static std::mutex mu;
  static std::vector<int> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= static_cast<int>(cache.size())) cache.resize(device + 1, 0);
  if (cache[device] == 0) {
    int count = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    cache[device] = count > 0 ? count : 1;
  }
  return cache[device];
}

template <typename T> struct CudaType { using type = T; };
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };

// Calls f(T{}, W{}) with the CUDA element types of x and of the affine parameters.
template <typename F>
void dispatch_types(at::ScalarType xt, at::ScalarType wt, F&& f) {
  switch (xt) {
    case at::kFloat: f(float{}, float{}); return;
    case at::kDouble: f(double{}, double{}); return;
    case at::kHalf:
      if (wt == at::kFloat) f(__half{}, float{}); else f(__half{}, __half{});
      return;
    case at::kBFloat16:
      if (wt == at::kFloat) f(__nv_bfloat16{}, float{}); else f(__nv_bfloat16{}, __nv_bfloat16{});
      return;
    default:
      TORCH_CHECK(false, "groupnorm_cuda: unsupported dtype ", xt);
  }
}

plan::DType plan_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return plan::DType::Float32;
    case at::kDouble: return plan::DType::Float64;
    case at::kHalf: return plan::DType::Float16;
    case at::kBFloat16: return plan::DType::BFloat16;
    default: TORCH_CHECK(false, "groupnorm_cuda: unsupported dtype ", t);
  }
}

// The planner's view of a validated problem on x's device.
plan::Problem make_problem(const GroupNormShape& s, const at::Tensor& x, Layout layout, Activation act) {
  plan::Problem prob;
  prob.N = s.N;
  prob.C = s.C;
  prob.HxW = s.HxW;
  prob.G = s.G;
  prob.dtype = plan_dtype(x.scalar_type());
  prob.layout = layout == Layout::ChannelsLast ? plan::MemLayout::ChannelsLast : plan::MemLayout::Contiguous;
  prob.sm_count = sm_count(x.get_device());
  prob.act = act;
  return prob;
}

// The affine parameters for the kernels, contiguous, in their own dtype W: check_forward_args
// has made weight and bias share one dtype, x's or (for half / bfloat16 x) float32.
struct Params {
  at::Tensor weight, bias;  // undefined when absent
  at::ScalarType wtype;
};
Params prepare_params(const at::Tensor& x, const at::Tensor* weight, const at::Tensor* bias) {
  Params p;
  const at::Tensor* any = weight ? weight : bias;
  p.wtype = any ? any->scalar_type() : x.scalar_type();
  if (weight) p.weight = weight->contiguous();
  if (bias) p.bias = bias->contiguous();
  return p;
}

template <typename P> const P* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const P*>(t.data_ptr()) : nullptr;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& input,
                                                            const c10::optional<at::Tensor>& weight,
                                                            const c10::optional<at::Tensor>& bias,
                                                            int64_t num_groups, double eps,
                                                            c10::string_view activation) {
  const Activation act = parse_activation(std::string(activation));
  const GroupNormShape s = check_forward_args(input, weight, bias, num_groups);
  const c10::cuda::CUDAGuard guard(input.device());
  const Layout layout = pick_layout(input);
  const at::Tensor x = layout == Layout::Contiguous ? input.contiguous() : input;
  at::Tensor y = empty_in_layout(x, layout, x.scalar_type());
  const auto acc_dtype = stats_dtype(x.scalar_type());
  at::Tensor mean = at::empty({s.N, s.G}, x.options().dtype(acc_dtype));
  at::Tensor rstd = at::empty({s.N, s.G}, x.options().dtype(acc_dtype));
  if (s.N == 0) return {y, mean, rstd};
  const Params prm = prepare_params(x, opt_ptr(weight), opt_ptr(bias));

  const plan::Problem prob = make_problem(s, x, layout, act);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();

  dispatch_types(x.scalar_type(), prm.wtype, [&](auto t_tag, auto w_tag) {
    using T = decltype(t_tag);
    using W = decltype(w_tag);
    using A = kernels::acc_t<T>;
    kernels::ForwardArgs<T, W> a;
    a.x = reinterpret_cast<const T*>(x.data_ptr());
    a.weight = ptr_or_null<W>(prm.weight);
    a.bias = ptr_or_null<W>(prm.bias);
    a.y = reinterpret_cast<T*>(y.data_ptr());
    a.mean = reinterpret_cast<A*>(mean.data_ptr());
    a.rstd = reinterpret_cast<A*>(rstd.data_ptr());
    a.N = s.N;
    a.C = s.C;
    a.HxW = s.HxW;
    a.G = s.G;
    a.eps = eps;
    a.channels_last = layout == Layout::ChannelsLast;
    a.act = act;
    const plan::ForwardPlan fp = kernels::fit_forward_plan(a, plan::plan_forward(prob));
    const size_t ws_bytes = kernels::forward_workspace_bytes(fp);
    at::Tensor ws;
    if (ws_bytes > 0) ws = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
    kernels::launch_forward(a, fp, ws_bytes > 0 ? ws.data_ptr() : nullptr, stream);
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& input,
                                                             const at::Tensor& mean_in, const at::Tensor& rstd_in,
                                                             const c10::optional<at::Tensor>& weight,
                                                             const c10::optional<at::Tensor>& bias,
                                                             int64_t num_groups, c10::string_view activation,
                                                             std::array<bool, 3> output_mask) {
  const Activation act = parse_activation(std::string(activation));
  const GroupNormShape s = check_backward_args(grad_out, input, mean_in, rstd_in, weight, bias, num_groups);
  const c10::cuda::CUDAGuard guard(input.device());
  const Layout layout = pick_layout(input);
  const at::Tensor x = layout == Layout::Contiguous ? input.contiguous() : input;
  const at::Tensor dy = is_dense_in_layout(grad_out, layout) ? grad_out : to_layout(grad_out, layout);
  const at::Tensor mean = mean_in.contiguous();
  const at::Tensor rstd = rstd_in.contiguous();
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  const bool want_dx = output_mask[0];
  const bool want_dw = output_mask[1] && w != nullptr;
  const bool want_db = output_mask[2] && b != nullptr;

  at::Tensor dx = want_dx ? empty_in_layout(x, layout, x.scalar_type()) : at::empty({0}, x.options());
  at::Tensor dw = want_dw ? at::empty({s.C}, w->options()) : at::empty({0}, w ? w->options() : x.options());
  at::Tensor db = want_db ? at::empty({s.C}, b->options()) : at::empty({0}, b ? b->options() : x.options());
  if (!want_dx && !want_dw && !want_db) return {dx, dw, db};
  if (s.N == 0) {
    if (want_dw) dw.zero_();
    if (want_db) db.zero_();
    return {dx, dw, db};
  }
  const Params prm = prepare_params(x, w, b);

  const plan::Problem prob = make_problem(s, x, layout, act);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();

  dispatch_types(x.scalar_type(), prm.wtype, [&](auto t_tag, auto w_tag) {
    using T = decltype(t_tag);
    using W = decltype(w_tag);
    using A = kernels::acc_t<T>;
    kernels::BackwardArgs<T, W> a;
    a.dy = reinterpret_cast<const T*>(dy.data_ptr());
    a.x = reinterpret_cast<const T*>(x.data_ptr());
    a.mean = reinterpret_cast<const A*>(mean.data_ptr());
    a.rstd = reinterpret_cast<const A*>(rstd.data_ptr());
    a.weight = ptr_or_null<W>(prm.weight);
    a.bias = ptr_or_null<W>(prm.bias);
    a.dx = want_dx ? reinterpret_cast<T*>(dx.data_ptr()) : nullptr;
    a.dweight = want_dw ? reinterpret_cast<W*>(dw.data_ptr()) : nullptr;
    a.dbias = want_db ? reinterpret_cast<W*>(db.data_ptr()) : nullptr;
    a.N = s.N;
    a.C = s.C;
    a.HxW = s.HxW;
    a.G = s.G;
    a.channels_last = layout == Layout::ChannelsLast;
    a.act = act;
    const plan::BackwardPlan bp = kernels::fit_backward_plan(a, plan::plan_backward(prob));
    const size_t ws_bytes = kernels::backward_workspace_bytes(bp);
    at::Tensor ws;
    if (ws_bytes > 0) ws = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
    kernels::launch_backward(a, bp, ws_bytes > 0 ? ws.data_ptr() : nullptr, stream);
  });
  return {dx, dw, db};
}

}  // namespace
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, CUDA, m) {
  m.impl("forward", &groupnorm_cuda::forward_cuda);
  m.impl("backward", &groupnorm_cuda::backward_cuda);
}
