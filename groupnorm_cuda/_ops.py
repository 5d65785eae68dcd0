"""The functional API over the ops.

The ops are defined in C++ (csrc/ops.cpp) as
    torch.ops.groupnorm_cuda.forward(input, weight?, bias?, num_groups, eps, activation,
                                     out_dtype=None) -> (y, mean, rstd)
    torch.ops.groupnorm_cuda.backward(grad_out, input, mean, rstd, weight?, bias?, num_groups,
                                      activation, output_mask) -> (dx, dweight, dbias)
with CPU, CUDA, Meta and Autograd kernels registered in C++. The Meta kernels run the
backends' own argument checks and output rules (csrc/common), so FakeTensor and torch.compile
see the real shapes, dtypes and strides; the Autograd kernel (csrc/autograd.cpp) makes the op
differentiable wherever it is called from (Python, TorchScript, torch.compile): nothing of
that is repeated here.
"""
from typing import Optional

import torch

from . import _C  # noqa: F401  (loads the library: registers the ops and their kernels)

built_with_cuda: bool = bool(_C.built_with_cuda)


def _activation_name(activation: Optional[str]) -> str:
    """The op's activation argument: None means "none". The ops validate the name (C++)."""
    return "none" if activation is None else activation


def group_norm(
    input: torch.Tensor,
    num_groups: int,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """Same semantics as ``torch.nn.functional.group_norm``, plus ``activation``.

    activation: None (or "none") or "silu": returns silu(group_norm(...)) computed in the
    same fused pass. The output has input's dtype and memory format (contiguous or
    channels_last / channels_last_3d); mixed precision weight/bias (float32 with a float16
    or bfloat16 input) is allowed. Differentiable (double backward included): the op's
    autograd is registered in C++ (csrc/autograd.cpp).
    """
    act = _activation_name(activation)
    return torch.ops.groupnorm_cuda.forward(input, weight, bias, num_groups, float(eps), act)[0]
