#!/usr/bin/env python
"""Sharded GroupNorm (groupnorm_cuda.distributed) on CPU processes over gloo: cost and accuracy.

For each shape, WORLD ranks (default 2, one thread each) hold equal shards of x along H. Timed per
call (medians of interleaved repeats, barrier before each call, the slowest rank's time):

  sharded          sharded_group_norm forward+backward (one all-gather each way)
  naive            the usual patch-parallel GroupNorm: all-reduce of sum(x) and sum(x^2) per group,
                   var = E[x^2] - E[x]^2, normalization and backward by autograd through
                   torch.distributed.nn's differentiable all_reduce (DistriFusion / xDiT style)
  local            the fused op on this rank's shard alone (no communication: the floor)
and, in the parent process, the fused op on the whole tensor with WORLD threads (unsharded).

Accuracy: the max error of y against float64 F.group_norm on the whole tensor, for data of mean
0 and of mean 1e4 (std 1). Bytes: what each rank sends per call (the all-gathers' payloads).

    python benchmarks/bench_sharded.py [--world 2] [--repeats 15] [--quick]

--chunks: one process on --device (cpu or cuda), no communication: the split ops over WORLD
chunks along H (group_norm_chunks: every chunk's stats, the merge, every chunk's apply; the
backward's sums and dx per chunk) against the fused op on the whole tensor, forward+backward,
with the same accuracy check. On a GPU this is the split kernels' own cost (tools/gpu_check.sh
runs it); the collectives of the sharded form come on top.

    python benchmarks/bench_sharded.py --chunks [--device cuda] [--world 2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gnbench.machine import cpu_description, device_info  # noqa: E402
from gnbench.timing import measure  # noqa: E402

import groupnorm_cuda  # noqa: E402
from groupnorm_cuda.distributed import group_norm_chunks, sharded_group_norm  # noqa: E402
from groupnorm_cuda.reference import rel_err  # noqa: E402

SHAPES = [((1, 128, 256, 256), 32), ((1, 256, 128, 128), 32), ((2, 320, 64, 64), 32)]
QUICK = [((1, 128, 128, 128), 32), ((2, 320, 32, 32), 32)]


def naive_group_norm(x, G, w, b, eps, group):
    """The E[x] / E[x^2] all-reduce form, differentiable through torch.distributed.nn."""
    from torch.distributed.nn.functional import all_reduce  # differentiable (deprecated name since 2.13)

    warnings.filterwarnings("ignore", message=".*all_reduce is deprecated")

    N, C = x.shape[:2]
    xg = x.reshape(N, G, -1)
    local = torch.stack([xg.sum(2), (xg * xg).sum(2), torch.full((N, G), float(xg.shape[2]))], -1)
    tot = all_reduce(local, group=group)
    mean = tot[..., 0] / tot[..., 2]
    var = tot[..., 1] / tot[..., 2] - mean * mean
    y = (xg - mean.unsqueeze(2)) * torch.rsqrt(var.clamp_min(0) + eps).unsqueeze(2)
    return y.reshape(x.shape) * w.reshape(1, C, *([1] * (x.dim() - 2))) + b.reshape(1, C, *([1] * (x.dim() - 2)))


def _data(shape, mean, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) + mean).float()
    return x, torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g), torch.randn(shape, generator=g)


def _timed(fn, repeats, group):
    times = []
    for _ in range(repeats):
        dist.barrier(group)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _worker(rank, world, port, shapes, repeats, out_path):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    rows = []
    try:
        for shape, G in shapes:
            row = dict(shape=list(shape), num_groups=G)
            for mean in (0.0, 1e4):
                x, w, b, dy = _data(shape, mean)
                xs, dys = x.chunk(world, 2)[rank].contiguous(), dy.chunk(world, 2)[rank].contiguous()
                with torch.no_grad():
                    ys = sharded_group_norm(xs, G, w, b, 1e-5)
                    yn = naive_group_norm(xs, G, w, b, 1e-5, None)
                row[f"y_sharded_mean{mean:g}"] = ys
                row[f"y_naive_mean{mean:g}"] = yn
            x, w, b, dy = _data(shape, 0.0)
            xs = x.chunk(world, 2)[rank].contiguous().requires_grad_()
            dys = dy.chunk(world, 2)[rank].contiguous()
            wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
            runs = {
                "sharded": lambda: torch.autograd.grad(sharded_group_norm(xs, G, wr, br, 1e-5), (xs, wr, br), dys),
                "naive": lambda: torch.autograd.grad(naive_group_norm(xs, G, wr, br, 1e-5, None), (xs, wr, br), dys),
                "local": lambda: torch.autograd.grad(groupnorm_cuda.group_norm(xs, G, wr, br, 1e-5), (xs, wr, br),
                                                     dys),
            }
            samples = {k: [] for k in runs}
            for k, fn in runs.items():  # warm-up
                _timed(fn, 2, None)
            for _ in range(repeats):  # interleaved
                for k, fn in runs.items():
                    samples[k] += _timed(fn, 1, None)
            row["times"] = samples
            row["bytes_forward"] = (shape[0] * G * 4 * 8, 16 * 8)  # moments, header
            row["bytes_backward"] = (2 * shape[0] * G + 2 * shape[1]) * 8
            row["bytes_naive_forward"] = shape[0] * G * 3 * 4
            rows.append(row)
    finally:
        torch.save(rows, f"{out_path}.{rank}")
        dist.destroy_process_group()
    # Skip the interpreter's finalization: gloo's worker threads can still hold work objects
    # then, and tearing them down aborted a rank now and then (SIGABRT, "terminate called
    # without an active exception"; pytorch/pytorch#179291). The results are on disk already.
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_chunks(args, shapes) -> int:
    """--chunks: the split ops over chunks on one device against the fused op on the whole tensor."""
    device = torch.device(args.device)
    desc = device_info(device)["dev_name"]
    print(f"# Split ops over {args.world} chunks on one {device.type} device ({desc}; torch {torch.__version__})\n")
    print(f"group_norm_chunks over {args.world} equal chunks along H (the split ops, no communication) against "
          f"the fused op on the whole tensor; medians of {args.repeats} interleaved calls, ms, fp32, "
          "forward+backward (dx, dweight, dbias); error of y against float64 on the whole tensor.\n")
    print("| shape | whole (fused) | chunks (split ops) | chunks / whole | err mean 0 | err mean 1e4 |")
    print("|---|---:|---:|---:|---:|---:|")
    out = []
    for shape, G in shapes:
        errs = {}
        for mean in (0.0, 1e4):
            x, w, b, _ = _data(shape, mean)
            ref = F.group_norm(x.double(), G, w.double(), b.double(), 1e-5)
            with torch.no_grad():
                ys = group_norm_chunks(list(x.to(device).chunk(args.world, 2)), G, w.to(device), b.to(device), 1e-5)
            errs[mean] = rel_err(torch.cat(ys, 2).cpu(), ref)
        x, w, b, dy = (t.to(device) for t in _data(shape, 0.0))
        xr, wr, br = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
        chunks = [c.detach().clone().requires_grad_() for c in x.chunk(args.world, 2)]
        dys = list(dy.chunk(args.world, 2))
        runs = {  # the shared interleaved timing (gnbench.timing); the runners keep their own tensors
            "whole": lambda _x, _dy: torch.autograd.grad(groupnorm_cuda.group_norm(xr, G, wr, br, 1e-5), (xr, wr, br),
                                                         dy),
            "chunks": lambda _x, _dy: torch.autograd.grad(group_norm_chunks(chunks, G, wr, br, 1e-5),
                                                          (*chunks, wr, br), dys),
        }
        secs, _spread, _n = measure(runs, [(x, dy)], device, "fwd+bwd", budget_s=1.0, repeats=args.repeats,
                                    min_rep=args.repeats, max_rep=args.repeats)
        med = {k: v * 1e3 for k, v in secs.items()}
        print(f"| {'x'.join(map(str, shape))} | {med['whole']:.3f} | {med['chunks']:.3f} | "
              f"{med['chunks'] / med['whole']:.2f}x | {errs[0.0]:.1e} | {errs[1e4]:.1e} |", flush=True)
        out.append(dict(shape=shape, num_groups=G, median_ms=med, errors={f"mean{m:g}": e for m, e in errs.items()}))
    with open(args.json, "w") as f:
        json.dump(dict(machine=desc, device=device.type, torch=torch.__version__, chunks=args.world, rows=out), f,
                  indent=1)
    print(f"\nwrote {args.json}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=int, default=2, help="ranks (or, with --chunks, chunks)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--chunks", action="store_true", help="the split ops over chunks on one device, no processes")
    p.add_argument("--device", default="cpu", help="with --chunks: cpu or cuda")
    p.add_argument("--json", default=None, help="default: benchmarks/out/sharded_cpu.json (--chunks: chunks_DEVICE.json)")
    args = p.parse_args(argv)
    shapes = QUICK if args.quick else SHAPES
    if args.json is None:
        name = f"chunks_{torch.device(args.device).type}.json" if args.chunks else "sharded_cpu.json"
        args.json = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", name)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    if args.chunks:
        return run_chunks(args, shapes)
    if args.device != "cpu":
        p.error("the multi-process benchmark runs on CPU over gloo; use --chunks for --device cuda")
    tmp = args.json + ".part"
    print(f"# Sharded GroupNorm on CPU over gloo ({cpu_description()}; torch {torch.__version__})\n")
    print(f"{args.world} ranks x 1 thread, shards along H; unsharded = the fused op on the whole tensor with "
          f"{args.world} threads in one process. Medians of {args.repeats} interleaved calls (the slowest "
          f"rank's), ms, fp32, G = 32, forward+backward (dx, dweight, dbias).\n", flush=True)
    mp.spawn(_worker, args=(args.world, _free_port(), shapes, args.repeats, tmp), nprocs=args.world, join=True)
    ranks = [torch.load(f"{tmp}.{r}") for r in range(args.world)]
    torch.set_num_threads(args.world)
    print("| shape | unsharded | sharded | naive E[x^2] | local shard only | sharded / unsharded | bytes sent "
          "per rank fwd + bwd | err mean 0: sharded / naive | err mean 1e4: sharded / naive |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    out = []
    for i, (shape, G) in enumerate(shapes):
        rows = [r[i] for r in ranks]
        med = {k: statistics.median(max(r["times"][k][j] for r in rows) for j in range(args.repeats)) * 1e3
               for k in rows[0]["times"]}
        x, w, b, dy = _data(shape, 0.0)
        xr, wr, br = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
        whole = []
        for _ in range(args.repeats + 2):
            t0 = time.perf_counter()
            torch.autograd.grad(groupnorm_cuda.group_norm(xr, G, wr, br, 1e-5), (xr, wr, br), dy)
            whole.append(time.perf_counter() - t0)
        med["unsharded"] = statistics.median(whole[2:]) * 1e3
        errs = {}
        for mean in (0.0, 1e4):
            x, w, b, _ = _data(shape, mean)
            ref = F.group_norm(x.double(), G, w.double(), b.double(), 1e-5)
            for kind in ("sharded", "naive"):
                y = torch.cat([r[f"y_{kind}_mean{mean:g}"] for r in rows], 2)
                errs[(kind, mean)] = rel_err(y, ref)
        sent = sum(rows[0]["bytes_forward"]) + rows[0]["bytes_backward"]
        print(f"| {'x'.join(map(str, shape))} | {med['unsharded']:.2f} | {med['sharded']:.2f} | {med['naive']:.2f} "
              f"| {med['local']:.2f} | {med['sharded'] / med['unsharded']:.2f}x | {sent} "
              f"| {errs[('sharded', 0.0)]:.1e} / {errs[('naive', 0.0)]:.1e} "
              f"| {errs[('sharded', 1e4)]:.1e} / {errs[('naive', 1e4)]:.1e} |", flush=True)
        out.append(dict(shape=shape, num_groups=G, median_ms=med, bytes_per_rank=sent,
                        errors={f"{k}_mean{m:g}": v for (k, m), v in errs.items()}))
    with open(args.json, "w") as f:
        json.dump(dict(machine=cpu_description(), torch=torch.__version__, world=args.world, rows=out), f, indent=1)
    for r in range(args.world):
        os.remove(f"{tmp}.{r}")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
