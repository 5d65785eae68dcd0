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


def _reference(x, w, b, groups, act):
    """float64 group_norm (and SiLU) of the tensors' values, differentiable."""
    y = F.group_norm(x.double(), groups, w.double() if w is not None else None,
                     b.double() if b is not None else None, 1e-5)
    return F.silu(y) if act == "silu" else y


def _leaf_of(node, t):
    """Whether autograd node `node` feeds gradients straight into leaf t (no cast between)."""
    return any(n is not None and type(n).__name__ == "AccumulateGrad" and n.variable is t
               for n, _ in node.next_functions)


def test_autocast_cuda_kernel_is_registered_and_computes_float32_without_a_copy():
    """The AutocastCUDA kernel, run on CPU tensors by redispatching to its key: float32 output
    of float32 arithmetic on the bf16 values, and the op node takes the bf16 x itself (no cast
    recorded, so no float32 copy kept for the backward); gradients in the inputs' dtypes."""
    assert torch._C._dispatch_has_kernel_for_dispatch_key("groupnorm_cuda::forward", "AutocastCUDA")
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64).to(torch.bfloat16).requires_grad_()
    w = torch.randn(8, dtype=torch.bfloat16)
    b = torch.randn(8, dtype=torch.bfloat16)
    y, mean, rstd = OP.redispatch(keys, x, w, b, 4, 1e-5, "silu")
    assert y.dtype == mean.dtype == rstd.dtype == torch.float32
    assert rel_err(y, _reference(x.detach(), w, b, 4, "silu")) < 2e-6  # no bf16 rounding of y
    assert y.grad_fn.name() == "GroupNormBackward" and _leaf_of(y.grad_fn, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    # a float32 input with bf16 parameters: the parameters are cast, as autocast's policy does
    y2 = OP.redispatch(keys, x.detach().float(), w, b, 4, 1e-5, "none")[0]
    assert y2.dtype == torch.float32
    assert rel_err(y2, _reference(x.detach(), w, b, 4, "none")) < 2e-6


# ---------------------------------------------------------------------------------------
# The op's out_dtype (what the autocast kernel asks for): a float32 y of a 16-bit input.


@pytest.mark.parametrize("xdtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("pdtype", ["float32", "input", "none"])
def test_float_output_of_a_16bit_input(device, xdtype, layout, pdtype):
    x = torch.randn(2, 8, 5, 6, device=device).to(xdtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    pt = {"float32": torch.float32, "input": xdtype, "none": None}[pdtype]
    w = torch.randn(8, device=device).to(pt) if pt else None
    b = torch.randn(8, device=device).to(pt) if pt else None
    y, mean, rstd = OP(x, w, b, 4, 1e-5, "silu", torch.float32)
    assert y.dtype == torch.float32 and y.shape == x.shape and y.stride() == x.stride()
    assert rel_err(y, _reference(x, w, b, 4, "silu")) < 2e-6  # never rounded to 16 bits
    y16, mean16, rstd16 = OP(x, w, b, 4, 1e-5, "silu")
    assert y16.dtype == xdtype
    torch.testing.assert_close(mean, mean16, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rstd, rstd16, rtol=1e-6, atol=0)
    torch.library.opcheck(OP, (x, w, b, 4, 1e-5, "silu", torch.float32))


@pytest.mark.parametrize("xdtype", [torch.float32, torch.float64, torch.bfloat16])
def test_out_dtype_of_the_input_is_the_default(xdtype):
    x = torch.randn(2, 8, 3, 3, dtype=xdtype)
    for a, b in zip(OP(x, None, None, 4, 1e-5, "none", xdtype), OP(x, None, None, 4, 1e-5, "none")):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("xdtype,out", [(torch.bfloat16, torch.float16), (torch.float16, torch.float64),
                                        (torch.float32, torch.bfloat16), (torch.float64, torch.float32)])
@pytest.mark.parametrize("dev", ["cpu", "meta"])
def test_out_dtype_errors(xdtype, out, dev):
    x = torch.randn(2, 4, 3, dtype=xdtype, device=dev)
    with pytest.raises(RuntimeError, match="expected out_dtype to be the input's dtype"):
        OP(x, None, None, 2, 1e-5, "none", out)


@pytest.mark.parametrize("xdtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pdtype", [torch.float32, "input"])
def test_float_output_gradients(device, xdtype, pdtype):
    """float32 grad_out of the float32 y: gradients of the float64 reference on the same values,
    each in its input's dtype; double backward through the same widening."""
    pt = xdtype if pdtype == "input" else pdtype
    x = torch.randn(2, 8, 4, 5, device=device).to(xdtype).requires_grad_()
    w = (1 + 0.5 * torch.randn(8, device=device)).to(pt).requires_grad_()
    b = torch.randn(8, device=device).to(pt).requires_grad_()
    y = OP(x, w, b, 4, 1e-5, "silu", torch.float32)[0]
    assert _leaf_of(y.grad_fn, x)
    dy = torch.randn_like(y)
    y.backward(dy)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    _reference(xr, wr, br, 4, "silu").backward(dy.double())
    assert x.grad.dtype == xdtype and w.grad.dtype == b.grad.dtype == pt
    ulp = 2.0 ** -8 if xdtype == torch.bfloat16 else 2.0 ** -11  # one rounding to the 16-bit dx
    assert rel_err(x.grad, xr.grad) < 2 * ulp
    pulp = 1e-5 if pt == torch.float32 else 2 * ulp
    assert rel_err(w.grad, wr.grad) < pulp and rel_err(b.grad, br.grad) < pulp

    # create_graph: d/dx of <dx, v>, against the float64 reference's
    x.grad = None
    y = OP(x, w, b, 4, 1e-5, "silu", torch.float32)[0]
    (gx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    v = torch.randn_like(gx, dtype=torch.float32)
    (ggx,) = torch.autograd.grad((gx.float() * v).sum(), x)
    (gxr,) = torch.autograd.grad(_reference(xr, wr, br, 4, "silu"), xr, dy.double(), create_graph=True)
    (ggxr,) = torch.autograd.grad((gxr * v.double()).sum(), xr)
    assert ggx.dtype == xdtype and rel_err(ggx, ggxr) < 4 * ulp


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_autocast_cuda_follows_nn_groupnorm(xdtype):
    ours, ref = _pair(16, 4, "cuda")
    x = torch.randn(2, 16, 7, 7, device="cuda", dtype=xdtype)
    with torch.autocast("cuda", dtype=torch.float16):
        y, r = ours(x), ref(x)
    assert y.dtype == r.dtype == torch.float32
    assert rel_err(y, r) < 1e-5
    if xdtype != torch.float32:  # the kernels read the 16-bit x itself: no cast in the graph
        xg = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.float16):
            yg = ours(xg)
        assert _leaf_of(yg.grad_fn, xg)
    # gradients: nn.GroupNorm's under the same autocast, each in its input's dtype
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        ya, yb = ours(xa), ref(xb)
    dy = torch.randn_like(ya)
    ya.backward(dy)
    yb.backward(dy)
    assert xa.grad.dtype == xb.grad.dtype == xdtype
    ulp = {torch.float32: 1e-6, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}[xdtype]
    assert rel_err(xa.grad, xb.grad) < 4 * ulp
    for p, q in ((ours.weight, ref.weight), (ours.bias, ref.bias)):
        assert p.grad.dtype == q.grad.dtype and rel_err(p.grad, q.grad) < 1e-5


BWD = torch.ops.groupnorm_cuda.backward.default


@pytest.mark.parametrize("xdtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("pdtype", ["float32", "input", "none"])
def test_backward_takes_the_float_grad_of_a_16bit_input(device, xdtype, layout, pdtype):
    """The backward op with a float32 grad_out (of a float32 y) and the 16-bit x: every output
    mask, dx in x's dtype and layout, dweight / dbias in their parameters' dtypes, values of the
    float64 reference; the Meta kernel agrees (opcheck)."""
    x = torch.randn(2, 8, 5, 6, device=device).to(xdtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    pt = {"float32": torch.float32, "input": xdtype, "none": None}[pdtype]
    w = (1 + 0.5 * torch.randn(8, device=device)).to(pt) if pt else None
    b = torch.randn(8, device=device).to(pt) if pt else None
    y, mean, rstd = OP(x, w, b, 4, 1e-5, "silu", torch.float32)
    dy = torch.randn_like(y)
    assert dy.dtype == torch.float32
    xr = x.detach().double().requires_grad_()
    wr = w.detach().double().requires_grad_() if w is not None else None
    br = b.detach().double().requires_grad_() if b is not None else None
    _reference(xr, wr, br, 4, "silu").backward(dy.double())
    ulp = 2.0 ** -8 if xdtype == torch.bfloat16 else 2.0 ** -11
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        torch.library.opcheck(BWD, (dy, x, mean, rstd, w, b, 4, "silu", mask))
        dx, dw, db = BWD(dy, x, mean, rstd, w, b, 4, "silu", mask)
        if mask[0]:
            assert dx.dtype == xdtype and dx.stride() == x.stride()
            assert rel_err(dx, xr.grad) < 2 * ulp
        for g, p, pr in ((dw, w, wr), (db, b, br)):
            if p is None or not mask[1]:
                continue
            assert g.dtype == p.dtype
            assert rel_err(g, pr.grad) < (1e-5 if p.dtype == torch.float32 else 2 * ulp)


def test_float_grad_only_for_a_16bit_input_and_the_fused_backward():
    x = torch.randn(2, 4, 3, dtype=torch.bfloat16)
    y, mean, rstd = OP(x, None, None, 2, 1e-5, "none", torch.float32)
    with pytest.raises(RuntimeError, match="expected grad_output of dtype BFloat16 or Float, but got Double"):
        BWD(y.double(), x, mean, rstd, None, None, 2, "none", [True, False, False])
    xf = x.float()
    with pytest.raises(RuntimeError, match="expected grad_output of dtype Float, but got Double"):
        BWD(y.double(), xf, mean, rstd, None, None, 2, "none", [True, False, False])
    # the split ops keep grad_out in the input's dtype
    with pytest.raises(RuntimeError, match="expected grad_output of dtype BFloat16, but got Float"):
        torch.ops.groupnorm_cuda.backward_sums(y, x, mean, rstd, torch.zeros_like(mean), None, None, 2, "none")
