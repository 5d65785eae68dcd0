"""ONNX export of models that call ``torch.ops.groupnorm_cuda.forward``.

PyTorch's dynamo ONNX exporter does not know the op; give it this translation:

    import groupnorm_cuda.onnx
    onnx_program = torch.onnx.export(
        model, (x,), dynamo=True,
        custom_translation_table=groupnorm_cuda.onnx.onnx_translation_table())
    onnx_program.save("model.onnx")

(``groupnorm_cuda.onnx_translation_table()`` is the same function.) This module imports
onnxscript, which ``import groupnorm_cuda`` does not: the package imports it only when asked.

Two translations of ``forward(input, weight?, bias?, num_groups, eps, activation, out_dtype=None)
-> (y, mean, rstd)``:

* default, standard ops of opset 18 and later (any ``opset_version`` the exporter accepts):
  reshape to (N, G, -1), mean, mean of the squared deviations (two passes over the group, the
  numerically safe form, not E[x^2] - E[x]^2), ``1 / sqrt(var + eps)``, the per-channel affine,
  and ``y * Sigmoid(y)`` for ``activation="silu"``. half / bfloat16 inputs are computed in
  float32 and y is cast back, as the op does (left in float32 when out_dtype asks for it); mean and rstd are (N, G) in float32 (float64 for
  float64 input), the op's outputs;
* ``group_normalization=True``: ONNX's own ``GroupNormalization`` (opset 21: per-channel scale
  and bias), for runtimes with a fused kernel for it; export with ``opset_version=21`` or later.
  That node has no mean / rstd outputs, so they are computed as above (an exporter drops them
  when nothing uses them, which is the case for a model's forward).
"""
from typing import Callable, Dict

import torch

__all__ = ["onnx_translation_table"]


def _make_forward(group_normalization: bool) -> Callable:
    import onnx_ir as ir
    import onnxscript

    op = onnxscript.opset21 if group_normalization else onnxscript.opset18
    i64 = ir.DataType.INT64

    def ints(values):
        return op.Constant(value=ir.tensor(values, dtype=i64))

    def cast(t, dtype):
        return t if t.dtype == dtype else op.Cast(t, to=dtype)

    # A trace-only translation: the exporter calls it with symbolic values for the tensors and
    # Python values for num_groups, eps and activation (the op's int, float and str arguments).
    def groupnorm_cuda_forward(input, weight=None, bias=None, num_groups: int = 1, eps: float = 1e-5,
                               activation: str = "none", out_dtype=None):
        if activation not in ("none", "silu"):
            raise ValueError(f"groupnorm_cuda ONNX translation: unknown activation {activation!r}")
        # out_dtype: None or the input's dtype, or float32 (the op has checked which)
        float_out = out_dtype in (torch.float32, ir.DataType.FLOAT)
        # the op's accumulation type: float64 for float64 input, float32 for every other float type
        acc = ir.DataType.DOUBLE if input.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
        x = cast(input, acc)
        grouped = op.Reshape(x, ints([0, num_groups, -1]))  # (N, G, D * prod(*))
        axes = ints([2])
        mean = op.ReduceMean(grouped, axes, keepdims=1)
        dev = op.Sub(grouped, mean)
        var = op.ReduceMean(op.Mul(dev, dev), axes, keepdims=1)  # biased, of the deviations
        rstd = op.Reciprocal(op.Sqrt(op.Add(var, op.Constant(value=ir.tensor([eps], dtype=acc)))))
        if group_normalization:
            c = op.Shape(x, start=1, end=2)
            scale = cast(weight, acc) if weight is not None else op.ConstantOfShape(c, value=ir.tensor([1.0], dtype=acc))
            shift = cast(bias, acc) if bias is not None else op.ConstantOfShape(c, value=ir.tensor([0.0], dtype=acc))
            y = op.GroupNormalization(x, scale, shift, epsilon=eps, num_groups=num_groups)
        else:
            n_c_rest = op.Concat(op.Shape(x, start=0, end=2), ints([-1]), axis=0)
            y = op.Reshape(op.Mul(dev, rstd), n_c_rest)  # (N, C, prod(*))
            per_channel = ints([-1, 1])
            if weight is not None:
                y = op.Mul(y, op.Reshape(cast(weight, acc), per_channel))
            if bias is not None:
                y = op.Add(y, op.Reshape(cast(bias, acc), per_channel))
        if activation == "silu":
            y = op.Mul(y, op.Sigmoid(y))
        if not group_normalization:
            y = op.Reshape(y, op.Shape(x))
        y = cast(y, ir.DataType.FLOAT if float_out else input.dtype)
        n_g = ints([0, num_groups])
        return y, op.Reshape(mean, n_g), op.Reshape(rstd, n_g)

    return groupnorm_cuda_forward


def onnx_translation_table(group_normalization: bool = False) -> Dict[object, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: translates
    ``torch.ops.groupnorm_cuda.forward`` to ONNX (see the module docstring for the two forms).

    group_normalization: False (default) emits standard ops, valid for any opset the exporter
    supports (18 and later); True emits ONNX ``GroupNormalization`` (opset 21 or later; export
    with ``opset_version=21``).
    """
    from . import _ops  # noqa: F401  (the op must be registered to be a key)

    return {torch.ops.groupnorm_cuda.forward.default: _make_forward(group_normalization)}
