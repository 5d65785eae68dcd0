// CPU backend of groupnorm_cuda::forward / backward: the op glue. Checks and outputs come from
// csrc/common (shared with the CUDA and Meta kernels); the kernels are cpu/kernels/*.h:
//
//   common.h          vector I/O (Vectorized<acc_t<T>> over T memory), walk, sums, prefetch, SiLU
//   machine.h         cache sizes / huge pages as the machine reports them (tuning inputs)
//   scratch.h         aligned per-call, per-thread and per-channel scratch
//   schedule.h        units, pieces, fused / split schedules, four-stream walks
//   moments.h         Welford / Chan statistics (merge formula: common/welford.h)
//   params.h          FwdArgs / BwdArgs, filled once below
//   forward_nchw.h    ForwardNchw       forward_nhwc.h    ForwardNhwc
//   backward_common.h per-group dx coefficients, SiLU z coefficients
//   backward_nchw.h   BackwardNchw      backward_nhwc.h   BackwardNhwc
//
// Numerics (shared by every backend) and the CPU design: csrc/README.md. Everything is
// vectorized with at::vec::Vectorized over the accumulation type and parallel with
// at::parallel_for; the build compiles this one translation unit for the machine's vector ISA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/outputs.h"
#include "cpu/kernels/backward_nchw.h"
#include "cpu/kernels/backward_nhwc.h"
#include "cpu/kernels/forward_nchw.h"
#include "cpu/kernels/forward_nhwc.h"
#include "cpu/kernels/machine.h"
#include "cpu/tuning.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {

template <typename W>
const W* param_ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<W>() : nullptr;
}

// What a forward-direction call runs (params.h): the fused forward, or one of the split ops.
struct ForwardParts {
  const at::Tensor* moments_in = nullptr;  // apply: the statistics are given
  at::Tensor* moments_out = nullptr;       // stats: the statistics are written
  bool normalize = true;                   // y, mean and rstd are written
};

template <typename T, typename W>
FwdArgs<T, W> forward_args(const Problem& prob, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                           double eps, const Outputs& out, const ForwardParts& parts) {
  using A = acc_t<T>;
  FwdArgs<T, W> a{x.const_data_ptr<T>(),
                  param_ptr<W>(w),
                  param_ptr<W>(b),
                  parts.normalize ? std::get<0>(out).mutable_data_ptr<T>() : nullptr,
                  parts.normalize ? std::get<1>(out).mutable_data_ptr<A>() : nullptr,
                  parts.normalize ? std::get<2>(out).mutable_data_ptr<A>() : nullptr,
                  prob,
                  eps};
  a.moments_in = parts.moments_in ? parts.moments_in->const_data_ptr<double>() : nullptr;
  a.moments_out = parts.moments_out ? parts.moments_out->mutable_data_ptr<double>() : nullptr;
  a.normalize = parts.normalize;
  return a;
}

template <typename T, typename W>
BwdArgs<T, W> backward_args(const Problem& prob, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                            const at::Tensor& rstd, const at::Tensor& w, const at::Tensor& b, const at::Tensor& dx,
                            const at::Tensor& dw_part, const at::Tensor& db_part) {
  using A = acc_t<T>;
  return BwdArgs<T, W>{dy.const_data_ptr<T>(),
                       x.const_data_ptr<T>(),
                       mean.const_data_ptr<A>(),
                       rstd.const_data_ptr<A>(),
                       param_ptr<W>(w),
                       param_ptr<W>(b),
                       dx.defined() ? dx.mutable_data_ptr<T>() : nullptr,
                       dw_part.defined() ? dw_part.mutable_data_ptr<A>() : nullptr,
                       db_part.defined() ? db_part.mutable_data_ptr<A>() : nullptr,
                       prob};
}

