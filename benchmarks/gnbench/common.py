"""Names of dtypes / layouts / passes / activations, shared constants and small helpers."""
from __future__ import annotations

import math
import sys
from typing import List, Optional

import torch

MiB = 1024 ** 2

DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16", "f16": "float16",
}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
LAYOUT_ALIASES = {"nchw": "nchw", "contiguous": "nchw", "channels_last": "channels_last",
                  "cl": "channels_last", "nhwc": "channels_last"}
PASS_ALIASES = {"fwd": "fwd", "forward": "fwd", "fwd+bwd": "fwd+bwd", "fwdbwd": "fwd+bwd",
                "bwd": "fwd+bwd", "backward": "fwd+bwd"}
ACT_ALIASES = {"none": None, "silu": "silu", "swish": "silu"}

BYTES_FORMULA = ("bytes moved (b = bytes per element of x, n = numel(x); gamma/beta/stats ignored): "
                 "fwd = read x + write y = 2*n*b; fwd+bwd = fwd + read dy + read x + write dx = 5*n*b. "
                 "GB/s = bytes / median time (1 GB = 1e9 B). ours/clone = our time / time of "
                 "x.clone() (reads x, writes a copy: the floor is 1.0 for fwd, ~2.5 for fwd+bwd).")

# torch.compile recompiles for every shape/dtype/layout/pass (dynamic=False): 2-30 s each on a
# 2-core CPU, several seconds on a GPU. Selections larger than this compile only the variants
# that are in the --quick subset unless --compile-scope all is given.
COMPILE_ALL_MAX = 64

FOUNDATION_NOTE = ("targets of the CPU path (issue 16), per cache regime, over the selected variants "
                   "(the geometric mean over activation none only)")


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def split_list(values: Optional[List[str]]) -> List[str]:
    out: List[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def geomean(xs: List[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def fmt_ms(sec: Optional[float]) -> str:
    if sec is None:
        return "-"
    ms = sec * 1e3
    if ms >= 1000:
        return f"{ms:.0f}"
    if ms >= 100:
        return f"{ms:.1f}"
    if ms >= 10:
        return f"{ms:.2f}"
    if ms >= 1:
        return f"{ms:.3f}"
    return f"{ms:.4f}"


def fmt_x(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def fmt_f(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def memory_format_for(ndim: int):
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def variant_label(r) -> str:
    return (f"{r['case']} {SHORT_DTYPE[r['dtype']]} {r['layout']} {r['pass']}"
            + (f" +{r['activation']}" if r['activation'] else "")
            + (f" [{r['regime']}]" if r.get("regime") else ""))
