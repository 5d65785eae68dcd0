"""convert_groupnorm on real models of diffusers, timm and MONAI, built from the libraries' own
config classes with random weights (tiny configs, no downloads), and on the library GroupNorm
subclasses the converter knows (groupnorm_cuda/library_classes.py).

Every model is compared, forward and gradients (input and every parameter), with the same model
unconverted in the same run, with and without fuse_activation=True.

Tolerance (float32). The op and nn.GroupNorm round differently (a few ulps per norm), and a
network amplifies such differences by its conditioning, which differs a lot between tensors: a
timm ResNetV2 standardizes its conv weights, and the gradient of a standardized weight is a
projection that cancels most of its terms, so the unconverted float32 model itself is off by up
to 2e-3 there, while elsewhere it is within 1e-6. So the float32 results are judged against the
same unconverted model run in float64 (the op computes float64 too): the converted model's
error must be at most 4x the unconverted float32 model's own error (the op is as accurate as
nn.GroupNorm: the ratios seen are 0.4x-2.5x), and never needs to beat 2e-5. Error = max|a - b| /
max|b| per tensor, with max|b| floored at 1e-4 of the largest gradient of the model (gradients
that are zero up to rounding, such as an attention key's bias, are judged on that scale). A
converter that drops or changes an activation, or a norm computed wrongly, is off by 1e-2 to
1e0: see test_a_planted_converter_bug_is_caught.

The libraries are optional for users (extra `models`); tools/setup_env.sh installs them, so in CI
these tests run (importorskip only protects a checkout without them).
"""
import copy
import os
import subprocess
import sys
from functools import partial

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

from groupnorm_cuda import GroupNorm, convert_groupnorm  # noqa: E402
from groupnorm_cuda import library_classes  # noqa: E402

RATIO = 4.0
FLOOR = 2e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: one thread runs them as fast as two, and keeps their time steady
    when something else runs on the machine (two OpenMP threads on two busy cores spin-wait:
    the file took 6 s alone and 55 s beside a compile)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------
# the comparison


def _perturb_norms(model: nn.Module) -> nn.Module:
    """Norm weights and biases away from 1 / 0 (a freshly built model has the identity affine,
    which would hide an affine applied wrongly)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.GroupNorm) and m.affine:
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return model.eval()  # eval: no dropout; gradients are still computed


def _run(model, fn, inputs):
    """Output and gradients (inputs and parameters) of sum(out * proj), proj fixed."""
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    model.zero_grad(set_to_none=True)
    out = fn(model, *inputs)
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(out.dtype)
    (out * proj).sum().backward()
    res = {"output": out.detach()}
    res.update({f"grad input{i}": x.grad for i, x in enumerate(inputs) if x.grad is not None})
    res.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
    return res


class Reference:
    """The unconverted model's results in float32 and float64, computed once per model."""

    def __init__(self, model, fn, inputs):
        self.model, self.fn, self.inputs = _perturb_norms(model), fn, inputs
        self.f32 = _run(self.model, fn, inputs)
        self.f64 = _run(copy.deepcopy(self.model).double(), fn, [x.double() if x.is_floating_point() else x
                                                                 for x in inputs])
        grads = [v for k, v in self.f64.items() if k != "output" and v is not None]
        self.grad_scale = max(g.abs().max().item() for g in grads)

    def errors(self, got):
        """{name: (error of got, error of the unconverted float32 model)} against float64."""
        assert got.keys() == self.f32.keys()
        out = {}
        for k, ref in self.f64.items():
            if ref is None:
                assert got[k] is None and self.f32[k] is None, k
                continue
            scale = ref.abs().max().item()
            if k != "output":
                scale = max(scale, 1e-4 * self.grad_scale)
            scale = scale or 1.0
            out[k] = ((got[k].double() - ref).abs().max().item() / scale,
                      (self.f32[k].double() - ref).abs().max().item() / scale)
        return out

    def check(self, converted):
        errs = self.errors(_run(converted, self.fn, self.inputs))
        bad = {k: e for k, e in errs.items() if e[0] > max(RATIO * e[1], FLOOR)}
        assert not bad, f"converted model off (error, unconverted model's error): {bad}"

    def converted(self, fuse):
        model = copy.deepcopy(self.model)
        _, report = convert_groupnorm(model, fuse_activation=fuse, report=True)
        return model, report


