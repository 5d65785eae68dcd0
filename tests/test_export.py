"""Deployment of a converted model: ONNX (PyTorch's dynamo exporter with
groupnorm_cuda.onnx_translation_table(), run in onnxruntime) and AOTInductor (a .pt2 package
compiled on the CPU, loaded and run). Both against the converted model's own eager outputs, which
test_convert.py / test_models.py compare with the unconverted model. (torch.export itself:
test_convert.py.)

Tolerance, float32: the ONNX translation computes the statistics its own way (two passes,
1 / sqrt(var + eps)), so it differs from the op by float32 rounding: a few 1e-7 relative for a
norm, up to ~1e-6 through a few layers (seen: 1.4e-6 max abs on outputs of magnitude ~3). 1e-5
relative to the output's largest value bounds that with room, while a wrong translation (an
activation or affine missing, per-group instead of per-channel scale) is off by 1e-1 or more.
AOTInductor calls the op itself (through the dispatcher), so its output equals eager's to within
the rounding of the convolutions Inductor generates around it.
"""
import os

import pytest
import torch
from torch import nn

import groupnorm_cuda
from groupnorm_cuda import GroupNorm, convert_groupnorm
from groupnorm_cuda.reference import rel_err


class NormZoo(nn.Module):
    """One network with every form of the op's arguments: weight and bias, neither, weight
    alone; activation none and silu; 4-D and 3-D inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.affine_silu = nn.Sequential(nn.GroupNorm(4, 16), nn.SiLU())
        self.plain = nn.GroupNorm(8, 16, affine=False, eps=1e-3)
        self.weight_only = GroupNorm(2, 16, bias=False, activation="silu")
        self.seq_norm = nn.GroupNorm(1, 16)  # on (N, C, L)

    def forward(self, x):
        h = self.weight_only(self.plain(self.affine_silu(self.conv(x))))
        return self.seq_norm(h.flatten(2))


def _zoo():
    torch.manual_seed(0)
    model = NormZoo()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    convert_groupnorm(model, fuse_activation=True)
    assert model.affine_silu[0].activation == "silu"  # the fused form is what gets exported
    return model.eval()


def _ort_run(onnx_program, *inputs, ort_graph_optimizations=True):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    if not ort_graph_optimizations:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(onnx_program.model_proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)}
    return [torch.from_numpy(o) for o in sess.run(None, feeds)]


def _export_onnx(model, args, group_normalization=False, **kw):
    pytest.importorskip("onnxscript")
    if group_normalization:
        kw["opset_version"] = 21
    return torch.onnx.export(model, args, dynamo=True, verbose=False,
                             custom_translation_table=groupnorm_cuda.onnx_translation_table(group_normalization),
                             **kw)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("group_normalization", [False, True], ids=["standard-ops", "GroupNormalization-21"])
def test_onnx_export_runs_in_onnxruntime(group_normalization):
    model = _zoo()
    x = torch.randn(2, 3, 6, 7)
    prog = _export_onnx(model, (x,), group_normalization,
                        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    ops = {n.op_type for n in prog.model_proto.graph.node}
    assert ("GroupNormalization" in ops) == group_normalization and "Sigmoid" in ops
    for n in (2, 5):  # the traced batch and another one
        xn = torch.randn(n, 3, 6, 7)
        with torch.no_grad():
            want = model(xn)
        (got,) = _ort_run(prog, xn)
        assert got.shape == want.shape and rel_err(got, want) < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_onnx_export_half_input_and_5d():
    """float16 input: statistics in float32, y cast back (as the op does), or left in float32
    when the op is asked for it (out_dtype, autocast's output on CUDA); a 5-D input."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = GroupNorm(4, 8, activation="silu", dtype=torch.float16)
            self.b = GroupNorm(2, 8, affine=False)

        def forward(self, x, v):
            wide = torch.ops.groupnorm_cuda.forward(x, self.a.weight, None, 2, 1e-5, "none", torch.float32)[0]
            return self.a(x), self.b(v), wide

    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.a.weight.normal_()
        model.a.bias.normal_()
    x = (torch.randn(2, 8, 5, 5) * 3 + 1).half()
    v = torch.randn(2, 8, 3, 4, 5)
    prog = _export_onnx(model, (x, v))
    got_x, got_v, got_w = _ort_run(prog, x, v)
    with torch.no_grad():
        want_x, want_v, want_w = model(x, v)
    assert got_x.dtype == torch.float16 and rel_err(got_x, want_x) < 1e-3  # 1 ulp of float16 is 4.9e-4 relative
    assert rel_err(got_v, want_v) < 1e-5
    assert got_w.dtype == want_w.dtype == torch.float32 and rel_err(got_w, want_w) < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("name", ["diffusers-vae-decode", "monai-segresnet", "timm-resnetv2-silu"])
def test_onnx_export_of_converted_real_models(name):
    """Real models, converted (and fused where the structure allows), exported and run."""
    from test_models import _perturb_norms, _resnetv2

    ort_graph_optimizations = True
    if name == "diffusers-vae-decode":
        diffusers = pytest.importorskip("diffusers")
        torch.manual_seed(0)
        vae = diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
            latent_channels=4, norm_num_groups=8, sample_size=16)
        model, x = _Decode(vae), torch.randn(1, 4, 8, 8)
    elif name == "monai-segresnet":
        nets = pytest.importorskip("monai.networks.nets")
        torch.manual_seed(0)
        model = nets.SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1),
                               blocks_up=(1,), norm=("group", {"num_groups": 4}))
        x = torch.randn(1, 1, 16, 16, 16)
    else:
        pytest.importorskip("timm")
        model, x = _resnetv2("silu"), torch.randn(2, 3, 32, 32)
        # Its stem is ConstantPad2d(1, 0) + MaxPool2d. ONNX Runtime's graph optimizer (1.31.1) folds
        # that Pad into the MaxPool's pads, which pad with -inf, not 0: with optimizations on, the
        # ONNX model is off by 7% whether the norms are converted or not (pad + pool alone: 100%).
        ort_graph_optimizations = False
    model = _perturb_norms(model)
    convert_groupnorm(model, fuse_activation=True)
    assert not any(type(m) is nn.GroupNorm for m in model.modules())
    prog = _export_onnx(model, (x,))
    (got,) = _ort_run(prog, x, ort_graph_optimizations=ort_graph_optimizations)
    with torch.no_grad():
        want = model(x)
    assert rel_err(got, want) < 1e-5


class _Decode(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


def test_onnx_translation_is_imported_lazily():
    import subprocess
    import sys

    code = ("import sys, groupnorm_cuda; assert 'onnxscript' not in sys.modules; "
            "t = groupnorm_cuda.onnx_translation_table(); assert 'onnxscript' in sys.modules; "
            "print([str(k) for k in t])")
    pytest.importorskip("onnxscript")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "groupnorm_cuda.forward.default" in out.stdout


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_aot_inductor_package_on_cpu(tmp_path):
    """torch.export -> AOTInductor .pt2 (C++ compiled here, ~20-35 s on 2 cores) -> load -> run.
    The generated code calls the op through AOTInductor's proxy executor (by its schema, via the
    dispatcher), so the process that loads the package must have loaded groupnorm_cuda."""
    model = _zoo()
    x = torch.randn(2, 3, 6, 7)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    path = torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(tmp_path, "zoo.pt2"))
    runner = torch._inductor.aoti_load_package(path)
    for n in (2, 5):
        xn = torch.randn(n, 3, 6, 7)
        with torch.no_grad():
            want = model(xn)
            got = runner(xn)
        assert rel_err(got, want) < 1e-6
