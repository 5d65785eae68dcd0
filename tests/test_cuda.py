"""CUDA-only cases (skipped without a GPU): large groups on the split schedule, half precision
channels_last, CUDA-graph capture and replay, and a > 2^31-element tensor (marked slow)."""
import pytest
import torch
import torch.nn.functional as F

import groupnorm_cuda
from conftest import HAS_CUDA
from groupnorm_cuda.reference import reference, rel_err
from test_group_norm import check_case, make_input, make_params

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")


def _schedule(shape, g, dtype, memory_format):
    plan = groupnorm_cuda.cuda_launch_plan(shape, g, dtype, memory_format, torch.cuda.get_device_properties(0).multi_processor_count)
    return [launch["kernel"] for launch in plan["forward"]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_split_schedule_large_groups(dtype, layout, activation):
    shape, g = (1, 64, 384, 320), 8  # groups of 8 x 122880 elements: more than a cluster holds
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert "gn_fwd_stats" in _schedule(shape, g, dtype, fmt), "expected the split schedule"
    x = make_input(shape, dtype, layout, "cuda")
    w, b = make_params(shape[1], dtype, "both", "cuda")
    check_case(x, g, w, b, activation=activation)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_cluster_schedule(dtype, layout, activation):
    if torch.cuda.get_device_capability(0) < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    shape, g = (1, 64, 192, 160), 8  # groups of 8 x 30720 elements: a group per cluster of CTAs
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert _schedule(shape, g, dtype, fmt) == ["gn_fwd_cluster"], "expected the cluster schedule"
    x = make_input(shape, dtype, layout, "cuda")
    w, b = make_params(shape[1], dtype, "both", "cuda")
    check_case(x, g, w, b, activation=activation)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_channels_last_mixed_params(dtype):
    x = make_input((2, 40, 17, 19), dtype, "channels_last", "cuda")
    w, b = make_params(40, torch.float32, "both", "cuda")
    check_case(x, 8, w, b, activation="silu")


def test_cuda_graph_capture_and_replay():
    x = torch.randn(2, 32, 24, 24, device="cuda", requires_grad=True)
    w = torch.randn(32, device="cuda", requires_grad=True)
    b = torch.randn(32, device="cuda", requires_grad=True)
    dy = torch.randn(2, 32, 24, 24, device="cuda")

    def step():
        y = groupnorm_cuda.group_norm(x, 8, w, b, activation="silu")
        return (y,) + torch.autograd.grad(y, (x, w, b), dy)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            step()  # warm-up on a side stream, as required before capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step()
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
        dy.copy_(torch.randn_like(dy))
    graph.replay()
    torch.cuda.synchronize()
    eager = step()
    for got, want in zip(static_out, eager):
        assert torch.equal(got, want), "graph replay differs from eager (kernels must be deterministic)"


@pytest.mark.slow
def test_more_than_2_pow_31_elements():
    """64-bit offsets: 2^31 + 2^20 bf16 elements (about 4.3 GB per tensor)."""
    free, _ = torch.cuda.mem_get_info()
    if free < 16 * 2**30:
        pytest.skip("needs about 16 GiB of free GPU memory")
    n_sp = (2**31 + 2**20) // 64
    x = torch.randn(1, 64, n_sp, device="cuda", dtype=torch.bfloat16)
    y = groupnorm_cuda.group_norm(x, 32)
    # Check the groups at both ends, where 32-bit offsets would wrap.
    for g in (0, 31):
        xs = x[:, 2 * g : 2 * g + 2].double()
        ref = F.group_norm(xs, 1)
        assert rel_err(y[:, 2 * g : 2 * g + 2], ref) < 2e-2
    del y
    x.requires_grad_()
    y = groupnorm_cuda.group_norm(x, 32)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    # d/dx of sum(groupnorm(x)) is ~0 everywhere; a wrapped offset leaves garbage or NaN.
    assert torch.isfinite(dx).all()
    assert dx.float().abs().max().item() < 1e-1
