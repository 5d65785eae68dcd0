"""Inputs of a case, the float64 reference and the correctness checks run before any timing.

The reference math and the error metric are groupnorm_cuda.reference's (the same module the
tests use); what is accepted (the per-dtype tolerance, widened by eager's own error) is decided
here.
"""
from __future__ import annotations

import math
import os
import time
import traceback
from typing import Dict, Optional, Tuple

import torch

from .cases import Case
from .common import log, memory_format_for
from .impls import Impl
from .machine import REPO_ROOT

try:
    from groupnorm_cuda.reference import reference as float64_reference
    from groupnorm_cuda.reference import rel_err
except Exception:  # the package's __init__ loads the compiled extension
    # `--candidate aten` (the harness self-test) must run without a built extension: load the
    # pure-PyTorch reference module straight from the source tree instead.
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_groupnorm_cuda_reference", os.path.join(REPO_ROOT, "groupnorm_cuda", "reference.py"))
    _reference = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_reference)
    float64_reference, rel_err = _reference.reference, _reference.rel_err

# Normalised max error (max |out - ref| / max |ref|, reference = float64) allowed before a
# variant is declared wrong. The tolerance actually used is max(base, min(4 x eager's own error,
# 0.1)): a variant fails only if it is clearly worse than PyTorch at the same precision.
BASE_TOL = {
    "float32": {"y": 1e-4, "dx": 1e-3, "dw": 1e-3, "db": 1e-3},
    "bfloat16": {"y": 2e-2, "dx": 3e-2, "dw": 2e-2, "db": 2e-2},
    "float16": {"y": 4e-3, "dx": 1e-2, "dw": 1e-2, "db": 1e-2},
}


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
        y, grads = float64_reference(self.x, c.num_groups, self.w, self.b, c.eps, act,
                                     self.dy if need_grads else None)
        ref = {"y": y}
        if need_grads:
            dx, dw, db = grads
            ref.update(dx=dx, dw=dw, db=db)
        self.refs = {k: v for k, v in self.refs.items() if k[0] != act}
        self.refs[(act, need_grads)] = ref
        return ref


def variant_inputs(data: CaseData, case: Case, layout: str, need_grads: bool):
    """x, dy in the requested layout (same values as the NCHW data), and weight / bias as
    parameters; the gradients are requested only for fwd+bwd."""
    if layout == "channels_last":
        mf = memory_format_for(len(case.shape))
        x0 = data.x.contiguous(memory_format=mf)
        dy0 = data.dy.contiguous(memory_format=mf)
    else:
        x0, dy0 = data.x, data.dy
    x0 = x0.detach().clone().requires_grad_(need_grads)
    w = torch.nn.Parameter(data.w.clone(), requires_grad=need_grads)
    b = torch.nn.Parameter(data.b.clone(), requires_grad=need_grads)
    return x0, dy0, w, b


def norm_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """groupnorm_cuda.reference.rel_err; a NaN (in the output) counts as an infinite error."""
    with torch.no_grad():
        e = rel_err(out, ref)
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


def eager_tolerance(eager: Impl, x0, dy0, pass_: str, ref, dtype_name: str):
    """Eager's own errors (run first: they widen the tolerance for low precision) and the
    tolerance per output. Returns ({"torch_eager": errs}, tol)."""
    errs: Dict[str, Dict[str, float]] = {}
    eager_out = run_outputs(eager, x0, dy0, pass_)
    errs["torch_eager"] = errors(eager_out, ref)
    del eager_out
    tol = {k: max(v, min(4 * errs["torch_eager"].get(k, 0.0), 0.1))
           for k, v in BASE_TOL[dtype_name].items() if k in errs["torch_eager"]}
    return errs, tol


def check_candidate(args, rec: dict, impl: Impl, x0, dy0, pass_: str, ref, tol, errs,
                    dtype: torch.dtype, layout: str) -> Optional[str]:
    """Checks groupnorm_cuda (errors, output dtype and memory format); returns the failure
    message, or None."""
    failure = None
    try:
        outs = run_outputs(impl, x0, dy0, pass_)
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
    return failure


def check_compile(ctx: dict, rec: dict, impls: Dict[str, Impl], x0, dy0, pass_: str, ref, tol,
                  errs, compile_this: bool) -> None:
    """torch.compile baseline: first call compiles (timed separately), then check it; drops it
    from `impls` on a mismatch or an exception."""
    rec["torch_compile_note"] = None
    if compile_this:
        try:
            t0 = time.perf_counter()
            outs = run_outputs(impls["torch_compile"], x0, dy0, pass_)
            if ctx["device"].type == "cuda":
                torch.cuda.synchronize(ctx["device"])
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


def check_peers(ctx: dict, rec: dict, case: Case, act: Optional[str], w, b, layout: str,
                dtype: torch.dtype, x0, dy0, pass_: str, ref, tol, errs) -> Dict[str, Impl]:
    """Builds and checks every peer; returns those that support the variant and match."""
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
    return peer_impls
