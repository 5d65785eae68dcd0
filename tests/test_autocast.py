"""Autocast: under torch.autocast the op gives nn.GroupNorm's output dtype and values, following
PyTorch's policy for group_norm per device (CUDA: float32 list; CPU: no list)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import HAS_CUDA
from groupnorm_cuda import GroupNorm
from groupnorm_cuda.reference import rel_err

OP = torch.ops.groupnorm_cuda.forward.default


def _pair(c, g, device, **kw):
    ref = nn.GroupNorm(g, c, **kw).to(device)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = GroupNorm(g, c, **kw).to(device)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16])
def test_autocast_cpu_follows_nn_groupnorm(xdtype):
    ours, ref = _pair(8, 4, "cpu")
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 6, 6, dtype=xdtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x.float()) if xdtype == torch.float32 else conv(x.float()).to(xdtype)
        y, r = ours(h), ref(h)
    assert y.dtype == r.dtype == h.dtype  # CPU policy: no cast
    assert rel_err(y, r) < (1e-5 if y.dtype == torch.float32 else 1.6e-2)


def test_autocast_cuda_kernel_is_registered_and_casts_to_float32():
    """The AutocastCUDA kernel, run on CPU tensors by redispatching to its key: float32 output
    of float32 arithmetic, gradients back to the input in its own dtype."""
    assert torch._C._dispatch_has_kernel_for_dispatch_key("groupnorm_cuda::forward", "AutocastCUDA")
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64).to(torch.bfloat16).requires_grad_()
    w = torch.randn(8, dtype=torch.bfloat16)
    b = torch.randn(8, dtype=torch.bfloat16)
    y, mean, rstd = OP.redispatch(keys, x, w, b, 4, 1e-5, "silu")
    assert y.dtype == mean.dtype == rstd.dtype == torch.float32
    ref = F.silu(F.group_norm(x.detach().double(), 4, w.double(), b.double(), 1e-5))
    assert rel_err(y, ref) < 2e-6  # float32 arithmetic on the bf16 values, no bf16 rounding
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_autocast_cuda_follows_nn_groupnorm(xdtype):
    ours, ref = _pair(16, 4, "cuda")
    x = torch.randn(2, 16, 7, 7, device="cuda", dtype=xdtype)
    with torch.autocast("cuda", dtype=torch.float16):
        y, r = ours(x), ref(x)
    assert y.dtype == r.dtype == torch.float32
    assert rel_err(y, r) < 1e-5
