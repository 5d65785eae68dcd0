"""Correctness of groupnorm_cuda against F.group_norm in float64 (forward and gradients).

Every case runs on each available device (CPU always, CUDA when present). Tolerance: at most
twice PyTorch's own error at the same precision, with a small per-dtype floor.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import groupnorm_cuda
from groupnorm_cuda.reference import FLOOR, reference, rel_err, torch_same_precision

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# (shape, num_groups): ranks 2..5; G = 1, G = C and in between; spatial size 1; sizes that are
# not multiples of any vector width; channels spanning several CPU pieces; channels-last rows
# of 100 channels (the CPU statistics' 4-, 2- and 1-vector channel tiles and a scalar tail) over
# several pieces and row blocks; channels-last samples of 13 full pieces plus a partial one (the
# CPU forward walks four pieces at a time per thread, with 1, 2 or 3 threads); short NCHW
# channels that are not whole vectors, walked as one run (a vector holds two channels' values),
# in groups of more than one CPU piece (a piece that starts inside a channel).
SHAPES = [
    ((3, 12), 2),
    ((2, 8, 13), 4),
    ((2, 12, 5, 7), 1),
    ((2, 12, 5, 7), 12),
    ((3, 16, 9, 9), 4),
    ((2, 12, 1, 1), 3),
    ((2, 10, 3, 4, 5), 5),
    ((1, 4, 133, 131), 2),
    ((2, 33, 3, 5), 11),
    ((2, 100, 13, 17), 10),
    ((1, 72, 91, 131), 8),
    ((1, 160, 15, 15), 2),
]
LAYOUTS = ["contiguous", "channels_last", "noncontiguous"]
AFFINE = ["both", "none", "weight", "bias"]


def make_input(shape, dtype, layout, device, scale=2.0, offset=0.5, generator=None):
    if layout == "noncontiguous":
        wide = list(shape)
        wide[-1] *= 2
        x = (torch.randn(wide, dtype=torch.float64, generator=generator) * scale + offset).to(dtype).to(device)
        x = x[..., ::2]
        assert not x.is_contiguous() or x.numel() <= 1
        return x
    x = (torch.randn(shape, dtype=torch.float64, generator=generator) * scale + offset).to(dtype).to(device)
    if layout == "channels_last":
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        elif x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        elif x.dim() == 3:
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
    return x


def make_params(c, dtype, affine, device):
    w = (torch.randn(c, dtype=torch.float64) * 0.5 + 1).to(dtype).to(device) if affine in ("both", "weight") else None
    b = (torch.randn(c, dtype=torch.float64) * 0.5).to(dtype).to(device) if affine in ("both", "bias") else None
    return w, b


def run_ours(x, g, w, b, eps, activation, dy):
    xx = x.detach().clone().requires_grad_()
    ww = w.detach().clone().requires_grad_() if w is not None else None
    bb = b.detach().clone().requires_grad_() if b is not None else None
    y = groupnorm_cuda.group_norm(xx, g, ww, bb, eps=eps, activation=activation)
    y.backward(dy)
    return y.detach(), (xx.grad, ww.grad if ww is not None else None, bb.grad if bb is not None else None)


def check_case(x, g, w, b, eps=1e-5, activation=None):
    dy = torch.randn(x.shape, dtype=torch.float64).to(x.dtype).to(x.device)
    y, grads = run_ours(x, g, w, b, eps, activation, dy)
    y_ref, grads_ref = reference(x, g, w, b, eps, activation, dy)
    y_pt, grads_pt = torch_same_precision(x, g, w, b, eps, activation, dy)

    # Semantics: dtype and memory format follow the input.
    assert y.dtype == x.dtype and y.shape == x.shape
    expected_cl = not x.is_contiguous() and x.dim() >= 3 and (
        (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
        or (x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d))
        or (x.dim() == 3 and x.stride() == (x.shape[1] * x.shape[2], 1, x.shape[1]))
    )
    if expected_cl:
        assert y.stride() == x.stride(), "output must keep the input's channels-last strides"
        assert grads[0].stride() == x.stride(), "grad_input must keep the input's channels-last strides"
    else:
        assert y.is_contiguous()

    floor = FLOOR[x.dtype]
    names = ["y", "dx", "dweight", "dbias"]
    outs = [y, *grads]
    refs = [y_ref, *grads_ref]
    pts = [y_pt, *grads_pt]
    for name, o, r, p in zip(names, outs, refs, pts):
        if r is None:
            assert o is None, f"{name} should be None"
            continue
        assert o.dtype == (w.dtype if name == "dweight" else b.dtype if name == "dbias" else x.dtype)
        err, err_pt = rel_err(o, r), rel_err(p, r)
        tol = max(2 * err_pt, floor)
        assert err <= tol, f"{name}: error {err:.3e} > tol {tol:.3e} (PyTorch's own error {err_pt:.3e})"


@pytest.mark.parametrize("shape,g", SHAPES, ids=[f"{'x'.join(map(str, s))}-G{g}" for s, g in SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", AFFINE)
def test_matches_reference(device, shape, g, dtype, layout, affine):
    x = make_input(shape, dtype, layout, device)
    w, b = make_params(shape[1], dtype, affine, device)
    check_case(x, g, w, b)


@pytest.mark.parametrize("shape,g", SHAPES, ids=[f"{'x'.join(map(str, s))}-G{g}" for s, g in SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_silu(device, shape, g, dtype, layout):
    x = make_input(shape, dtype, layout, device)
    w, b = make_params(shape[1], dtype, "both", device)
    check_case(x, g, w, b, activation="silu")


@pytest.mark.parametrize("eps", [1e-6, 1e-5, 1e-3, 0.1, 0.5])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_eps(device, eps, activation):
    x = make_input((2, 8, 6, 5), torch.float32, "contiguous", device, scale=0.05)
    w, b = make_params(8, torch.float32, "both", device)
    check_case(x, 4, w, b, eps=eps, activation=activation)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_mixed_precision_params(device, dtype, layout, activation):
    """float32 weight/bias with a half-precision input (the autocast case): output in x's dtype,
    gradients of the parameters in float32."""
    x = make_input((2, 16, 7, 9), dtype, layout, device)
    w, b = make_params(16, torch.float32, "both", device)
    check_case(x, 4, w, b, activation=activation)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_zero_batch(device, layout):
    x = make_input((0, 8, 4, 4), torch.float32, layout, device).requires_grad_()
    w, b = make_params(8, torch.float32, "both", device)
    w.requires_grad_()
    b.requires_grad_()
    y = groupnorm_cuda.group_norm(x, 4, w, b)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_grad_input_only_and_params_only(device):
    """Partial output_mask: only dx, or only dweight/dbias, must match the full computation."""
    x = make_input((2, 8, 5, 5), torch.float32, "contiguous", device)
    w, b = make_params(8, torch.float32, "both", device)
    dy = torch.randn_like(x)
    y_full, (dx_full, dw_full, db_full) = run_ours(x, 4, w, b, 1e-5, None, dy)
    xx = x.clone().requires_grad_()
    groupnorm_cuda.group_norm(xx, 4, w, b).backward(dy)
    assert torch.equal(xx.grad, dx_full)
    ww, bb = w.clone().requires_grad_(), b.clone().requires_grad_()
    groupnorm_cuda.group_norm(x, 4, ww, bb).backward(dy)
    assert torch.equal(ww.grad, dw_full) and torch.equal(bb.grad, db_full)


def test_no_grad_path_matches_autograd_path(device):
    x = make_input((2, 8, 5, 5), torch.float32, "channels_last", device)
    w, b = make_params(8, torch.float32, "both", device)
    with torch.no_grad():
        y0 = groupnorm_cuda.group_norm(x, 4, w, b, activation="silu")
    y1 = groupnorm_cuda.group_norm(x.clone().requires_grad_(), 4, w, b, activation="silu")
    assert torch.equal(y0, y1.detach())


def test_nan_in_one_group_does_not_leak(device):
    x = make_input((2, 8, 6, 6), torch.float32, "contiguous", device)
    x[0, 0, 2, 3] = float("nan")
    x[1, 5, 0, 0] = float("inf")
    w, b = make_params(8, torch.float32, "both", device)
    y = groupnorm_cuda.group_norm(x, 4, w, b)
    ref = F.group_norm(x.double().cpu(), 4, w.double().cpu(), b.double().cpu())
    bad = torch.zeros(2, 4, dtype=torch.bool)
    bad[0, 0] = True
    bad[1, 2] = True
    for n, g in itertools.product(range(2), range(4)):
        blk = y[n, 2 * g : 2 * g + 2].cpu()
        if bad[n, g]:
            assert not torch.isfinite(blk).all()
        else:
            assert torch.isfinite(blk).all(), f"group ({n}, {g}) corrupted"
            assert rel_err(blk, ref[n, 2 * g : 2 * g + 2]) < 1e-5


@pytest.mark.parametrize("activation", [None, "silu"])
def test_nonfinite_grad_stays_in_its_channel(device, activation):
    # Channels of 25 values: the CPU reductions walk a group's channels as one run of vectors, so
    # a vector holds the end of one channel and the start of the next. A NaN / inf of dy in such
    # a vector must reach its own channel's dweight / dbias only (not as inf * 0 = NaN in the
    # neighbour's); every output must be finite exactly where float64 PyTorch's is, and match it.
    x = make_input((2, 8, 5, 5), torch.float32, "contiguous", device)
    w, b = make_params(8, torch.float32, "both", device)
    dy = torch.randn(x.shape, dtype=torch.float64).to(torch.float32).to(device)
    dy[0, 1, 4, 4] = float("nan")  # the last value of channel 1 (with the first of channel 2)
    dy[0, 5, 0, 0] = float("inf")  # the first value of channel 5 (with the last of channel 4)
    _, grads = run_ours(x, 2, w, b, 1e-5, activation, dy)
    _, grads_ref = reference(x, 2, w, b, 1e-5, activation, dy)
    for name, o, r in zip(["dx", "dweight", "dbias"], grads, grads_ref):
        o, r = o.double().cpu(), r.cpu()
        assert torch.equal(torch.isfinite(o), torch.isfinite(r)), f"{name}: non-finite values leaked"
        fin = torch.isfinite(r)
        assert fin.any() and rel_err(o[fin], r[fin]) < 1e-5, name
