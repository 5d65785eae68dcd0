#!/usr/bin/env python3
"""Measured DRAM bytes (ncu) against the launch plan's traffic model, for tools/gpu_check.sh.

    python tools/gpu_report.py --plan plan.json --ncu case1.csv [--ncu case2.csv ...] > traffic.md

plan.json is `tools/gpu_driver.py --plan --case ...` (the modeled bytes of every launch); each
CSV is `ncu --csv --page raw --print-units base --metrics dram__bytes_read.sum,dram__bytes_write.sum,
gpu__time_duration.sum` of one `gpu_driver.py --case` run, in the plan's case order. The kernels
ncu saw are matched to the plan's launches in order (forward, then backward); a kernel the plan
does not list, or a planned kernel that did not run, is reported as a mismatch (exit status 1).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys

METRICS = ("dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum")
_KERNEL = re.compile(r"\b(gn_[a-z0-9_]+)")


def parse_ncu_csv(text: str) -> list[dict]:
    """The profiled kernels of an ncu raw-page CSV, in launch order: {kernel, read, write, ns}.
    Lines before the CSV header (ncu's ==PROF== messages, the program's own output) and the
    units row are skipped; values must be in base units (bytes, ns)."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        raise ValueError("no ncu CSV header (a line starting with \"ID\") found")
    rows = []
    for r in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        if not (r.get("ID") or "").strip().isdigit():
            continue  # the units row
        m = _KERNEL.search(r.get("Kernel Name", ""))
        if m is None:
            continue  # not one of ours
        try:
            vals = [float(str(r[k]).replace(",", "")) for k in METRICS]
        except (KeyError, ValueError) as e:
            raise ValueError(f"ncu CSV lacks a metric in base units: {e}") from e
        rows.append({"kernel": m.group(1), "read": vals[0], "write": vals[1], "ns": vals[2]})
    return rows


def compare(plan: dict, measured: list[dict]) -> tuple[list[str], bool]:
    """Markdown rows (one per launch, then per-direction totals) and whether every planned
    launch matched a measured kernel of the same name, in order."""
    out, ok, i = [], True, 0
    for direction in ("forward", "backward"):
        tr = plan["traffic"][direction]
        mod_total = meas_total = 0.0
        for l in plan[direction]:
            m = measured[i] if i < len(measured) else None
            if m is None or m["kernel"] != l["kernel"]:
                ok = False
                out.append(f"| {plan['case']} | {direction} | {l['kernel']} | "
                           f"{(l['read'] + l['write']) / 1e6:.2f} | MISSING (saw {m['kernel'] if m else 'nothing'}) | | |")
                continue
            i += 1
            mod = l["read"] + l["write"]
            meas = m["read"] + m["write"]
            mod_total += mod
            meas_total += meas
            out.append(f"| {plan['case']} | {direction} | {l['kernel']} | {mod / 1e6:.2f} | {meas / 1e6:.2f} | "
                       f"{meas / mod if mod else float('nan'):.2f} | {m['ns'] / 1e3:.1f} |")
        floor = tr["floor_bytes"]
        out.append(f"| {plan['case']} | **{direction} total** | floor {floor / 1e6:.2f} MB | {mod_total / 1e6:.2f} "
                   f"(model {tr['ratio']:.2f}x floor) | {meas_total / 1e6:.2f} ({meas_total / floor:.2f}x floor) | "
                   f"{meas_total / mod_total if mod_total else float('nan'):.2f} | |")
    for m in measured[i:]:
        ok = False
        out.append(f"| {plan['case']} | ? | {m['kernel']} | not in the plan | {(m['read'] + m['write']) / 1e6:.2f} | | |")
    return out, ok


HEADER = ["| case | direction | kernel | modeled MB | measured MB | measured / modeled | time us |",
          "|---|---|---|---|---|---|---|"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", required=True, help="JSON from gpu_driver.py --plan")
    ap.add_argument("--ncu", action="append", default=[], help="ncu CSV of one case (in the plan's order)")
    args = ap.parse_args(argv)
    with open(args.plan) as f:
        plans = json.load(f)
    if len(args.ncu) != len(plans):
        ap.error(f"{len(plans)} cases in the plan, {len(args.ncu)} ncu files")
    lines, ok = list(HEADER), True
    for plan, path in zip(plans, args.ncu):
        with open(path, errors="replace") as f:
            rows, good = compare(plan, parse_ncu_csv(f.read()))
        lines += rows
        ok &= good
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
