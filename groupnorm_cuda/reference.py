"""The independent float64 reference and error metric, shared by the tests and the benchmark.

Every correctness comparison in this repository (tests/ and benchmarks/bench_groupnorm.py)
uses this module, so that there is one definition of "the right answer" and of "how wrong":

* ``reference``: torch.nn.functional.group_norm (+ F.silu) evaluated in float64 on the same
  (already rounded) input values, with autograd for the input / weight / bias gradients. It
  does not use any groupnorm_cuda kernel, so it is independent of the code under test.
* ``torch_same_precision``: PyTorch's own result at the input's precision (what a user gets
  from nn.GroupNorm), the yardstick for how much rounding error is acceptable.
* ``rel_err``: the norm-wise relative error max |out - ref| / max |ref|, in float64.
* ``FLOOR``: per-dtype error floors below which any result is accepted.

It depends on PyTorch only. Import it explicitly, ``from groupnorm_cuda.reference import
reference, rel_err`` (the package's ``__init__`` does not import it).
"""
import torch
import torch.nn.functional as F

# Error floors (relative to max |ref|) below which any result is accepted, per dtype: a few
# units of the dtype's rounding.
FLOOR = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| in float64 (norm-wise relative error).

    Computed on the tensors' device when both are on the same one (no copy of large CUDA
    tensors to the host), else on the CPU; the result is the same either way."""
    out = out.detach().double()
    ref = ref.detach().double()
    if out.device != ref.device:
        out, ref = out.cpu(), ref.cpu()
    if ref.numel() == 0:
        return 0.0
    scale = ref.abs().max().item()
    diff = (out - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def _run(xr, wr, br, num_groups, eps, activation, dy):
    """F.group_norm (+ F.silu) on the leaves xr, wr, br; with dy, their gradients via autograd."""
    # PyTorch 2.11's group_norm backward fails for a bias without a weight ("tensor does not have
    # a device"); a weight of ones gives the same values (x * 1 is exact) and the same gradients
    # for x and bias.
    w = torch.ones_like(br) if wr is None and br is not None and dy is not None else wr
    y = F.group_norm(xr, num_groups, w, br, eps)
    if activation == "silu":
        y = F.silu(y)
    if dy is None:
        return y.detach(), None
    y.backward(dy)
    return y.detach(), (xr.grad, wr.grad if wr is not None else None, br.grad if br is not None else None)


def reference(x, num_groups, weight, bias, eps, activation, dy):
    """float64 forward output and (dx, dweight, dbias) via autograd on F.group_norm."""
    # Contiguous on purpose: PyTorch's channels-last CPU kernel uses E[x^2] - E[x]^2 and is
    # not accurate enough to serve as a reference even in float64.
    xr = x.detach().double().contiguous().requires_grad_()
    wr = weight.detach().double().requires_grad_() if weight is not None else None
    br = bias.detach().double().requires_grad_() if bias is not None else None
    return _run(xr, wr, br, num_groups, eps, activation, None if dy is None else dy.double().contiguous())


def torch_same_precision(x, num_groups, weight, bias, eps, activation, dy):
    """PyTorch's own result at the input's precision (what a user gets from nn.GroupNorm)."""
    xr = x.detach().clone().requires_grad_()
    wr = weight.detach().clone().requires_grad_() if weight is not None else None
    br = bias.detach().clone().requires_grad_() if bias is not None else None
    return _run(xr, wr, br, num_groups, eps, activation, dy)
