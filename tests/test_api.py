"""Module API, conversion helper, errors, opcheck, torch.compile."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import groupnorm_cuda
from groupnorm_cuda import GroupNorm, convert_groupnorm
from groupnorm_cuda.reference import rel_err


# ---------------------------------------------------------------------------------------
# Module


NN_HAS_BIAS = "bias" in inspect.signature(nn.GroupNorm.__init__).parameters  # torch >= 2.12


def nn_groupnorm(*args, bias=True, **kwargs):
    return nn.GroupNorm(*args, bias=bias, **kwargs) if NN_HAS_BIAS else nn.GroupNorm(*args, **kwargs)


@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, True)])
def test_module_matches_nn_groupnorm(device, affine, bias):
    if affine and not bias and not NN_HAS_BIAS:
        pytest.skip(f"nn.GroupNorm of torch {torch.__version__} has no bias=False to compare with")
    ref = nn_groupnorm(4, 8, eps=1e-4, affine=affine, bias=bias, device=device)
    ours = GroupNorm(4, 8, eps=1e-4, affine=affine, bias=bias, device=device)
    assert ours.extra_repr() == ref.extra_repr()
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), f"initial {k} differs"
    if affine:
        with torch.no_grad():
            ref.weight.normal_()
            if ref.bias is not None:
                ref.bias.normal_()
    # nn -> ours
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 8, 5, 5, device=device)
    assert torch.allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    # ours -> nn
    ref2 = nn_groupnorm(4, 8, eps=1e-4, affine=affine, bias=bias, device=device)
    ref2.load_state_dict(ours.state_dict())
    assert torch.allclose(ref2(x), ours(x), rtol=1e-5, atol=1e-5)
    ours.reset_parameters()
    ref.reset_parameters()
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v)


def test_module_dtype_and_errors():
    m = GroupNorm(2, 4, dtype=torch.float64)
    assert m.weight.dtype == torch.float64 and m.bias.dtype == torch.float64
    with pytest.raises(ValueError, match=r"num_channels \(5\) must be divisible by num_groups \(2\)"):
        GroupNorm(2, 5)
    with pytest.raises(ValueError, match="activation"):
        GroupNorm(2, 4, activation="relu")
    assert "activation='silu'" in repr(GroupNorm(2, 4, activation="silu"))


def test_module_silu(device):
    m = GroupNorm(2, 4, activation="silu", device=device)
    x = torch.randn(2, 4, 3, device=device)
    assert torch.allclose(m(x), F.silu(F.group_norm(x, 2, m.weight, m.bias)), rtol=1e-5, atol=1e-6)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(4, 8)
        self.seq = nn.Sequential(nn.SiLU(), nn.Conv2d(8, 8, 1), nn.GroupNorm(2, 8, affine=False))


def test_convert_groupnorm_keeps_weights(device):
    model = _Block().to(device)
    with torch.no_grad():
        model.norm.weight.normal_()
        model.norm.bias.normal_()
    x = torch.randn(2, 3, 6, 6, device=device)
    before = model.seq(model.norm(model.conv(x)))
    w_obj = model.norm.weight
    out = convert_groupnorm(model)
    assert out is model
    assert isinstance(model.norm, GroupNorm) and isinstance(model.seq[2], GroupNorm)
    assert model.norm.weight is w_obj, "parameters are kept (same tensors)"
    assert model.seq[2].weight is None
    after = model.seq(model.norm(model.conv(x)))
    assert torch.allclose(before, after, rtol=1e-5, atol=1e-5)
    assert not any(type(m) is nn.GroupNorm for m in model.modules())
    root = convert_groupnorm(nn.GroupNorm(2, 4))
    assert isinstance(root, GroupNorm)


# ---------------------------------------------------------------------------------------
# Errors: same kind and wording as F.group_norm where it has one.

ERRORS = [
    (lambda d: (torch.randn(3, device=d), 1, None, None), "Expected at least 2 dimensions for input tensor but received 1"),
    (
        lambda d: (torch.randn(2, 5, 3, device=d), 2, None, None),
        r"Expected number of channels in input to be divisible by num_groups, but got input of shape \[2, 5, 3\] and num_groups=2",
    ),
    (lambda d: (torch.randn(2, 4, 3, device=d), 0, None, None), "Expected num groups to be greater than 0, got 0"),
    (lambda d: (torch.randn(2, 4, 3, device=d), -2, None, None), "Expected num groups to be greater than 0, got -2"),
    (lambda d: (torch.randn(2, 0, 3, device=d), 1, None, None), "Expected number of channels to be greater than 0, got 0"),
    (
        lambda d: (torch.randn(2, 4, 3, device=d), 2, torch.randn(3, device=d), None),
        r"Expected weight to be a vector of size equal to the number of channels in input, but got weight of shape \[3\]",
    ),
    (
        lambda d: (torch.randn(2, 4, 3, device=d), 2, None, torch.randn(4, 1, device=d)),
        r"Expected bias to be a vector of size equal to the number of channels in input, but got bias of shape \[4, 1\]",
    ),
    (lambda d: (torch.randint(0, 3, (2, 4, 3), device=d), 2, None, None), "expected input of dtype Float, Double, Half or BFloat16"),
    (
        lambda d: (torch.randn(2, 4, 3, device=d), 2, torch.randn(4, dtype=torch.float64, device=d), None),
        "expected weight to have dtype Float",
    ),
    (
        lambda d: (torch.randn(2, 4, 3, device=d, dtype=torch.bfloat16), 2, torch.randn(4, device=d), torch.randn(4, device=d, dtype=torch.bfloat16)),
        "expected weight and bias to have the same dtype",
    ),
    (lambda d: (torch.randn(2, 4, 0, device=d), 2, None, None), "Expected HxW to be greater than 0, got 0"),
]


@pytest.mark.parametrize("make,msg", ERRORS, ids=range(len(ERRORS)))
def test_errors(device, make, msg):
    x, g, w, b = make(device)
    with pytest.raises(RuntimeError, match=msg):
        groupnorm_cuda.group_norm(x, g, w, b)


def test_error_bad_activation():
    with pytest.raises(ValueError, match="activation must be"):
        groupnorm_cuda.group_norm(torch.randn(2, 4, 3), 2, activation="gelu")
    with pytest.raises(ValueError, match='activation must be "none" or "silu"'):
        torch.ops.groupnorm_cuda.forward(torch.randn(2, 4, 3), None, None, 2, 1e-5, "gelu")
    # The Meta kernel (FakeTensor, torch.compile) runs the same check.
    with pytest.raises(ValueError, match='activation must be "none" or "silu"'):
        torch.ops.groupnorm_cuda.forward(torch.randn(2, 4, 3, device="meta"), None, None, 2, 1e-5, "gelu")


def test_error_devices_differ():
    """A parameter on another device is refused with a clear message, never silently used."""
    x = torch.randn(2, 4, 3)
    w = torch.randn(4, device="meta")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        groupnorm_cuda.group_norm(x, 2, w, None)
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="same device"):
            groupnorm_cuda.group_norm(x.cuda(), 2, torch.randn(4), None)


def test_error_backward_bad_stats():
    x = torch.randn(2, 4, 3)
    mean = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match=r"expected mean of shape \[2, 2\]"):
        torch.ops.groupnorm_cuda.backward(x, x, mean, torch.ones(2, 2), None, None, 2, "none", [True, False, False])


# ---------------------------------------------------------------------------------------
# opcheck and torch.compile


def _opcheck_inputs(device):
    cases = []
    for layout in ("contiguous", "channels_last"):
        for affine in (True, False):
            for rg in (True, False):
                x = torch.randn(2, 8, 5, 6, device=device)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                w = torch.randn(8, device=device) if affine else None
                b = torch.randn(8, device=device) if affine else None
                if rg:
                    x.requires_grad_()
                    if affine:
                        w.requires_grad_()
                        b.requires_grad_()
                cases.append((x, w, b))
    return cases


@pytest.mark.parametrize("activation", ["none", "silu"])
def test_opcheck(device, activation):
    for x, w, b in _opcheck_inputs(device):
        torch.library.opcheck(torch.ops.groupnorm_cuda.forward.default, (x, w, b, 4, 1e-5, activation))
        xd = x.detach()
        y, mean, rstd = torch.ops.groupnorm_cuda.forward(xd, w, b, 4, 1e-5, activation)
        dy = torch.randn_like(y)
        wd = w.detach() if w is not None else None
        bd = b.detach() if b is not None else None
        for mask in ([True, True, True], [True, False, False], [False, True, True]):
            torch.library.opcheck(
                torch.ops.groupnorm_cuda.backward.default, (dy, xd, mean, rstd, wd, bd, 4, activation, mask)
            )


MASKS = [[a, b, c] for a in (True, False) for b in (True, False) for c in (True, False)]


@pytest.mark.parametrize("xdtype,pdtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                           (torch.float16, torch.float16), (torch.float64, torch.float64)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_opcheck_mixed_precision_every_mask(device, xdtype, pdtype, layout, affine):
    """Every output mask, parameters of another dtype than the input (the autocast case) and
    absent parameters: the Meta kernel (fake tensors) must give every output the real kernel's
    shape, dtype and strides, placeholders included (opcheck compares them)."""
    x = torch.randn(2, 8, 5, 6, device=device, dtype=xdtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, device=device, dtype=pdtype) if affine in ("both", "weight") else None
    b = torch.randn(8, device=device, dtype=pdtype) if affine in ("both", "bias") else None
    torch.library.opcheck(torch.ops.groupnorm_cuda.forward.default, (x, w, b, 4, 1e-5, "silu"))
    y, mean, rstd = torch.ops.groupnorm_cuda.forward(x, w, b, 4, 1e-5, "silu")
    dy = torch.randn_like(y)
    for mask in MASKS:
        torch.library.opcheck(torch.ops.groupnorm_cuda.backward.default, (dy, x, mean, rstd, w, b, 4, "silu", mask))
        dx, dw, db = torch.ops.groupnorm_cuda.backward(dy, x, mean, rstd, w, b, 4, "silu", mask)
        # The documented contract (csrc/ops.cpp): a gradient in its parameter's dtype, a
        # placeholder [0] in the parameter's dtype (the input's when the parameter is absent).
        assert dx.dtype == xdtype and dx.shape == (x.shape if mask[0] else (0,))
        for grad, p, want in ((dw, w, mask[1]), (db, b, mask[2])):
            assert grad.dtype == (p.dtype if p is not None else xdtype)
            assert grad.shape == ((8,) if want and p is not None else (0,))


class _ConvGNSiLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1)
        self.norm = GroupNorm(4, 16, activation="silu")
        self.conv2 = nn.Conv2d(16, 8, 1)
        self.norm2 = GroupNorm(2, 8)

    def forward(self, x):
        return self.norm2(self.conv2(self.norm(self.conv(x))))


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    model = _ConvGNSiLU().to(device)
    x = torch.randn(2, 4, 10, 10, device=device)
    # A random projection as the loss: sum(y^2) would be ~constant after a GroupNorm, leaving
    # gradients made of rounding noise.
    proj = torch.randn(2, 8, 10, 10, device=device)
    eager_x = x.clone().requires_grad_()
    y_eager = model(eager_x)
    (y_eager * proj).sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    comp_x = x.clone().requires_grad_()
    y_comp = compiled(comp_x)
    (y_comp * proj).sum().backward()
    # Inductor reorders the conv reductions, so compare norm-wise.
    assert rel_err(y_comp, y_eager) < 1e-5
    assert rel_err(comp_x.grad, eager_x.grad) < 1e-4
    for p, g in zip(model.parameters(), eager_grads):
        assert rel_err(p.grad, g) < 1e-4