def _count(model, activation=None):
    return sum(1 for m in model.modules() if isinstance(m, GroupNorm) and m.activation == activation)


def _no_plain_nn_groupnorm_left(model):
    left = [n for n, m in model.named_modules() if type(m) is nn.GroupNorm]
    assert not left, left


# ---------------------------------------------------------------------------------------
# diffusers


@pytest.fixture(scope="module")
def diffusers_vae():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=16)
    decode = Reference(vae, lambda m, z: m.decode(z).sample, [torch.randn(1, 4, 8, 8)])
    encode = Reference(vae, lambda m, x: m.encode(x).latent_dist.parameters, [torch.randn(1, 3, 16, 16)])
    return decode, encode


@pytest.mark.parametrize("fuse", [False, True])
def test_diffusers_autoencoder_kl(diffusers_vae, fuse):
    decode, encode = diffusers_vae
    model, report = decode.converted(fuse)
    decode.check(model)
    encode.check(model)
    _no_plain_nn_groupnorm_left(model)
    # diffusers applies SiLU in forward (self.nonlinearity(self.norm1(x))), never as the next module
    # of an nn.Sequential: fuse_activation finds nothing to fuse in these models.
    assert _count(model) == 24 and _count(model, "silu") == 0
    assert all(r.converted for r in report)


@pytest.fixture(scope="module")
def diffusers_unet():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    t = torch.tensor([10.0, 500.0])
    return Reference(unet, lambda m, x, ctx: m(x, t, encoder_hidden_states=ctx).sample,
                     [torch.randn(2, 4, 8, 8), torch.randn(2, 5, 32)])


@pytest.mark.parametrize("fuse", [False, True])
def test_diffusers_unet2d_condition(diffusers_unet, fuse):
    model, _ = diffusers_unet.converted(fuse)
    diffusers_unet.check(model)
    _no_plain_nn_groupnorm_left(model)
    assert _count(model) == 21  # resnets, transformers' GroupNorm, conv_norm_out


def test_diffusers_minimax_per_frame_group_norm():
    mod = pytest.importorskip("diffusers.models.autoencoders.autoencoder_kl_minimax_h3")
    torch.manual_seed(0)
    norm = mod.MiniMaxH3VideoGroupNorm(4, 16, eps=1e-6)
    ref = Reference(nn.Sequential(nn.Conv3d(3, 16, 1), norm), lambda m, x: m(x), [torch.randn(2, 3, 3, 5, 6)])
    model, report = ref.converted(False)
    ref.check(model)
    assert type(model[1]) is library_classes.PerFrameGroupNorm and report[0].converted
    # per frame: a model that mixed frames (one GroupNorm over the whole clip) is not that
    whole = copy.deepcopy(ref.model)
    whole[1] = GroupNorm.from_module(whole[1])
    with pytest.raises(AssertionError):
        ref.check(whole)


# ---------------------------------------------------------------------------------------
# timm


def _resnetv2(act):
    """A tiny BiT ResNetV2 (timm's resnetv2_50x1_bit config: StdConv2d, fixed stem, GroupNormAct)."""
    pytest.importorskip("timm")
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    torch.manual_seed(0)
    return ResNetV2(layers=[1, 1, 1, 1], channels=(16, 32, 48, 64), stem_chs=16, stem_type="fixed",
                    conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8),
                    act_layer=act, num_classes=10)


@pytest.fixture(scope="module")
def timm_resnetv2():
    return {act: Reference(_resnetv2(act), lambda m, x: m(x), [torch.randn(2, 3, 32, 32)])
            for act in ("silu", "relu")}


