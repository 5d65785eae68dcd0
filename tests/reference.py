"""Independent references and error metrics for the tests.

The reference for every comparison is torch.nn.functional.group_norm evaluated in float64 on
the same (already rounded) input values, with autograd for the gradients.
"""
import torch
import torch.nn.functional as F

# Error floors (relative to max |ref|) below which any result is accepted, per dtype: a few
# units of the dtype's rounding.
FLOOR = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| in float64 (norm-wise relative error)."""
    out = out.detach().double().cpu()
    ref = ref.detach().double().cpu()
    if ref.numel() == 0:
        return 0.0
    scale = ref.abs().max().item()
    diff = (out - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def reference(x, num_groups, weight, bias, eps, activation, dy):
    """float64 forward output and (dx, dweight, dbias) via autograd on F.group_norm."""
    # Contiguous on purpose: PyTorch's channels-last CPU kernel uses E[x^2] - E[x]^2 and is
    # not accurate enough to serve as a reference even in float64.
    xr = x.detach().double().contiguous().requires_grad_()
    wr = weight.detach().double().requires_grad_() if weight is not None else None
    br = bias.detach().double().requires_grad_() if bias is not None else None
    y = F.group_norm(xr, num_groups, wr, br, eps)
    if activation == "silu":
        y = F.silu(y)
    if dy is None:
        return y.detach(), None
    y.backward(dy.double().contiguous())
    return y.detach(), (xr.grad, wr.grad if wr is not None else None, br.grad if br is not None else None)


def torch_same_precision(x, num_groups, weight, bias, eps, activation, dy):
    """PyTorch's own result at the input's precision (what a user gets from nn.GroupNorm)."""
    xr = x.detach().clone().requires_grad_()
    wr = weight.detach().clone().requires_grad_() if weight is not None else None
    br = bias.detach().clone().requires_grad_() if bias is not None else None
    y = F.group_norm(xr, num_groups, wr, br, eps)
    if activation == "silu":
        y = F.silu(y)
    if dy is None:
        return y.detach(), None
    y.backward(dy)
    return y.detach(), (xr.grad, wr.grad if wr is not None else None, br.grad if br is not None else None)
