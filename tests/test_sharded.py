"""Split ops (stats / merge_moments / apply), GroupNorm over chunks, and GroupNorm over a tensor
sharded across processes (gloo, CPU, three ranks).

References: the fused single-process op on the whole tensor, and F.group_norm in float64
(groupnorm_cuda.reference). Data with mean 1e4 and std 1 is included: there an exchange of E[x]
and E[x^2] (the usual patch-parallel GroupNorm) loses every digit of the variance in float32.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.library import opcheck

import groupnorm_cuda
from conftest import HAS_CUDA
from groupnorm_cuda.distributed import (ShardedGroupNorm, _sharded_forward, group_norm_chunks, shard_groupnorm,
                                        sharded_group_norm)
from groupnorm_cuda.reference import reference, rel_err

ops = torch.ops.groupnorm_cuda
WORLD = 3

# (shape, num_groups, layout, dim, sizes of the shards along dim: uneven, one empty)
CASES = [
    ((2, 8, 9, 5), 4, "contiguous", 2, [4, 0, 5]),
    ((2, 8, 9, 5), 2, "channels_last", 2, [1, 6, 2]),
    ((2, 12, 5, 7), 3, "channels_last", 3, [0, 3, 4]),
    ((2, 8, 4, 6, 5), 4, "channels_last", 2, [2, 2, 0]),
    ((2, 8, 4, 6, 5), 2, "contiguous", 4, [1, 1, 3]),
    ((3, 16, 11), 4, "nlc", 2, [5, 0, 6]),  # (N, L, C) memory, as tokens
    ((1, 64, 48, 40), 32, "channels_last", 2, [16, 16, 16]),
]


def _layout(x, layout):
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    if layout == "nlc":
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return x.contiguous()


def _data(shape, seed, mean):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) + mean
    C = shape[1]
    return x.float(), torch.randn(C, generator=g), torch.randn(C, generator=g)


def _grad_out(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _shards(x, dim, sizes):
    return list(torch.split(x, sizes, dim))


# ---------------------------------------------------------------------------------------
# the split ops on one process


@pytest.mark.parametrize("shape, G, layout, dim, sizes", CASES)
def test_stats_then_apply_is_the_fused_forward(shape, G, layout, dim, sizes):
    x, w, b = _data(shape, 0, 3.0)
    x = _layout(x, layout)
    for act in ("none", "silu"):
        fused = ops.forward(x, w, b, G, 1e-5, act)
        split = ops.apply(x, ops.stats(x, G), w, b, G, 1e-5, act)
        for f, s in zip(fused, split):  # the same kernels, the same bits
            assert torch.equal(f, s)
        assert split[0].stride() == fused[0].stride()


@pytest.mark.parametrize("mean", [0.0, 1e4])
@pytest.mark.parametrize("shape, G, layout, dim, sizes", CASES)
def test_chunks_match_the_whole_tensor(shape, G, layout, dim, sizes, mean):
    x, w, b = _data(shape, 1, mean)
    x = _layout(x, layout)
    for act in (None, "silu"):
        ys = group_norm_chunks(_shards(x, dim, sizes), G, w, b, 1e-5, act)
        y = torch.cat(ys, dim)
        whole = groupnorm_cuda.group_norm(x, G, w, b, 1e-5, activation=act)
        ref = reference(x, G, w, b, 1e-5, act, None)[0]
        assert rel_err(y, whole) < 1e-6, (act, rel_err(y, whole))
        assert rel_err(y, ref) < 2e-6
        assert [yc.shape for yc in ys] == [c.shape for c in _shards(x, dim, sizes)]


def test_merge_is_chan_in_order_and_skips_empty_parts():
    x, _, _ = _data((2, 8, 12, 3), 2, 5.0)
    parts = _shards(x, 2, [5, 0, 7])
    moments = torch.stack([ops.stats(p, 4) for p in parts])
    assert torch.equal(moments[1], torch.zeros_like(moments[1]))
    merged = ops.merge_moments(moments)
    whole = ops.stats(x, 4)
    xd = x.double().reshape(2, 4, -1)
    assert torch.equal(merged[..., 0], whole[..., 0])  # count
    assert torch.equal(merged[..., 1], whole[..., 1])  # shift: the first non-empty part's = the group's first element
    # part moments are float32 sums of the shifted data (std 1): ~1e-7 of the spread
    torch.testing.assert_close(merged[..., 1] + merged[..., 2], xd.mean(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(merged[..., 3], xd.var(2, unbiased=False) * xd.shape[2], rtol=1e-5, atol=0)
    # an all-empty merge is empty; a leading empty part does not move the shift
    assert torch.equal(ops.merge_moments(moments[1:2]), moments[1])
    lead = ops.merge_moments(moments[[1, 0, 2]])
    assert torch.equal(lead[..., 1], whole[..., 1])


def test_reference_backend_matches_the_cpu_kernels():
    """stats / apply of csrc/split_ops.cpp (what devices without split kernels run) against the
    CPU kernels on the same inputs."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    x, w, b = _data((2, 8, 7, 5), 3, 1e4)
    x = _layout(x, "channels_last")
    m_ref = ops.stats.default.redispatch(keys, x, 4)
    m_cpu = ops.stats(x, 4)
    torch.testing.assert_close(m_ref[..., :2], m_cpu[..., :2], rtol=0, atol=0)
    torch.testing.assert_close(m_ref[..., 2:], m_cpu[..., 2:], rtol=1e-5, atol=1e-6)
    for got, want in zip(ops.apply.default.redispatch(keys, x, m_cpu, w, b, 4, 1e-5, "silu"),
                         ops.apply(x, m_cpu, w, b, 4, 1e-5, "silu")):
        assert rel_err(got, want) < 1e-6
    assert ops.apply.default.redispatch(keys, x, m_cpu, w, b, 4, 1e-5, "silu")[0].stride() == x.stride()


