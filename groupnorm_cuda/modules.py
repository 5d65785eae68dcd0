"""nn.Module API: GroupNorm (a drop-in for nn.GroupNorm) and convert_groupnorm."""
from typing import Optional

import torch
from torch import nn

from . import _C
from ._ops import _activation_name, group_norm


class GroupNorm(nn.Module):
    """Drop-in replacement for ``torch.nn.GroupNorm`` with an optional fused activation.

    Constructor, parameters (``weight``, ``bias``), initialization, ``reset_parameters``,
    ``extra_repr`` and ``state_dict`` keys match ``nn.GroupNorm``, so a state_dict loads in
    both directions. ``activation="silu"`` returns ``silu(group_norm(x))`` in one fused pass.
    """

    __constants__ = ["num_groups", "num_channels", "eps", "affine", "activation"]

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
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _C.check_activation(_activation_name(activation))
        self.activation = None if _activation_name(activation) == "none" else activation
        if self.affine:
            self.weight = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps, self.activation)

    def extra_repr(self) -> str:
        s = "{num_groups}, {num_channels}, eps={eps}, affine={affine}, bias={use_bias}".format(
            **self.__dict__, use_bias=self.bias is not None
        )
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        return s

    @classmethod
    def from_module(cls, m: nn.GroupNorm) -> "GroupNorm":
        """A GroupNorm with m's configuration, sharing m's parameters (same device and dtype)."""
        ref = m.weight if m.weight is not None else None
        new = cls(
            m.num_groups,
            m.num_channels,
            eps=m.eps,
            affine=m.affine,
            bias=getattr(m, "bias", None) is not None,
            device=ref.device if ref is not None else None,
            dtype=ref.dtype if ref is not None else None,
        )
        if m.affine:
            new.weight = m.weight
            new.bias = m.bias
        new.train(m.training)
        return new


def convert_groupnorm(model: nn.Module) -> nn.Module:
    """Replaces every ``nn.GroupNorm`` in ``model`` (in place, the root included) by
    ``groupnorm_cuda.GroupNorm``, keeping the very same parameter tensors (so device, dtype,
    values and optimizer references are preserved). Returns the model."""
    if isinstance(model, nn.GroupNorm):
        return GroupNorm.from_module(model)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.GroupNorm) and not isinstance(child, GroupNorm):
            setattr(model, name, GroupNorm.from_module(child))
        else:
            convert_groupnorm(child)
    return model
