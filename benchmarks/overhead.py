#!/usr/bin/env python
"""Per-call overhead of groupnorm_cuda against nn.GroupNorm on tiny tensors (CPU by default).

On tensors of a few hundred elements the kernels' work is negligible, so the time per call is
the cost of getting there: Python, the dispatcher, autograd bookkeeping. Three modes:
  no_grad   forward under torch.no_grad()
  fwd       forward with inputs that require grad (builds the autograd graph)
  fwd+bwd   forward + torch.autograd.grad of (x, weight, bias)
Each (shape, mode) times both modules in rounds, interleaved (a load spike hits both), each
round the median of --calls calls; reported: median over rounds of ours / nn.GroupNorm (< 1 is
faster), with the min-max spread of the rounds, and the absolute microseconds.

    python benchmarks/overhead.py [--device cpu] [--rounds 7] [--calls 200] [--json out.json]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import groupnorm_cuda  # noqa: E402
from gnbench.machine import device_info  # noqa: E402

SHAPES = [((4, 32, 2, 2), 8), ((64, 64, 1, 1), 8), ((2, 8, 3), 2), ((1, 32, 8, 8), 8)]
MODES = ["no_grad", "fwd", "fwd+bwd"]


def make_step(module, x, mode):
    params = [x, module.weight, module.bias]
    if mode == "no_grad":
        def step():
            with torch.no_grad():
                return module(x)
    elif mode == "fwd":
        def step():
            return module(x)
    else:
        def step():
            y = module(x)
            return torch.autograd.grad(y, params, torch.ones_like(y))
    return step


def time_calls(step, calls, sync):
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(shape, groups, mode, device, rounds, calls):
    c = shape[1]
    x = torch.randn(shape, device=device, requires_grad=mode != "no_grad")
    ours = groupnorm_cuda.GroupNorm(groups, c).to(device)
    ref = nn.GroupNorm(groups, c).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {"ours": make_step(ours, x, mode), "torch": make_step(ref, x, mode)}
    for s in steps.values():  # warm-up
        time_calls(s, 20, sync)
    per = {"ours": [], "torch": []}
    for r in range(rounds):
        order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
        for name in order:
            per[name].append(time_calls(steps[name], calls, sync))
    ratios = [a / b for a, b in zip(per["ours"], per["torch"])]
    return dict(shape=list(shape), groups=groups, mode=mode, ours_us=statistics.median(per["ours"]) * 1e6,
                torch_us=statistics.median(per["torch"]) * 1e6, ratio=statistics.median(ratios),
                ratio_min=min(ratios), ratio_max=max(ratios))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    info = device_info(device)
    print(f"# per-call overhead, {info['dev_name']}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'shape':>16} {'G':>3} {'mode':>8} {'ours us':>9} {'torch us':>9} {'ours/torch':>10} {'spread':>13}")
    rows = []
    for (shape, groups) in SHAPES:
        for mode in MODES:
            r = measure(shape, groups, mode, device, args.rounds, args.calls)
            rows.append(r)
            print(f"{'x'.join(map(str, shape)):>16} {groups:>3} {mode:>8} {r['ours_us']:9.1f} {r['torch_us']:9.1f} "
                  f"{r['ratio']:10.3f} {r['ratio_min']:6.3f}-{r['ratio_max']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=info["dev_name"], torch=torch.__version__, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
