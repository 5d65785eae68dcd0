"""Where the time of a large CPU GroupNorm goes: its memory floors, forward and backward.

The main benchmark checks the forward of tensors of 32 MiB and more against x.clone() (NCHW)
or clone + read (channels-last), and the forward+backward against clone + add(x, dy). This
script times, for the --quick variants of 32 MiB and more, the pieces that bound them, on the
same ring of inputs (larger than 2x the last-level cache) and interleaved call by call (medians).

Forward:

  clone          x.clone(): a fresh output (page faults) + read x + write
  copy_          y.copy_(x) into a preallocated y: read + write, no page faults
  fresh fill     torch.empty_like(x).fill_(1): page faults + write, no read
  read           a read-only pass over x's bytes (float32 sum of its storage)
  groupnorm_cuda / nn.GroupNorm   the forward, activation none

A GroupNorm forward needs a group's statistics before its first output. When a group does not
stay in cache between the two (channels-last: a group spans a whole sample), x is read twice,
and "clone + read" is the floor of any implementation, ours and ATen's alike.

Forward + backward (torch.autograd.grad of x, weight, bias):

  clone + add    x.clone() (the forward: read x, write y) then torch.add(x, dy) (the backward:
                 read x and dy, write dx): 5 streams of the tensor's size, the floor when a
                 group stays in cache between the backward's reductions and its dx pass.

    python benchmarks/floor_cpu.py [--repeats 15] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gnbench.cases import QUICK_VARIANTS, all_cases  # noqa: E402
from gnbench.common import TORCH_DTYPES, MiB, memory_format_for  # noqa: E402
from gnbench.floors import read_pass  # noqa: E402
from gnbench.machine import cpu_description, cpu_llc_bytes  # noqa: E402
from gnbench.timing import n_rotating_buffers  # noqa: E402

import groupnorm_cuda  # noqa: E402


def _ring(case, dname: str, layout: str, seed: int, with_dy: bool):
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.contiguous_format if layout == "nchw" else memory_format_for(len(case.shape))
    base = torch.randn(case.shape, generator=gen).to(TORCH_DTYPES[dname]).contiguous(memory_format=fmt)
    nbytes = base.numel() * base.element_size()
    nbuf = n_rotating_buffers(nbytes * (2 if with_dy else 1), cpu_llc_bytes(), 1024 * MiB)
    bufs = [(base.clone().requires_grad_(with_dy), torch.randn_like(base) if with_dy else None)
            for _ in range(nbuf)]
    C = case.shape[1]
    w = torch.randn(C, generator=gen).requires_grad_(with_dy)
    b = torch.randn(C, generator=gen).requires_grad_(with_dy)
    return bufs, nbytes, w, b


def _medians(runs: dict, bufs, repeats: int) -> dict:
    """Median ms of each runner(x, dy), interleaved call by call over the ring `bufs`."""
    times = {name: [] for name in runs}
    for name, fn in runs.items():  # warm-up (allocator, first-touch)
        for i in range(3):
            fn(*bufs[i % len(bufs)])
    i = 0
    for _ in range(repeats):
        for name, fn in runs.items():
            x, dy = bufs[i % len(bufs)]
            i += 1
            t0 = time.perf_counter()
            out = fn(x, dy)
            times[name].append(time.perf_counter() - t0)
            del out
    return {name: statistics.median(v) * 1e3 for name, v in times.items()}


def forward_table(variants, repeats: int) -> None:
    print("## Forward\n\nfloor = clone (NCHW), clone + read (channels-last: x read twice).\n")
    print("| variant | MiB | clone | copy_ (no faults) | fresh fill | read | groupnorm_cuda | nn.GroupNorm "
          "| ours/clone | ours/(clone+read) | eager/(clone+read) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, (case, dname, layout) in enumerate(variants):
        bufs, nbytes, w, b = _ring(case, dname, layout, k, with_dy=False)
        G, eps = case.num_groups, case.eps
        pre = torch.empty_like(bufs[0][0])
        runs = {
            "clone": lambda x, dy: x.clone(),
            "copy_": lambda x, dy: pre.copy_(x),
            "fresh fill": lambda x, dy: torch.empty_like(x).fill_(1.0),
            "read": lambda x, dy: read_pass(x),
            "groupnorm_cuda": lambda x, dy: groupnorm_cuda.group_norm(x, G, w, b, eps),
            "nn.GroupNorm": lambda x, dy: F.group_norm(x, G, w, b, eps),
        }
        with torch.no_grad():
            med = _medians(runs, bufs, repeats)
        floor = med["clone"] + med["read"]
        print(f"| {case.name} {dname} {layout} | {nbytes / MiB:.0f} | {med['clone']:.2f} | {med['copy_']:.2f} "
              f"| {med['fresh fill']:.2f} | {med['read']:.2f} | {med['groupnorm_cuda']:.2f} "
              f"| {med['nn.GroupNorm']:.2f} | {med['groupnorm_cuda'] / med['clone']:.2f}x "
              f"| {med['groupnorm_cuda'] / floor:.2f}x | {med['nn.GroupNorm'] / floor:.2f}x |", flush=True)
        del bufs, pre


def backward_table(variants, repeats: int) -> None:
    print("\n## Forward + backward\n\nfloor = clone (read x, write y) + add(x, dy) (read x and dy, "
          "write dx).\n")
    print("| variant | MiB | clone | add(x, dy) | groupnorm_cuda | nn.GroupNorm | ours/floor | eager/floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, (case, dname, layout) in enumerate(variants):
        bufs, nbytes, w, b = _ring(case, dname, layout, k, with_dy=True)
        G, eps = case.num_groups, case.eps
        runs = {
            "clone": lambda x, dy: x.detach().clone(),
            "add": lambda x, dy: torch.add(x.detach(), dy),
            "groupnorm_cuda": lambda x, dy: torch.autograd.grad(
                groupnorm_cuda.group_norm(x, G, w, b, eps), (x, w, b), dy),
            "nn.GroupNorm": lambda x, dy: torch.autograd.grad(F.group_norm(x, G, w, b, eps), (x, w, b), dy),
        }
        med = _medians(runs, bufs, repeats)
        floor = med["clone"] + med["add"]
        print(f"| {case.name} {dname} {layout} | {nbytes / MiB:.0f} | {med['clone']:.2f} | {med['add']:.2f} "
              f"| {med['groupnorm_cuda']:.2f} | {med['nn.GroupNorm']:.2f} | {med['groupnorm_cuda'] / floor:.2f}x "
              f"| {med['nn.GroupNorm'] / floor:.2f}x |", flush=True)
        del bufs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--min-mb", type=float, default=32.0, help="only variants of at least this many MiB")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = {c.name: c for c in all_cases()}

    def pick(want_pass):
        return [(cases[n], d, lay) for n, d, lay, pass_, act in QUICK_VARIANTS
                if pass_ == want_pass and act is None
                and cases[n].numel * TORCH_DTYPES[d].itemsize >= args.min_mb * MiB]
    print(f"# CPU memory floors ({cpu_description()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__})\n")
    print(f"Medians of {args.repeats} interleaved calls, ms; variants of the --quick subset of "
          f">= {args.min_mb:g} MiB.\n")
    forward_table(pick("fwd"), args.repeats)
    backward_table(pick("fwd+bwd"), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
