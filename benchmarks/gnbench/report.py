"""Reporting: the Markdown header, one table per (device, dtype, layout, pass), the
geometric-mean summary, the checks of the CPU-path issue, notes, and the JSON / CSV / PNG files."""
from __future__ import annotations

import csv
import json
import sys
from typing import Dict, List

import torch

from .common import (BYTES_FORMULA, COMPILE_ALL_MAX, FOUNDATION_NOTE, MiB, fmt_f, fmt_ms, fmt_x, geomean,
                     log, variant_label)


def section_key(r):
    return (r["device"], r["regime"], r["dtype"], r["layout"], r["pass"])


_ORDER = {"cold": 0, "hot": 1, "float32": 0, "bfloat16": 1, "float16": 2, "nchw": 0, "channels_last": 1,
          "fwd": 0, "fwd+bwd": 1}


def section_sort(key):
    return (key[0],) + tuple(_ORDER.get(k, 9) for k in key[1:])


def print_tables(results: List[dict], peers: List[str]) -> None:
    ok = [r for r in results if r.get("correct")]
    keys = []
    for r in ok:
        if section_key(r) not in keys:
            keys.append(section_key(r))
    for key in sorted(keys, key=section_sort):
        dev, regime, dt, lay, ps = key
        print(f"\n### {dev} | {regime} | {dt} | {lay} | {ps}\n")
        head = ["case", "act", "ours ms", "ours GB/s", "eager ms", "vs eager", "compile ms",
                "vs compile", "clone ms", "ours/clone", "floor ms", "ours/floor"] + [f"{p} ms" for p in peers]
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for r in ok:
            if section_key(r) != key:
                continue
            row = [r["case"], r["activation"] or "-", fmt_ms(r["groupnorm_cuda"]),
                   fmt_f(r["gbps"].get("groupnorm_cuda")), fmt_ms(r["torch_eager"]),
                   fmt_x(r["speedup_eager"]), fmt_ms(r["torch_compile"]),
                   fmt_x(r["speedup_compile"]), fmt_ms(r["clone"]), fmt_x(r["clone_ratio"]),
                   fmt_ms(r["floor"]), fmt_x(r["floor_ratio"])]
            row += [fmt_ms(r["peers"].get(p)) for p in peers]
            print("| " + " | ".join(row) + " |")


def summarize(results: List[dict]) -> List[dict]:
    ok = [r for r in results if r.get("correct")]
    groups: Dict[tuple, List[dict]] = {}
    for r in ok:
        groups.setdefault(section_key(r), []).append(r)
    summary = []
    for key, rs in sorted(groups.items(), key=lambda kv: section_sort(kv[0])):
        worst = min(rs, key=lambda r: r["speedup_eager"])
        comp = [r["speedup_compile"] for r in rs if r["speedup_compile"]]
        summary.append(dict(device=key[0], regime=key[1], dtype=key[2], layout=key[3], **{"pass": key[4]}, n=len(rs),
                            geomean_speedup_eager=geomean([r["speedup_eager"] for r in rs]),
                            min_speedup_eager=worst["speedup_eager"],
                            min_speedup_eager_case=variant_label(worst),
                            n_compile=len(comp), geomean_speedup_compile=geomean(comp),
                            geomean_clone_ratio=geomean([r["clone_ratio"] for r in rs])))
    return summary


def print_summary(summary: List[dict]) -> None:
    print("\n## Geometric-mean summary per (device, regime, dtype, layout, pass)\n")
    print("| device | regime | dtype | layout | pass | n | geomean vs eager | min vs eager (variant) | "
          "geomean vs compile (n) | geomean ours/clone |")
    print("|---|---|---|---|---|---:|---:|---|---:|---:|")
    for s in summary:
        print(f"| {s['device']} | {s['regime']} | {s['dtype']} | {s['layout']} | {s['pass']} | {s['n']} | "
              f"{fmt_x(s['geomean_speedup_eager'])} | {fmt_x(s['min_speedup_eager'])} "
              f"({s['min_speedup_eager_case']}) | {fmt_x(s['geomean_speedup_compile'])} "
              f"({s['n_compile']}) | {fmt_x(s['geomean_clone_ratio'])} |")


def _worst(rs: List[dict], key: str, target: str, ok, higher_is_worse: bool) -> dict:
    """A check over `rs` on r[key]: the worst variant, compared by ok(value)."""
    if not rs:
        return dict(value=None, target=target, n=0, passed=None)
    w = (max if higher_is_worse else min)(rs, key=lambda r: r[key])
    return dict(value=w[key], variant=variant_label(w), target=target, n=len(rs), passed=ok(w[key]))


