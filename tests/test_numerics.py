"""Numerical stability, determinism, gradcheck / gradgradcheck."""
import pytest
import torch
import torch.nn.functional as F

import groupnorm_cuda
from groupnorm_cuda.reference import reference, rel_err


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("shape", [(2, 8, 32, 32), (1, 4, 200, 200), (1, 100, 80, 120)],
                         ids=["small", "multi-piece", "wide-rows"])
def test_large_mean_small_std(device, layout, activation, shape):
    """float32 data with mean 1e4 and std 1e-2. Reference: float64 on the same float32 values.
    E[x^2]-E[x]^2 is off by ~2 here; rounding the mean to float32 before centering (PyTorch's
    CPU path) is off by 2.5e-2 in y and 3e-1 in dweight. Required: 1e-5 for everything."""
    x = (torch.randn(shape, dtype=torch.float64) * 1e-2 + 1e4).float()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(device)
    c = shape[1]
    w = (torch.randn(c, dtype=torch.float64) * 0.5 + 1).float().to(device)
    b = torch.randn(c, dtype=torch.float64).float().to(device)
    dy = torch.randn(shape, dtype=torch.float64).float().to(device)
    xx, ww, bb = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
    y = groupnorm_cuda.group_norm(xx, 2, ww, bb, activation=activation)
    y.backward(dy)
    y_ref, (dx_ref, dw_ref, db_ref) = reference(x, 2, w, b, 1e-5, activation, dy)
    for name, o, r in (("y", y, y_ref), ("dx", xx.grad, dx_ref), ("dweight", ww.grad, dw_ref), ("dbias", bb.grad, db_ref)):
        err = rel_err(o, r)
        assert err < 1e-5, f"{name}: relative error {err:.3e}"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", ["outlier-first", "channel-means"])
def test_shift_far_from_the_data(device, layout, case):
    """float32, where the value the kernels shift the data by (a group's first element) lies far
    from most of the group: an outlier of 1e4 at every channel's first position among N(0, 1)
    values, or channels whose means spread over [-100, 100]. A sum of squares around that shift
    cancels: with the channels-last statistics' first block of rows summed that way, rstd was
    off by 4.3e-6 (2.9e-7 with that block's M2 taken around its own mean, as now). Reference:
    float64 on the same float32 values; required: rstd to 1e-6, y to 1e-5."""
    g = torch.Generator().manual_seed(3)
    shape = (2, 320, 64, 64)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if case == "outlier-first":
        x[:, :, 0, 0] = 1e4
    else:
        x += torch.empty(1, shape[1], 1, 1, dtype=torch.float64).uniform_(-100, 100, generator=g)
    x = x.float()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(device)
    y, mean, rstd = torch.ops.groupnorm_cuda.forward(x, None, None, 32, 1e-5, "none")
    xg = x.double().reshape(shape[0], 32, -1)
    rstd_ref = (xg.var(-1, unbiased=False) + 1e-5).rsqrt()
    y_ref = ((xg - xg.mean(-1, keepdim=True)) * rstd_ref[..., None]).reshape(shape)
    assert rel_err(rstd, rstd_ref) < 1e-6, f"rstd: relative error {rel_err(rstd, rstd_ref):.3e}"
    assert rel_err(y, y_ref) < 1e-5, f"y: relative error {rel_err(y, y_ref):.3e}"


