"""The implementations under test: the candidate (groupnorm_cuda, or F.group_norm for the
harness self-test), the torch.compile'd F.group_norm baseline and the optional peers."""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


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
    dtype / layout / grad mode, cached by dynamo, recompile limit raised by
    raise_recompile_limits())."""
    if act not in _COMPILED:
        if act == "silu":
            def f(x, g, w, b, eps):
                return F.silu(F.group_norm(x, g, w, b, eps))
        else:
            def f(x, g, w, b, eps):
                return F.group_norm(x, g, w, b, eps)
        _COMPILED[act] = torch.compile(f, dynamic=False)
    return _COMPILED[act]


def raise_recompile_limits() -> None:
    """Every variant is a recompile of the same function: lift dynamo's recompile limits."""
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