def foundation_checks(results: List[dict]) -> dict:
    """The CPU-path targets (issue 16), per cache regime, as measured facts (they never change
    the exit status):

    * no variant below 1.0x of nn.GroupNorm, forward or forward+backward (every activation);
    * forward+backward geometric mean >= 1.5x (activation none);
    * forward of tensors >= 32 MiB: NCHW within 1.15x of x.clone(); channels-last at its
      two-pass floor (clone + read, floors.py), within 1.05x;
    * forward+backward of tensors >= 32 MiB within 1.3x of its floor (clone + add).
    """
    checks = {}
    ok = [r for r in results if r.get("correct")]
    for regime in sorted({r["regime"] for r in ok}, key=lambda g: _ORDER.get(g, 9)):
        rs = [r for r in ok if r["regime"] == regime]
        fb = [r for r in rs if r["pass"] == "fwd+bwd"]
        fw = [r for r in rs if r["pass"] == "fwd"]
        g = geomean([r["speedup_eager"] for r in fb if r["activation"] is None])
        checks[f"{regime}: fwd+bwd geomean vs eager"] = dict(
            value=g, target=">= 1.5", n=len([r for r in fb if r["activation"] is None]),
            passed=None if g is None else g >= 1.5)
        for name, sel in (("fwd", fw), ("fwd+bwd", fb)):
            checks[f"{regime}: {name} min vs eager"] = _worst(sel, "speedup_eager", ">= 1.0",
                                                              lambda v: v >= 1.0, higher_is_worse=False)
        big_fw = [r for r in fw if r["tensor_mib"] >= 32]
        checks[f"{regime}: fwd >= 32 MiB NCHW ours/clone"] = _worst(
            [r for r in big_fw if r["layout"] == "nchw"], "floor_ratio", "<= 1.15", lambda v: v <= 1.15, True)
        checks[f"{regime}: fwd >= 32 MiB channels_last ours/(clone+read)"] = _worst(
            [r for r in big_fw if r["layout"] != "nchw"], "floor_ratio", "<= 1.05", lambda v: v <= 1.05, True)
        checks[f"{regime}: fwd+bwd >= 32 MiB ours/(clone+add)"] = _worst(
            [r for r in fb if r["tensor_mib"] >= 32], "floor_ratio", "<= 1.3", lambda v: v <= 1.3, True)
    return checks


def print_checks(checks: dict) -> None:
    print(f"\n## Checks\n\n{FOUNDATION_NOTE}; measured facts, they do not change the exit status.\n")
    for name, c in checks.items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c["passed"]]
        val = "-" if c["value"] is None else f"{c['value']:.3f}x"
        extra = f" (worst: {c['variant']})" if c.get("variant") else ""
        print(f"- {verdict}: {name} = {val} over {c['n']} variants, target {c['target']}{extra}")


def write_csv(path: str, results: List[dict], peers: List[str]) -> None:
    cols = ["case", "family", "shape", "num_groups", "eps", "dtype", "layout", "pass", "activation",
            "device", "regime", "tensor_mib", "bytes_moved", "correct", "groupnorm_cuda", "torch_eager",
            "torch_compile", "clone", "floor_kind", "floor"] + [f"peer_{p}" for p in peers] + [
            "gbps_groupnorm_cuda", "gbps_torch_eager", "speedup_eager", "speedup_compile",
            "clone_ratio", "floor_ratio", "repeats", "n_buffers", "max_err_groupnorm_cuda", "torch_compile_note",
            "failure"]
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(cols)
        for r in results:
            row = []
            for c in cols:
                if c == "shape":
                    v = "x".join(map(str, r["shape"]))
                elif c.startswith("peer_"):
                    v = (r.get("peers") or {}).get(c[5:])
                elif c.startswith("gbps_"):
                    v = (r.get("gbps") or {}).get(c[5:])
                elif c == "max_err_groupnorm_cuda":
                    e = (r.get("max_err") or {}).get("groupnorm_cuda")
                    v = ";".join(f"{k}={x:.3g}" for k, x in e.items()) if e else None
                else:
                    v = r.get(c)
                row.append("" if v is None else v)
            wr.writerow(row)


