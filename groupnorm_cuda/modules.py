"""nn.Module API: GroupNorm (an nn.GroupNorm) and convert_groupnorm."""
import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Type, Union

import torch
from torch import nn

from . import _C
from ._ops import _activation_name

# nn.GroupNorm has had a `bias` argument since torch 2.12.
_NN_HAS_BIAS = "bias" in inspect.signature(nn.GroupNorm.__init__).parameters


class GroupNorm(nn.GroupNorm):
    """Drop-in replacement for ``torch.nn.GroupNorm`` (a subclass of it) with an optional fused
    activation.

    Constructor, parameters (``weight``, ``bias``), initialization, ``reset_parameters``,
    ``extra_repr`` and ``state_dict`` keys are nn.GroupNorm's, so a state_dict loads in both
    directions and code that tests ``isinstance(m, nn.GroupNorm)`` treats it as one.
    ``activation="silu"`` returns ``silu(group_norm(x))`` in one fused pass. Works with
    ``torch.jit.script`` / ``torch.jit.trace`` and ``torch.compile``.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        activation: Optional[str] = None,
    ) -> None:
        act = _activation_name(activation)
        _C.check_activation(act)
        if _NN_HAS_BIAS:
            super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias=bias)
        else:
            super().__init__(num_groups, num_channels, eps, affine, device, dtype)
            if affine and not bias:
                self.register_parameter("bias", None)
        self._set_activation(act)

    def _set_activation(self, act: str) -> None:
        self.activation: Optional[str] = None if act == "none" else act
        self._act = act  # the op's argument, a plain str (what TorchScript reads)

    def reset_parameters(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.ops.groupnorm_cuda.forward(input, self.weight, self.bias, self.num_groups, self.eps, self._act)[0]

    def extra_repr(self) -> str:
        # nn.GroupNorm's own text (it names `bias` from torch 2.12 on), plus what it cannot say.
        s = super().extra_repr()
        if not _NN_HAS_BIAS and self.affine and self.bias is None:
            s += ", bias=False"
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        return s

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        if "_act" not in self.__dict__:
            self._set_activation(_activation_name(self.__dict__.get("activation")))

    @classmethod
    def from_module(cls, m: nn.GroupNorm, activation: Optional[str] = None) -> "GroupNorm":
        """A new GroupNorm with m's configuration, sharing m's parameters (same tensors), with
        ``activation`` fused (for a module that applies one after the norm)."""
        ref = m.weight
        new = cls(
            m.num_groups,
            m.num_channels,
            eps=m.eps,
            affine=m.affine,
            bias=m.bias is not None,
            device=ref.device if ref is not None else None,
            dtype=ref.dtype if ref is not None else None,
            activation=activation,
        )
        if m.affine:
            new.weight = m.weight
            new.bias = m.bias
        new.train(m.training)
        return new


# ---------------------------------------------------------------------------------------
# Conversion

# Subclasses of nn.GroupNorm the converter knows how to replace: class -> factory(module) that
# returns a module computing exactly what the instance computes (or None to leave it).
_CONVERSIONS: Dict[Type[nn.Module], Callable[[nn.Module], Optional[nn.Module]]] = {}


def register_groupnorm_conversion(cls: Type[nn.Module], factory: Callable[[nn.Module], Optional[nn.Module]]) -> None:
    """Teach convert_groupnorm a subclass of nn.GroupNorm (or any norm-like class).

    ``factory(module)`` must return a module that computes exactly what ``module`` computes
    (typically a ``groupnorm_cuda.GroupNorm`` sharing its parameters, with ``activation=`` for a
    norm followed by an activation), or None to leave that instance alone. Matched on the exact
    class: a subclass of ``cls`` that changes forward again is not converted by it.
    """
    _CONVERSIONS[cls] = factory


@dataclass
class ConversionRecord:
    """What convert_groupnorm did with one module (report=True)."""

    name: str        # qualified name in the model ("" for the root)
    kind: str        # the module's class, qualified
    converted: bool
    reason: str


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _retype(m: nn.GroupNorm) -> GroupNorm:
    """An exact nn.GroupNorm becomes ours in place: the same object, so its parameters, buffers,
    hooks, training flag and every reference to it (shared modules included) stay as they are."""
    m.__class__ = GroupNorm
    m._set_activation("none")
    return m


def _convert_one(m: nn.Module, name: str) -> Tuple[Optional[nn.Module], ConversionRecord]:
    kind = _qualname(type(m))
    if isinstance(m, GroupNorm):
        return None, ConversionRecord(name, kind, False, "already groupnorm_cuda.GroupNorm")
    if type(m) is nn.GroupNorm:
        return _retype(m), ConversionRecord(name, kind, True, "nn.GroupNorm")
    factory = _CONVERSIONS.get(type(m))
    if factory is not None:
        new = factory(m)
        if new is None:
            return None, ConversionRecord(name, kind, False, "registered conversion declined this instance")
        return new, ConversionRecord(name, kind, True, "registered conversion")
    # timm / diffusers / MONAI subclasses, matched by qualified name (library_classes.py)
    from .library_classes import known_conversion

    known = known_conversion(type(m))
    if known is not None:
        new = known(m)
        if isinstance(new, str):
            return None, ConversionRecord(name, kind, False, f"known library class, left as is: {new}")
        return new, ConversionRecord(name, kind, True, "known library class")
    if isinstance(m, nn.GroupNorm):
        why = "overrides forward" if type(m).forward is not nn.GroupNorm.forward else "subclass"
        return None, ConversionRecord(
            name, kind, False, f"subclass of nn.GroupNorm ({why}) with no registered conversion: left as is "
            "(groupnorm_cuda.register_groupnorm_conversion teaches it one)")
    return None, ConversionRecord(name, kind, False, "")


def _uses(model: nn.Module) -> Dict[int, int]:
    counts: Dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    return counts


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _fuse_silu(model: nn.Module, records: List[ConversionRecord]) -> None:
    """In every nn.Sequential, a groupnorm_cuda.GroupNorm without activation followed by an
    nn.SiLU becomes GroupNorm(activation="silu") followed by nn.Identity (indices, and so
    state_dict keys, unchanged). Only where nothing else can see the difference: the norm is used
    once in the model and neither module has hooks."""
    uses = _uses(model)
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        if type(seq).forward is not nn.Sequential.forward:
            # a subclass with its own forward may use the norm's output elsewhere or call its
            # children in another order: adjacency does not mean composition there
            continue
        keys = list(seq._modules.keys())
        for a, b in zip(keys, keys[1:]):
            norm, act = seq._modules[a], seq._modules[b]
            if not (type(norm) is GroupNorm and norm.activation is None and type(act) is nn.SiLU):
                continue
            full = f"{seq_name}.{a}" if seq_name else a
            if uses[id(norm)] > 1 or _has_hooks(norm) or _has_hooks(act):
                records.append(ConversionRecord(full, _qualname(GroupNorm), False,
                                                "not fused with the next SiLU: shared module or hooks"))
                continue
            norm._set_activation("silu")
            seq._modules[b] = nn.Identity()
            records.append(ConversionRecord(full, _qualname(GroupNorm), True, "fused with the next nn.SiLU"))


def convert_groupnorm(
    model: nn.Module, *, fuse_activation: bool = False, report: bool = False
) -> Union[nn.Module, Tuple[nn.Module, List[ConversionRecord]]]:
    """Makes every ``nn.GroupNorm`` in ``model`` (the root included) a ``groupnorm_cuda.GroupNorm``
    without changing what the model computes. Returns the model (and, with ``report=True``, a
    list of ConversionRecord: what was converted, what was not, and why).

    * An exact ``nn.GroupNorm`` is converted in place (the same object: parameters, hooks and
      shared references are kept).
    * A subclass of nn.GroupNorm is left alone, unless its class was registered with
      ``register_groupnorm_conversion`` or it is one of the timm / diffusers classes listed in
      ``groupnorm_cuda/library_classes.py`` (matched by name, converted only where the op
      reproduces its forward): libraries subclass it to add an activation or a dropout after the
      norm, or to change its statistics, and a plain GroupNorm would drop that.
    * ``fuse_activation=True``: a converted norm directly followed by ``nn.SiLU`` in an
      ``nn.Sequential`` runs the fused GroupNorm+SiLU kernel (see _fuse_silu for when).
    """
    records: List[ConversionRecord] = []
    replaced: Dict[int, nn.Module] = {}
    root_new, rec = _convert_one(model, "")
    if rec.reason:
        records.append(rec)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            full = f"{parent_name}.{name}" if parent_name else name
            if id(child) not in replaced:
                new, rec = _convert_one(child, full)
                replaced[id(child)] = new if new is not None else child
                if rec.reason:
                    records.append(rec)
            if replaced[id(child)] is not child:
                parent._modules[name] = replaced[id(child)]
    if root_new is not None:
        model = root_new
    if fuse_activation:
        _fuse_silu(model, records)
    return (model, records) if report else model