// dweight / dbias: the (N, C) per-sample partials reduced over n in order, parallel over
// channel ranges. Rows are added whole (contiguous, vectorized): walking one channel down the
// column strides by C and thrashes L1 sets when C is a large power of two.
template <typename A, typename O>
void reduce_param_grads(const Problem& prob, const at::Tensor& dw_part, const at::Tensor& db_part, at::Tensor& dw,
                        at::Tensor& db) {
  const A* pw = dw_part.defined() ? dw_part.const_data_ptr<A>() : nullptr;
  const A* pb = db_part.defined() ? db_part.const_data_ptr<A>() : nullptr;
  O* ow = pw ? dw.mutable_data_ptr<O>() : nullptr;
  O* ob = pb ? db.mutable_data_ptr<O>() : nullptr;
  at::parallel_for(0, prob.C, 512, [&](int64_t c0, int64_t c1) {
    const int64_t len = c1 - c0;
    std::vector<A> sw(pw ? len : 0, A(0)), sb(pb ? len : 0, A(0));
    for (int64_t n = 0; n < prob.N; ++n) {
      if (pw) add_vec(sw.data(), pw + n * prob.C + c0, len);
      if (pb) add_vec(sb.data(), pb + n * prob.C + c0, len);
    }
    for (int64_t c = c0; c < c1; ++c) {
      if (pw) ow[c] = static_cast<O>(sw[c - c0]);
      if (pb) ob[c] = static_cast<O>(sb[c - c0]);
    }
  });
}

// y or dx, freshly allocated and not yet written: huge pages where the machine gives them.
void advise_output(const at::Tensor& t) {
  if (t.defined() && t.numel() > 0) advise_huge_pages(t.data_ptr(), static_cast<int64_t>(t.nbytes()));
}

// The tensors of one call, in the layout the kernels read.
struct ForwardTensors {
  at::Tensor x, w, b;  // w, b undefined when absent
  double eps;
};
struct BackwardTensors {
  at::Tensor dy, x, mean, rstd, w, b;
  std::array<bool, 3> want;  // dx, dweight, dbias
};

template <template <typename, typename> class Kernel>
void forward_with(const Problem& prob, const ForwardTensors& t, at::ScalarType wt, const Outputs& out,
                  const ForwardParts& parts) {
  dispatch_types(t.x.scalar_type(), wt, [&]<typename T, typename W>() {
    Kernel<T, W>(forward_args<T, W>(prob, t.x, t.w, t.b, t.eps, out, parts)).run();
  });
}

// What a backward-direction call runs (params.h BwdArgs): the fused backward, or one of the
// split ops of the sharded backward.
struct BackwardParts {
  const at::Tensor* r_in = nullptr;      // (N, G): the saved mean's residual, given
  at::Tensor* group_out = nullptr;       // backward_sums: (N, G, 2) [Asum, Bsum] of this shard
  const at::Tensor* group_in = nullptr;  // backward_dx: (N, G, 2) over all shards
  int64_t M_total = 0;                   // backward_dx: a group's elements over all shards
};

template <template <typename, typename> class Kernel>
void backward_with(const Problem& prob, const BackwardTensors& t, at::ScalarType wt, Outputs& out,
                   const BackwardParts& parts) {
  auto& [dx, dw, db] = out;
  const auto popts = t.x.options().dtype(stats_dtype(t.x.scalar_type()));
  const at::Tensor dw_part = t.want[1] ? at::empty({prob.N, prob.C}, popts) : at::Tensor();
  const at::Tensor db_part = t.want[2] ? at::empty({prob.N, prob.C}, popts) : at::Tensor();
  dispatch_types(t.x.scalar_type(), wt, [&]<typename T, typename W>() {
    using A = acc_t<T>;
    BwdArgs<T, W> args = backward_args<T, W>(prob, t.dy, t.x, t.mean, t.rstd, t.w, t.b,
                                             t.want[0] ? dx : at::Tensor(), dw_part, db_part);
    args.r_in = parts.r_in ? parts.r_in->const_data_ptr<A>() : nullptr;
    args.group_out = parts.group_out ? parts.group_out->mutable_data_ptr<A>() : nullptr;
    args.group_in = parts.group_in ? parts.group_in->const_data_ptr<A>() : nullptr;
    args.M_total = parts.M_total;
    Kernel<T, W>(args).run();
    if (parts.group_out)  // a shard's parameter-gradient contributions stay in the accumulation type
      reduce_param_grads<A, A>(prob, dw_part, db_part, dw, db);
    else
      reduce_param_grads<A, W>(prob, dw_part, db_part, dw, db);
  });
}

// ---------------------------------------------------------------------------------------
// Dispatch, as ATen's group_norm_kernel.cpp: memory format, then dtype (dispatch_types), then
// the kernel of <T, W>. With HxW == 1 both layouts are the same memory: the row (NHWC) kernels
// vectorize across channels instead of running one-element channels.

