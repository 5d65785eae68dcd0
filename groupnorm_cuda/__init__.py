"""groupnorm_cuda: a fast, drop-in GroupNorm (with optional fused SiLU) for PyTorch.

    import groupnorm_cuda
    y = groupnorm_cuda.group_norm(x, num_groups=32, weight=w, bias=b)       # like F.group_norm
    m = groupnorm_cuda.GroupNorm(32, 256)                                    # like nn.GroupNorm
    model = groupnorm_cuda.convert_groupnorm(model)                          # swap every nn.GroupNorm

CUDA tensors run the fused CUDA kernels (when the extension was built with CUDA), CPU
tensors the vectorized C++ CPU path. Both are registered as torch.ops.groupnorm_cuda.forward /
backward, with Meta kernels (torch.compile(fullgraph=True) traces through them) and the
forward's autograd in C++ (torch.jit.script and torch.jit.trace work too).
"""
from ._ops import built_with_cuda, group_norm
from .launch_plan import cuda_launch_plan
from .modules import ConversionRecord, GroupNorm, convert_groupnorm, register_groupnorm_conversion


def onnx_translation_table(group_normalization: bool = False):
    """``custom_translation_table`` for ``torch.onnx.export(model, args, dynamo=True, ...)``: the ONNX
    translation of ``torch.ops.groupnorm_cuda.forward`` (standard ops by default;
    ``group_normalization=True``: ONNX GroupNormalization, opset 21). See groupnorm_cuda/onnx.py;
    imported on first use, so ``import groupnorm_cuda`` does not import onnxscript."""
    from .onnx import onnx_translation_table as table

    return table(group_normalization)


__all__ = [
    "ConversionRecord",
    "GroupNorm",
    "built_with_cuda",
    "convert_groupnorm",
    "cuda_launch_plan",
    "group_norm",
    "onnx_translation_table",
    "register_groupnorm_conversion",
]
__version__ = "0.1.0"
