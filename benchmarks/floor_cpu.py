"""Where the time of a large CPU forward goes: the floor of a two-pass GroupNorm.

The main benchmark checks "forward within 1.3x of x.clone()" on tensors of 32 MiB and more.
This script times, for those --quick variants, the pieces that bound such a forward, on the
same ring of inputs and interleaved call by call (medians):

  clone          x.clone(): a fresh output (page faults) + read x + write
  copy_          y.copy_(x) into a preallocated y: read + write, no page faults
  fresh fill     torch.empty_like(x).fill_(1): page faults + write, no read
  read           a read-only pass over x's bytes (float32 sum of its storage)
  groupnorm_cuda / nn.GroupNorm   the forward, activation none

A GroupNorm forward needs a group's statistics before its first output. When a group does not
stay in cache between the two (channels-last: a group spans a whole sample), x is read twice,
and "clone + read" is the floor of any implementation, ours and ATen's alike.

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
from gnbench.machine import cpu_llc_bytes, cpu_model  # noqa: E402
from gnbench.timing import n_rotating_buffers  # noqa: E402

import groupnorm_cuda  # noqa: E402


def read_pass(x: torch.Tensor) -> torch.Tensor:
    """Sum of x's storage (dense, in memory order) viewed as float32: one read of every byte
    (a 2-byte type's odd last element aside), no write, no conversion."""
    n = x.numel() - (x.numel() % 2 if x.element_size() == 2 else 0)
    flat = torch.as_strided(x, (n,), (1,))
    return (flat.view(torch.float32) if x.element_size() == 2 else flat).sum()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = {c.name: c for c in all_cases()}
    variants = [(cases[n], d, lay) for n, d, lay, pass_, act in QUICK_VARIANTS
                if pass_ == "fwd" and act is None and cases[n].numel * TORCH_DTYPES[d].itemsize >= 32 * MiB]
    print(f"# CPU forward floor ({cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__})\n")
    print("Medians of", args.repeats, "interleaved calls, ms. floor = clone + read (x read twice).\n")
    print("| variant | MiB | clone | copy_ (no faults) | fresh fill | read | groupnorm_cuda | nn.GroupNorm "
          "| ours/clone | floor/clone | ours/floor | eager/floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, (case, dname, layout) in enumerate(variants):
        gen = torch.Generator().manual_seed(k)
        fmt = torch.contiguous_format if layout == "nchw" else memory_format_for(len(case.shape))
        base = torch.randn(case.shape, generator=gen).to(TORCH_DTYPES[dname]).contiguous(memory_format=fmt)
        nbytes = base.numel() * base.element_size()
        nbuf = n_rotating_buffers(nbytes, cpu_llc_bytes(), 1024 * MiB)
        bufs = [base] + [base.clone() for _ in range(nbuf - 1)]
        C, G = case.shape[1], case.num_groups
        w, b = torch.randn(C, generator=gen), torch.randn(C, generator=gen)
        pre = torch.empty_like(base)
        runs = {
            "clone": lambda x: x.clone(),
            "copy_": lambda x: pre.copy_(x),
            "fresh fill": lambda x: torch.empty_like(x).fill_(1.0),
            "read": read_pass,
            "groupnorm_cuda": lambda x: groupnorm_cuda.group_norm(x, G, w, b, case.eps),
            "nn.GroupNorm": lambda x: F.group_norm(x, G, w, b, case.eps),
        }
        times = {name: [] for name in runs}
        with torch.no_grad():
            for name, fn in runs.items():  # warm-up (allocator, first-touch)
                for i in range(3):
                    fn(bufs[i % nbuf])
            i = 0
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    x = bufs[i % nbuf]
                    i += 1
                    t0 = time.perf_counter()
                    out = fn(x)
                    times[name].append(time.perf_counter() - t0)
                    del out
        med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        floor = med["clone"] + med["read"]
        label = f"{case.name} {dname} {layout}"
        print(f"| {label} | {nbytes / MiB:.0f} | {med['clone']:.2f} | {med['copy_']:.2f} | {med['fresh fill']:.2f} "
              f"| {med['read']:.2f} | {med['groupnorm_cuda']:.2f} | {med['nn.GroupNorm']:.2f} "
              f"| {med['groupnorm_cuda'] / med['clone']:.2f}x | {floor / med['clone']:.2f}x "
              f"| {med['groupnorm_cuda'] / floor:.2f}x | {med['nn.GroupNorm'] / floor:.2f}x |", flush=True)
        del bufs, pre
    return 0


if __name__ == "__main__":
    sys.exit(main())
