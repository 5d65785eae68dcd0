"""The benchmark case table (shapes from real models) and the --quick subset.

A *case* is a (shape, num_groups) pair with a name; a *variant* is a case run in one dtype,
memory layout, pass ("fwd" or "fwd+bwd") and activation (None or "silu").

Families (G = 32 unless stated):

* ``sd_unet``   Stable Diffusion UNet blocks, 2 x {320, 640, 1280} x {64, 32, 16, 8}^2
* ``vae``       SD / FLUX VAE decoder at batch 1, 1 x {512, 256, 128} x {128, 256, 512, 1024}^2
* ``video_vae`` a video VAE 5-D tensor, 1 x 128 x 8 x 128 x 128
* ``resnet50``  ResNet-50 with GroupNorm at batch 32, the bottleneck outputs of its four stages
                (256 @ 56^2, 512 @ 28^2, 1024 @ 14^2, 2048 @ 7^2; channel count and
                resolution go together in the real network, so they are paired, not crossed)
* ``det_head``  detection heads (FPN levels P3/P4 of an 800x1216 image), 16 x 256 x {100x152, 50x76}
* ``mid``       mid-size activations of 1-6 MiB (fp32) that stay in cache when the previous layer
                has just written them (the "hot" regime): 16 x 512 x 14^2, 2 x 640 x 24^2,
                4 x 320 x 48^2, 1 x 256 x 128^2
* ``instnorm``  InstanceNorm-like, G = C
* ``layernorm`` LayerNorm-like, G = 1 (one 4-D, one 3-D token tensor)
* ``spatial1``  spatial size 1 (pooled features)
* ``tiny``      tiny tensors where launch / dispatch overhead dominates
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    shape: Tuple[int, ...]
    num_groups: int
    eps: float = 1e-5

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def group_elems(self) -> int:
        """M: elements per (sample, group)."""
        return self.numel // (self.shape[0] * self.num_groups)

    @property
    def supports_channels_last(self) -> bool:
        return len(self.shape) in (4, 5)


def _case(family: str, shape, groups: int = 32, eps: float = 1e-5) -> Case:
    shape = tuple(int(s) for s in shape)
    name = f"{family}_{'x'.join(map(str, shape))}_g{groups}"
    return Case(name, family, shape, groups, eps)


def all_cases() -> List[Case]:
    cases: List[Case] = []
    for c in (320, 640, 1280):
        for hw in (64, 32, 16, 8):
            cases.append(_case("sd_unet", (2, c, hw, hw)))
    for c in (512, 256, 128):
        for hw in (128, 256, 512, 1024):
            cases.append(_case("vae", (1, c, hw, hw), eps=1e-6))
    cases.append(_case("video_vae", (1, 128, 8, 128, 128), eps=1e-6))
    for c, hw in ((256, 56), (512, 28), (1024, 14), (2048, 7)):
        cases.append(_case("resnet50", (32, c, hw, hw)))
    for h, w in ((100, 152), (50, 76)):
        cases.append(_case("det_head", (16, 256, h, w)))
    for shape in ((16, 512, 14, 14), (2, 640, 24, 24), (4, 320, 48, 48), (1, 256, 128, 128)):
        cases.append(_case("mid", shape))
    # InstanceNorm-like: G = C (style-transfer / pix2pix generators, a UNet-sized one)
    cases.append(_case("instnorm", (8, 64, 128, 128), groups=64))
    cases.append(_case("instnorm", (4, 256, 64, 64), groups=256))
    # LayerNorm-like: G = 1 (ConvNeXt-style "LayerNorm over C,H,W", and a 3-D token tensor)
    cases.append(_case("layernorm", (8, 512, 32, 32), groups=1))
    cases.append(_case("layernorm", (32, 768, 196), groups=1))
    # spatial size 1 (pooled features / squeeze-excite style)
    cases.append(_case("spatial1", (256, 2048, 1, 1)))
    cases.append(_case("spatial1", (4096, 512, 1, 1)))
    # tiny: launch/dispatch overhead dominates
    cases.append(_case("tiny", (1, 64, 8, 8)))
    cases.append(_case("tiny", (4, 128, 4, 4)))
    cases.append(_case("tiny", (2, 32, 1, 1), groups=8))
    cases.append(_case("tiny", (64, 64, 1, 1), groups=8))
    cases.append(_case("tiny", (4, 32, 2, 2), groups=8))
    return cases


# The --quick subset: explicit variants, chosen so that a 2-core CPU finishes everything
# (correctness checks, eager, torch.compile, clone floor) in a few minutes while covering:
# big groups (M ~ 1e5-1e6) and small groups (G = C, tiny, spatial 1), both layouts, fp32 and
# bf16, fwd and fwd+bwd, SiLU on a couple, a 5-D and a 3-D input, and tensors >= 32 MiB for
# the forward-floor checks; mid-size and tiny shapes for the hot regime and per-call overhead.
# Each entry: (case name, dtype, layout, pass, activation).
QUICK_VARIANTS: List[Tuple[str, str, str, str, Optional[str]]] = [
    # SD UNet block, 5 MiB fp32, M = 40960: the main GN shape
    ("sd_unet_2x320x64x64_g32", "float32", "nchw", "fwd", None),
    ("sd_unet_2x320x64x64_g32", "float32", "nchw", "fwd+bwd", None),
    ("sd_unet_2x320x64x64_g32", "float32", "channels_last", "fwd", None),
    ("sd_unet_2x320x64x64_g32", "float32", "channels_last", "fwd+bwd", None),
    ("sd_unet_2x320x64x64_g32", "bfloat16", "nchw", "fwd+bwd", None),
    ("sd_unet_2x320x64x64_g32", "bfloat16", "channels_last", "fwd", "silu"),
    ("sd_unet_2x1280x16x16_g32", "bfloat16", "channels_last", "fwd+bwd", None),
    # VAE decoder at batch 1: 32 MiB fp32, few huge groups (M = 262144)
    ("vae_1x512x128x128_g32", "float32", "nchw", "fwd", None),
    ("vae_1x512x128x128_g32", "float32", "channels_last", "fwd", "silu"),
    ("vae_1x512x128x128_g32", "bfloat16", "nchw", "fwd+bwd", "silu"),
    # ResNet-50 stage 1 at batch 32: 98 MiB fp32 (the >= 32 MiB clone-floor check)
    ("resnet50_32x256x56x56_g32", "float32", "nchw", "fwd", None),
    ("resnet50_32x256x56x56_g32", "float32", "channels_last", "fwd", None),
    ("resnet50_32x2048x7x7_g32", "float32", "nchw", "fwd+bwd", None),
    # 5-D video VAE (channels_last_3d)
    ("video_vae_1x128x8x128x128_g32", "bfloat16", "channels_last", "fwd", None),
    # small groups: InstanceNorm-like and LayerNorm-like (3-D)
    ("instnorm_8x64x128x128_g64", "float32", "channels_last", "fwd+bwd", None),
    ("instnorm_8x64x128x128_g64", "bfloat16", "nchw", "fwd", None),
    ("layernorm_32x768x196_g1", "float32", "nchw", "fwd+bwd", None),
    # spatial size 1 and tiny (overhead-bound)
    ("spatial1_256x2048x1x1_g32", "float32", "nchw", "fwd+bwd", None),
    ("tiny_1x64x8x8_g32", "float32", "nchw", "fwd", None),
    ("tiny_1x64x8x8_g32", "bfloat16", "channels_last", "fwd+bwd", "silu"),
    ("tiny_64x64x1x1_g8", "float32", "nchw", "fwd+bwd", None),
    ("tiny_4x32x2x2_g8", "float32", "nchw", "fwd+bwd", None),
    # mid-size, cache-sized activations (where the hot regime differs most from the cold one)
    ("mid_16x512x14x14_g32", "float32", "nchw", "fwd+bwd", None),
    ("mid_2x640x24x24_g32", "float32", "nchw", "fwd+bwd", None),
    ("mid_4x320x48x48_g32", "float32", "channels_last", "fwd", None),
    ("mid_1x256x128x128_g32", "float32", "channels_last", "fwd", None),
]