def write_plot(path: str, results: List[dict], title: str) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    ok = [r for r in results if r.get("correct")]
    if not ok:
        return "plot skipped: no results"
    labels = [variant_label(r) for r in ok]
    fig_h = max(3.0, 0.22 * len(ok) + 1.5)
    fig, ax = plt.subplots(figsize=(11, fig_h))
    ys = list(range(len(ok)))
    h = 0.38
    ax.barh([y - h / 2 for y in ys], [r["speedup_eager"] for r in ok], height=h,
            label="vs nn.GroupNorm eager", color="tab:blue")
    ax.barh([y + h / 2 for y in ys], [r["speedup_compile"] or 0 for r in ok], height=h,
            label="vs torch.compile", color="tab:orange")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("speedup of groupnorm_cuda (higher is better, log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


def print_header(args, meta: dict, n_selected: int, skipped: List[dict]) -> None:
    """The run's description (stdout, Markdown): machine, versions, method, skipped variants."""
    device_type, dev_name, cand_desc = meta["device"], meta["device_name"], meta["candidate"]
    cache_bytes, scope = meta["cache_bytes_for_rotation"], meta["compile_scope"]
    peers, peer_notes = meta["peers"], meta["peer_notes"]
    print("# groupnorm_cuda benchmark\n")
    print(f"- date: {meta['date']}")
    print(f"- device: {device_type} - {dev_name}")
    print(f"- torch {torch.__version__} (CUDA {torch.version.cuda}), python {meta['python']}, "
          f"threads (torch.get_num_threads) = {meta['threads']}")
    print(f"- candidate: {cand_desc}" + (f", git {meta['git_commit']}" if meta["git_commit"] else ""))
    print(f"- mode: {'--quick subset' if args.quick else 'full suite'}; {n_selected} variants, "
          f"{len(skipped)} skipped; timing: {'CUDA events' if device_type == 'cuda' else 'time.perf_counter'}, "
          f"median of {'%d' % args.repeats if args.repeats else 'adaptive'} repeats "
          f"(budget {args.budget:g} s per implementation per variant), implementations interleaved")
    regimes = {"cold": f"cold (inputs rotated over enough buffers to exceed 2x the "
                       f"{'L2' if device_type == 'cuda' else 'last-level cache'}, {cache_bytes / MiB:.0f} MiB)",
               "hot": "hot (the same input every call, in cache when it fits)"}
    print(f"- cache regimes: {'; '.join(regimes[r] for r in args.regimes)}")
    compile_desc = {"all": "torch.compile(F.group_norm, dynamic=False) on every variant",
                    "quick": "torch.compile(F.group_norm, dynamic=False) only on the variants of the "
                             f"--quick subset ({n_selected} variants selected > {COMPILE_ALL_MAX}; "
                             "each variant is a recompile costing seconds; --compile-scope all to "
                             "compile everything)",
                    "none": "torch.compile baseline not run" + (" (--no-compile)" if args.no_compile else "")}[scope]
    print(f"- compile baseline: {compile_desc}")
    print(f"- baselines: nn.GroupNorm eager (+ F.silu for the silu variants); x.clone(); the memory "
          f"floor (benchmarks/gnbench/floors.py: fwd NCHW = clone, fwd channels-last = clone + read, "
          f"fwd+bwd = clone + add(x, dy)); "
          f"peers: {', '.join(peers) or 'none'}")
    for n in peer_notes:
        print(f"  - {n}")
    print(f"- correctness: every variant checked against F.group_norm in float64 before timing "
          f"(y, and dx/dgamma/dbeta for fwd+bwd)")
    print(f"- {BYTES_FORMULA}")
    if args.candidate != "groupnorm_cuda":
        print("\n**SELF-TEST RUN: the candidate is F.group_norm, the numbers say nothing about groupnorm_cuda.**")
    if skipped:
        print(f"\nSkipped {len(skipped)} variants:")
        reasons: Dict[str, List[str]] = {}
        for s in skipped:
            reasons.setdefault(s["reason"] if "max-mb" not in s["reason"] else f"input larger than --max-mb {args.max_mb:g}", []).append(s["case"])
        for reason, names in reasons.items():
            uniq = sorted(set(names))
            print(f"- {reason}: {len(names)} variants ({', '.join(uniq[:8])}{', ...' if len(uniq) > 8 else ''})")
    sys.stdout.flush()


def print_report(results: List[dict], peers: List[str]):
    """Tables, summary, checks and notes on stdout; returns (summary, checks)."""
    print_tables(results, peers)
    summary = summarize(results)
    print_summary(summary)
    checks = foundation_checks(results)
    print_checks(checks)
    notes = sorted({r["torch_compile_note"] for r in results
                    if r.get("torch_compile_note") and "compile scope" not in r["torch_compile_note"]})
    if notes:
        print("\ntorch.compile notes:")
        for n in notes[:20]:
            print(f"- {n}")
    layout_notes = [variant_label(r) for r in results if r.get("correct") and not r.get("output_keeps_layout", True)]
    if layout_notes:
        print(f"\nWARNING: output does not keep the input memory format in {len(layout_notes)} variants: "
              + ", ".join(layout_notes[:10]))
    return summary, checks


def write_outputs(paths, meta: dict, results: List[dict], skipped: List[dict], summary, checks,
                  failures: List[str], peers: List[str]) -> None:
    """The JSON, CSV and PNG files; `paths` = (json, csv, plot)."""
    json_path, csv_path, plot_path = paths
    with open(json_path, "w") as f:
        json.dump(dict(meta=meta, results=results, skipped=skipped, summary=summary, checks=checks,
                       failures=failures), f, indent=1, default=str)
    write_csv(csv_path, results, peers)
    title = f"groupnorm_cuda speedup, {meta['device']} ({meta['device_name']}), torch {torch.__version__}"
    plot_msg = write_plot(plot_path, results, title)
    print(f"\nwrote {json_path}\nwrote {csv_path}\n{plot_msg}")


def print_failures(failures: List[str]) -> int:
    """The correctness failures, loudly; returns the exit status (1 if any, else 0)."""
    if failures:
        print(f"\n**CORRECTNESS FAILURES: {len(failures)}**")
        for m in failures:
            print(f"- {m}")
        log(f"\n{len(failures)} CORRECTNESS FAILURE(S): exit status 1")
        return 1
    return 0
