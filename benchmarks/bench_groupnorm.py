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
See benchmarks/README.md for all flags and the output formats.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from cases import QUICK_VARIANTS, Case, all_cases  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MiB = 1024 ** 2

DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16", "f16": "float16",
}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
LAYOUT_ALIASES = {"nchw": "nchw", "contiguous": "nchw", "channels_last": "channels_last",
                  "cl": "channels_last", "nhwc": "channels_last"}
PASS_ALIASES = {"fwd": "fwd", "forward": "fwd", "fwd+bwd": "fwd+bwd", "fwdbwd": "fwd+bwd",
                "bwd": "fwd+bwd", "backward": "fwd+bwd"}
ACT_ALIASES = {"none": None, "silu": "silu", "swish": "silu"}

# Normalised max error (max |out - ref| / max |ref|, reference = float64) allowed before a
# variant is declared wrong. The tolerance actually used is max(base, min(4 x eager's own error,
# 0.1)): a variant fails only if it is clearly worse than PyTorch at the same precision.
BASE_TOL = {
    "float32": {"y": 1e-4, "dx": 1e-3, "dw": 1e-3, "db": 1e-3},
    "bfloat16": {"y": 2e-2, "dx": 3e-2, "dw": 2e-2, "db": 2e-2},
    "float16": {"y": 4e-3, "dx": 1e-2, "dw": 1e-2, "db": 1e-2},
}

BYTES_FORMULA = ("bytes moved (b = bytes per element of x, n = numel(x); gamma/beta/stats ignored): "
                 "fwd = read x + write y = 2*n*b; fwd+bwd = fwd + read dy + read x + write dx = 5*n*b. "
                 "GB/s = bytes / median time (1 GB = 1e9 B). ours/clone = our time / time of "
                 "x.clone() (reads x, writes a copy: the floor is 1.0 for fwd, ~2.5 for fwd+bwd).")

# torch.compile recompiles for every shape/dtype/layout/pass (dynamic=False): 2-30 s each on a
# 2-core CPU, several seconds on a GPU. Selections larger than this compile only the variants
# that are in the --quick subset unless --compile-scope all is given.
COMPILE_ALL_MAX = 64