@pytest.mark.parametrize("fuse", [False, True])
def test_timm_resnetv2_group_norm_act(timm_resnetv2, fuse):
    # act_layer="silu": every GroupNormAct becomes the fused GroupNorm+SiLU
    ref = timm_resnetv2["silu"]
    model, report = ref.converted(fuse)
    ref.check(model)
    assert _count(model, "silu") == 13 and _count(model) == 0
    assert all(r.converted and r.reason == "known library class" for r in report)
    # the default act_layer (ReLU): not something the op computes, every norm left as is
    ref = timm_resnetv2["relu"]
    model, report = ref.converted(fuse)
    ref.check(model)
    assert _count(model, "silu") == _count(model) == 0
    assert len(report) == 13 and not any(r.converted for r in report)
    assert all("activation ReLU" in r.reason for r in report)


def test_timm_poolformerv2_group_norm1_no_bias():
    pytest.importorskip("timm")
    from timm.models.metaformer import GroupNorm1NoBias, MetaFormer

    torch.manual_seed(0)
    net = MetaFormer(depths=(1, 1), dims=(16, 32), norm_layers=GroupNorm1NoBias, num_classes=10, use_mlp_head=False)
    ref = Reference(net, lambda m, x: m(x), [torch.randn(2, 3, 32, 32)])
    model, report = ref.converted(True)
    ref.check(model)
    norms = [m for m in model.modules() if isinstance(m, GroupNorm)]
    assert len(norms) == 4 and all(m.num_groups == 1 and m.bias is None and m.eps == 1e-6 for m in norms)


def _timm_layers():
    return pytest.importorskip("timm.layers")


@pytest.mark.parametrize("case", ["GroupNorm", "GroupNorm1", "GroupNormAct-identity", "GroupNormAct-silu",
                                  "GroupNorm1Act-silu", "GroupNormAct-no-bias"])
def test_timm_classes_converted(case):
    L = _timm_layers()
    torch.manual_seed(0)
    norm, act = {
        "GroupNorm": (lambda: L.GroupNorm(16, num_groups=4), None),
        "GroupNorm1": (lambda: L.GroupNorm1(16), None),
        "GroupNormAct-identity": (lambda: L.GroupNormAct(16, num_groups=4, apply_act=False), None),
        "GroupNormAct-silu": (lambda: L.GroupNormAct(16, num_groups=4, act_layer=nn.SiLU), "silu"),
        "GroupNorm1Act-silu": (lambda: L.GroupNorm1Act(16, act_layer="silu"), "silu"),
        "GroupNormAct-no-bias": (lambda: L.GroupNormAct(16, group_size=2, act_layer="swish"), "silu"),
    }[case]
    mod = norm()
    if case.endswith("no-bias"):
        mod.bias = None
    ref = Reference(nn.Sequential(nn.Conv2d(3, 16, 3), mod), lambda m, x: m(x), [torch.randn(2, 3, 7, 9)])
    model, report = ref.converted(False)
    ref.check(model)
    assert type(model[1]) is GroupNorm and model[1].activation == act and report[0].converted


@pytest.mark.parametrize("case", ["relu", "gelu", "drop", "fast-norm", "hooked"])
def test_timm_classes_declined(case):
    L = _timm_layers()
    torch.manual_seed(0)
    if case == "relu":
        mod = L.GroupNormAct(16, num_groups=4)  # timm's default act_layer
    elif case == "gelu":
        mod = L.GroupNorm1Act(16, act_layer="gelu")
    elif case == "drop":
        mod = L.GroupNormAct(16, num_groups=4, act_layer="silu", drop_layer=partial(nn.Dropout, 0.5))
    elif case == "fast-norm":
        L.set_fast_norm(True)
        try:
            mod = L.GroupNorm(16, num_groups=4)
        finally:
            L.set_fast_norm(False)
    else:
        mod = L.GroupNormAct(16, num_groups=4, act_layer="silu")
        mod.register_forward_hook(lambda *a: None)
    ref = Reference(nn.Sequential(nn.Conv2d(3, 16, 3), mod), lambda m, x: m(x), [torch.randn(2, 3, 7, 9)])
    model, report = ref.converted(True)
    ref.check(model)
    assert model[1].__class__ is mod.__class__ and not report[0].converted
    assert report[0].reason.startswith("known library class, left as is")


