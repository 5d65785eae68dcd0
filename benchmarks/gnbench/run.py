"""One variant end to end (inputs, implementations, correctness checks, then timing) and the
loop over all selected variants with its progress lines."""
from __future__ import annotations

import copy
import gc
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cases import Case
from .common import SHORT_DTYPE, TORCH_DTYPES, MiB, fmt_ms, fmt_x, log
from .correctness import (CaseData, check_candidate, check_compile, check_peers, eager_tolerance,
                          variant_inputs)
from .impls import Impl, compiled_group_norm
from .timing import time_variant
from .variants import quick_variant_set


def _new_record(device: torch.device, case: Case, dtype_name: str, layout: str, pass_: str,
                act: Optional[str]) -> dict:
    rec = dict(case=case.name, family=case.family, shape=list(case.shape), num_groups=case.num_groups,
               eps=case.eps, dtype=dtype_name, layout=layout, activation=act, device=device.type,
               numel=case.numel, regime=None)
    rec["pass"] = pass_
    itemsize = TORCH_DTYPES[dtype_name].itemsize
    x_bytes = case.numel * itemsize
    rec["tensor_mib"] = x_bytes / MiB
    rec["bytes_moved"] = (2 if pass_ == "fwd" else 5) * x_bytes
    rec["notes"] = []
    return rec


def _make_impls(ctx: dict, case: Case, dtype: torch.dtype, act: Optional[str], w, b,
                compile_this: bool) -> Dict[str, Impl]:
    """nn.GroupNorm eager, the candidate and (compile_this) torch.compile'd F.group_norm, all
    sharing the weight and bias `w`, `b`."""
    device = ctx["device"]
    G, eps = case.num_groups, case.eps
    cand = ctx["candidate"]
    eager_mod = nn.GroupNorm(G, case.shape[1], eps=eps, affine=True, device=device, dtype=dtype)
    eager_mod.weight, eager_mod.bias = w, b

    impls: Dict[str, Impl] = {}
    impls["torch_eager"] = Impl("torch_eager", (lambda x: F.silu(eager_mod(x))) if act else eager_mod, (w, b))
    cand_mod = cand(G, case.shape[1], eps, act, device, dtype)
    cand_mod.weight, cand_mod.bias = w, b
    impls["groupnorm_cuda"] = Impl("groupnorm_cuda", cand_mod, (w, b))
    if compile_this:
        cf = compiled_group_norm(act)
        impls["torch_compile"] = Impl("torch_compile", lambda x: cf(x, G, w, b, eps), (w, b))
    return impls


def bench_variant(args, ctx, data: CaseData, case: Case, dtype_name: str, layout: str,
                  pass_: str, act: Optional[str], compile_this: bool) -> List[dict]:
    """Checks the variant once, then times it in each of args.regimes: one record per regime
    (a single record, not timed, when the check fails)."""
    dtype = TORCH_DTYPES[dtype_name]
    need_grads = pass_ == "fwd+bwd"
    rec = _new_record(ctx["device"], case, dtype_name, layout, pass_, act)
    x_bytes = case.numel * dtype.itemsize

    # inputs in the requested layout (same values as the NCHW data)
    x0, dy0, w, b = variant_inputs(data, case, layout, need_grads)
    ref = data.reference(act, need_grads)
    impls = _make_impls(ctx, case, dtype, act, w, b, compile_this)

    # ---- correctness (eager first: its own error widens the tolerance for low precision) ----
    errs, tol = eager_tolerance(impls["torch_eager"], x0, dy0, pass_, ref, dtype_name)
    rec["tolerance"] = tol
    failure = check_candidate(args, rec, impls["groupnorm_cuda"], x0, dy0, pass_, ref, tol, errs,
                              dtype, layout)
    rec["max_err"] = errs
    if failure:
        rec["correct"] = False
        rec["failure"] = failure
        for k in ("groupnorm_cuda", "torch_eager", "torch_compile", "clone", "floor"):
            rec.setdefault(k, None)
        return [rec]
    rec["correct"] = True
    check_compile(ctx, rec, impls, x0, dy0, pass_, ref, tol, errs, compile_this)
    peer_impls = check_peers(ctx, rec, case, act, w, b, layout, dtype, x0, dy0, pass_, ref, tol, errs)

    # ---- timing, in each cache regime ----
    recs = []
    for regime in args.regimes:
        r = copy.deepcopy(rec)
        time_variant(args, ctx, r, impls, peer_impls, x0, dy0, pass_, x_bytes, regime)
        recs.append(r)
    return recs


