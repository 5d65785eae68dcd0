#!/usr/bin/env python
"""Benchmark groupnorm_cuda against nn.GroupNorm (eager), torch.compile'd F.group_norm, a plain
x.clone() (the memory-bound floor) and optional peers (apex contrib, Liger-Kernel).

Every variant is checked against F.group_norm computed in float64 (forward output and, for
fwd+bwd, the input / weight / bias gradients) BEFORE it is timed; a mismatch (or an exception)
in groupnorm_cuda makes the run exit with status 1. Performance misses never change the exit
status.

Usage (from the repository root):
    python benchmarks/bench_groupnorm.py --quick
    python benchmarks/bench_groupnorm.py --device cuda --dtype bf16 --layout channels_last
    python benchmarks/bench_groupnorm.py --cases 'vae|video' --pass fwd
See benchmarks/README.md for all flags and the output formats. This file is the command line
and the main flow; the work is done by the modules of benchmarks/gnbench/.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

from gnbench.common import COMPILE_ALL_MAX, log  # noqa: E402
from gnbench.impls import load_candidate, load_peers, raise_recompile_limits  # noqa: E402
from gnbench.machine import device_info, run_meta  # noqa: E402
from gnbench.report import print_failures, print_header, print_report, write_outputs  # noqa: E402
from gnbench.run import run_all  # noqa: E402
from gnbench.variants import check_aliases, compile_scope, print_list, select_variants  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--dtype", action="append", help="float32/fp32, bfloat16/bf16, float16/fp16 "
                   "(repeatable or comma list; default fp32,bf16 (+fp16 on CUDA))")
    p.add_argument("--layout", action="append", help="nchw, channels_last (repeatable or comma list)")
    p.add_argument("--pass", dest="passes", action="append", help="fwd, fwd+bwd (default both)")
    p.add_argument("--activation", action="append", help="none, silu (default both)")
    p.add_argument("--cases", action="append",
                   help="regex (or substring) on the case name; repeatable / comma list")
    p.add_argument("--regime", choices=["cold", "hot", "both"], default="both",
                   help="cache regime of the inputs: cold = a ring of buffers larger than 2x the "
                        "cache (no call finds its input in cache), hot = the same tensors every call "
                        "(as when the previous layer has just written them); default both")
    p.add_argument("--quick", action="store_true", help="a representative subset (1-1.5 minutes on 2 CPU cores)")
    p.add_argument("--list", action="store_true", help="list the selected variants and exit")
    p.add_argument("--json", default=None, help="default benchmarks/out/results_<device>[_quick].json")
    p.add_argument("--csv", default=None, help="default benchmarks/out/results_<device>[_quick].csv")
    p.add_argument("--plot", default=None, help="default benchmarks/out/results_<device>[_quick].png")
    p.add_argument("--repeats", type=int, default=None,
                   help="fixed number of timed repeats per implementation (default: adaptive, "
                        "bounded by --budget)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per implementation per variant (default: CPU 0.2 (quick 0.25), CUDA 0.2)")
    p.add_argument("--no-compile", action="store_true", help="do not run the torch.compile baseline")
    p.add_argument("--compile-scope", choices=["all", "quick", "none"], default=None,
                   help="which variants get the torch.compile baseline: all; quick = only those in "
                        "the --quick subset; none. Default: all with --quick or when at most "
                        f"{COMPILE_ALL_MAX} variants are selected, else 'quick' (each variant is a "
                        "recompile: 2-30 s on 2 CPU cores, seconds on a GPU)")
    p.add_argument("--no-peers", action="store_true", help="do not try apex / Liger-Kernel")
    p.add_argument("--max-mb", type=float, default=None,
                   help="skip variants whose input tensor exceeds this many MiB "
                        "(default: CPU 100, CUDA 0 = no limit; the full CPU suite then takes ~25-30 min on 2 busy cores)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidate", choices=["groupnorm_cuda", "aten"], default="groupnorm_cuda",
                   help="harness self-test only: 'aten' benchmarks F.group_norm as the candidate")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first correctness failure")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def apply_device_defaults(args, device: torch.device) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_mb is None:
        args.max_mb = 100.0 if device.type == "cpu" else 0.0
    if args.budget is None:
        args.budget = (0.25 if args.quick else 0.2) if device.type == "cpu" else 0.2
    args.regimes = ["cold", "hot"] if args.regime == "both" else [args.regime]


def output_paths(args, device: torch.device):
    """(json, csv, plot) paths, default benchmarks/out/results_<device>[_quick].*; creates their folders."""
    tag = f"{device.type}{'_quick' if args.quick else ''}"
    out_dir = os.path.join(HERE, "out")
    json_path = args.json or os.path.join(out_dir, f"results_{tag}.json")
    csv_path = args.csv or os.path.join(out_dir, f"results_{tag}.csv")
    plot_path = args.plot or os.path.join(out_dir, f"results_{tag}.png")
    for pth in (json_path, csv_path, plot_path):
        os.makedirs(os.path.dirname(os.path.abspath(pth)), exist_ok=True)
    return json_path, csv_path, plot_path


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        log("error: --device cuda but torch.cuda.is_available() is False")
        return 2
    apply_device_defaults(args, device)
    if not check_aliases(args):
        return 2

    selected, skipped, dtypes, layouts, passes, acts = select_variants(args, device)
    if args.list:
        print_list(selected, skipped)
        return 0
    if not selected:
        log("error: no variant selected (check --cases / --dtype / --layout / --pass / --activation)")
        return 2

    try:
        cand, cand_desc = load_candidate(args.candidate)
    except Exception as e:
        log(f"error: cannot import the package under test: {type(e).__name__}: {e}\n"
            "       build and install it first (pip install --no-build-isolation -e .), "
            "or use --candidate aten to self-test the harness")
        return 2

    scope = compile_scope(args, len(selected))  # torch.compile policy
    raise_recompile_limits()
    peers, peer_notes = load_peers(device, not args.no_peers)
    paths = output_paths(args, device)
    dev = device_info(device)
    meta = run_meta(args, device, dev["dev_name"], dev["cache_bytes"], cand_desc, scope, peers, peer_notes,
                    dtypes, layouts, passes, acts)
    print_header(args, meta, len(selected), skipped)

    ctx = dict(device=device, candidate=cand, peers=peers, cache_bytes=dev["cache_bytes"],
               rotate_cap_bytes=dev["rotate_cap"], min_rep=dev["min_rep"], max_rep=dev["max_rep"],
               compile_skip_reason=None)
    results, failures = run_all(args, ctx, selected, skipped, meta, scope)

    # ---- report ----
    summary, checks = print_report(results, list(peers))
    write_outputs(paths, meta, results, skipped, summary, checks, failures, list(peers))
    print(f"total time {meta['elapsed_s']:.0f} s for {len(results)} variants")
    return print_failures(failures)


if __name__ == "__main__":
    sys.exit(main())
