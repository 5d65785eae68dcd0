"""Variant selection: the command-line filters -> the variants to run (and those skipped, with
the reason), and which of them get the torch.compile baseline."""
from __future__ import annotations

import re

import torch

from .cases import QUICK_VARIANTS, all_cases
from .common import (ACT_ALIASES, COMPILE_ALL_MAX, DTYPE_ALIASES, LAYOUT_ALIASES, PASS_ALIASES, TORCH_DTYPES,
                     MiB, log, split_list)


def check_aliases(args) -> bool:
    """False (after an error message) when a --dtype / --layout / --pass / --activation value is unknown."""
    for opt in ("dtype", "layout", "passes", "activation"):
        table = {"dtype": DTYPE_ALIASES, "layout": LAYOUT_ALIASES, "passes": PASS_ALIASES,
                 "activation": ACT_ALIASES}[opt]
        for v in split_list(getattr(args, opt)):
            if v.lower() not in table:
                log(f"error: unknown --{opt.rstrip('es') if opt == 'passes' else opt} value {v!r}; "
                    f"choose from {sorted(set(table))}")
                return False
    return True


def select_variants(args, device: torch.device):
    cases = {c.name: c for c in all_cases()}
    dtypes = [DTYPE_ALIASES[d.lower()] for d in split_list(args.dtype)] or (
        ["float32", "bfloat16", "float16"] if device.type == "cuda" else ["float32", "bfloat16"])
    layouts = [LAYOUT_ALIASES[l.lower()] for l in split_list(args.layout)] or ["nchw", "channels_last"]
    passes = [PASS_ALIASES[p.lower()] for p in split_list(args.passes)] or ["fwd", "fwd+bwd"]
    acts = [ACT_ALIASES[a.lower()] for a in split_list(args.activation)] or [None, "silu"]
    pats = [re.compile(p) for p in split_list(args.cases)]

    def wanted(name):
        return not pats or any(p.search(name) for p in pats)

    if args.quick:
        quick = list(QUICK_VARIANTS)
        if device.type == "cuda":  # float16 is CUDA-only: mirror the bf16 quick variants in fp16
            quick += [(n, "float16", l, p, a) for (n, d, l, p, a) in QUICK_VARIANTS if d == "bfloat16"]
        raw = [(cases[n], d, l, p, a) for (n, d, l, p, a) in quick]
        raw = [v for v in raw if v[1] in dtypes and v[2] in layouts and v[3] in passes and v[4] in acts]
    else:
        raw = [(c, d, l, p, a) for c in cases.values() for d in dtypes for a in acts
               for l in layouts for p in passes]
    raw = [v for v in raw if wanted(v[0].name)]

    selected, skipped = [], []
    for c, d, l, p, a in raw:
        reason = None
        mb = c.numel * TORCH_DTYPES[d].itemsize / MiB
        if d == "float16" and device.type != "cuda":
            reason = "float16 is benchmarked on CUDA only"
        elif l == "channels_last" and not c.supports_channels_last:
            reason = f"channels_last needs a 4-D or 5-D input (shape has {len(c.shape)} dims)"
        elif args.max_mb and mb > args.max_mb:
            reason = f"x is {mb:.0f} MiB > --max-mb {args.max_mb:g}"
        if reason:
            skipped.append(dict(case=c.name, dtype=d, layout=l, **{"pass": p}, activation=a, reason=reason))
        else:
            selected.append((c, d, l, p, a))
    # run all variants of a (case, dtype) together so that its data and references are shared
    order = {c.name: i for i, c in enumerate(cases.values())}
    dord = {"float32": 0, "bfloat16": 1, "float16": 2}
    selected.sort(key=lambda v: (order[v[0].name], dord[v[1]], v[4] or "", v[2], v[3]))
    return selected, skipped, dtypes, layouts, passes, acts


def print_list(selected, skipped) -> None:
    """--list: the selected and the skipped variants."""
    for c, d, l, p, a in selected:
        print(f"{c.name:34s} {d:9s} {l:14s} {p:8s} {a or '-'}  ({c.numel * TORCH_DTYPES[d].itemsize / MiB:.1f} MiB)")
    for s in skipped:
        print(f"SKIP {s['case']} {s['dtype']} {s['layout']} {s['pass']} {s['activation'] or '-'}: {s['reason']}")
    print(f"{len(selected)} variants selected, {len(skipped)} skipped")


def compile_scope(args, n_selected: int) -> str:
    """torch.compile policy: 'all', 'quick' (only the variants of the --quick subset) or 'none'."""
    return "none" if args.no_compile else (args.compile_scope or (
        "all" if (args.quick or n_selected <= COMPILE_ALL_MAX) else "quick"))


def quick_variant_set() -> set:
    """The --quick subset as a set of (case name, dtype, layout, pass, activation), fp16 mirrors included."""
    quick_set = {(n, d, l, p, a) for (n, d, l, p, a) in QUICK_VARIANTS}
    quick_set |= {(n, "float16", l, p, a) for (n, d, l, p, a) in QUICK_VARIANTS if d == "bfloat16"}
    return quick_set
