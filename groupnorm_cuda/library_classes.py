"""GroupNorm subclasses of other libraries (timm, diffusers, MONAI) that convert_groupnorm knows.

Matched by the class's qualified name (``module.qualname``), so nothing here imports those
libraries: ``import groupnorm_cuda`` stays cheap, and they stay optional. Only the exact class is
matched (a subclass of a known class that changes forward again is not). Consulted after the
classes a user registered with ``register_groupnorm_conversion`` (a user's registration wins).

Each entry's factory returns the replacement module, or a string that says why this instance is
left alone. Every factory reproduces the class's forward as read in the library's source
(versions checked: timm 1.0.31, diffusers 0.42.1, MONAI 1.6.1), and first checks that the
instance still looks like that source: the class's forward is the expected function and the
module has no hooks (a new module would not carry them), no extra submodules, no fast-norm flag.

    timm.layers.norm.GroupNorm, timm.layers.norm.GroupNorm1,
    timm.models.metaformer.GroupNorm1NoBias
        forward = F.group_norm(x, num_groups, weight, bias, eps) (GroupNorm1: num_groups=1;
        NoBias: bias None) unless timm's fast-norm mode was on when it was built (then it
        computes in the autocast dtype: left alone).
    timm.layers.norm_act.GroupNormAct, timm.layers.norm_act.GroupNorm1Act
        forward = act(drop(F.group_norm(...))): converted when drop is nn.Identity and act is
        nn.Identity (plain) or nn.SiLU (fused GroupNorm+SiLU); any other activation (ReLU, the
        default, GELU, ...) or a dropout / DropBlock: left alone.
    diffusers.models.autoencoders.autoencoder_kl_minimax_h3.MiniMaxH3VideoGroupNorm
        GroupNorm of each frame of a (B, C, T, H, W) tensor on its own: becomes
        PerFrameGroupNorm (the same reshapes around the op).

Known and deliberately not converted (the reason is reported):

    monai.apps.generation.maisi.networks.autoencoderkl_maisi.MaisiGroupNorm3D
        returns float32 for half inputs (float16 with norm_float16), moves groups to the CPU for
        large inputs, and rejects non-5-D input: the op keeps the input's dtype, so converting
        it would change what the model computes.
"""
from typing import Callable, Dict, Optional, Union

import torch
from torch import nn

from .modules import GroupNorm, _has_hooks

Factory = Callable[[nn.Module], Union[nn.Module, str]]


class PerFrameGroupNorm(GroupNorm):
    """GroupNorm of each frame of a (B, C, T, H, W) tensor on its own (the statistics never mix
    frames): what diffusers' ``MiniMaxH3VideoGroupNorm`` computes, on the op."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = input.shape
        frames = input.permute(0, 2, 1, 3, 4).contiguous().view(b * t, c, 1, h, w)
        y = torch.ops.groupnorm_cuda.forward(frames, self.weight, self.bias, self.num_groups, self.eps, self._act)[0]
        return y.view(b, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()


def _forward_is(m: nn.Module, qualified: str) -> bool:
    f = type(m).forward
    return f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', '')}" == qualified


def _common_checks(m: nn.Module, forward: str, children=()) -> Optional[str]:
    if not _forward_is(m, forward):
        return f"forward is not {forward} (a library version this converter was not checked against)"
    if _has_hooks(m):
        return "has hooks (a new module would not carry them)"
    if set(m._modules) != set(children):
        return f"submodules {sorted(m._modules)} (expected {sorted(children)})"
    if getattr(m, "_fast_norm", False):
        return "built in timm fast-norm mode (computes in the autocast dtype)"
    return None


def _timm_group_norm(forward: str) -> Factory:
    def factory(m):
        why = _common_checks(m, forward)
        return why if why else GroupNorm.from_module(m)

    return factory


def _timm_group_norm_act(forward: str) -> Factory:
    def factory(m):
        why = _common_checks(m, forward, children=("drop", "act"))
        if why:
            return why
        drop, act = m.drop, m.act
        if type(drop) is not nn.Identity or _has_hooks(drop):
            return f"drop is {type(drop).__name__}, not nn.Identity: not reproduced by the op"
        if _has_hooks(act):
            return "its activation has hooks"
        if type(act) is nn.Identity:
            return GroupNorm.from_module(m)
        if type(act) is nn.SiLU:
            return GroupNorm.from_module(m, activation="silu")
        return f"activation {type(act).__name__} is not fused by the op (only nn.SiLU)"

    return factory


def _per_frame(forward: str) -> Factory:
    def factory(m):
        why = _common_checks(m, forward)
        return why if why else PerFrameGroupNorm.from_module(m)

    return factory


def _declined(reason: str) -> Factory:
    return lambda m: reason


_MAISI = "monai.apps.generation.maisi.networks.autoencoderkl_maisi.MaisiGroupNorm3D"
_MINIMAX = "diffusers.models.autoencoders.autoencoder_kl_minimax_h3.MiniMaxH3VideoGroupNorm"

# qualified class name -> factory
KNOWN_CLASSES: Dict[str, Factory] = {
    "timm.layers.norm.GroupNorm": _timm_group_norm("timm.layers.norm.GroupNorm.forward"),
    "timm.layers.norm.GroupNorm1": _timm_group_norm("timm.layers.norm.GroupNorm1.forward"),
    "timm.models.metaformer.GroupNorm1NoBias": _timm_group_norm("timm.layers.norm.GroupNorm1.forward"),
    "timm.layers.norm_act.GroupNormAct": _timm_group_norm_act("timm.layers.norm_act.GroupNormAct.forward"),
    "timm.layers.norm_act.GroupNorm1Act": _timm_group_norm_act("timm.layers.norm_act.GroupNorm1Act.forward"),
    _MINIMAX: _per_frame(f"{_MINIMAX}.forward"),
    _MAISI: _declined(
        "MONAI MaisiGroupNorm3D returns float32 for half inputs and offloads large inputs to the CPU: "
        "the op keeps the input's dtype, so it is left as is"),
}


def known_conversion(cls: type) -> Optional[Factory]:
    """The factory for a known library class (matched by qualified name), or None."""
    return KNOWN_CLASSES.get(f"{cls.__module__}.{cls.__qualname__}")