FOUNDATION_NOTE = ("foundation checks (CPU path issue): over activation=None variants in float32 and "
                   "bfloat16, NCHW and channels_last")


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def split_list(values: Optional[List[str]]) -> List[str]:
    out: List[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def geomean(xs: List[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def fmt_ms(sec: Optional[float]) -> str:
    if sec is None:
        return "-"
    ms = sec * 1e3
    if ms >= 1000:
        return f"{ms:.0f}"
    if ms >= 100:
        return f"{ms:.1f}"
    if ms >= 10:
        return f"{ms:.2f}"
    if ms >= 1:
        return f"{ms:.3f}"
    return f"{ms:.4f}"


def fmt_x(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def fmt_f(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def memory_format_for(ndim: int):
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_llc_bytes() -> int:
    """Size of the last-level cache (used to size the rotating input buffers on CPU)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in os.listdir(base):
            try:
                with open(os.path.join(base, idx, "size")) as f:
                    s = f.read().strip()
                mult = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(s[-1].upper(), 1)
                val = int(s[:-1]) * mult if s[-1].isalpha() else int(s)
                best = max(best, val)
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return best or 32 * MiB


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", os.path.dirname(HERE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------
# implementations under test
# ----------------------------------------------------------------------------------------------

def load_candidate(kind: str):
    """Returns (factory, description); factory(num_groups, num_channels, eps, activation, device,
    dtype) -> an nn.Module. The module (not the functional) is benchmarked so that the Python
    module-call overhead is the same as nn.GroupNorm's (it matters for tiny tensors)."""
    if kind == "groupnorm_cuda":
        import groupnorm_cuda  # the package under test; fails loudly when not built/installed

        def factory(G, C, eps, act, device, dtype):
            return groupnorm_cuda.GroupNorm(G, C, eps=eps, affine=True, device=device, dtype=dtype,
                                            activation=act)
        ver = getattr(groupnorm_cuda, "__version__", "?")
        return factory, f"groupnorm_cuda {ver} ({os.path.dirname(groupnorm_cuda.__file__)})"
    if kind == "aten":
        # Harness self-test: the "candidate" is nn.GroupNorm (+ F.silu). Numbers are meaningless.
        class AtenGroupNorm(nn.GroupNorm):
            def __init__(self, G, C, eps, act, device, dtype):
                super().__init__(G, C, eps=eps, affine=True, device=device, dtype=dtype)
                self.act = act

            def forward(self, x):
                y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
                return F.silu(y) if self.act == "silu" else y
        return AtenGroupNorm, "SELF-TEST: candidate is F.group_norm (not groupnorm_cuda)"
    raise ValueError(kind)


class Impl:
    """One implementation bound to a variant: forward(x) -> y, params = tensors to differentiate."""

    def __init__(self, name: str, forward: Callable, params: Tuple[torch.Tensor, ...]):
        self.name = name
        self.forward = forward
        self.params = params

    def runner(self, pass_: str) -> Callable:
        fwd, params = self.forward, self.params
        if pass_ == "fwd":
            return lambda x, dy: fwd(x)
        return lambda x, dy: torch.autograd.grad(fwd(x), (x,) + params, dy)


_COMPILED: Dict[Optional[str], Callable] = {}


def compiled_group_norm(act: Optional[str]) -> Callable:
    """One torch.compile'd function per activation; dynamic=False (a recompile per shape /
    dtype / layout / grad mode, cached by dynamo, recompile limit raised in main())."""
    if act not in _COMPILED:
        if act == "silu":
            def f(x, g, w, b, eps):
                return F.silu(F.group_norm(x, g, w, b, eps))
        else:
            def f(x, g, w, b, eps):
                return F.group_norm(x, g, w, b, eps)
        _COMPILED[act] = torch.compile(f, dynamic=False)
    return _COMPILED[act]


def load_peers(device: torch.device, enabled: bool):
    """Optional peers. Returns ({name: factory}, [notes]). factory(case, act, w, b, layout,
    dtype) -> Impl, or raises NotImplementedError for unsupported variants."""
    peers, notes = {}, []
    if not enabled:
        notes.append("peers disabled (--no-peers)")
        return peers, notes
    if device.type != "cuda":
        notes.append("peers (apex contrib GroupNorm, Liger-Kernel) are CUDA-only: skipped on CPU")
        return peers, notes
    try:
        from apex.contrib.group_norm import GroupNorm as ApexGroupNorm  # type: ignore

        def apex_factory(case, act, w, b, layout, dtype):
            if layout != "channels_last" or len(case.shape) != 4:
                raise NotImplementedError("apex contrib GroupNorm is NHWC 4-D only")
            m = ApexGroupNorm(case.num_groups, case.shape[1], eps=case.eps, affine=True,
                              device=w.device, dtype=dtype, act="silu" if act else "")
            with torch.no_grad():
                m.weight.copy_(w)
                m.bias.copy_(b)
            return Impl("apex", m, (m.weight, m.bias))
        peers["apex"] = apex_factory
    except Exception as e:  # ImportError, or apex built without the extension
        notes.append(f"apex contrib GroupNorm not importable ({type(e).__name__}: {e}): skipped")
    try:
        from liger_kernel.ops.group_norm import LigerGroupNormFunction  # type: ignore

        def liger_factory(case, act, w, b, layout, dtype):
            if layout != "nchw":
                raise NotImplementedError("Liger GroupNorm is NCHW-contiguous only")
            pw = w.detach().clone().requires_grad_(w.requires_grad)
            pb = b.detach().clone().requires_grad_(b.requires_grad)
            C, G, eps = case.shape[1], case.num_groups, case.eps

            def fwd(x):
                y = LigerGroupNormFunction.apply(x, pw, pb, C, G, eps)
                return F.silu(y) if act else y
            return Impl("liger", fwd, (pw, pb))
        peers["liger"] = liger_factory
    except Exception as e:
        notes.append(f"Liger-Kernel GroupNorm not importable ({type(e).__name__}: {e}): skipped")
    return peers, notes


# ----------------------------------------------------------------------------------------------
# data, reference and correctness
# ----------------------------------------------------------------------------------------------

class CaseData:
    """Inputs of one (case, dtype) in NCHW, plus lazily computed float64 references per act."""

    def __init__(self, case: Case, dtype: torch.dtype, device: torch.device, seed: int):
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        C = case.shape[1]
        kw = dict(device=device, generator=gen)
        # non-zero mean so that a naive E[x^2]-E[x]^2 shows up in the error
        self.x = (torch.randn(case.shape, **kw) * 2.0 + 0.5).to(dtype)
        self.w = (1.0 + 0.1 * torch.randn(C, **kw)).to(dtype)
        self.b = (0.1 * torch.randn(C, **kw)).to(dtype)
        self.dy = torch.randn(case.shape, **kw).to(dtype)
        self.case = case
        self.refs: Dict[Tuple[Optional[str], bool], Dict[str, torch.Tensor]] = {}

    def reference(self, act: Optional[str], need_grads: bool) -> Dict[str, torch.Tensor]:
        for (a, g), r in self.refs.items():
            if a == act and (g or not need_grads):
                return r
        c = self.case
        x = self.x.double().requires_grad_(need_grads)
        w = self.w.double().requires_grad_(need_grads)
        b = self.b.double().requires_grad_(need_grads)
        with torch.set_grad_enabled(need_grads):
            y = F.group_norm(x, c.num_groups, w, b, c.eps)
            if act == "silu":
                y = F.silu(y)
        ref = {"y": y.detach()}
        if need_grads:
            dx, dw, db = torch.autograd.grad(y, (x, w, b), self.dy.double())
            ref.update(dx=dx, dw=dw, db=db)
        self.refs = {k: v for k, v in self.refs.items() if k[0] != act}
        self.refs[(act, need_grads)] = ref
        return ref


def norm_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    with torch.no_grad():
        denom = ref.abs().max().item()
        e = (out.double() - ref).abs().max().item() / max(denom, 1e-12)
    return float("inf") if math.isnan(e) else e


def run_outputs(impl: Impl, x: torch.Tensor, dy: torch.Tensor, pass_: str) -> Dict[str, torch.Tensor]:
    if pass_ == "fwd":
        with torch.no_grad():
            return {"y": impl.forward(x)}
    with torch.enable_grad():
        y = impl.forward(x)
        dx, dw, db = torch.autograd.grad(y, (x,) + impl.params, dy)
    return {"y": y.detach(), "dx": dx, "dw": dw, "db": db}


def errors(outs: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor]) -> Dict[str, float]:
    return {k: norm_err(v, ref[k]) for k, v in outs.items()}


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------

def n_rotating_buffers(bytes_per_set: int, cache_bytes: int, cap_bytes: int) -> int:
    """Enough input sets to exceed 2x the cache (L2 on CUDA, LLC on CPU), capped by memory."""
    want = max(1, math.ceil(2 * cache_bytes / max(bytes_per_set, 1)))
    if want > 1:
        want = max(want, 2)
    by_mem = max(1, cap_bytes // max(bytes_per_set, 1))
    return int(min(want, by_mem, 1024))


def measure(runners: Dict[str, Callable], bufs: List[Tuple[torch.Tensor, torch.Tensor]],
            device: torch.device, pass_: str, budget_s: float, repeats: Optional[int],
            min_rep: int, max_rep: int):
    """(median seconds, IQR / median, repeats) per runner, runners interleaved round-robin (so that load changes on a
    shared machine hit every implementation alike), inputs rotated over `bufs`."""
    cuda = device.type == "cuda"
    nb = len(bufs)
    names = list(runners)
    ctx = torch.no_grad() if pass_ == "fwd" else torch.enable_grad()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with ctx:
            # warm-up (and a per-call time estimate for the adaptive repeat count)
            est = {}
            warm_s = max(0.05, 0.2 * budget_s)
            for j, name in enumerate(names):
                fn = runners[name]
                n, t0 = 0, time.perf_counter()
                while True:
                    x, dy = bufs[(n + j) % nb]
                    fn(x, dy)
                    n += 1
                    if cuda:
                        torch.cuda.synchronize(device)
                    el = time.perf_counter() - t0
                    if el >= warm_s or n >= 3 * nb + 20 or (n >= 1 and el >= budget_s / 2):
                        break
                # a steadier estimate from the last call when the first one was cold
                t1 = time.perf_counter()
                x, dy = bufs[n % nb]
                fn(x, dy)
                if cuda:
                    torch.cuda.synchronize(device)
                est[name] = min(el / n, time.perf_counter() - t1)
            if repeats:
                n_rep = repeats
            else:
                per_round = sum(est.values())
                n_rep = int(budget_s * len(names) / max(per_round, 1e-9))
                n_rep = max(min_rep, min(max_rep, n_rep))
            samples: Dict[str, List[float]] = {k: [] for k in names}
            if cuda:
                ev = {k: [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                          for _ in range(n_rep)] for k in names}
                for r in range(n_rep):
                    for j, k in enumerate(names):
                        x, dy = bufs[(r * len(names) + j) % nb]
                        s, e = ev[k][r]
                        s.record()
                        runners[k](x, dy)
                        e.record()
                torch.cuda.synchronize(device)
                for k in names:
                    samples[k] = [s.elapsed_time(e) / 1e3 for s, e in ev[k]]
            else:
                hard_stop = time.perf_counter() + 3 * budget_s * len(names) + 5
                for r in range(n_rep):
                    for j, k in enumerate(names):
                        # each call of a round reads its own buffer: no implementation finds its
                        # input left in cache by the one before it
                        x, dy = bufs[(r * len(names) + j) % nb]
                        t0 = time.perf_counter()
                        runners[k](x, dy)
                        samples[k].append(time.perf_counter() - t0)
                    if not repeats and r + 1 >= min_rep and time.perf_counter() > hard_stop:
                        n_rep = r + 1
                        break
    finally:
        if gc_was_enabled:
            gc.enable()
    med = {k: statistics.median(v) for k, v in samples.items()}
    spread = {}
    for k, v in samples.items():
        if len(v) >= 4:
            q = statistics.quantiles(v, n=4)
            spread[k] = (q[2] - q[0]) / med[k] if med[k] > 0 else None
        else:
            spread[k] = None
    spread["min"] = {k: min(v) for k, v in samples.items()}
    return med, spread, n_rep


# ----------------------------------------------------------------------------------------------
# variant selection
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# main benchmark loop
# ----------------------------------------------------------------------------------------------

def bench_variant(args, ctx, data: CaseData, case: Case, dtype_name: str, layout: str,
                  pass_: str, act: Optional[str], compile_this: bool) -> dict:
    device = ctx["device"]
    dtype = TORCH_DTYPES[dtype_name]
    need_grads = pass_ == "fwd+bwd"
    rec = dict(case=case.name, family=case.family, shape=list(case.shape), num_groups=case.num_groups,
               eps=case.eps, dtype=dtype_name, layout=layout, activation=act, device=device.type,
               numel=case.numel)
    rec["pass"] = pass_
    itemsize = dtype.itemsize
    x_bytes = case.numel * itemsize
    rec["tensor_mib"] = x_bytes / MiB
    rec["bytes_moved"] = (2 if pass_ == "fwd" else 5) * x_bytes
    rec["notes"] = []

    # inputs in the requested layout (same values as the NCHW data)
    if layout == "channels_last":
        mf = memory_format_for(len(case.shape))
        x0 = data.x.contiguous(memory_format=mf)
        dy0 = data.dy.contiguous(memory_format=mf)
    else:
        x0, dy0 = data.x, data.dy
    x0 = x0.detach().clone().requires_grad_(need_grads)
    w = nn.Parameter(data.w.clone(), requires_grad=need_grads)
    b = nn.Parameter(data.b.clone(), requires_grad=need_grads)
    ref = data.reference(act, need_grads)

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

    # ---- correctness (eager first: its own error widens the tolerance for low precision) ----
    errs: Dict[str, Dict[str, float]] = {}
    eager_out = run_outputs(impls["torch_eager"], x0, dy0, pass_)
    errs["torch_eager"] = errors(eager_out, ref)
    del eager_out
    tol = {k: max(v, min(4 * errs["torch_eager"].get(k, 0.0), 0.1))
           for k, v in BASE_TOL[dtype_name].items() if k in errs["torch_eager"]}
    rec["tolerance"] = tol

    failure = None
    try:
        outs = run_outputs(impls["groupnorm_cuda"], x0, dy0, pass_)
        errs["groupnorm_cuda"] = errors(outs, ref)
        y = outs["y"]
        rec["output_dtype_ok"] = y.dtype == dtype
        rec["output_keeps_layout"] = (y.is_contiguous(memory_format=memory_format_for(y.dim()))
                                      if layout == "channels_last" else y.is_contiguous())
        if not rec["output_dtype_ok"]:
            failure = f"output dtype {y.dtype} != input dtype {dtype}"
        if not rec["output_keeps_layout"]:
            rec["notes"].append("output does not keep the input's memory format")
        bad = {k: e for k, e in errs["groupnorm_cuda"].items() if not e <= tol[k]}
        if bad:
            failure = "MISMATCH vs F.group_norm (float64 reference): " + ", ".join(
                f"{k} err {e:.3g} > tol {tol[k]:.3g}" for k, e in bad.items())
        del outs, y
    except Exception as e:  # an exception in the candidate is a failure too
        failure = f"EXCEPTION {type(e).__name__}: {e}"
        if args.verbose:
            traceback.print_exc()
    rec["max_err"] = errs
    if failure:
        rec["correct"] = False
        rec["failure"] = failure
        for k in ("groupnorm_cuda", "torch_eager", "torch_compile", "clone"):
            rec.setdefault(k, None)
        return rec
    rec["correct"] = True

    # torch.compile baseline: first call compiles (timed separately), then check it
    rec["torch_compile_note"] = None
    if compile_this:
        try:
            t0 = time.perf_counter()
            outs = run_outputs(impls["torch_compile"], x0, dy0, pass_)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rec["torch_compile_first_call_s"] = time.perf_counter() - t0
            errs["torch_compile"] = errors(outs, ref)
            bad = {k: e for k, e in errs["torch_compile"].items() if not e <= tol[k]}
            del outs
            if bad:
                rec["torch_compile_note"] = "compiled result mismatch: " + ", ".join(
                    f"{k} err {e:.3g}" for k, e in bad.items())
                del impls["torch_compile"]
            ctx["compile_fail_streak"] = 0
        except Exception as e:
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            rec["torch_compile_note"] = "torch.compile failed: " + msg
            impls.pop("torch_compile", None)
            ctx["compile_fail_streak"] = ctx.get("compile_fail_streak", 0) + 1
            if ctx["compile_fail_streak"] >= 3:
                ctx["compile_disabled"] = "torch.compile failed 3 times in a row (last: " + msg + ")"
                log(f"  torch.compile disabled for the rest of the run: {ctx['compile_disabled']}")
    else:
        rec["torch_compile_note"] = ctx["compile_skip_reason"]

    # peers
    peer_impls: Dict[str, Impl] = {}
    rec["peer_notes"] = {}
    for pname, factory in ctx["peers"].items():
        try:
            impl = factory(case, act, w, b, layout, dtype)
            outs = run_outputs(impl, x0, dy0, pass_)
            pe = errors(outs, ref)
            errs[pname] = pe
            del outs
            bad = {k: e for k, e in pe.items() if not e <= tol[k]}
            if bad:
                rec["peer_notes"][pname] = "mismatch: " + ", ".join(f"{k} err {e:.3g}" for k, e in bad.items())
            else:
                peer_impls[pname] = impl
        except NotImplementedError as e:
            rec["peer_notes"][pname] = f"unsupported: {e}"
        except Exception as e:
            rec["peer_notes"][pname] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]

    # ---- timing ----
    per_set = x_bytes * (2 if need_grads else 1)
    nbuf = n_rotating_buffers(per_set, ctx["cache_bytes"], ctx["rotate_cap_bytes"])
    bufs = [(x0, dy0)]
    for _ in range(nbuf - 1):
        bufs.append((x0.detach().clone().requires_grad_(need_grads), dy0.clone()))
    rec["n_buffers"] = nbuf
    runners = {k: v.runner(pass_) for k, v in impls.items()}
    runners.update({k: v.runner(pass_) for k, v in peer_impls.items()})
    runners["clone"] = lambda x, dy: x.detach().clone()
    times, spread, n_rep = measure(runners, bufs, device, pass_, args.budget, args.repeats,
                           ctx["min_rep"], ctx["max_rep"])
    rec["repeats"] = n_rep
    rec["min_s"] = spread.pop("min")  # best single call, for judging noise on shared machines
    rec["iqr_over_median"] = spread  # timing noise per implementation
    for k in ("groupnorm_cuda", "torch_eager", "torch_compile", "clone"):
        rec[k] = times.get(k)
    rec["peers"] = {p: times.get(p) for p in ctx["peers"]}
    t = rec["groupnorm_cuda"]
    rec["gbps"] = {k: rec["bytes_moved"] / v / 1e9 for k, v in times.items() if k != "clone" and v}
    rec["speedup_eager"] = rec["torch_eager"] / t
    rec["speedup_compile"] = rec["torch_compile"] / t if rec["torch_compile"] else None
    rec["speedup_peers"] = {p: (v / t if v else None) for p, v in rec["peers"].items()}
    rec["clone_ratio"] = t / rec["clone"]
    return rec


def variant_label(r) -> str:
    return (f"{r['case']} {SHORT_DTYPE[r['dtype']]} {r['layout']} {r['pass']}"
            + (f" +{r['activation']}" if r['activation'] else ""))


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------

def section_key(r):
    return (r["device"], r["dtype"], r["layout"], r["pass"])


_ORDER = {"float32": 0, "bfloat16": 1, "float16": 2, "nchw": 0, "channels_last": 1, "fwd": 0, "fwd+bwd": 1}


def section_sort(key):
    return (key[0],) + tuple(_ORDER.get(k, 9) for k in key[1:])


def print_tables(results: List[dict], peers: List[str]) -> None:
    ok = [r for r in results if r.get("correct")]
    keys = []
    for r in ok:
        if section_key(r) not in keys:
            keys.append(section_key(r))
    for key in sorted(keys, key=section_sort):
        dev, dt, lay, ps = key
        print(f"\n### {dev} | {dt} | {lay} | {ps}\n")
        head = ["case", "act", "ours ms", "ours GB/s", "eager ms", "vs eager", "compile ms",
                "vs compile", "clone ms", "ours/clone"] + [f"{p} ms" for p in peers]
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for r in ok:
            if section_key(r) != key:
                continue
            row = [r["case"], r["activation"] or "-", fmt_ms(r["groupnorm_cuda"]),
                   fmt_f(r["gbps"].get("groupnorm_cuda")), fmt_ms(r["torch_eager"]),
                   fmt_x(r["speedup_eager"]), fmt_ms(r["torch_compile"]),
                   fmt_x(r["speedup_compile"]), fmt_ms(r["clone"]), fmt_x(r["clone_ratio"])]
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
        summary.append(dict(device=key[0], dtype=key[1], layout=key[2], **{"pass": key[3]}, n=len(rs),
                            geomean_speedup_eager=geomean([r["speedup_eager"] for r in rs]),
                            min_speedup_eager=worst["speedup_eager"],
                            min_speedup_eager_case=variant_label(worst),
                            n_compile=len(comp), geomean_speedup_compile=geomean(comp),
                            geomean_clone_ratio=geomean([r["clone_ratio"] for r in rs])))
    return summary


def print_summary(summary: List[dict]) -> None:
    print("\n## Geometric-mean summary per (device, dtype, layout, pass)\n")
    print("| device | dtype | layout | pass | n | geomean vs eager | min vs eager (variant) | "
          "geomean vs compile (n) | geomean ours/clone |")
    print("|---|---|---|---|---:|---:|---|---:|---:|")
    for s in summary:
        print(f"| {s['device']} | {s['dtype']} | {s['layout']} | {s['pass']} | {s['n']} | "
              f"{fmt_x(s['geomean_speedup_eager'])} | {fmt_x(s['min_speedup_eager'])} "
              f"({s['min_speedup_eager_case']}) | {fmt_x(s['geomean_speedup_compile'])} "
              f"({s['n_compile']}) | {fmt_x(s['geomean_clone_ratio'])} |")


def foundation_checks(results: List[dict]) -> dict:
    """The CPU-path acceptance criteria, as measured facts (never change the exit status)."""
    base = [r for r in results if r.get("correct") and r["activation"] is None
            and r["dtype"] in ("float32", "bfloat16")]
    fb = [r for r in base if r["pass"] == "fwd+bwd"]
    fw = [r for r in base if r["pass"] == "fwd"]
    big = [r for r in fw if r["tensor_mib"] >= 32]
    checks = {}
    g = geomean([r["speedup_eager"] for r in fb])
    checks["fwd_bwd_geomean_speedup_eager"] = dict(
        value=g, target=">= 1.3", n=len(fb), passed=None if g is None else g >= 1.3)
    if fb:
        w = min(fb, key=lambda r: r["speedup_eager"])
        checks["fwd_bwd_min_speedup_eager"] = dict(value=w["speedup_eager"], variant=variant_label(w),
                                                   target=">= 0.9", n=len(fb),
                                                   passed=w["speedup_eager"] >= 0.9)
    else:
        checks["fwd_bwd_min_speedup_eager"] = dict(value=None, target=">= 0.9", n=0, passed=None)
    if fw:
        w = min(fw, key=lambda r: r["speedup_eager"])
        checks["fwd_min_speedup_eager (info)"] = dict(value=w["speedup_eager"], variant=variant_label(w),
                                                      target="info", n=len(fw), passed=None)
    if big:
        w = max(big, key=lambda r: r["clone_ratio"])
        checks["fwd_clone_ratio_ge_32MiB"] = dict(
            value=w["clone_ratio"], variant=variant_label(w), target="<= 1.3 (worst case)",
            n=len(big), passed=w["clone_ratio"] <= 1.3,
            all={variant_label(r): round(r["clone_ratio"], 3) for r in big})
    else:
        checks["fwd_clone_ratio_ge_32MiB"] = dict(value=None, target="<= 1.3", n=0, passed=None)
    return checks


def print_checks(checks: dict) -> None:
    print(f"\n## Checks\n\n{FOUNDATION_NOTE}; measured facts, they do not change the exit status.\n")
    for name, c in checks.items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c["passed"]]
        if c["target"] == "info":
            verdict = "info"
        val = "-" if c["value"] is None else f"{c['value']:.3f}x"
        extra = f" (worst: {c['variant']})" if c.get("variant") else ""
        print(f"- {verdict}: {name} = {val} over {c['n']} variants, target {c['target']}{extra}")
        if c.get("all"):
            for k, v in c["all"].items():
                print(f"    - {k}: ours/clone {v:.3f}x")


def write_csv(path: str, results: List[dict], peers: List[str]) -> None:
    cols = ["case", "family", "shape", "num_groups", "eps", "dtype", "layout", "pass", "activation",
            "device", "tensor_mib", "bytes_moved", "correct", "groupnorm_cuda", "torch_eager",
            "torch_compile", "clone"] + [f"peer_{p}" for p in peers] + [
            "gbps_groupnorm_cuda", "gbps_torch_eager", "speedup_eager", "speedup_compile",
            "clone_ratio", "repeats", "n_buffers", "max_err_groupnorm_cuda", "torch_compile_note",
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


# ----------------------------------------------------------------------------------------------

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


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        log("error: --device cuda but torch.cuda.is_available() is False")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_mb is None:
        args.max_mb = 100.0 if device.type == "cpu" else 0.0
    if args.budget is None:
        args.budget = (0.25 if args.quick else 0.2) if device.type == "cpu" else 0.2
    for opt in ("dtype", "layout", "passes", "activation"):
        table = {"dtype": DTYPE_ALIASES, "layout": LAYOUT_ALIASES, "passes": PASS_ALIASES,
                 "activation": ACT_ALIASES}[opt]
        for v in split_list(getattr(args, opt)):
            if v.lower() not in table:
                log(f"error: unknown --{opt.rstrip('es') if opt == 'passes' else opt} value {v!r}; "
                    f"choose from {sorted(set(table))}")
                return 2

    selected, skipped, dtypes, layouts, passes, acts = select_variants(args, device)
    if args.list:
        for c, d, l, p, a in selected:
            print(f"{c.name:34s} {d:9s} {l:14s} {p:8s} {a or '-'}  ({c.numel * TORCH_DTYPES[d].itemsize / MiB:.1f} MiB)")
        for s in skipped:
            print(f"SKIP {s['case']} {s['dtype']} {s['layout']} {s['pass']} {s['activation'] or '-'}: {s['reason']}")
        print(f"{len(selected)} variants selected, {len(skipped)} skipped")
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

    # torch.compile policy
    scope = "none" if args.no_compile else (args.compile_scope or (
        "all" if (args.quick or len(selected) <= COMPILE_ALL_MAX) else "quick"))
    quick_set = {(n, d, l, p, a) for (n, d, l, p, a) in QUICK_VARIANTS}
    quick_set |= {(n, "float16", l, p, a) for (n, d, l, p, a) in QUICK_VARIANTS if d == "bfloat16"}
    try:
        import torch._dynamo as _dynamo
        cfg = _dynamo.config
        for attr in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, attr):
                setattr(cfg, attr, 100000)
        if hasattr(cfg, "accumulated_recompile_limit"):
            cfg.accumulated_recompile_limit = 100000
    except Exception:
        pass

    peers, peer_notes = load_peers(device, not args.no_peers)

    tag = f"{device.type}{'_quick' if args.quick else ''}"
    out_dir = os.path.join(HERE, "out")
    json_path = args.json or os.path.join(out_dir, f"results_{tag}.json")
    csv_path = args.csv or os.path.join(out_dir, f"results_{tag}.csv")
    plot_path = args.plot or os.path.join(out_dir, f"results_{tag}.png")
    for pth in (json_path, csv_path, plot_path):
        os.makedirs(os.path.dirname(os.path.abspath(pth)), exist_ok=True)

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev_name = f"{props.name} ({props.multi_processor_count} SMs, L2 {props.L2_cache_size / MiB:.0f} MiB)"
        cache_bytes = props.L2_cache_size
        free, _total = torch.cuda.mem_get_info(device)
        rotate_cap = int(min(4 * 1024 * MiB, 0.25 * free))
        min_rep, max_rep = 10, 500
    else:
        dev_name = cpu_model()
        cache_bytes = cpu_llc_bytes()
        rotate_cap = 1024 * MiB
        min_rep, max_rep = 7, 200  # medians of fewer samples swing by 10-30% on a busy VM

    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device.type, device_name=dev_name, torch=torch.__version__,
        cuda=torch.version.cuda, threads=torch.get_num_threads(), python=platform.python_version(),
        host=platform.node(), candidate=cand_desc, git_commit=git_commit(),
        cache_bytes_for_rotation=cache_bytes, quick=args.quick, compile_scope=scope,
        max_mb=args.max_mb, budget_s=args.budget, repeats=args.repeats, bytes_formula=BYTES_FORMULA,
        argv=sys.argv[1:], peers=list(peers), peer_notes=peer_notes,
        dtypes=dtypes, layouts=layouts, passes=passes, activations=acts,
    )
    print("# groupnorm_cuda benchmark\n")
    print(f"- date: {meta['date']}")
    print(f"- device: {device.type} - {dev_name}")
    print(f"- torch {torch.__version__} (CUDA {torch.version.cuda}), python {meta['python']}, "
          f"threads (torch.get_num_threads) = {meta['threads']}")
    print(f"- candidate: {cand_desc}" + (f", git {meta['git_commit']}" if meta["git_commit"] else ""))
    print(f"- mode: {'--quick subset' if args.quick else 'full suite'}; {len(selected)} variants, "
          f"{len(skipped)} skipped; timing: {'CUDA events' if device.type == 'cuda' else 'time.perf_counter'}, "
          f"median of {'%d' % args.repeats if args.repeats else 'adaptive'} repeats "
          f"(budget {args.budget:g} s per implementation per variant), implementations interleaved, "
          f"inputs rotated over enough buffers to exceed 2x the {'L2' if device.type == 'cuda' else 'last-level cache'} "
          f"({cache_bytes / MiB:.0f} MiB)")
    compile_desc = {"all": "torch.compile(F.group_norm, dynamic=False) on every variant",
                    "quick": "torch.compile(F.group_norm, dynamic=False) only on the variants of the "
                             f"--quick subset ({len(selected)} variants selected > {COMPILE_ALL_MAX}; "
                             "each variant is a recompile costing seconds; --compile-scope all to "
                             "compile everything)",
                    "none": "torch.compile baseline not run" + (" (--no-compile)" if args.no_compile else "")}[scope]
    print(f"- compile baseline: {compile_desc}")
    print(f"- baselines: nn.GroupNorm eager (+ F.silu for the silu variants); x.clone() floor; "
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

    ctx = dict(device=device, candidate=cand, peers=peers, cache_bytes=cache_bytes,
               rotate_cap_bytes=rotate_cap, min_rep=min_rep, max_rep=max_rep,
               compile_skip_reason=None)
    results: List[dict] = []
    failures: List[str] = []
    t_start = time.perf_counter()
    data: Optional[CaseData] = None
    data_key = None
    interrupted = False
    for i, (case, d, l, p, a) in enumerate(selected, 1):
        if interrupted:
            break
        label = f"{case.name} {SHORT_DTYPE[d]} {l} {p}" + (f" +{a}" if a else "")
        if ctx.get("compile_disabled"):
            compile_this, ctx["compile_skip_reason"] = False, ctx["compile_disabled"]
        elif scope == "all":
            compile_this = True
        elif scope == "quick":
            compile_this = (case.name, d, l, p, a) in quick_set
            ctx["compile_skip_reason"] = None if compile_this else "not compiled (compile scope: quick subset)"
        else:
            compile_this = False
            ctx["compile_skip_reason"] = "--no-compile" if args.no_compile else "compile scope: none"
        try:
            if data_key != (case.name, d):
                data, data_key = None, None
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                data = CaseData(case, TORCH_DTYPES[d], device, args.seed)
                data_key = (case.name, d)
            rec = bench_variant(args, ctx, data, case, d, l, p, a, compile_this)
        except KeyboardInterrupt:
            log(f"interrupted at [{i}/{len(selected)}] {label}: reporting the variants done so far")
            meta["interrupted_at"] = label
            interrupted = True
            break
        except torch.cuda.OutOfMemoryError as e:
            log(f"[{i}/{len(selected)}] {label}: skipped, out of memory ({str(e).splitlines()[0]})")
            skipped.append(dict(case=case.name, dtype=d, layout=l, **{"pass": p}, activation=a,
                                reason="out of memory"))
            data, data_key = None, None
            gc.collect()
            torch.cuda.empty_cache()
            continue
        results.append(rec)
        el = time.perf_counter() - t_start
        if not rec["correct"]:
            msg = f"{label}: {rec['failure']}"
            failures.append(msg)
            log(f"[{i}/{len(selected)}] FAILED {msg}  [{el:.0f}s]")
            if args.fail_fast:
                break
            continue
        parts = [f"ours {fmt_ms(rec['groupnorm_cuda'])} ms",
                 f"eager {fmt_ms(rec['torch_eager'])} ms ({fmt_x(rec['speedup_eager'])})"]
        if rec["torch_compile"]:
            parts.append(f"compile {fmt_ms(rec['torch_compile'])} ms ({fmt_x(rec['speedup_compile'])})")
        elif compile_this and rec.get("torch_compile_note"):
            parts.append(f"compile: {rec['torch_compile_note'][:80]}")
        parts.append(f"clone {fmt_ms(rec['clone'])} ms (ours/clone {fmt_x(rec['clone_ratio'])})")
        for pn, pt in rec["peers"].items():
            if pt:
                parts.append(f"{pn} {fmt_ms(pt)} ms")
        eta = el / i * (len(selected) - i)
        log(f"[{i}/{len(selected)}] {label}: " + ", ".join(parts) + f"  [{el:.0f}s, eta {eta:.0f}s]")
    data = None
    total_s = time.perf_counter() - t_start
    meta["elapsed_s"] = total_s

    # ---- report ----
    print_tables(results, list(peers))
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

    with open(json_path, "w") as f:
        json.dump(dict(meta=meta, results=results, skipped=skipped, summary=summary, checks=checks,
                       failures=failures), f, indent=1, default=str)
    write_csv(csv_path, results, list(peers))
    title = f"groupnorm_cuda speedup, {device.type} ({dev_name}), torch {torch.__version__}"
    plot_msg = write_plot(plot_path, results, title)
    print(f"\nwrote {json_path}\nwrote {csv_path}\n{plot_msg}")
    print(f"total time {total_s:.0f} s for {len(results)} variants")
    if failures:
        print(f"\n**CORRECTNESS FAILURES: {len(failures)}**")
        for m in failures:
            print(f"- {m}")
        log(f"\n{len(failures)} CORRECTNESS FAILURE(S): exit status 1")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
