"""Fingerprints the CPU op's output bits, to show that a refactoring changes none of them.

    python tools/compare_bits.py --save before.json     # with the old build installed
    python tools/compare_bits.py --check before.json    # with the new build: exit 1 on any change

Covers the test suite's shapes (tests/test_group_norm.py) plus a few larger ones that reach the
split schedules, every dtype, three layouts, four affine settings (and float32 parameters for half
inputs), with and without SiLU: the forward (y, mean, rstd) and the backward (dx, dweight, dbias)
through torch.ops.groupnorm_cuda directly, under 1 and 2 threads. Each tensor is reduced to a
SHA-256 of its bytes, so the file stays small and any flipped bit shows.
"""
import argparse
import hashlib
import itertools
import json
import os
import sys
import zlib

import torch

import groupnorm_cuda  # noqa: F401  (registers the ops)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from test_group_norm import SHAPES as TEST_SHAPES, make_input  # noqa: E402  (the suite's shapes and inputs)

SHAPES = TEST_SHAPES + [
    # larger: split schedules, several pieces per channel, 4-vector channel tiles
    ((1, 64, 160, 160), 32),
    ((4, 320, 24, 24), 32),
    ((1, 8, 300, 300), 2),
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LAYOUTS = ["contiguous", "channels_last", "noncontiguous"]
AFFINE = ["both", "none", "weight", "bias", "fp32"]


def digest(t: torch.Tensor) -> str:
    t = t.detach().contiguous().cpu()
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()[:16] + (
        f":{t.dtype}:{tuple(t.shape)}"
    )


def cases():
    for (shape, g), dtype, layout, affine, act in itertools.product(SHAPES, DTYPES, LAYOUTS, AFFINE, ("none", "silu")):
        if affine == "fp32" and dtype not in (torch.float16, torch.bfloat16):
            continue
        yield shape, g, dtype, layout, affine, act


def run(threads):
    torch.set_num_threads(threads)
    out = {}
    ops = torch.ops.groupnorm_cuda
    for shape, g, dtype, layout, affine, act in cases():
        gen = torch.Generator().manual_seed(zlib.crc32(f"{shape}|{g}|{dtype}|{layout}|{affine}|{act}".encode()))
        x = make_input(shape, dtype, layout, "cpu", generator=gen)
        dy = make_input(shape, dtype, layout, "cpu", generator=gen)
        c = shape[1]
        pdt = torch.float32 if affine == "fp32" else dtype
        w = (torch.randn(c, dtype=torch.float64, generator=gen) * 0.5 + 1).to(pdt) if affine in ("both", "weight", "fp32") else None
        b = (torch.randn(c, dtype=torch.float64, generator=gen) * 0.5).to(pdt) if affine in ("both", "bias", "fp32") else None
        y, mean, rstd = ops.forward(x, w, b, g, 1e-5, act)
        dx, dw, db = ops.backward(dy, x, mean, rstd, w, b, g, act, [True, True, True])
        key = f"{shape}|{g}|{dtype}|{layout}|{affine}|{act}|t{threads}"
        out[key] = [digest(t) for t in (y, mean, rstd, dx, dw, db)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", metavar="FILE")
    mode.add_argument("--check", metavar="FILE")
    args = ap.parse_args()
    result = {}
    for threads in (1, 2):
        result.update(run(threads))
    print(f"{len(result)} cases x 6 tensors", file=sys.stderr)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(result, f, indent=0, sort_keys=True)
        return 0
    with open(args.check) as f:
        before = json.load(f)
    names = ("y", "mean", "rstd", "dx", "dweight", "dbias")
    bad = 0
    for key, digests in sorted(before.items()):
        now = result.get(key)
        if now is None:
            print(f"missing case {key}")
            bad += 1
            continue
        for name, a, b in zip(names, digests, now):
            if a != b:
                print(f"DIFF {key} {name}: {a} -> {b}")
                bad += 1
    print(f"{bad} differences over {len(before)} cases", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