def _compile_this(args, ctx: dict, scope: str, quick_set: set, key) -> bool:
    """Whether this variant gets the torch.compile baseline (else ctx["compile_skip_reason"] says why)."""
    if ctx.get("compile_disabled"):
        compile_this, ctx["compile_skip_reason"] = False, ctx["compile_disabled"]
    elif scope == "all":
        compile_this = True
    elif scope == "quick":
        compile_this = key in quick_set
        ctx["compile_skip_reason"] = None if compile_this else "not compiled (compile scope: quick subset)"
    else:
        compile_this = False
        ctx["compile_skip_reason"] = "--no-compile" if args.no_compile else "compile scope: none"
    return compile_this


def _case_data(held: dict, case: Case, dtype_name: str, device: torch.device, seed: int) -> CaseData:
    """The inputs of (case, dtype), shared by its variants; the previous ones are freed first."""
    if held["key"] != (case.name, dtype_name):
        held["data"], held["key"] = None, None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        held["data"] = CaseData(case, TORCH_DTYPES[dtype_name], device, seed)
        held["key"] = (case.name, dtype_name)
    return held["data"]


def _progress(rec: dict, compile_this: bool) -> str:
    parts = [f"ours {fmt_ms(rec['groupnorm_cuda'])} ms",
             f"eager {fmt_ms(rec['torch_eager'])} ms ({fmt_x(rec['speedup_eager'])})"]
    if rec["torch_compile"]:
        parts.append(f"compile {fmt_ms(rec['torch_compile'])} ms ({fmt_x(rec['speedup_compile'])})")
    elif compile_this and rec.get("torch_compile_note"):
        parts.append(f"compile: {rec['torch_compile_note'][:80]}")
    parts.append(f"clone {fmt_ms(rec['clone'])} ms (ours/clone {fmt_x(rec['clone_ratio'])})")
    if rec["floor_kind"] != "clone":
        parts.append(f"floor {fmt_ms(rec['floor'])} ms (ours/floor {fmt_x(rec['floor_ratio'])})")
    for pn, pt in rec["peers"].items():
        if pt:
            parts.append(f"{pn} {fmt_ms(pt)} ms")
    return ", ".join(parts)


def run_all(args, ctx: dict, selected, skipped: List[dict], meta: dict, scope: str):
    """Checks and times every selected variant (progress on stderr). Returns (results,
    failures); appends out-of-memory variants to `skipped`, sets meta's elapsed_s (and
    interrupted_at on Ctrl-C)."""
    device = ctx["device"]
    quick_set = quick_variant_set()
    results: List[dict] = []
    failures: List[str] = []
    t_start = time.perf_counter()
    held = {"data": None, "key": None}
    for i, (case, d, l, p, a) in enumerate(selected, 1):
        label = f"{case.name} {SHORT_DTYPE[d]} {l} {p}" + (f" +{a}" if a else "")
        compile_this = _compile_this(args, ctx, scope, quick_set, (case.name, d, l, p, a))
        try:
            recs = bench_variant(args, ctx, _case_data(held, case, d, device, args.seed), case, d, l, p, a,
                                 compile_this)
        except KeyboardInterrupt:
            log(f"interrupted at [{i}/{len(selected)}] {label}: reporting the variants done so far")
            meta["interrupted_at"] = label
            break
        except torch.cuda.OutOfMemoryError as e:
            log(f"[{i}/{len(selected)}] {label}: skipped, out of memory ({str(e).splitlines()[0]})")
            skipped.append(dict(case=case.name, dtype=d, layout=l, **{"pass": p}, activation=a,
                                reason="out of memory"))
            held["data"], held["key"] = None, None
            gc.collect()
            torch.cuda.empty_cache()
            continue
        results.extend(recs)
        el = time.perf_counter() - t_start
        if not recs[0]["correct"]:
            msg = f"{label}: {recs[0]['failure']}"
            failures.append(msg)
            log(f"[{i}/{len(selected)}] FAILED {msg}  [{el:.0f}s]")
            if args.fail_fast:
                break
            continue
        eta = el / i * (len(selected) - i)
        for rec in recs:
            log(f"[{i}/{len(selected)}] {label} {rec['regime']}: " + _progress(rec, compile_this)
                + f"  [{el:.0f}s, eta {eta:.0f}s]")
    held["data"] = None
    meta["elapsed_s"] = time.perf_counter() - t_start
    return results, failures