# ---------------------------------------------------------------------------------------
# MONAI


@pytest.fixture(scope="module")
def monai_nets():
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    x = [torch.randn(1, 1, 16, 16, 16)]
    seg = nets.SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1),
                         blocks_up=(1,), norm=("group", {"num_groups": 4}))
    # MONAI's UNet puts norm, dropout and activation in ADN, an nn.Sequential; the dropout
    # (Dropout(p=0.0) by default) sits between them, so even act=nn.SiLU does not fuse
    unet = nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
                     num_res_units=1, norm=("group", {"num_groups": 2}), act=(nn.SiLU, {}))
    return Reference(seg, lambda m, v: m(v), x), Reference(unet, lambda m, v: m(v), x)


@pytest.mark.parametrize("fuse", [False, True])
def test_monai_3d_nets(monai_nets, fuse):
    seg, unet = monai_nets
    model, _ = seg.converted(fuse)
    seg.check(model)
    _no_plain_nn_groupnorm_left(model)
    assert _count(model) == 7
    model, report = unet.converted(fuse)
    unet.check(model)
    _no_plain_nn_groupnorm_left(model)
    assert _count(model) == 6 and _count(model, "silu") == 0


def test_monai_maisi_group_norm_declined():
    mod = pytest.importorskip("monai.apps.generation.maisi.networks.autoencoderkl_maisi")
    norm = mod.MaisiGroupNorm3D(4, 16, print_info=False, save_mem=False)
    model, report = convert_groupnorm(nn.Sequential(norm), report=True)
    assert model[0] is norm and not report[0].converted and "MaisiGroupNorm3D" in report[0].reason


# ---------------------------------------------------------------------------------------
# the checks can fail; the libraries are not imported by groupnorm_cuda


def test_a_planted_converter_bug_is_caught(timm_resnetv2, monkeypatch):
    """A converter that treats GroupNormAct as a plain GroupNorm (dropping its ReLU, or its
    SiLU) changes the model; the checks above must say so."""
    naive = lambda m: GroupNorm.from_module(m)  # noqa: E731
    monkeypatch.setitem(library_classes.KNOWN_CLASSES, "timm.layers.norm_act.GroupNormAct", naive)
    for act in ("relu", "silu"):
        ref = timm_resnetv2[act]
        model, _ = ref.converted(False)
        assert _count(model) == 13
        with pytest.raises(AssertionError, match="converted model off"):
            ref.check(model)


def test_importing_groupnorm_cuda_imports_no_model_library():
    code = ("import sys, groupnorm_cuda; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'timm', 'diffusers', 'monai', 'onnx', 'onnxscript', 'onnxruntime', 'torchvision'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _Residual(nn.Sequential):
    """A Sequential subclass whose forward uses the norm's output twice (adjacent norm and SiLU do
    not compose here)."""

    def forward(self, x):
        h = self[0](x)
        return self[1](h) + h


class _Plain(nn.Sequential):
    """A Sequential subclass that keeps nn.Sequential.forward (like MONAI's ADN)."""


def test_fusion_only_where_sequential_forward_is_nn_sequentials():
    torch.manual_seed(0)
    ref = Reference(nn.Sequential(nn.Conv2d(3, 8, 1), _Residual(nn.GroupNorm(2, 8), nn.SiLU()),
                                  _Plain(nn.GroupNorm(4, 8), nn.SiLU())),
                    lambda m, x: m(x), [torch.randn(2, 3, 5, 5)])
    model, _ = ref.converted(True)
    ref.check(model)
    assert model[1][0].activation is None and type(model[1][1]) is nn.SiLU
    assert model[2][0].activation == "silu" and type(model[2][1]) is nn.Identity
