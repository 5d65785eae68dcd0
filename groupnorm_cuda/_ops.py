"""Op wrappers: fake kernels, the autograd Function and the functional API.

The ops themselves are defined in C++ (csrc/ops.cpp) as
    torch.ops.groupnorm_cuda.forward(input, weight?, bias?, num_groups, eps, activation)
        -> (y, mean, rstd)
    torch.ops.groupnorm_cuda.backward(grad_out, input, mean, rstd, weight?, bias?, num_groups,
                                      activation, output_mask) -> (dx, dweight, dbias)
with CPU and CUDA kernels registered per backend. This module registers their fake (meta)
kernels, so torch.compile and FakeTensor tracing see the right shapes, dtypes and strides.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from . import _C  # noqa: F401  (loads the library: registers the ops and their kernels)

built_with_cuda: bool = bool(_C.built_with_cuda)

_ACTIVATIONS = ("none", "silu")


def _activation_name(activation: Optional[str]) -> str:
    name = "none" if activation is None else activation
    if name not in _ACTIVATIONS:
        raise ValueError(f"groupnorm_cuda: activation must be None, 'none' or 'silu', got {activation!r}")
    return name


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _is_channels_last(x: torch.Tensor) -> bool:
    """Mirror of pick_layout() in csrc/common/group_norm.h: the layout the kernels read x in."""
    if x.is_contiguous():
        return False
    if x.dim() == 4:
        return x.is_contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d)
    if x.dim() == 3:
        n, c, l = x.shape
        return x.stride() == (l * c, 1, c)
    return False


def _empty_like_layout(x: torch.Tensor, channels_last: bool, dtype=None) -> torch.Tensor:
    dtype = x.dtype if dtype is None else dtype
    if channels_last:
        return torch.empty_strided(x.shape, x.stride(), dtype=dtype, device=x.device)
    return torch.empty(x.shape, dtype=dtype, device=x.device)


def _check_args(x, weight, bias, num_groups):
    """The C++ checks (csrc/common/group_norm.h), for fake tensors."""
    torch._check(x.dim() >= 2, lambda: f"Expected at least 2 dimensions for input tensor but received {x.dim()}")
    torch._check(
        x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16),
        lambda: f"groupnorm_cuda: expected input of dtype Float, Double, Half or BFloat16, but got {x.dtype}",
    )
    torch._check(num_groups > 0, lambda: f"Expected num groups to be greater than 0, got {num_groups}")
    c = x.shape[1]
    torch._check(c > 0, lambda: f"Expected number of channels to be greater than 0, got {c}")
    torch._check(
        c % num_groups == 0,
        lambda: "Expected number of channels in input to be divisible by num_groups, but got input of shape "
        f"{list(x.shape)} and num_groups={num_groups}",
    )
    hxw = 1
    for d in x.shape[2:]:
        hxw *= d
    torch._check(hxw > 0, lambda: f"Expected HxW to be greater than 0, got {hxw}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        torch._check(
            p.dim() == 1 and p.numel() == c,
            lambda: f"Expected {name} to be a vector of size equal to the number of channels in input, but got "
            f"{name} of shape {list(p.shape)} and input of shape {list(x.shape)}",
        )
        torch._check(
            p.device == x.device,
            lambda: f"Expected all tensors to be on the same device, but {name} is on {p.device} and input is on "
            f"{x.device}",
        )
        ok = p.dtype == x.dtype or (p.dtype == torch.float32 and x.dtype in (torch.float16, torch.bfloat16))
        torch._check(ok, lambda: f"groupnorm_cuda: expected {name} to have dtype {x.dtype}, but got {p.dtype}")
    if weight is not None and bias is not None:
        torch._check(
            weight.dtype == bias.dtype,
            lambda: f"groupnorm_cuda: expected weight and bias to have the same dtype, but got {weight.dtype} and "
            f"{bias.dtype}",
        )


@torch.library.register_fake("groupnorm_cuda::forward")
def _forward_fake(input, weight, bias, num_groups, eps, activation):
    _check_args(input, weight, bias, num_groups)
    _activation_name(activation)
    y = _empty_like_layout(input, _is_channels_last(input))
    n = input.shape[0]
    sd = _stats_dtype(input.dtype)
    mean = input.new_empty((n, num_groups), dtype=sd)
    rstd = input.new_empty((n, num_groups), dtype=sd)
    return y, mean, rstd


@torch.library.register_fake("groupnorm_cuda::backward")
def _backward_fake(grad_out, input, mean, rstd, weight, bias, num_groups, activation, output_mask):
    _check_args(input, weight, bias, num_groups)
    c = input.shape[1]
    dx = _empty_like_layout(input, _is_channels_last(input)) if output_mask[0] else input.new_empty((0,))
    dw = weight.new_empty((c,)) if (output_mask[1] and weight is not None) else input.new_empty((0,))
    db = bias.new_empty((c,)) if (output_mask[2] and bias is not None) else input.new_empty((0,))
    return dx, dw, db


def _composite(x, weight, bias, num_groups, eps, activation):
    """Differentiable composite of the same function, used only for double backward."""
    y = F.group_norm(x, num_groups, weight, bias, eps)
    return F.silu(y) if activation == "silu" else y


class GroupNormFunction(torch.autograd.Function):
    """y = act(group_norm(x) * weight + bias) with the hand-written backward op.

    Double backward (create_graph=True) is supported: the first backward is then computed
    through a differentiable composite of the same function so that autograd can
    differentiate it again.
    """

    # Classic forward(ctx, ...) rather than setup_context: measurably less Python overhead per
    # call (about 50 us here), which is most of the cost of small GroupNorms.
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps, activation):
        y, mean, rstd = torch.ops.groupnorm_cuda.forward(x, weight, bias, num_groups, eps, activation)
        ctx.num_groups = num_groups
        ctx.eps = eps
        ctx.activation = activation
        ctx.has_weight = weight is not None
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, mean, rstd, weight, bias)
        ctx.mark_non_differentiable(mean, rstd)
        return y, mean, rstd

    @staticmethod
    def backward(ctx, grad_y, grad_mean, grad_rstd):
        x, mean, rstd, weight, bias = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            # create_graph=True: build a differentiable first derivative.
            with torch.enable_grad():
                inputs = [t for t, need in ((x, need_x), (weight, need_w), (bias, need_b)) if need]
                y = _composite(x, weight, bias, ctx.num_groups, ctx.eps, ctx.activation)
                grads = list(torch.autograd.grad(y, inputs, grad_y, create_graph=True, allow_unused=True))
            out = []
            for need in (need_x, need_w, need_b):
                out.append(grads.pop(0) if need else None)
            return out[0], out[1], out[2], None, None, None
        dx, dw, db = torch.ops.groupnorm_cuda.backward(
            grad_y,
            x,
            mean,
            rstd,
            weight,
            bias,
            ctx.num_groups,
            ctx.activation,
            [need_x, need_w and ctx.has_weight, need_b and ctx.has_bias],
        )
        return (
            dx if need_x else None,
            dw if (need_w and ctx.has_weight) else None,
            db if (need_b and ctx.has_bias) else None,
            None,
            None,
            None,
        )


def group_norm(
    input: torch.Tensor,
    num_groups: int,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """Same semantics as ``torch.nn.functional.group_norm``, plus ``activation``.

    activation: None (or "none") or "silu": returns silu(group_norm(...)) computed in the
    same fused pass. The output has input's dtype and memory format (contiguous or
    channels_last / channels_last_3d); mixed precision weight/bias (float32 with a float16
    or bfloat16 input) is allowed.
    """
    act = _activation_name(activation)
    needs_grad = torch.is_grad_enabled() and (
        input.requires_grad
        or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)
    )
    if not needs_grad:
        return torch.ops.groupnorm_cuda.forward(input, weight, bias, num_groups, float(eps), act)[0]
    return GroupNormFunction.apply(input, weight, bias, num_groups, float(eps), act)[0]
