"""GroupNorm is an nn.GroupNorm; convert_groupnorm never changes what a model computes;
fusion of GroupNorm + SiLU; TorchScript (script, trace, save/load) of converted models.

Every comparison is against the unconverted model (or nn.GroupNorm) in the same process."""
import copy
import inspect
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import groupnorm_cuda
from groupnorm_cuda import GroupNorm, convert_groupnorm, register_groupnorm_conversion


def _randomize(model):
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


# ---------------------------------------------------------------------------------------
# GroupNorm is an nn.GroupNorm


def test_is_an_nn_groupnorm_and_copies(device):
    m = GroupNorm(4, 8, activation="silu", device=device)
    assert isinstance(m, nn.GroupNorm)
    _randomize(m)
    x = torch.randn(2, 8, 5, device=device)
    for clone in (copy.deepcopy(m), _pickled(m)):
        assert type(clone) is GroupNorm and clone.activation == "silu"
        assert torch.equal(clone(x), m(x))
    # nn.GroupNorm's repr, which names bias from torch 2.12 on, plus the activation
    expected = "GroupNorm(4, 8, eps=1e-05, affine=True, bias=True, activation='silu')"
    if "bias" not in inspect.signature(nn.GroupNorm.__init__).parameters:
        expected = expected.replace(", bias=True", "")
    assert repr(m) == expected
    assert "bias=False" in repr(GroupNorm(4, 8, bias=False))


def _pickled(m):
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# ---------------------------------------------------------------------------------------
# Conversion


class GNSiLU(nn.GroupNorm):
    """A library-style subclass: a norm followed by an activation in its own forward."""

    def forward(self, x):
        return F.silu(super().forward(x))


class GNTagged(nn.GroupNorm):
    """A subclass that does not override forward (still left alone: its type may matter)."""


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.GroupNorm(4, 16)
        self.act_norm = GNSiLU(4, 16)
        self.tagged = GNTagged(2, 16, affine=False)
        self.seq = nn.Sequential(nn.Conv2d(16, 16, 1), nn.GroupNorm(8, 16), nn.SiLU(), nn.Conv2d(16, 8, 1))

    def forward(self, x):
        return self.seq(self.tagged(self.act_norm(self.norm(self.conv(x)))))


def test_convert_never_changes_the_output(device):
    model = _randomize(Net()).to(device)
    x = torch.randn(2, 3, 9, 9, device=device)
    before = model(x)
    norm = model.norm
    out, report = convert_groupnorm(model, report=True)
    assert out is model
    # exact nn.GroupNorm: converted in place (same object, same parameters)
    assert model.norm is norm and type(norm) is GroupNorm and type(model.seq[1]) is GroupNorm
    # subclasses: left alone, with the reason reported
    assert type(model.act_norm) is GNSiLU and type(model.tagged) is GNTagged
    why = {r.name: r for r in report}
    assert why["act_norm"].converted is False and "overrides forward" in why["act_norm"].reason
    assert why["tagged"].converted is False
    assert why["norm"].converted and why["seq.1"].converted
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_convert_registered_subclass(device):
    register_groupnorm_conversion(GNSiLU, lambda m: GroupNorm.from_module(m, activation="silu"))
    try:
        model = _randomize(Net()).to(device)
        x = torch.randn(2, 3, 9, 9, device=device)
        before = model(x)
        convert_groupnorm(model)
        assert type(model.act_norm) is GroupNorm and model.act_norm.activation == "silu"
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    finally:
        groupnorm_cuda.modules._CONVERSIONS.pop(GNSiLU)


def test_convert_keeps_hooks_and_shared_modules(device):
    shared = nn.GroupNorm(2, 4)
    model = nn.Sequential(shared, nn.Sequential(nn.Identity(), shared)).to(device)
    seen = []
    shared.register_forward_hook(lambda mod, inp, out: seen.append(type(mod)))
    convert_groupnorm(model)
    assert model[0] is model[1][1] and type(model[0]) is GroupNorm
    model(torch.randn(2, 4, 3, device=device))
    assert seen == [GroupNorm, GroupNorm]


def test_convert_root():
    m = nn.GroupNorm(2, 4)
    assert convert_groupnorm(m) is m and type(m) is GroupNorm


# ---------------------------------------------------------------------------------------
# Fusion


def test_fuse_silu_in_sequential(device):
    model = _randomize(Net()).to(device)
    x = torch.randn(2, 3, 9, 9, device=device)
    before = model(x)
    keys = list(model.state_dict().keys())
    _, report = convert_groupnorm(model, fuse_activation=True, report=True)
    assert model.seq[1].activation == "silu" and isinstance(model.seq[2], nn.Identity)
    assert list(model.state_dict().keys()) == keys
    assert any(r.name == "seq.1" and "fused" in r.reason for r in report)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_no_fusion_when_shared_or_hooked(device):
    norm = nn.GroupNorm(2, 4)
    model = nn.Sequential(nn.Sequential(norm, nn.SiLU()), norm).to(device)
    x = torch.randn(2, 4, 5, device=device)
    before = model(x)
    convert_groupnorm(model, fuse_activation=True)
    assert norm.activation is None and type(model[0][1]) is nn.SiLU  # used twice: not fused
    torch.testing.assert_close(model(x), before, rtol=1e-6, atol=1e-6)

    hooked = nn.Sequential(nn.GroupNorm(2, 4), nn.SiLU()).to(device)
    hooked[1].register_forward_hook(lambda *a: None)
    convert_groupnorm(hooked, fuse_activation=True)
    assert hooked[0].activation is None and type(hooked[1]) is nn.SiLU


# ---------------------------------------------------------------------------------------
# TorchScript


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still used by deployments
@pytest.mark.parametrize("fuse", [False, True])
def test_torchscript_of_converted_model(device, fuse):
    net = _ScriptableNet(_randomize(Net()).to(device)).eval()
    x = torch.randn(2, 3, 9, 9, device=device)
    before = net(x)
    convert_groupnorm(net, fuse_activation=fuse)
    scripted = torch.jit.script(net)
    traced = torch.jit.trace(net, (x,))
    torch.testing.assert_close(scripted(x), before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(traced(x), before, rtol=1e-5, atol=1e-5)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf, map_location=device)
    torch.testing.assert_close(loaded(x), before, rtol=1e-5, atol=1e-5)
    # gradients flow through the scripted op (its autograd is the op's own, in C++)
    xg = x.clone().requires_grad_()
    scripted(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


class _ScriptableNet(nn.Module):
    def __init__(self, src):
        super().__init__()
        self.conv, self.norm, self.seq = src.conv, src.norm, src.seq
        self.last = nn.GroupNorm(4, 8, affine=False)

    def forward(self, x):
        return self.last(self.seq(self.norm(self.conv(x))))


# ---------------------------------------------------------------------------------------
# torch.export


def test_torch_export_of_converted_model(device):
    net = _ScriptableNet(_randomize(Net()).to(device)).eval()
    convert_groupnorm(net, fuse_activation=True)
    x = torch.randn(2, 3, 9, 9, device=device)
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(net, (x,), dynamic_shapes={"x": {0: batch}})
    assert any("groupnorm_cuda.forward" in str(n.target) for n in ep.graph.nodes)
    for n in (2, 5):  # a batch size other than the traced one (symbolic shapes in the Meta kernel)
        xn = torch.randn(n, 3, 9, 9, device=device)
        torch.testing.assert_close(ep.module()(xn), net(xn), rtol=1e-6, atol=1e-6)