def _split_backward_inputs(layout="channels_last", act="silu"):
    x, w, b = _data((2, 8, 7, 5), 5, 1e4)
    x = _layout(x, layout)
    dy = _layout(_grad_out(x.shape, 6), layout)
    merged = ops.stats(x, 4)
    _, mean, rstd = ops.apply(x, merged, w, b, 4, 1e-5, act)
    residual = ((merged[..., 1] + merged[..., 2]) - mean.double()).float()
    return x, w, b, dy, mean, rstd, residual


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("act", ["none", "silu"])
def test_split_backward_on_the_whole_tensor_is_the_fused_backward(layout, act):
    x, w, b, dy, mean, rstd, residual = _split_backward_inputs(layout, act)
    sums, dwp, dbp = ops.backward_sums(dy, x, mean, rstd, residual, w, b, 4, act)
    dx = ops.backward_dx(dy, x, mean, rstd, residual, w, b, sums, x[0, :2].numel(), 4, act)
    fused = ops.backward(dy, x, mean, rstd, w, b, 4, act, [True, True, True])
    for got, want in zip((dx, dwp, dbp), fused):
        assert rel_err(got, want) < 1e-6
    assert dx.stride() == x.stride()


def test_reference_backend_backward_matches_the_cpu_kernels():
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    x, w, b, dy, mean, rstd, residual = _split_backward_inputs()
    args = (dy, x, mean, rstd, residual, w, b)
    for got, want in zip(ops.backward_sums.default.redispatch(keys, *args, 4, "silu"),
                         ops.backward_sums(*args, 4, "silu")):
        assert rel_err(got, want) < 1e-5
    sums = ops.backward_sums(*args, 4, "silu")[0]
    got = ops.backward_dx.default.redispatch(keys, *args, sums, 70, 4, "silu")
    assert rel_err(got, ops.backward_dx(*args, sums, 70, 4, "silu")) < 1e-5
    assert got.stride() == x.stride()


