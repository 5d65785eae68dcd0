"""The CUDA launch planner (csrc/cuda/launch_plan.h) through groupnorm_cuda.cuda_launch_plan:
occupancy (>= 2 CTAs per SM on a 132-SM GPU, or the split is already maximal), CUDA launch
limits, every dtype / layout / activation. Pure host code: no GPU needed."""
import itertools
import os
import sys
import math

import pytest
import torch

groupnorm_cuda = pytest.importorskip("groupnorm_cuda")

SM = 132
MIN_CTAS = 2 * SM
SMEM_OPTIN = 232448  # sm_90: 227 KiB of shared memory per block with the opt-in
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
FORWARD_MAIN = {"gn_fwd_onchip", "gn_fwd_cluster", "gn_fwd_bundle", "gn_fwd_stats", "gn_fwd_apply", "gn_fwd_stats_rows",
                "gn_fwd_apply_rows"}
BACKWARD_MAIN = {"gn_bwd_cluster", "gn_bwd_bundle", "gn_bwd_sums_nchw", "gn_bwd_sums_nhwc", "gn_bwd_dx", "gn_bwd_onchip", "gn_bwd_sums_rows",
                 "gn_bwd_dx_rows"}
ALL_KERNELS = FORWARD_MAIN | BACKWARD_MAIN | {"gn_bwd_coeffs", "gn_bwd_params", "gn_fwd_finalize", "gn_bwd_silu_r",
                                               "gn_split_moments", "gn_split_given"}
ROWS = ["gn_fwd_stats_rows", "gn_fwd_finalize", "gn_fwd_apply_rows"]


def _shapes():
    out = []
    for c, s in itertools.product((320, 640, 1280), (64, 32, 16, 8)):  # SD UNet
        out.append(((2, c, s, s), 32))
    for c, s in itertools.product((512, 256, 128), (128, 256, 512, 1024)):  # VAE, batch 1
        out.append(((1, c, s, s), 32))
    out.append(((1, 128, 8, 128, 128), 32))  # video VAE, 5-D
    for c, s in zip((256, 512, 1024, 2048), (56, 28, 14, 7)):  # ResNet
        out.append(((32, c, s, s), 32))
    out.append(((16, 256, 100, 152), 32))  # detection FPN
    out += [((2, 320, 64, 64), 320), ((2, 320, 64, 64), 1), ((1, 512, 512, 512), 1)]  # G = C, G = 1
    out += [((32, 2048, 1, 1), 32), ((32, 2048, 1, 1), 2048), ((8, 64, 1, 1), 1)]  # spatial size 1
    out += [((4, 96, 1000), 32), ((2, 64, 7, 9, 11), 8)]  # 3-D, odd 5-D
    # groups whose x + dy are exactly 48 KiB in fp32 (past the default budget: one group per
    # CTA with the opt-in), and groups at and just past the sm_90 opt-in limit
    out += [((32, 2048, 8, 12), 32), ((8, 64, 48, 64), 1), ((264, 64, 56, 64), 4), ((264, 64, 57, 64), 4)]
    return out


SHAPES = _shapes()


def _memory_formats(shape):
    fmts = [torch.contiguous_format]
    if len(shape) == 4:
        fmts.append(torch.channels_last)
    elif len(shape) == 5:
        fmts.append(torch.channels_last_3d)
    return fmts


def _ctas(launch):
    return math.prod(launch["grid"])


def _check_limits(launch):
    gx, gy, gz = launch["grid"]
    assert 1 <= gx <= 2**31 - 1 and 1 <= gy <= 65535 and 1 <= gz <= 65535, launch
    threads = math.prod(launch["block"])
    assert 1 <= threads <= 1024, launch
    assert threads % 32 == 0, launch  # the kernels shuffle over full warps
    assert 0 <= launch["dynamic_shared_mem_bytes"] <= launch["shared_mem_bytes"] <= SMEM_OPTIN, launch
    if launch["shared_mem_bytes"] > 48 * 1024:  # past the default budget only with one group per CTA
        assert launch["kernel"] in ("gn_fwd_onchip", "gn_fwd_cluster", "gn_fwd_bundle", "gn_bwd_onchip",
                                    "gn_bwd_cluster", "gn_bwd_bundle"), launch
        assert launch.get("groups_per_block", 1) == 1, launch  # a bundle is one per CTA (or cluster)
    assert launch["kernel"] in ALL_KERNELS, launch


