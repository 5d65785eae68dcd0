"""Launch plan of the CUDA kernels, computed by the same pure host C++ function the CUDA code
uses (csrc/cuda/launch_plan.h), so it can be inspected and tested without a GPU."""
from typing import Optional, Sequence

import torch

from . import _C

_DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_LAYOUTS = {
    torch.contiguous_format: False,
    torch.channels_last: True,
    torch.channels_last_3d: True,
}


def cuda_launch_plan(
    shape: Sequence[int],
    num_groups: int,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    sm_count: int = 132,
    activation: Optional[str] = None,
) -> dict:
    """The CUDA launches groupnorm_cuda would make for an input of this shape.

    Returns {"forward": [...], "backward": [...]}; each launch is a dict with at least
    "kernel", "grid" (3 ints), "block" (3 ints) and "shared_mem_bytes".
    """
    if dtype not in _DTYPES:
        raise ValueError(f"cuda_launch_plan: unsupported dtype {dtype}")
    if memory_format not in _LAYOUTS:
        raise ValueError(f"cuda_launch_plan: unsupported memory_format {memory_format}")
    if activation not in (None, "none", "silu"):
        raise ValueError(f"cuda_launch_plan: activation must be None, 'none' or 'silu', got {activation!r}")
    shape = [int(s) for s in shape]
    if len(shape) < 2:
        raise ValueError(f"cuda_launch_plan: expected at least 2 dimensions, got {shape}")
    if num_groups <= 0 or shape[1] % num_groups != 0:
        raise ValueError(f"cuda_launch_plan: channels {shape[1]} not divisible by num_groups={num_groups}")
    if sm_count <= 0:
        raise ValueError(f"cuda_launch_plan: sm_count must be positive, got {sm_count}")
    return _C.cuda_launch_plan(
        shape, int(num_groups), _DTYPES[dtype], _LAYOUTS[memory_format], int(sm_count), activation == "silu"
    )