def test_split_ops_opcheck_and_errors():
    x, w, b = _data((2, 8, 5, 3), 4, 0.0)
    m = ops.stats(x, 4)
    opcheck(ops.stats.default, (x, 4))
    opcheck(ops.stats.default, (x[:, :, :0], 4))
    opcheck(ops.merge_moments.default, (torch.stack([m, m]),))
    opcheck(ops.apply.default, (x, m, w, b, 4, 1e-5, "silu"))
    opcheck(ops.apply.default, (_layout(x, "channels_last"), m, None, None, 4, 1e-5, "none"))
    xb, wb, bb, dy, mean, rstd, residual = _split_backward_inputs()
    sums = ops.backward_sums(dy, xb, mean, rstd, residual, wb, bb, 4, "silu")[0]
    opcheck(ops.backward_sums.default, (dy, xb, mean, rstd, residual, wb, bb, 4, "silu"))
    opcheck(ops.backward_sums.default, (dy, xb, mean, rstd, residual, None, None, 4, "none"))
    opcheck(ops.backward_dx.default, (dy, xb, mean, rstd, residual, wb, bb, sums, 70, 4, "silu"))
    with pytest.raises(RuntimeError, match=r"expected group_sums of shape \[2, 4, 2\]"):
        ops.backward_dx(dy, xb, mean, rstd, residual, wb, bb, sums[..., :1], 70, 4, "silu")
    with pytest.raises(RuntimeError, match="expected a positive count"):
        ops.backward_dx(dy, xb, mean, rstd, residual, wb, bb, sums, 0, 4, "silu")
    with pytest.raises(RuntimeError, match=r"expected moments of shape \[2, 4, 4\]"):
        ops.apply(x, m[:, :2], w, b, 4, 1e-5, "none")
    with pytest.raises(RuntimeError, match="expected moments of dtype Double"):
        ops.apply(x, m.float(), w, b, 4, 1e-5, "none")
    with pytest.raises(RuntimeError, match="divisible by num_groups"):
        ops.stats(x, 3)
    with pytest.raises(RuntimeError, match=r"expected parts of shape \[P, N, G, 4\]"):
        ops.merge_moments(m)
    with pytest.raises(ValueError, match="at least one chunk"):
        group_norm_chunks([], 4, w, b)