def test_mean_is_true_mean(device):
    """The saved statistics are the group mean and 1/sqrt(var + eps) (biased variance)."""
    x = (torch.randn(3, 8, 5, 7, dtype=torch.float64) * 3 + 2).to(device)
    _, mean, rstd = torch.ops.groupnorm_cuda.forward(x, None, None, 4, 1e-5, "none")
    xg = x.view(3, 4, -1)
    assert torch.allclose(mean, xg.mean(-1), rtol=1e-12, atol=1e-12)
    assert torch.allclose(rstd, (xg.var(-1, unbiased=False) + 1e-5).rsqrt(), rtol=1e-12)
    xf = x.float()
    _, mean_f, rstd_f = torch.ops.groupnorm_cuda.forward(xf, None, None, 4, 1e-5, "none")
    assert mean_f.dtype == torch.float32 and rstd_f.dtype == torch.float32
    xh = x.to(torch.bfloat16)
    _, mean_h, _ = torch.ops.groupnorm_cuda.forward(xh, None, None, 4, 1e-5, "none")
    assert mean_h.dtype == torch.float32, "statistics are saved in float32 for half-precision inputs"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", [None, "silu"])
def test_deterministic(device, layout, dtype, activation):
    """Identical bits on repeated runs, and (CPU) whatever the number of threads."""
    shape = (2, 16, 150, 150) if layout == "contiguous" else (1, 16, 150, 150)
    x = torch.randn(shape, dtype=torch.float32).to(dtype).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, device=device, dtype=dtype)
    b = torch.randn(16, device=device, dtype=dtype)
    dy = torch.randn_like(x)

    def run():
        xx, ww, bb = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
        y = groupnorm_cuda.group_norm(xx, 4, ww, bb, activation=activation)
        y.backward(dy)
        return [y.detach(), xx.grad, ww.grad, bb.grad]

    first = run()
    for other in (run(), run()):
        for a, c in zip(first, other):
            assert torch.equal(a, c)
    if device == "cpu":
        n = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            single = run()
        finally:
            torch.set_num_threads(n)
        for a, c in zip(first, single):
            assert torch.equal(a, c), "result depends on the thread count"


@pytest.mark.parametrize(
    "shape,groups",
    [((1, 32, 64, 64), 1), ((2, 64, 32, 32), 2), ((3, 48, 20, 20), 3), ((2, 64, 128, 128), 2)],
    ids=["1unit-D32", "4units-D32", "9units-D16", "4units-M512K"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_thread_count_independent(shape, groups, dtype, activation, layout):
    """CPU: the same bits with 1, 2 and 3 threads. The thread count changes the schedule (one
    thread per unit vs all threads on one unit) and with it which kernels run: with SiLU the
    fused schedule keeps dy' for the dx pass, the split one recomputes it (a last-bit
    difference in r between the two once broke this for D >= the vector width). In
    channels-last a unit is a sample, so 2-sample shapes flip between the schedules too."""
    torch.manual_seed(5)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(shape) * 3 + 5).to(dtype).contiguous(memory_format=fmt)
    dy = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
    w, b = torch.randn(shape[1]), torch.randn(shape[1])
    act = activation or "none"
    ops = torch.ops.groupnorm_cuda
    n = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            y, mean, rstd = ops.forward(x, w, b, groups, 1e-5, act)
            results.append((y, mean, rstd) + tuple(ops.backward(dy, x, mean, rstd, w, b, groups, act, [True] * 3)))
    finally:
        torch.set_num_threads(n)
    for other in results[1:]:
        for name, a, c in zip(["y", "mean", "rstd", "dx", "dweight", "dbias"], results[0], other):
            assert torch.equal(a, c), f"{name} depends on the thread count"


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_gradcheck(device, activation, affine):
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True) if affine in ("both", "weight") else None
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True) if affine in ("both", "bias") else None
    fn = lambda x, w, b: groupnorm_cuda.group_norm(x, 3, w, b, eps=1e-5, activation=activation)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradgradcheck(device, activation, layout):
    """Double backward is supported (composite path under create_graph=True)."""
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: groupnorm_cuda.group_norm(x, 3, w, b, activation=activation)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_double_backward_matches_pytorch(device):
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, device=device, requires_grad=True)
    results = []
    for fn in (groupnorm_cuda.group_norm, F.group_norm):
        y = fn(x, 4, w, None)
        (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
        gg = torch.autograd.grad(gx.pow(2).sum(), (x, w))
        results.append((gx.detach(), *gg))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