def _check_occupancy(launch):
    """>= 2 CTAs per SM, unless the work cannot be split any further."""
    if _ctas(launch) >= MIN_CTAS:
        return
    if "pieces" in launch:
        assert launch["pieces"] == launch["max_pieces"], launch
    else:
        assert launch["splits"] == launch["max_splits"], launch


CASES = [
    (shape, g, dt, fmt, act)
    for (shape, g) in SHAPES
    for dt in DTYPES
    for fmt in _memory_formats(shape)
    for act in (None, "silu")
]


def _check_split_ops(sp, shape, groups, fmt, not_whole, vec):
    """The split ops of a shard of this shape (plan/split.h): parts of the Rows schedule (only
    where channels-last groups are not whole vectors) or of the Split one, whatever the fused op
    chose; no SiLU pre-pass (the residual is given); every launch within the limits, the main
    kernels occupying the GPU as the fused split schedule does."""
    names = {k: [l["kernel"] for l in v] for k, v in sp.items()}
    rows = names["stats"][0] == "gn_fwd_stats_rows"
    nchw = fmt == torch.contiguous_format or math.prod(shape[2:]) == 1  # the op's layout rule
    sums = "gn_bwd_sums_rows" if rows else "gn_bwd_sums_nchw" if nchw else "gn_bwd_sums_nhwc"
    sfx = "_rows" if rows else ""
    assert names == {"stats": ["gn_fwd_stats" + sfx, "gn_split_moments"],
                     "apply": ["gn_split_given", "gn_fwd_apply" + sfx],
                     "backward_sums": [sums, "gn_bwd_coeffs", "gn_bwd_params"],
                     "backward_dx": ["gn_bwd_coeffs", "gn_bwd_dx" + sfx]}, names
    assert not rows or not_whole
    n, c = shape[0], shape[1]
    for part in sp.values():
        for l in part:
            _check_limits(l)
            if l["kernel"] in FORWARD_MAIN | BACKWARD_MAIN:
                _check_occupancy(l)
    moments = sp["stats"][1]
    assert moments["parts"] == sp["stats"][0]["pieces" if rows else "splits"]
    assert _ctas(moments) * (moments["block"][0] // 32) >= n * groups  # a warp per group
    assert _ctas(sp["apply"][0]) * sp["apply"][0]["block"][0] >= n * groups  # a thread per group
    if rows:
        assert all(l["vec"] == vec for part in sp.values() for l in part if "vec" in l)


@pytest.mark.parametrize("shape,groups,dtype,fmt,act", CASES,
                         ids=[f"{'x'.join(map(str, s))}-G{g}-{str(d)[6:]}-{str(f)[6:]}-{a}" for s, g, d, f, a in CASES])
def test_plan(shape, groups, dtype, fmt, act):
    plans = groupnorm_cuda.cuda_launch_plan(shape, groups, dtype=dtype, memory_format=fmt, sm_count=SM,
                                            activation=act)
    fwd, bwd = plans["forward"], plans["backward"]
    names_f = [l["kernel"] for l in fwd]
    names_b = [l["kernel"] for l in bwd]
    assert names_f in (["gn_fwd_onchip"], ["gn_fwd_cluster"], ["gn_fwd_bundle"], ["gn_fwd_stats", "gn_fwd_apply"],
                       ROWS), names_f
    sums = "gn_bwd_sums_nchw" if fmt == torch.contiguous_format else "gn_bwd_sums_nhwc"
    split_b = (["gn_fwd_stats"] if act == "silu" else []) + [sums, "gn_bwd_coeffs", "gn_bwd_params", "gn_bwd_dx"]
    rows_b = (["gn_fwd_stats_rows", "gn_bwd_silu_r"] if act == "silu" else []) + [
        "gn_bwd_sums_rows", "gn_bwd_coeffs", "gn_bwd_params", "gn_bwd_dx_rows"]
    assert names_b in (split_b, ["gn_bwd_onchip", "gn_bwd_params"], ["gn_bwd_cluster", "gn_bwd_params"],
                       ["gn_bwd_bundle", "gn_bwd_params"], rows_b), names_b
    for l in fwd + bwd:
        _check_limits(l)
    for l in fwd:
        if l["kernel"] in FORWARD_MAIN:
            _check_occupancy(l)
    for l in bwd:
        if l["kernel"] in BACKWARD_MAIN:
            _check_occupancy(l)
    # Element size and vector width: 16-byte vectors or scalars.
    esize = torch.empty((), dtype=dtype).element_size()
    for l in fwd + bwd:
        if "vec" in l:
            assert l["vec"] in (1, 16 // esize), l
    # The walk covers every vector of every group exactly once.
    n, c = shape[0], shape[1]
    m = (c // groups) * math.prod(shape[2:])
    for l in fwd:
        if "chunk_vectors" not in l:
            continue  # rows schedule, checked below
        mv = m // l["vec"]
        assert l["chunk_vectors"] * l["splits"] >= mv > l["chunk_vectors"] * (l["splits"] - 1)
        groups_per_cta = l["groups_per_block"]
        assert l["block"][0] == l["threads_per_group"] * groups_per_cta
        assert l["grid"][0] == math.ceil(n * groups / groups_per_cta) * l["splits"]
    if fwd[0]["kernel"] == "gn_fwd_onchip":
        assert fwd[0]["splits"] == 1
        assert m * esize <= SMEM_OPTIN - 3 * 32 * 8  # the group is parked in shared memory
    if names_b == rows_b:
        v = 16 // esize
        assert fmt != torch.contiguous_format and (c // groups) % v != 0 and c % v == 0
        assert bwd[-1]["vec"] == v and _ctas(bwd[-1]) == n * bwd[-1]["pieces"]
    vec = 16 // esize
    not_whole = fmt != torch.contiguous_format and (c // groups) % vec != 0 and c % vec == 0
    hw = math.prod(shape[2:])
    if names_f == ROWS:
        # channels-last groups that are not whole vectors, rows that are: vectors along C
        assert not_whole
        st = fwd[0]
        assert st["vec"] == vec and st["grid"][0] == n * st["pieces"]
        assert st["block"][0] >= (c // vec) * st["rows_par"]
        assert st["piece_len"] * st["pieces"] >= hw > st["piece_len"] * (st["pieces"] - 1)
    for f, tiles in ((fwd[0], 1), (bwd[0], 2)):
        if f["kernel"] not in ("gn_fwd_bundle", "gn_bwd_bundle"):
            continue
        # k groups of D channels per bundle, a whole number of vectors per row; the spatial rows
        # cut into one chunk per CTA of the cluster, held in shared memory (x; x and dy)
        assert not_whole
        d, k, cs = c // groups, f["groups_per_bundle"], f["splits"]
        assert f["vec"] == vec and (k * d) % vec == 0 and f["bundle_cols"] == k * d // vec and groups % k == 0
        assert f["cluster"][0] == cs and f["chunk_rows"] * cs >= hw > f["chunk_rows"] * (cs - 1)
        assert f["grid"][0] == n * groups // k * cs
        assert f["block"][0] >= f["rows_par"] * f["bundle_cols"]
        assert f["dynamic_shared_mem_bytes"] >= tiles * f["chunk_rows"] * f["bundle_cols"] * 16
    if not_whole and names_f not in (ROWS, ["gn_fwd_bundle"]):
        assert names_f == ["gn_fwd_onchip"], names_f  # vectors across 3+ groups: per group (and scalar)
    _check_split_ops(plans["split_ops"], shape, groups, fmt, not_whole, vec)
    if bwd[0]["kernel"] == "gn_bwd_onchip":
        b = bwd[0]
        assert b["splits"] == 1 and b["block"][0] == b["threads_per_group"] * b["groups_per_block"]
        assert b["grid"][0] == math.ceil(n * groups / b["groups_per_block"])
        # x and dy of every group of the CTA in shared memory
        assert b["shared_mem_bytes"] >= 2 * m * esize * b["groups_per_block"]
        lanes = b["chan_lanes"]
        assert 1 <= lanes <= 32 and lanes & (lanes - 1) == 0 and b["threads_per_group"] % lanes == 0


@pytest.mark.parametrize("optin,clusters,forward,fits", [
    (232448, 8, ["gn_fwd_onchip"], True),                    # H100/H200
    (166912, 1, ["gn_fwd_onchip"], False),                   # A100: 163 KiB, no clusters
    (49152, 1, ["gn_fwd_stats", "gn_fwd_apply"], False),     # no opt-in, no clusters
    (49152, 8, ["gn_fwd_cluster"], False),                   # no opt-in: the group over a cluster
])
def test_onchip_groups_up_to_the_devices_optin_limit(optin, clusters, forward, fits):
    """ResNet-50 stage 1 at batch 32 (groups of 8 x 3136 fp32 = 98 KiB, 1024 of them): on chip,
    one group per CTA, where the device's opt-in limit holds x (forward) and x + dy (backward:
    196 KiB on sm_90; not within an A100's 163 KiB, nor without the opt-in)."""
    p = groupnorm_cuda.cuda_launch_plan((32, 256, 56, 56), 32, max_shared_mem_per_block=optin,
                                        max_cluster_size=clusters)
    fwd, bwd = p["forward"], p["backward"]
    assert [l["kernel"] for l in fwd] == forward
    assert (bwd[0]["kernel"] == "gn_bwd_onchip") == fits
    for l in fwd + bwd:
        assert l["shared_mem_bytes"] <= optin, l
    if fwd[0]["kernel"] == "gn_fwd_onchip":
        assert fwd[0]["groups_per_block"] == 1 and fwd[0]["dynamic_shared_mem_bytes"] == 8 * 3136 * 4
        assert p["traffic"]["forward"]["ratio"] == 1.0
    if fits:
        assert bwd[0]["dynamic_shared_mem_bytes"] == 2 * 8 * 3136 * 4
        # at the floor, up to the per-(n, c) dweight / dbias partials that gn_bwd_params reduces
        assert 1.0 < p["traffic"]["backward"]["ratio"] < 1.001
    with pytest.raises(ValueError, match="max_shared_mem_per_block"):
        groupnorm_cuda.cuda_launch_plan((2, 8, 4, 4), 2, max_shared_mem_per_block=1024)


@pytest.mark.parametrize("shape", [(1, 128, 1024, 1024), (1, 512, 512, 512), (1, 128, 256, 256)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_batch1_vae_is_split(shape, fmt):
    """Batch-1 VAE layers: 32 groups would give 32 CTAs; each group is split instead."""
    plans = groupnorm_cuda.cuda_launch_plan(shape, 32, dtype=torch.float16, memory_format=fmt)
    for l in plans["forward"]:
        if l["kernel"] == "gn_fwd_finalize":
            continue
        # split walk (splits per group), a group over a cluster (at most 16 CTAs: 32 groups
        # make 512 CTAs) or, channels-last with 4 channels per group, bundles of 2 groups over
        # a cluster (256 CTAs) or the rows schedule (pieces per sample)
        assert l.get("splits", l.get("pieces", 0)) > 1, l
        assert _ctas(l) >= MIN_CTAS or (l["kernel"] in ("gn_fwd_cluster", "gn_fwd_bundle") and l["cluster"][0] == 16), l
    for l in plans["backward"]:
        if l["kernel"] in BACKWARD_MAIN:
            assert _ctas(l) >= MIN_CTAS or (l["kernel"] in ("gn_bwd_cluster", "gn_bwd_bundle") and l["cluster"][0] == 16), l


def test_small_groups_stay_on_chip():
    # ResNet-50 last stage: 3136 elements per group, 1024 groups: forward 1 read + 1 write,
    # backward reads x and dy once and writes dx (3 accesses).
    for act in (None, "silu"):
        plans = groupnorm_cuda.cuda_launch_plan((32, 2048, 7, 7), 32, dtype=torch.float16, activation=act)
        assert [l["kernel"] for l in plans["forward"]] == ["gn_fwd_onchip"]
        assert plans["forward"][0]["shared_mem_bytes"] > 0
        assert [l["kernel"] for l in plans["backward"]] == ["gn_bwd_onchip", "gn_bwd_params"]
        assert plans["backward"][0]["shared_mem_bytes"] >= 2 * 3136 * 2


def test_large_groups_use_a_cluster_or_the_split_backward():
    # 10 x 4096 fp32 = 160 KiB per group, x + dy 320 KiB: not on one CTA; on a cluster of 8
    # (40 KiB of x + dy each: 512 CTAs) where the device has clusters, else the split schedule.
    plans = groupnorm_cuda.cuda_launch_plan((2, 320, 64, 64), 32, dtype=torch.float32)
    assert [l["kernel"] for l in plans["backward"]] == ["gn_bwd_cluster", "gn_bwd_params"]
    assert plans["backward"][0]["cluster"] == (8, 1, 1) and plans["backward"][0]["grid"] == (512, 1, 1)
    assert plans["traffic"]["backward"]["ratio"] < 1.01
    plans = groupnorm_cuda.cuda_launch_plan((2, 320, 64, 64), 32, dtype=torch.float32, max_cluster_size=1)
    names = [l["kernel"] for l in plans["backward"]]
    assert names == ["gn_bwd_sums_nchw", "gn_bwd_coeffs", "gn_bwd_params", "gn_bwd_dx"]


def test_sm_count_scales_the_split():
    small = groupnorm_cuda.cuda_launch_plan((1, 128, 512, 512), 32, sm_count=16)["forward"][0]
    big = groupnorm_cuda.cuda_launch_plan((1, 128, 512, 512), 32, sm_count=132)["forward"][0]
    assert big["splits"] > small["splits"]
    assert _ctas(small) >= 32


def test_vectorization_rules():
    # NCHW: 16-byte vectors need HxW % (16 / elem) == 0, or a group's run that is whole vectors
    # with HxW >= 16 / elem (a vector then ends in at most the next channel); NHWC needs
    # (C / G) % (16 / elem) == 0 (else bundles). The split backward's per-channel rows need the
    # first kind: scalar for the flat groups.
    plan = groupnorm_cuda.cuda_launch_plan((32, 2048, 7, 7), 32, dtype=torch.float32)
    assert plan["forward"][0]["vec"] == 4  # 49 positions, 64 x 49 floats per group
    assert plan["backward"][0]["kernel"] == "gn_bwd_onchip" and plan["backward"][0]["vec"] == 4
    plan = groupnorm_cuda.cuda_launch_plan((32, 96, 7, 7), 32, dtype=torch.float32)
    assert plan["forward"][0]["vec"] == 1  # 3 x 49 floats per group: not whole vectors
    plan = groupnorm_cuda.cuda_launch_plan((1, 64, 1, 3), 16, dtype=torch.float32)
    assert plan["forward"][0]["vec"] == 1  # 4 x 3 floats per group, but HxW = 3 < 4
    plan = groupnorm_cuda.cuda_launch_plan((1, 512, 49, 49), 32, dtype=torch.bfloat16, max_cluster_size=1)
    names = [l["kernel"] for l in plan["backward"]]
    assert plan["forward"][0]["vec"] == 8 and names[0] == "gn_bwd_sums_nchw" and plan["backward"][0]["vec"] == 1
    plan = groupnorm_cuda.cuda_launch_plan((32, 2048, 7, 7), 32, dtype=torch.float32,
                                           memory_format=torch.channels_last)
    assert plan["forward"][0]["vec"] == 4  # 64 channels per group
    plan = groupnorm_cuda.cuda_launch_plan((2, 320, 64, 64), 32, dtype=torch.bfloat16)
    assert plan["forward"][0]["vec"] == 8


def test_channels_last_sd_unet_is_vectorized_along_channels():
    # 320 channels in 32 groups: 10 per group, not a whole 16-byte vector of fp16 / fp32. The
    # forward takes bundles of k groups (k * 10 channels = whole vectors: k = 4 for 16-bit, 2 for
    # fp32) over a cluster of 16 CTAs (8 where the device allows no more: fewer CTAs), 1 read +
    # 1 write; the backward too (reads x and dy once, writes dx). Without clusters a bundle
    # (320 KiB) does not fit one CTA: the rows schedules.
    for dt, vec, k in ((torch.float16, 8, 4), (torch.bfloat16, 8, 4), (torch.float32, 4, 2)):
        for cs in (16, 8):
            plans = groupnorm_cuda.cuda_launch_plan((2, 320, 64, 64), 32, dtype=dt, memory_format=torch.channels_last,
                                                    max_cluster_size=cs)
            f = plans["forward"]
            assert [l["kernel"] for l in f] == ["gn_fwd_bundle"]
            assert f[0]["vec"] == vec and f[0]["groups_per_bundle"] == k and f[0]["cluster"][0] == cs
            assert f[0]["bundle_cols"] == 10 * k // vec and _ctas(f[0]) == 2 * 32 // k * cs
            assert plans["traffic"]["forward"]["ratio"] == pytest.approx(1.0, abs=1e-3)
            names_b = [l["kernel"] for l in plans["backward"]]
            assert names_b == ["gn_bwd_bundle", "gn_bwd_params"] and plans["backward"][0]["cluster"][0] == cs
            assert plans["traffic"]["backward"]["ratio"] == pytest.approx(1.0, abs=0.01)
        plans = groupnorm_cuda.cuda_launch_plan((2, 320, 64, 64), 32, dtype=dt, memory_format=torch.channels_last,
                                                max_cluster_size=1)
        assert [l["kernel"] for l in plans["forward"]] == ROWS
        assert plans["forward"][0]["vec"] == vec and _ctas(plans["forward"][0]) >= MIN_CTAS
        names_b = [l["kernel"] for l in plans["backward"]]
        assert names_b == ["gn_bwd_sums_rows", "gn_bwd_coeffs", "gn_bwd_params", "gn_bwd_dx_rows"]
    # Small bundles fit one CTA: no cluster needed (an A100 too).
    plans = groupnorm_cuda.cuda_launch_plan((16, 320, 16, 16), 32, dtype=torch.float16,
                                            memory_format=torch.channels_last, max_cluster_size=1,
                                            max_shared_mem_per_block=166912)
    assert [l["kernel"] for l in plans["forward"]] == ["gn_fwd_bundle"] and plans["forward"][0]["cluster"][0] == 1
    # NCHW and whole-vector groups keep the per-group schedules: a group per cluster (64 groups
    # are too few for one CTA each), the split schedule without clusters.
    for shape, fmt, dt in (((2, 320, 64, 64), torch.contiguous_format, torch.float16),
                           ((2, 640, 64, 64), torch.channels_last, torch.float32)):
        plans = groupnorm_cuda.cuda_launch_plan(shape, 32, dtype=dt, memory_format=fmt)
        assert [l["kernel"] for l in plans["forward"]] == ["gn_fwd_cluster"]
        plans = groupnorm_cuda.cuda_launch_plan(shape, 32, dtype=dt, memory_format=fmt, max_cluster_size=1)
        assert [l["kernel"] for l in plans["forward"]] == ["gn_fwd_stats", "gn_fwd_apply"]


def test_empty_batch_launches_nothing():
    plans = groupnorm_cuda.cuda_launch_plan((0, 64, 8, 8), 8)
    assert plans["forward"] == [] and plans["backward"] == []


def test_huge_tensor_grid_fits():
    # 2^33 elements: 64-bit offsets in the kernels, grid still within limits.
    plans = groupnorm_cuda.cuda_launch_plan((8, 512, 1024, 2048), 32, dtype=torch.float16)
    for l in plans["forward"] + plans["backward"]:
        _check_limits(l)


@pytest.mark.parametrize("bad", [dict(shape=(2, 30, 4, 4), num_groups=4), dict(shape=(2,), num_groups=1)])
def test_invalid_arguments(bad):
    with pytest.raises((ValueError, RuntimeError)):
        groupnorm_cuda.cuda_launch_plan(bad["shape"], bad["num_groups"])


# ---------------------------------------------------------------------------------------
# DRAM-traffic model (csrc/cuda/plan/traffic.h)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from gnbench.cases import all_cases  # noqa: E402

# Modeled (read + write) / floor per schedule, counting the tensor passes only:
#   forward  on-chip 1 read + 1 write = 1.0; split / rows 2 reads + 1 write = 1.5;
#   backward on-chip reads x, dy, writes dx = 1.0; split / rows 4 reads + 1 write = 5/3,
#   + 1 read of x for the SiLU pre-pass = 2.0.
# Workspace, parameters and statistics come on top: the tensor bytes are never below these
# multiples of x, and for the VAE shapes of >= 16 MiB (what the split schedule is for) within
# 3% of them.
EXPECTED_FWD = {"gn_fwd_onchip": 1.0, "gn_fwd_cluster": 1.0, "gn_fwd_bundle": 1.0, "gn_fwd_stats": 1.5,
                "gn_fwd_stats_rows": 1.5}


def _expected_bwd(kernels, act):
    if kernels[0] in ("gn_bwd_onchip", "gn_bwd_cluster", "gn_bwd_bundle"):
        return 1.0
    return 2.0 if act == "silu" else 5.0 / 3.0


@pytest.mark.parametrize("case", [c for c in all_cases()], ids=lambda c: c.name)
def test_traffic_ratios_on_benchmark_shapes(case):
    for dt, fmt, act in itertools.product((torch.float32, torch.bfloat16), _memory_formats(case.shape),
                                          (None, "silu")):
        plans = groupnorm_cuda.cuda_launch_plan(case.shape, case.num_groups, dtype=dt, memory_format=fmt,
                                                activation=act)
        t = plans["traffic"]
        for direction in ("forward", "backward"):
            launches = plans[direction]
            assert sum(l["dram_read_bytes"] for l in launches) == t[direction]["read_bytes"]
            assert sum(l["dram_write_bytes"] for l in launches) == t[direction]["write_bytes"]
        ideal_f = EXPECTED_FWD[plans["forward"][0]["kernel"]]
        ideal_b = _expected_bwd([l["kernel"] for l in plans["backward"]], act)
        x_bytes = math.prod(case.shape) * (4 if dt == torch.float32 else 2)
        moved = {d: t[d]["read_bytes"] + t[d]["write_bytes"] for d in ("forward", "backward")}
        assert moved["forward"] >= ideal_f * 2 * x_bytes and moved["backward"] >= ideal_b * 3 * x_bytes
        if case.family in ("vae", "video_vae") and x_bytes >= (16 << 20):
            assert t["forward"]["ratio"] == pytest.approx(ideal_f, rel=0.03), (case.name, dt, fmt, act)
            assert t["backward"]["ratio"] == pytest.approx(ideal_b, rel=0.03), (case.name, dt, fmt, act)


# Pinned model values (H200, 132 SMs): a batch-1 VAE layer (at the floor both ways on clusters),
# SD UNet channels-last with 10 channels per group (bundles of 4 groups over clusters: 1.65x /
# 2.67x with the rows schedules before; the cluster's per-channel sums combined on chip, 1.021
# with a row of dweight/dbias terms per CTA before), ResNet's last stage, and the per-(n, c)
# dweight/dbias terms, which outweighed x itself when HxW = 1 (2.313 with a row of them per
# sample; one row per CTA of 8 samples now).
PINNED = [
    ((1, 512, 128, 128), torch.bfloat16, torch.contiguous_format, None, 1.000, 1.000),
    ((32, 2048, 7, 7), torch.float32, torch.contiguous_format, None, 1.000, 1.027),
    ((2, 320, 32, 32), torch.bfloat16, torch.channels_last, None, 1.000, 1.003),
    ((256, 2048, 1, 1), torch.float32, torch.contiguous_format, None, 1.000, 1.164),
]


@pytest.mark.parametrize("shape,dt,fmt,act,fwd,bwd", PINNED)
def test_traffic_pinned(shape, dt, fmt, act, fwd, bwd):
    t = groupnorm_cuda.cuda_launch_plan(shape, 32, dtype=dt, memory_format=fmt, activation=act)["traffic"]
    assert round(t["forward"]["ratio"], 3) == fwd and round(t["backward"]["ratio"], 3) == bwd


def test_traffic_exact_on_chip():
    # 32 x 64 x 8 x 8 fp32, G = 32: groups of 2 x 64 values fit on chip; the forward moves
    # exactly the floor: x + y + weight + bias + mean + rstd.
    t = groupnorm_cuda.cuda_launch_plan((32, 64, 8, 8), 32)["traffic"]["forward"]
    x = 32 * 64 * 8 * 8 * 4
    assert t["floor_bytes"] == 2 * x + 2 * 64 * 4 + 2 * 32 * 32 * 4
    assert t["read_bytes"] + t["write_bytes"] == t["floor_bytes"] and t["ratio"] == 1.0


def test_onchip_backward_adds_the_terms_of_several_samples():
    # Small groups, several per CTA: a CTA holds the same groups of nb samples (nb divides the
    # groups per CTA, at most N) and adds their dweight/dbias terms, so gn_bwd_params reads
    # ceil(N / nb) rows of terms instead of N.
    # (3 samples of 512 groups: 4 groups per CTA, nb = 2 of them, 2 groups each)
    for shape, G, dt, want in (((256, 2048, 1, 1), 32, torch.float32, 8), ((256, 2048, 1, 1), 32, torch.bfloat16, 8),
                               ((3, 8192, 1, 1), 512, torch.float32, 2)):
        b = groupnorm_cuda.cuda_launch_plan(shape, G, dtype=dt)["backward"][0]
        assert b["kernel"] == "gn_bwd_onchip", b
        nb, gpb, N = b["samples_per_block"], b["groups_per_block"], shape[0]
        assert nb == want and gpb % nb == 0 and nb <= N, b
        assert b["grid"][0] == -(-N // nb) * -(-G // (gpb // nb)), b
    # the bytes of the terms: with a row per sample spatial size 1 cost 2.3x / 3.6x the floor
    f32 = groupnorm_cuda.cuda_launch_plan((256, 2048, 1, 1), 32, dtype=torch.float32)["traffic"]["backward"]["ratio"]
    bf16 = groupnorm_cuda.cuda_launch_plan((256, 2048, 1, 1), 32, dtype=torch.bfloat16)["traffic"]["backward"]["ratio"]
    assert f32 < 1.2 and bf16 < 1.35, (f32, bf16)


@pytest.mark.parametrize("case", [c for c in all_cases()], ids=lambda c: c.name)
def test_traffic_of_autocast_plans(case):
    """A float32 y (and dy) of a bfloat16 x (autocast on CUDA, out_dtype): the floor counts 2
    bytes an element of x and dx, 4 of y and dy; the plans stay at the ideal of their kernels,
    and move at most 1 / 1.8 of what casting x to float32 first did (the cast's read and write,
    the float32 plans, and the cast of dx back)."""
    for fmt in _memory_formats(case.shape):
        new = groupnorm_cuda.cuda_launch_plan(case.shape, case.num_groups, dtype=torch.bfloat16, memory_format=fmt,
                                              out_dtype=torch.float32)
        old = groupnorm_cuda.cuda_launch_plan(case.shape, case.num_groups, dtype=torch.float32, memory_format=fmt)
        t, x2 = new["traffic"], math.prod(case.shape) * 2
        small = t["forward"]["floor_bytes"] - 3 * x2  # parameters and statistics
        assert 0 < small < x2 or math.prod(case.shape[2:]) == 1
        assert t["backward"]["floor_bytes"] - 4 * x2 > small  # + dweight, dbias
        moved = {d: t[d]["read_bytes"] + t[d]["write_bytes"] for d in ("forward", "backward")}
        was = {d: old["traffic"][d]["read_bytes"] + old["traffic"][d]["write_bytes"] + 3 * x2
               for d in ("forward", "backward")}
        assert t["forward"]["ratio"] <= EXPECTED_FWD[new["forward"][0]["kernel"]] + 0.01
        for d in ("forward", "backward"):
            assert moved[d] * 1.35 <= was[d], (case.name, fmt, d, moved[d], was[d])
            if math.prod(case.shape[2:]) >= 16:
                assert moved[d] * 1.8 <= was[d], (case.name, fmt, d, moved[d], was[d])


def test_autocast_backward_tiles_hold_float_dy():
    """The on-chip backward parks dy as float32 next to the 16-bit x: a slot is 6 bytes an
    element instead of 4, so fewer groups fit a CTA."""
    shape = (32, 256, 56, 56)
    plain = groupnorm_cuda.cuda_launch_plan(shape, 32, dtype=torch.bfloat16)["backward"][0]
    wide = groupnorm_cuda.cuda_launch_plan(shape, 32, dtype=torch.bfloat16, out_dtype=torch.float32)["backward"][0]
    assert plain["kernel"] == wide["kernel"] == "gn_bwd_onchip"
    elems = 256 // 32 * 56 * 56
    assert plain["dynamic_shared_mem_bytes"] >= plain["groups_per_block"] * elems * 4
    assert wide["dynamic_shared_mem_bytes"] >= wide["groups_per_block"] * elems * 6
    with pytest.raises(RuntimeError, match="expected out_dtype"):
        groupnorm_cuda.cuda_launch_plan(shape, 32, dtype=torch.float32, out_dtype=torch.bfloat16)
