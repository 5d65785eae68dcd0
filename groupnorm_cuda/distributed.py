"""GroupNorm over a tensor split across processes (``torch.distributed``) or into chunks.

Patch-parallel VAEs and UNets split the spatial (or temporal) dimensions of an activation across
ranks; GroupNorm then needs statistics over the whole group. Here every rank computes the moments
of its shard per (sample, group) -- count, shift (the group's first element), mean of the shifted
data and M2, with the same shifted Welford / Chan numerics as the single-process op -- the ranks
exchange them in ONE all-gather of N * G * 4 float64 values, every rank merges them in rank
order (Chan's formula, ``torch.ops.groupnorm_cuda.merge_moments``), and normalizes its shard
with the merged statistics. Because every rank merges the same gathered values in the same
order, the statistics -- and so the outputs -- are bitwise the same on every rank and from run to
run; unlike an all-reduce of E[x] and E[x^2], nothing cancels on data with a large mean.

Before that exchange (``validate=True``, the default) the ranks all-gather a 16-value header
(shape without the sharded dimension, groups, dtype, device, activation, eps, affine) and every
rank raises the same ValueError when they disagree, instead of hanging in a mismatched
collective. Pass ``validate=False`` to save that round trip once a pipeline is known to be
consistent.

The same split ops normalize a tensor that is processed in chunks on one device
(:func:`group_norm_chunks`, differentiable too).

Backward: every rank computes its shard's share of the reductions (per (sample, group) two
sums, and its dweight / dbias contributions), the ranks exchange them in ONE all-gather of
2 * N * G + 2 * C values, every rank adds them up in rank order, and computes its shard's dx.
The weight and bias gradients are the FULL gradients (the whole tensor's), the same bits on
every rank, while a per-shard layer (a convolution) only has its shard's share. Summing the
other layers' gradients over the patch-parallel ranks (all_reduce SUM) then gives every
parameter the whole tensor's gradient. DistributedDataParallel over those ranks AVERAGES
instead: it divides the per-shard layers' sums by the world size but leaves these (identical)
GroupNorm gradients whole, so divide them by the world size too (a hook on weight and bias), or
keep the patch-parallel ranks out of DDP's process group. Double backward is not supported.
"""
from __future__ import annotations

import struct
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ._ops import _activation_name
from .modules import GroupNorm

__all__ = ["ShardedGroupNorm", "group_norm_chunks", "shard_groupnorm", "sharded_group_norm"]

_ops = torch.ops.groupnorm_cuda
_HEADER = 16
_DTYPES = {torch.float32: 1, torch.float64: 2, torch.float16: 3, torch.bfloat16: 4}
_ACTS = {"none": 0, "silu": 1}


def _residual(merged: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The saved mean's rounding error, from the merged (float64) mean: what the fused backward
    measures from the data, here without a second pass or a second exchange."""
    return ((merged[..., 1] + merged[..., 2]) - mean.double()).to(mean.dtype)


def _count(merged: torch.Tensor) -> int:
    """Elements of one group over all parts (the same for every (n, group))."""
    return int(merged[0, 0, 0].item()) if merged.shape[0] > 0 else 0


def _part_sums(dy, x, mean, rstd, residual, w, b, G, act) -> torch.Tensor:
    """One part's (shard's, chunk's) backward sums as one float64 vector: group sums (N*G*2),
    then its dweight and dbias contributions (C each, when the parameter exists)."""
    sums, dwp, dbp = _ops.backward_sums(dy, x, mean, rstd, residual, w, b, G, act)
    return torch.cat([sums.reshape(-1), dwp, dbp]).double()


def _finish_backward(parts: torch.Tensor, parts_x, dys, mean, rstd, residual, w, b, G, act, count, needs):
    """Adds the parts' sums in part order (float64: the same bits wherever it runs) and returns
    (dx of each part, dweight, dbias), each None where not needed."""
    total = parts[0].clone()
    for r in range(1, parts.shape[0]):
        total += parts[r]
    N, C = mean.shape[0], parts_x[0].shape[1]
    n_sums = N * G * 2
    group_sums = total[:n_sums].view(N, G, 2).to(mean.dtype)
    dxs = []
    for x, dy in zip(parts_x, dys):
        if not needs[0]:
            dxs.append(None)
        elif count > 0:
            dxs.append(_ops.backward_dx(dy, x, mean, rstd, residual, w, b, group_sums, count, G, act))
        else:
            dxs.append(torch.zeros_like(x))
    dw = db = None
    offset = n_sums
    if w is not None:
        dw = total[offset:offset + C].to(w.dtype) if needs[1] else None
        offset += C
    if b is not None and needs[2]:
        db = total[offset:offset + C].to(b.dtype)
    return dxs, dw, db


def group_norm_chunks(chunks: Sequence[torch.Tensor], num_groups: int, weight: Optional[torch.Tensor] = None,
                      bias: Optional[torch.Tensor] = None, eps: float = 1e-5,
                      activation: Optional[str] = None) -> List[torch.Tensor]:
    """F.group_norm (then ``activation``) of the concatenation of ``chunks`` along any spatial
    dimension, returned as one output per chunk (so the whole output never has to exist at
    once): each chunk's moments, merged in chunk order, then each chunk normalized. The chunks
    must agree in every dimension but the one they split; a chunk may be empty. Each chunk is
    read twice (statistics, then normalization). Differentiable: the backward adds the chunks'
    sums (``backward_sums``) in chunk order, then computes each chunk's dx."""
    if not chunks:
        raise ValueError("group_norm_chunks: expected at least one chunk")
    act = _activation_name(activation)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (weight, bias, *chunks)):
        return list(_ChunksFunction.apply(num_groups, eps, act, weight, bias, *chunks))
    return _chunks_forward(chunks, num_groups, weight, bias, eps, act)[0]