Layout kernel_layout(const Problem& prob) { return prob.HxW == 1 ? Layout::ChannelsLast : prob.layout; }

// The forward direction's three entry points share this: the fused forward (parts default),
// stats (moments_out, no normalization) and apply (moments_in).
void run_forward(const Problem& prob, const ForwardTensors& t, at::ScalarType wt, const Outputs& out,
                 const ForwardParts& parts) {
  if (parts.normalize) advise_output(std::get<0>(out));
  switch (kernel_layout(prob)) {
    case Layout::ChannelsLast: forward_with<ForwardNhwc>(prob, t, wt, out, parts); break;
    case Layout::Contiguous: forward_with<ForwardNchw>(prob, t, wt, out, parts); break;
  }
}

Outputs forward_cpu(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                    const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                    c10::string_view activation, std::optional<at::ScalarType> out_dtype) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_forward_inputs(input, w, b, num_groups);
  if (forward_out_dtype(input, out_dtype) != input.scalar_type()) {
    // A float32 y of a 16-bit input: the float32 kernels on a float32 copy (the same values).
    // Autocast on the CPU never asks for it (group_norm is on none of its lists, autocast.cpp);
    // the CUDA kernels read the 16-bit input themselves.
    return forward_cpu(input.to(at::kFloat), float_param(weight), float_param(bias), num_groups, eps, activation,
                       std::nullopt);
  }
  const Problem prob = make_problem(input, num_groups, activation);
  const ForwardTensors t{to_layout(input, prob.layout), contiguous_or_undefined(w), contiguous_or_undefined(b), eps};
  Outputs out = allocate_forward_outputs(t.x, prob.layout, num_groups);
  if (prob.N == 0) return out;
  run_forward(prob, t, param_dtype(input, w, b), out, ForwardParts{});
  return out;
}

// Split op: the moments of (a shard of) input per (n, group).
at::Tensor stats_cpu(const at::Tensor& input, int64_t num_groups) {
  check_forward_inputs(input, nullptr, nullptr, num_groups, /*allow_empty_spatial=*/true);
  at::Tensor moments = allocate_moments(input, num_groups);
  const Problem prob = make_problem(input, num_groups, "none");
  if (prob.N == 0) return moments;
  if (prob.HxW == 0) return moments.zero_();  // an empty shard: count 0
  ForwardParts parts;
  parts.moments_out = &moments;
  parts.normalize = false;
  run_forward(prob, ForwardTensors{to_layout(input, prob.layout), {}, {}, 0.0}, input.scalar_type(), Outputs{},
              parts);
  return moments;
}

// Split op: y, mean and rstd of input normalized with the given (merged) moments.
Outputs apply_cpu(const at::Tensor& input, const at::Tensor& moments, const std::optional<at::Tensor>& weight,
                  const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
                  c10::string_view activation) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_apply_inputs(input, moments, w, b, num_groups);
  const Problem prob = make_problem(input, num_groups, activation);
  const ForwardTensors t{to_layout(input, prob.layout), contiguous_or_undefined(w), contiguous_or_undefined(b), eps};
  Outputs out = allocate_forward_outputs(t.x, prob.layout, num_groups);
  if (prob.N == 0) return out;
  const at::Tensor m = moments.contiguous();
  ForwardParts parts;
  parts.moments_in = &m;
  run_forward(prob, t, param_dtype(input, w, b), out, parts);
  return out;
}

void run_backward(const Problem& prob, const BackwardTensors& t, at::ScalarType wt, Outputs& out,
                  const BackwardParts& parts) {
  if (t.want[0]) advise_output(std::get<0>(out));
  switch (kernel_layout(prob)) {
    case Layout::ChannelsLast: backward_with<BackwardNhwc>(prob, t, wt, out, parts); break;
    case Layout::Contiguous: backward_with<BackwardNchw>(prob, t, wt, out, parts); break;
  }
}

