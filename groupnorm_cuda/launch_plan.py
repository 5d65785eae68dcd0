"""Launch plan of the CUDA kernels, computed by the same pure host C++ function the CUDA code
uses (csrc/cuda/launch_plan.h), so it can be inspected and tested without a GPU. The input is
described by a tensor on the meta device, so the op's own checks and layout rule (csrc/common)
decide what is planned."""
from typing import Optional, Sequence

import torch

from . import _C
from ._ops import _activation_name

_CHANNELS_LAST = (torch.channels_last, torch.channels_last_3d)


def _example_input(shape: Sequence[int], dtype: torch.dtype, memory_format: torch.memory_format) -> torch.Tensor:
    """A data-less tensor of this shape and dtype; for a channels-last format, with channels
    innermost in memory whatever the rank ((N, L, C) order for a 3-D shape)."""
    x = torch.empty([int(s) for s in shape], dtype=dtype, device="meta")
    if memory_format == torch.contiguous_format or x.dim() < 3:
        return x
    if memory_format not in _CHANNELS_LAST:
        raise ValueError(f"cuda_launch_plan: unsupported memory_format {memory_format}")
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def cuda_launch_plan(
    shape: Sequence[int],
    num_groups: int,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    sm_count: int = 132,
    activation: Optional[str] = None,
    max_shared_mem_per_block: int = 232448,
    max_cluster_size: int = 16,
    out_dtype: Optional[torch.dtype] = None,
) -> dict:
    """The CUDA launches groupnorm_cuda would make for an input of this shape, on a GPU with
    ``sm_count`` SMs, ``max_shared_mem_per_block`` bytes of shared memory per block with the
    opt-in and thread-block clusters of up to ``max_cluster_size`` CTAs (the defaults describe
    an H100/H200: 132 SMs, 227 KiB, 16; an A100 has 108, 166912 and no clusters: 1). Clusters
    of more than 8 CTAs are non-portable: on a GPU the op first asks the device whether it can
    place one with the launch's shared memory and plans with 8 where it cannot (pass 8 to see
    that plan). ``out_dtype=torch.float32`` with a float16 / bfloat16 ``dtype`` plans the op
    as autocast on CUDA runs it: a float32 y (and dy) of the 16-bit input.

    Returns {"forward": [...], "backward": [...], "traffic": {...}, "split_ops": {...}}
    ("split_ops": the launches of the split ops ``stats``, ``apply``, ``backward_sums`` and
    ``backward_dx`` for a shard of this shape, groupnorm_cuda.distributed); each launch is a dict with
    at least "kernel", "grid" (3 ints), "block" (3 ints), "shared_mem_bytes" (per CTA in all),
    "dynamic_shared_mem_bytes" (what the launch requests), "cluster" (3 ints: CTAs per
    thread-block cluster), and the modeled
    global-memory "dram_read_bytes" / "dram_write_bytes"; "traffic" has, per direction,
    "read_bytes", "write_bytes", "floor_bytes" and "ratio" (total / floor). The model and its
    assumptions: csrc/cuda/plan/traffic.h. The input is checked as
    the op checks it (errors in F.group_norm's wording); as in the op, a channels-last shape
    whose spatial size is 1 is the same memory as a contiguous one and is planned as such.
    """
    x = _example_input(shape, dtype, memory_format)
    return _C.cuda_launch_plan(x, int(num_groups), _activation_name(activation), int(sm_count),
                               int(max_shared_mem_per_block), int(max_cluster_size), out_dtype)
