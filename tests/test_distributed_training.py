"""A converted model trains under DistributedDataParallel and FSDP2 (fully_shard) with the
gradients that one process computes on the whole batch (gloo, CPU, two processes)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from groupnorm_cuda import GroupNorm, convert_groupnorm

WORLD = 2


def _model(convert=True):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(), nn.Conv2d(16, 8, 1),
                      nn.GroupNorm(2, 8))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return convert_groupnorm(m, fuse_activation=True) if convert else m


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 6, 6, generator=g), torch.randn(4, 8, 6, 6, generator=g)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _worker(rank, port, mode, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model = _model()
        x, proj = _batch()
        half = x.shape[0] // WORLD
        xs, ps = x[rank * half:(rank + 1) * half], proj[rank * half:(rank + 1) * half]
        if mode == "ddp":
            wrapped = nn.parallel.DistributedDataParallel(model)
            (wrapped(xs) * ps).sum().backward()
            grads = _grads(model)
        else:
            from torch.distributed.fsdp import fully_shard

            for layer in model:
                if isinstance(layer, GroupNorm):
                    fully_shard(layer)
            fully_shard(model)
            (model(xs) * ps).sum().backward()
            grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
        # DDP / FSDP average over the ranks: times WORLD = the gradient of the summed loss.
        torch.save({n: g * WORLD for n, g in grads.items()}, os.path.join(out_dir, f"grads{rank}.pt"))
    finally:
        dist.destroy_process_group()
    # Skip the interpreter's finalization: gloo's worker threads can still hold work objects
    # then, and tearing them down aborted a rank now and then (SIGABRT, "terminate called
    # without an active exception"; pytorch/pytorch#179291). The results are on disk already.
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_converted_model_trains_distributed(tmp_path, mode):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    mp.spawn(_worker, args=(_free_port(), mode, str(tmp_path)), nprocs=WORLD, join=True)
    model = _model()
    x, proj = _batch()
    (model(x) * proj).sum().backward()
    want = _grads(model)
    reference = _model(convert=False)  # the same model with nn.GroupNorm: an independent check
    (reference(x) * proj).sum().backward()
    for name, g in _grads(reference).items():
        torch.testing.assert_close(want[name], g, rtol=1e-4, atol=1e-4, msg=f"single process {name}")
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"grads{rank}.pt")
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4, msg=f"{mode} rank {rank} {name}")
