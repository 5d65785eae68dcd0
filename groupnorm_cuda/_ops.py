"""The autograd Function and the functional API over the ops.

The ops are defined in C++ (csrc/ops.cpp) as
    torch.ops.groupnorm_cuda.forward(input, weight?, bias?, num_groups, eps, activation)
        -> (y, mean, rstd)
    torch.ops.groupnorm_cuda.backward(grad_out, input, mean, rstd, weight?, bias?, num_groups,
                                      activation, output_mask) -> (dx, dweight, dbias)
with CPU, CUDA and Meta kernels registered in C++. The Meta kernels run the backends' own
argument checks and output rules (csrc/common), so FakeTensor and torch.compile see the real
shapes, dtypes and strides: nothing of that is repeated here.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from . import _C  # noqa: F401  (loads the library: registers the ops and their kernels)

built_with_cuda: bool = bool(_C.built_with_cuda)


def _activation_name(activation: Optional[str]) -> str:
    """The op's activation argument: None means "none". The ops validate the name (C++)."""
    return "none" if activation is None else activation


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
