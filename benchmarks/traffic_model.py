#!/usr/bin/env python
"""Modeled DRAM traffic of the CUDA launch plans for the benchmark shapes (no GPU needed).

For every case of gnbench/cases.py, dtype and layout: the forward's schedule and (read + write)
/ floor, the backward's without and with SiLU. The model and its assumptions are in
csrc/cuda/plan/traffic.h; the floor is read x + write y (forward), read x and dy + write dx
(backward), plus parameters and statistics.

    python benchmarks/traffic_model.py [--sm-count 132] [--max-cluster 16] [--dtype float32 --dtype bfloat16]

--max-cluster 8 gives the plans of a device that cannot place 16-CTA (non-portable) clusters
with the launch's shared memory, which the op asks before launching.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import groupnorm_cuda  # noqa: E402
from gnbench.cases import all_cases  # noqa: E402


def formats(shape):
    return ["nchw"] + (["channels_last"] if len(shape) in (4, 5) else [])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sm-count", type=int, default=132)
    ap.add_argument("--max-cluster", type=int, default=16)
    ap.add_argument("--dtype", action="append", default=None)
    args = ap.parse_args(argv)
    dtypes = [getattr(torch, d) for d in (args.dtype or ["float32", "bfloat16"])]
    print("| case | dtype | layout | forward schedule | fwd | bwd schedule | bwd | bwd + SiLU |")
    print("|---|---|---|---|---|---|---|---|")
    for case in all_cases():
        for dt in dtypes:
            for layout in formats(case.shape):
                fmt = torch.contiguous_format if layout == "nchw" else (
                    torch.channels_last if len(case.shape) == 4 else torch.channels_last_3d)
                plain = groupnorm_cuda.cuda_launch_plan(case.shape, case.num_groups, dtype=dt, memory_format=fmt,
                                                        sm_count=args.sm_count, max_cluster_size=args.max_cluster)
                silu = groupnorm_cuda.cuda_launch_plan(case.shape, case.num_groups, dtype=dt, memory_format=fmt,
                                                       sm_count=args.sm_count, activation="silu",
                                                       max_cluster_size=args.max_cluster)
                fk = plain["forward"][0]["kernel"]
                bk = plain["backward"][0]["kernel"]
                print(f"| {case.name} | {str(dt)[6:]} | {layout} | {fk} | {plain['traffic']['forward']['ratio']:.3f} "
                      f"| {bk} | {plain['traffic']['backward']['ratio']:.3f} | {silu['traffic']['backward']['ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