Outputs backward_cpu(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                     const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation,
                     std::array<bool, 3> mask) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_inputs(grad_out, input, mean, rstd, w, b, num_groups, false, /*float_grad=*/true);
  if (grad_out.scalar_type() != input.scalar_type()) {
    // The float32 gradient of a float32 y of a 16-bit input (forward_cpu): the float32 kernels
    // on float32 copies, dx rounded once to the input's dtype, dweight / dbias to theirs.
    Outputs out = backward_cpu(grad_out, input.to(at::kFloat), mean, rstd, float_param(weight), float_param(bias),
                               num_groups, activation, mask);
    std::get<0>(out) = std::get<0>(out).to(input.scalar_type());
    cast_param_grads(out, input, w, b);
    return out;
  }
  const Problem prob = make_problem(input, num_groups, activation);
  const BackwardTensors t{to_layout(grad_out, prob.layout), to_layout(input, prob.layout), mean.contiguous(),
                          rstd.contiguous(), contiguous_or_undefined(w), contiguous_or_undefined(b),
                          {mask[0], mask[1] && w, mask[2] && b}};
  Outputs out = allocate_backward_outputs(t.x, prob.layout, w, b, mask);
  if (prob.N == 0) {  // empty batch: zero parameter gradients
    if (t.want[1]) std::get<1>(out).zero_();
    if (t.want[2]) std::get<2>(out).zero_();
    return out;
  }
  if (!t.want[0] && !t.want[1] && !t.want[2]) return out;
  run_backward(prob, t, param_dtype(input, w, b), out, BackwardParts{});
  return out;
}

// Split op of the sharded backward: this shard's group sums and dweight / dbias contributions.
Outputs backward_sums_cpu(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
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
  const at::Tensor r = residual.contiguous();
  const BackwardTensors t{to_layout(grad_out, prob.layout), to_layout(input, prob.layout), mean.contiguous(),
                          rstd.contiguous(), contiguous_or_undefined(w), contiguous_or_undefined(b),
                          {false, w != nullptr, b != nullptr}};
  BackwardParts parts;
  parts.r_in = &r;
  parts.group_out = &std::get<0>(out);
  run_backward(prob, t, param_dtype(input, w, b), out, parts);
  return out;
}

// Split op of the sharded backward: dx of this shard from the group sums over all shards.
at::Tensor backward_dx_cpu(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean,
                           const at::Tensor& rstd, const at::Tensor& residual, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias, const at::Tensor& group_sums, int64_t count,
                           int64_t num_groups, c10::string_view activation) {
  const at::Tensor* w = opt_ptr(weight);
  const at::Tensor* b = opt_ptr(bias);
  check_backward_dx_inputs(grad_out, input, mean, rstd, residual, w, b, group_sums, count, num_groups);
  const Problem prob = make_problem(input, num_groups, activation);
  const BackwardTensors t{to_layout(grad_out, prob.layout), to_layout(input, prob.layout), mean.contiguous(),
                          rstd.contiguous(), contiguous_or_undefined(w), contiguous_or_undefined(b),
                          {true, false, false}};
  Outputs out{empty_in_layout(t.x, prob.layout, input.scalar_type()), at::Tensor(), at::Tensor()};
  if (input.numel() == 0) return std::get<0>(out);
  const at::Tensor r = residual.contiguous(), sums = group_sums.contiguous();
  BackwardParts parts;
  parts.r_in = &r;
  parts.group_in = &sums;
  parts.M_total = count;
  run_backward(prob, t, param_dtype(input, w, b), out, parts);
  return std::get<0>(out);
}

}  // namespace

std::map<std::string, int64_t> tuning_report() {
  const MachineInfo& m = machine();
  return {{"l1d_bytes", m.l1d},
          {"l2_bytes_per_core", m.l2},
          {"llc_bytes", m.llc},
          {"huge_page_bytes", m.huge_page},
          {"thp_madvise", m.thp_madvise},
          {"cpu_vendor_intel", m.intel},
          {"huge_pages_for_outputs", huge_pages_on().load()},
          {"threads", at::get_num_threads()}};
}

void set_huge_pages(bool on) { huge_pages_on().store(on && machine().huge_page > 0 && machine().thp_madvise); }

}  // namespace cpu
}  // namespace groupnorm_cuda

TORCH_LIBRARY_IMPL(groupnorm_cuda, CPU, m) {
  m.impl("forward", &groupnorm_cuda::cpu::forward_cpu);
  m.impl("backward", &groupnorm_cuda::cpu::backward_cpu);
  m.impl("stats", &groupnorm_cuda::cpu::stats_cpu);
  m.impl("apply", &groupnorm_cuda::cpu::apply_cpu);
  m.impl("backward_sums", &groupnorm_cuda::cpu::backward_sums_cpu);
  m.impl("backward_dx", &groupnorm_cuda::cpu::backward_dx_cpu);
}