def test_every_backend_registers_the_split_ops():
    """The CPU backend, and a CUDA build's CUDA backend, have kernels of their own for every
    split op; the float64 reference (csrc/split_ops.cpp) is only the fallback of other devices."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    keys = ["CPU"] + (["CUDA"] if groupnorm_cuda.built_with_cuda else [])
    for op in ("forward", "backward", "stats", "apply", "backward_sums", "backward_dx"):
        for key in keys:
            assert has(f"groupnorm_cuda::{op}", key), (op, key)
    assert has("groupnorm_cuda::stats", "CompositeExplicitAutograd")


# the split ops' CUDA kernels (skipped without a GPU): shards with an empty one, the rows
# schedule (320 channels in 32 groups, channels-last), mean 1e4, against the CPU kernels, the
# whole tensor on the GPU and the float64 reference
CUDA_CASES = [
    ((2, 64, 12, 10), 8, "contiguous", 2, [5, 0, 7]),
    ((2, 64, 12, 10), 8, "channels_last", 3, [3, 7]),
    ((2, 320, 9, 8), 32, "channels_last", 2, [2, 0, 7]),
    ((2, 16, 11), 4, "nlc", 2, [5, 6]),
]


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
@pytest.mark.parametrize("act", [None, "silu"])
@pytest.mark.parametrize("shape, G, layout, dim, sizes", CUDA_CASES)
def test_cuda_split_ops(shape, G, layout, dim, sizes, act):
    x, w, b = _data(shape, 9, 1e4)
    x = _layout(x, layout)
    dy = _layout(_grad_out(shape, 10), layout)
    xc, wc, bc, dyc = (t.cuda() for t in (x, w, b, dy))
    for part in _shards(xc, dim, sizes):  # moments: count and shift exact, the rest as the CPU's
        got, want = ops.stats(part, G).cpu(), ops.stats(part.cpu(), G)
        assert torch.equal(got[..., :2], want[..., :2])
        torch.testing.assert_close(got[..., 2:], want[..., 2:], rtol=1e-5, atol=1e-5)
    chunks = [c.detach().clone().requires_grad_() for c in _shards(xc, dim, sizes)]
    wg, bg = wc.clone().requires_grad_(), bc.clone().requires_grad_()
    ys = group_norm_chunks(chunks, G, wg, bg, 1e-5, act)
    assert [y.stride() for y in ys] == [c.stride() for c in chunks]
    torch.autograd.backward(ys, list(_shards(dyc, dim, sizes)))
    y_ref, grads_ref = reference(x, G, w, b, 1e-5, act, dy)
    xr, wr, br = xc.clone().requires_grad_(), wc.clone().requires_grad_(), bc.clone().requires_grad_()
    y_whole = groupnorm_cuda.group_norm(xr, G, wr, br, 1e-5, activation=act)
    y_whole.backward(dyc)
    got = (torch.cat(ys, dim), torch.cat([c.grad for c in chunks], dim), wg.grad, bg.grad)
    for name, g, whole, want in zip(("y", "dx", "dw", "db"), got, (y_whole, xr.grad, wr.grad, br.grad),
                                    (y_ref, *grads_ref)):
        assert rel_err(g.cpu(), want) < 2e-6, name
        assert rel_err(g, whole) < 2e-6, name


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
def test_cuda_split_ops_opcheck():
    x, w, b = (t.cuda() for t in _data((2, 8, 5, 3), 4, 0.0))
    m = ops.stats(x, 4)
    opcheck(ops.stats.default, (x, 4))
    opcheck(ops.stats.default, (x[:, :, :0], 4))
    opcheck(ops.apply.default, (x, m, w, b, 4, 1e-5, "silu"))
    opcheck(ops.apply.default, (_layout(x, "channels_last"), m, None, None, 4, 1e-5, "none"))
    opcheck(ops.apply.default, (x[:, :, :0], m, w, b, 4, 1e-5, "none"))  # an empty shard: mean and rstd
    xb, wb, bb, dy, mean, rstd, residual = (t.cuda() for t in _split_backward_inputs())
    sums = ops.backward_sums(dy, xb, mean, rstd, residual, wb, bb, 4, "silu")[0]
    opcheck(ops.backward_sums.default, (dy, xb, mean, rstd, residual, wb, bb, 4, "silu"))
    opcheck(ops.backward_sums.default, (dy, xb, mean, rstd, residual, None, None, 4, "none"))
    opcheck(ops.backward_dx.default, (dy, xb, mean, rstd, residual, wb, bb, sums, 70, 4, "silu"))
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        ops.apply(x, m.cpu(), w, b, 4, 1e-5, "none")


@pytest.mark.parametrize("act", [None, "silu"])
@pytest.mark.parametrize("shape, G, layout, dim, sizes", CASES[:4])
def test_chunks_backward_matches_the_whole_tensor(shape, G, layout, dim, sizes, act):
    x, w, b = _data(shape, 7, 1e4)
    x = _layout(x, layout)
    dy = _layout(_grad_out(shape, 8), layout)
    chunks = [c.detach().clone().requires_grad_() for c in _shards(x, dim, sizes)]
    wc, bc = w.clone().requires_grad_(), b.clone().requires_grad_()
    ys = group_norm_chunks(chunks, G, wc, bc, 1e-5, act)
    torch.autograd.backward(ys, list(_shards(dy, dim, sizes)))
    xr, wr, br = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
    groupnorm_cuda.group_norm(xr, G, wr, br, 1e-5, activation=act).backward(dy)
    _, ref = reference(x, G, w, b, 1e-5, act, dy)
    got = (torch.cat([c.grad for c in chunks], dim), wc.grad, bc.grad)
    for name, g, fused, want in zip(("dx", "dw", "db"), got, (xr.grad, wr.grad, br.grad), ref):
        assert rel_err(g, fused) < 1e-6, name
        assert rel_err(g, want) < 1e-6, name
    # an output that does not reach the loss contributes nothing (its gradient is None)
    chunks = [c.detach().clone().requires_grad_() for c in _shards(x, dim, sizes)]
    ys = group_norm_chunks(chunks, G, w, b, 1e-5, act)
    ys[-1].sum().backward()
    xr = x.clone().requires_grad_()
    y = groupnorm_cuda.group_norm(xr, G, w, b, 1e-5, activation=act)
    _shards(y, dim, sizes)[-1].sum().backward()
    assert rel_err(torch.cat([c.grad for c in chunks], dim), xr.grad) < 1e-6


# ---------------------------------------------------------------------------------------
# sharded across processes (gloo)


def _worker(rank, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    results = {}
    try:
        torch.set_num_threads(1)
        for i, (shape, G, layout, dim, sizes) in enumerate(CASES):
            for mean in (0.0, 1e4):
                x, w, b = _data(shape, 10 + i, mean)
                shard = _layout(_shards(_layout(x, layout), dim, sizes)[rank], layout)
                dy = _layout(_shards(_layout(_grad_out(shape, 20 + i), layout), dim, sizes)[rank], layout)
                for act in ("none", "silu"):
                    y, merged = _sharded_forward(shard, G, w, b, 1e-5, act, None, dim, True)[:2]
                    again, merged2 = _sharded_forward(shard, G, w, b, 1e-5, act, None, dim, False)[:2]
                    xr, wr, br = (t.detach().clone().requires_grad_() for t in (shard, w, b))
                    sharded_group_norm(xr, G, wr, br, 1e-5, act, dim=dim).backward(dy)
                    results[(i, mean, act)] = dict(y=y, merged=merged, same_again=torch.equal(again, y)
                                                   and torch.equal(merged2, merged),
                                                   dx=xr.grad, dw=wr.grad, db=br.grad)
        # the module form, converted in place from nn.GroupNorm
        x, w, b = _data((2, 8, 6, 4), 99, 2.0)
        norm = torch.nn.GroupNorm(4, 8)
        with torch.no_grad():
            norm.weight.copy_(w)
            norm.bias.copy_(b)
        shard_groupnorm(norm, dim=3)
        with torch.no_grad():
            results["module"] = dict(type=type(norm).__name__, y=norm(x[..., [rank] if rank < 2 else [2, 3]]))
        # disagreements: every rank gets the same clear error, nobody hangs
        errors = []
        bad = [((2, 8, 3, 3), 4), ((2, 8, 3, 3), 4), ((2, 12, 3, 3), 4)][rank]
        # a shard on another device than the others (meta on rank 1), then every shard on a device
        # that the process group's backend (gloo: CPU) does not communicate on
        for kwargs in (dict(shape=bad[0], G=bad[1]), dict(shape=(2, 8, 3, 3), G=[4, 4, 2][rank]),
                       dict(shape=(2, 8, 3, 3), G=4, device="meta" if rank == 1 else "cpu"),
                       dict(shape=(2, 8, 3, 3), G=4, device="meta")):
            try:
                with torch.no_grad():
                    shard = torch.randn(kwargs["shape"], device=kwargs.get("device", "cpu"))
                    sharded_group_norm(shard, kwargs["G"], group=None, dim=2)
                errors.append(None)
            except ValueError as e:
                errors.append(str(e))
        results["errors"] = errors
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()
    # Skip the interpreter's finalization: gloo's worker threads can still hold work objects
    # then, and tearing them down aborted a rank now and then (SIGABRT, "terminate called
    # without an active exception"; pytorch/pytorch#179291). The results are on disk already.
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    out = tmp_path_factory.mktemp("sharded")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("i", range(len(CASES)))
def test_sharded_forward_equals_the_single_process_op(sharded_results, i):
    shape, G, layout, dim, sizes = CASES[i]
    for mean in (0.0, 1e4):
        x, w, b = _data(shape, 10 + i, mean)
        x = _layout(x, layout)
        for act in ("none", "silu"):
            res = [r[(i, mean, act)] for r in sharded_results]
            y = torch.cat([r["y"] for r in res], dim)
            whole = ops.forward(x, w, b, G, 1e-5, act)[0]
            ref = reference(x, G, w, b, 1e-5, None if act == "none" else act, None)[0]
            assert rel_err(y, whole) < 1e-6, (mean, act, rel_err(y, whole))
            assert rel_err(y, ref) < 2e-6, (mean, act, rel_err(y, ref))
            for r, part in zip(res, _shards(x, dim, sizes)):
                part = _layout(part, layout)
                assert r["y"].shape == part.shape
                assert r["y"].stride() == part.stride() or part.numel() == 0, "output not in the shard's layout"
                assert r["dx"].shape == part.shape
                assert r["dx"].stride() == part.stride() or part.numel() == 0, "dx not in the shard's layout"
                assert r["same_again"], "not the same bits from run to run"
                assert torch.equal(r["merged"], res[0]["merged"]), "ranks merged different statistics"
                assert torch.equal(r["dw"], res[0]["dw"]) and torch.equal(r["db"], res[0]["db"]), \
                    "ranks computed different parameter gradients"
            # backward: against the fused op's backward on the whole tensor, and float64
            dy = _layout(_grad_out(shape, 20 + i), layout)
            ref_act = None if act == "none" else act
            xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
            groupnorm_cuda.group_norm(xr, G, wr, br, 1e-5, activation=ref_act).backward(dy)
            _, ref_grads = reference(x, G, w, b, 1e-5, ref_act, dy)
            got = (torch.cat([r["dx"] for r in res], dim), res[0]["dw"], res[0]["db"])
            for name, g, fused, want in zip(("dx", "dw", "db"), got, (xr.grad, wr.grad, br.grad), ref_grads):
                assert rel_err(g, fused) < 1e-6, (name, mean, act, rel_err(g, fused))
                assert rel_err(g, want) < 1e-6, (name, mean, act, rel_err(g, want))


def test_sharded_module_and_errors(sharded_results):
    x, w, b = _data((2, 8, 6, 4), 99, 2.0)
    y = torch.cat([r["module"]["y"] for r in sharded_results], 3)
    assert all(r["module"]["type"] == "ShardedGroupNorm" for r in sharded_results)
    assert rel_err(y, reference(x, 4, w, b, 1e-5, None, None)[0]) < 2e-6
    for r in sharded_results:
        first, second, device, backend = r["errors"]
        assert first is not None and "disagree on the input's shape[1]" in first and "rank 2: 12" in first
        assert second is not None and "disagree on the input's num_groups" in second
        assert device is not None and "disagree on the input's device type" in device and "rank 1: 3" in device
        assert backend is not None and "shards are on meta" in backend and "(gloo) communicates on cpu" in backend
        assert r["errors"] == sharded_results[0]["errors"]


def test_torchrun_example_matches_the_whole_map():
    """The README's patch-parallel example, as a user runs it (torchrun, 2 CPU ranks, gloo)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port()), str(root / "examples" / "sharded_groupnorm.py")]
    # The package from this checkout, also where it is built in place rather than installed.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(torchrun, capture_output=True, text=True, timeout=300, cwd=root, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    errs = {m.group(1): float(m.group(2)) for m in re.finditer(r"max \|(\w+) - \w+\| / max \|\w+\|\s*=\s*(\S+)",
                                                                 out.stdout)}
    assert set(errs) == {"y", "dx", "dgamma"}, out.stdout
    # float32 on both sides; dgamma sums 2 x 9216 products per channel (seen: 9e-7, 1.5e-6, 7.5e-6)
    assert errs["y"] < 1e-5 and errs["dx"] < 1e-5 and errs["dgamma"] < 5e-5, errs


def test_chunks_benchmark_runs_and_is_accurate(tmp_path):
    """benchmarks/bench_sharded.py --chunks (what tools/gpu_check.sh runs on CUDA), on CPU: the
    table's rows are written and the split ops' outputs match float64 on mean-1e4 data too."""
    import importlib.util
    import json

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "bench_sharded.py")
    spec = importlib.util.spec_from_file_location("bench_sharded_for_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "chunks.json"
    assert bench.main(["--chunks", "--quick", "--repeats", "1", "--world", "3", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["device"] == "cpu" and rep["chunks"] == 3 and len(rep["rows"]) == len(bench.QUICK)
    for row in rep["rows"]:
        assert set(row["median_ms"]) == {"whole", "chunks"} and all(v > 0 for v in row["median_ms"].values())
        assert row["errors"]["mean0"] < 1e-6 and row["errors"]["mean10000"] < 1e-6, row
