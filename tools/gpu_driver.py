#!/usr/bin/env python3
"""Small CUDA driver for tools/gpu_check.sh: runs the ops on chosen inputs, checks them against
the float64 reference, and (with --plan) prints the launch plan's modeled DRAM bytes.

    python tools/gpu_driver.py --set sanitizer          # every schedule, small: for compute-sanitizer
    python tools/gpu_driver.py --case sd_unet_2x320x64x64_g32:float16:channels_last
    python tools/gpu_driver.py --case ... --plan         # no GPU needed: the modeled bytes as JSON

A case is NAME[:DTYPE[:LAYOUT[:ACTIVATION]]] with NAME from benchmarks/gnbench/cases.py (or
SHAPE_gG, e.g. 2x40x17x19_g8), DTYPE float32|float16|bfloat16, LAYOUT nchw|channels_last,
ACTIVATION none|silu. Each case runs the forward and the backward once (no warm-up: under ncu
every launch is one measured kernel), then compares y, dx, dweight, dbias with the reference.
Exit status 1 when a result is off, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import groupnorm_cuda  # noqa: E402
from groupnorm_cuda.reference import FLOOR, reference, rel_err  # noqa: E402

# Small inputs that between them take every schedule and code path of the CUDA planner:
# on-chip (one and several groups per CTA), a group per cluster (sm_90), split (a group larger
# than a cluster holds), channels-last rows, scalar (HxW % V != 0),
# a misaligned view, half types with float32 parameters, SiLU.
SANITIZER_SET = [
    "2x64x8x8_g8:float32:nchw:silu",
    "2x64x8x8_g8:bfloat16:channels_last:none",
    "1x64x192x160_g8:float32:nchw:none",
    "1x64x384x320_g8:bfloat16:nchw:silu",
    "1x64x192x160_g8:float16:channels_last:silu",
    "2x40x17x19_g8:float32:channels_last:silu",
    "2x40x17x19_g8:bfloat16:channels_last:none",
    "3x48x9x7_g4:float32:nchw:none",
    "3x48x9x7_g4:float16:channels_last:silu",
    "4x64x30x30_g32:float32:nchw:misaligned",
]

# The three benchmark shapes whose DRAM bytes ncu measures, one per schedule that the traffic
# model puts at or near the floor by different means: SD UNet fp32 NCHW (a group per cluster
# of CTAs), ResNet-50 stage 1 fp32 (98 KiB groups on chip with the shared-memory opt-in), SD
# UNet fp16 channels-last (10 channels per group: the rows schedules, 1.5x / 1.9x modeled).
NCU_SET = [
    "sd_unet_2x320x64x64_g32:float32:nchw",
    "resnet50_32x256x56x56_g32:float32:nchw",
    "sd_unet_2x320x64x64_g32:float16:channels_last",
]


def parse_case(spec: str):
    parts = spec.split(":")
    name = parts[0]
    dtype = getattr(torch, parts[1]) if len(parts) > 1 else torch.float32
    layout = parts[2] if len(parts) > 2 else "nchw"
    act = parts[3] if len(parts) > 3 else "none"
    if not isinstance(dtype, torch.dtype) or layout not in ("nchw", "channels_last") or act not in (
            "none", "silu", "misaligned"):
        raise ValueError(f"bad case {spec!r}: NAME[:DTYPE[:nchw|channels_last[:none|silu]]]")
    dims, _, g = name.rpartition("_g")
    shape = tuple(int(s) for s in dims.rpartition("_")[2].split("x"))
    return name, shape, int(g), dtype, layout, act


def memory_format(shape, layout):
    if layout == "nchw":
        return torch.contiguous_format
    return torch.channels_last if len(shape) == 4 else torch.channels_last_3d


def make_input(shape, dtype, layout, act, device):
    if act == "misaligned":  # a view one element into a larger buffer: the planner's scalar fallback
        flat = torch.randn(math.prod(shape) + 1, device=device, dtype=dtype)
        return flat[1:].view(shape)
    return torch.randn(shape, device=device, dtype=dtype).to(memory_format=memory_format(shape, layout))


def run_case(spec: str, device: str) -> bool:
    name, shape, g, dtype, layout, act = parse_case(spec)
    activation = "silu" if act == "silu" else "none"
    x = make_input(shape, dtype, layout, act, device)
    w = (1 + 0.1 * torch.randn(shape[1], device=device)).to(dtype)
    b = (0.1 * torch.randn(shape[1], device=device)).to(dtype)
    dy = torch.randn_like(x)
    ops = torch.ops.groupnorm_cuda
    y, mean, rstd = ops.forward(x, w, b, g, 1e-5, activation)
    dx, dw, db = ops.backward(dy, x, mean, rstd, w, b, g, activation, [True, True, True])
    torch.cuda.synchronize() if device == "cuda" else None
    ry, (rdx, rdw, rdb) = reference(x, g, w, b, 1e-5, None if activation == "none" else activation, dy)
    tol = 8 * FLOOR[dtype]
    errs = {"y": rel_err(y, ry), "dx": rel_err(dx, rdx), "dweight": rel_err(dw, rdw), "dbias": rel_err(db, rdb)}
    ok = all(e <= tol for e in errs.values()) and y.stride() == x.stride() and dx.stride() == x.stride()
    print(f"{'OK ' if ok else 'BAD'} {spec}: " + " ".join(f"{k}={v:.2e}" for k, v in errs.items()) + f" tol={tol:.1e}",
          flush=True)
    return ok


def plan_bytes(spec: str, sm_count: int) -> dict:
    """The launch plan's modeled DRAM bytes per kernel, forward and backward (no GPU needed)."""
    name, shape, g, dtype, layout, act = parse_case(spec)
    p = groupnorm_cuda.cuda_launch_plan(shape, g, dtype, memory_format(shape, layout), sm_count,
                                        activation="silu" if act == "silu" else None)
    out = {"case": spec, "sm_count": sm_count, "traffic": p["traffic"]}
    for direction in ("forward", "backward"):
        out[direction] = [{"kernel": l["kernel"], "read": l["dram_read_bytes"], "write": l["dram_write_bytes"]}
                          for l in p[direction]]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", default=[], help="NAME[:DTYPE[:LAYOUT[:ACTIVATION]]] (repeatable)")
    ap.add_argument("--set", choices=["sanitizer", "ncu"], help="a predefined list of cases")
    ap.add_argument("--plan", action="store_true", help="print the modeled DRAM bytes (JSON) instead of running")
    ap.add_argument("--sm-count", type=int, default=0, help="for --plan (default: the GPU's, else 132)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    cases = list(args.case) + (SANITIZER_SET if args.set == "sanitizer" else NCU_SET if args.set == "ncu" else [])
    if not cases:
        ap.error("give --case or --set")
    try:
        for spec in cases:
            parse_case(spec)
    except (ValueError, AttributeError) as e:
        ap.error(str(e))
    if args.plan:
        sm = args.sm_count or (torch.cuda.get_device_properties(0).multi_processor_count
                               if torch.cuda.is_available() else 132)
        print(json.dumps([plan_bytes(c, sm) for c in cases], indent=1))
        return 0
    if args.device == "cuda" and not (torch.cuda.is_available() and groupnorm_cuda.built_with_cuda):
        print("gpu_driver: no CUDA device or a CPU-only build", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    ok = all([run_case(c, args.device) for c in cases])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