def _chunks_forward(chunks, num_groups, weight, bias, eps, act):
    merged = _ops.merge_moments(torch.stack([_ops.stats(c, num_groups) for c in chunks]))
    outs = [_ops.apply(c, merged, weight, bias, num_groups, eps, act) for c in chunks]
    return [o[0] for o in outs], merged, outs[0][1], outs[0][2]


class _ChunksFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, num_groups, eps, act, weight, bias, *chunks):
        ys, merged, mean, rstd = _chunks_forward(chunks, num_groups, weight, bias, eps, act)
        ctx.save_for_backward(weight, bias, mean, rstd, _residual(merged, mean), *chunks)
        ctx.count, ctx.args = _count(merged), (num_groups, act)
        return tuple(ys)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *dys):
        w, b, mean, rstd, residual, *chunks = ctx.saved_tensors
        G, act = ctx.args
        dys = [torch.zeros_like(c) if dy is None else dy for c, dy in zip(chunks, dys)]
        parts = torch.stack([_part_sums(dy, c, mean, rstd, residual, w, b, G, act) for c, dy in zip(chunks, dys)])
        needs = (any(ctx.needs_input_grad[5:]), ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        dxs, dw, db = _finish_backward(parts, chunks, dys, mean, rstd, residual, w, b, G, act, ctx.count, needs)
        dxs = [dx if need else None for dx, need in zip(dxs, ctx.needs_input_grad[5:])]
        return (None, None, None, dw, db, *dxs)


def _eps_bits(eps: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(eps)))[0]


def _header(x: torch.Tensor, num_groups: int, dim: int, weight, bias, eps: float, act: str) -> List[int]:
    shape = [-1 if d == dim else s for d, s in enumerate(x.shape)]
    shape += [0] * (6 - len(shape))  # up to 6-D: (N, C) and four spatial dimensions
    dev = {"cpu": 1, "cuda": 2}.get(x.device.type, 3)
    h = [x.dim(), *shape, num_groups, _DTYPES.get(x.dtype, 0), dev, _ACTS.get(act, 9), _eps_bits(eps),
         int(weight is not None) + 2 * int(bias is not None), dim]
    return h + [0] * (_HEADER - len(h))


_FIELDS = (["ndim"] + ["shape[%d] (the sharded dimension shows as -1)" % i for i in range(6)]
           + ["num_groups", "dtype", "device type", "activation", "eps", "affine (weight/bias present)", "dim"])


def _all_gather(t: torch.Tensor, group) -> torch.Tensor:
    """(world,) + t.shape: every rank's t, in rank order (one all-gather of t.numel() values each)."""
    world = dist.get_world_size(group)
    flat = t.contiguous().reshape(-1)
    out = torch.empty(world * flat.numel(), dtype=t.dtype, device=t.device)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the new name since 2.13
    gather(out, flat, group=group)
    return out.view((world,) + tuple(t.shape))


def _collective_device(group) -> torch.device:
    backend = dist.get_backend(group)
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _validate(x: torch.Tensor, num_groups: int, dim: int, weight, bias, eps: float, act: str, group) -> None:
    """All ranks compare their headers; every rank raises the same error on a mismatch."""
    mine = torch.tensor(_header(x, num_groups, dim, weight, bias, eps, act), dtype=torch.int64,
                        device=_collective_device(group))
    rows = _all_gather(mine, group).cpu().tolist()
    for i, name in enumerate(_FIELDS):
        values = [r[i] for r in rows]
        if any(v != values[0] for v in values):
            shown = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            raise ValueError(f"groupnorm_cuda.distributed: the ranks disagree on the input's {name} ({shown}); "
                             "every rank must pass a shard of the same tensor, split along `dim` only")
    if x.device.type != _collective_device(group).type:
        raise ValueError(f"groupnorm_cuda.distributed: the shards are on {x.device} but the process group's "
                         f"backend ({dist.get_backend(group)}) communicates on {_collective_device(group).type}")


