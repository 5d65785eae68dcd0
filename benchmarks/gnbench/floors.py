"""Memory-traffic floors of a GroupNorm on the same tensors: what any implementation must at
least spend, built from plain PyTorch ops (each a single streaming pass at memory speed).

* forward, NCHW (a group is one contiguous run that stays in cache between its statistics and
  its normalization): ``x.clone()`` -- one read of x and one write of a fresh y.
* forward, channels-last (a group spans a whole sample, larger than the cache for big
  tensors, so x is read twice): ``x.clone()`` + ``read_pass(x)``.
* forward+backward: ``x.clone()`` (the forward: read x, write y) then ``torch.add(x, dy)``
  (the backward: read x and dy, write dx). The backward's statistics pass over x and dy is the
  difference between this floor and any real backward when a sample does not fit in cache.
"""
from __future__ import annotations

from typing import Callable

import torch


def read_pass(x: torch.Tensor) -> torch.Tensor:
    """Sum of x's storage (dense, in memory order) viewed as float32: one read of every byte
    (a 2-byte type's odd last element aside), no write, no conversion."""
    n = x.numel() - (x.numel() % 2 if x.element_size() == 2 else 0)
    flat = torch.as_strided(x, (n,), (1,))
    return (flat.view(torch.float32) if x.element_size() == 2 else flat).sum()


def floor_name(pass_: str, layout: str) -> str:
    if pass_ == "fwd":
        return "clone" if layout == "nchw" else "clone+read"
    return "clone+add"


def floor_runner(pass_: str, layout: str) -> Callable:
    """runner(x, dy) of the floor of (pass, layout); x may require grad (it is detached)."""
    kind = floor_name(pass_, layout)
    if kind == "clone":
        return lambda x, dy: x.detach().clone()
    if kind == "clone+read":
        return lambda x, dy: (x.detach().clone(), read_pass(x.detach()))
    return lambda x, dy: (x.detach().clone(), torch.add(x.detach(), dy))