def sharded_group_norm(input: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor] = None,
                       bias: Optional[torch.Tensor] = None, eps: float = 1e-5, activation: Optional[str] = None,
                       *, group=None, dim: int = 2, validate: bool = True) -> torch.Tensor:
    """F.group_norm (then ``activation``) of the tensor whose shards along ``dim`` (a spatial
    dimension: 2 or more) the ranks of ``group`` hold, in rank order; returns this rank's shard
    of the output. Shards may differ in size along ``dim`` (some may be empty); every other
    dimension, the parameters, eps and the activation must be the same on every rank (checked
    with ``validate=True``). Differentiable (see the module docstring for what the backward
    communicates and what the parameter gradients are). Communication per call: forward, one
    all-gather of N * num_groups * 4 float64 values (plus the 16-value header check when
    validating); backward, one all-gather of 2 * N * num_groups + 2 * C values."""
    act = _activation_name(activation)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias)):
        return _ShardedFunction.apply(input, weight, bias, num_groups, eps, act, group, dim, validate)
    return _sharded_forward(input, num_groups, weight, bias, eps, act, group, dim, validate)[0]


def _sharded_forward(input, num_groups, weight, bias, eps, act, group, dim, validate):
    """(this rank's output, the merged moments (N, G, 4) float64, mean, rstd)."""
    if not 2 <= dim < input.dim() <= 6:
        raise ValueError(f"sharded_group_norm: dim must be a spatial dimension (2..{input.dim() - 1}) of an "
                         f"input of 3 to 6 dimensions, got dim={dim} for a {input.dim()}-D input")
    if validate:
        _validate(input, num_groups, dim, weight, bias, eps, act, group)
    merged = _ops.merge_moments(_all_gather(_ops.stats(input, num_groups), group))
    y, mean, rstd = _ops.apply(input, merged, weight, bias, num_groups, eps, act)
    return y, merged, mean, rstd


class _ShardedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, num_groups, eps, act, group, dim, validate):
        y, merged, mean, rstd = _sharded_forward(input, num_groups, weight, bias, eps, act, group, dim, validate)
        ctx.save_for_backward(input, weight, bias, mean, rstd, _residual(merged, mean))
        ctx.count, ctx.args = _count(merged), (num_groups, act, group)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, w, b, mean, rstd, residual = ctx.saved_tensors
        G, act, group = ctx.args
        # one all-gather; every rank adds the ranks' sums in rank order (the same bits everywhere)
        parts = _all_gather(_part_sums(dy, x, mean, rstd, residual, w, b, G, act), group)
        dxs, dw, db = _finish_backward(parts, [x], [dy], mean, rstd, residual, w, b, G, act, ctx.count,
                                       ctx.needs_input_grad[:3])
        return dxs[0], dw, db, None, None, None, None, None, None


class ShardedGroupNorm(GroupNorm):
    """A GroupNorm (same parameters, state_dict and activation as ``groupnorm_cuda.GroupNorm``)
    whose input is this rank's shard along ``dim`` of a tensor split across ``process_group``;
    see :func:`sharded_group_norm`."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None,
                 dtype=None, *, bias: bool = True, activation: Optional[str] = None, process_group=None,
                 dim: int = 2, validate: bool = True) -> None:
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias=bias, activation=activation)
        self.process_group = process_group
        self.dim = dim
        self.validate = validate

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return sharded_group_norm(input, self.num_groups, self.weight, self.bias, self.eps, self._act,
                                  group=self.process_group, dim=self.dim, validate=self.validate)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dim={self.dim}"


def shard_groupnorm(model: nn.Module, process_group=None, dim: int = 2, validate: bool = True) -> nn.Module:
    """Makes every exact ``nn.GroupNorm`` and ``groupnorm_cuda.GroupNorm`` of ``model`` (the root
    included) a ShardedGroupNorm over ``process_group`` / ``dim``, in place (the same objects and
    parameters), so that the model runs on shards of its activations. Subclasses with their own
    forward are left alone (as convert_groupnorm does). Returns the model."""
    for m in model.modules():
        if type(m) in (nn.GroupNorm, GroupNorm):
            act = getattr(m, "_act", "none")
            m.__class__ = ShardedGroupNorm
            m._set_activation(act)
            m.process_group, m.dim, m.validate = process_group, dim, validate
    return model
