#!/usr/bin/env python
"""Model-level benchmark: real models built from their libraries' own configs with random
weights (no downloads), original vs convert_groupnorm vs convert_groupnorm(fuse_activation=True),
forward and forward+backward, eager (and torch.compile with --compile), on CPU or CUDA.

Models (sizes per device; every size is a flag):
  vae-decode   diffusers AutoencoderKL with the Stable Diffusion 1.x/2.x VAE config
               (128-256-512-512 channels, 2 layers per block, 32 groups), decode of a latent
  unet         diffusers UNet2DConditionModel, a small config (64-128-256 channels, cross
               attention at 256 dims, 77 text tokens), batch 2 as in classifier-free guidance
  resnet50-gn  timm resnet50_gn (timm's GroupNorm, converted by name; ReLU applied separately)
  effnet-b0-gn timm efficientnet_b0_gn (timm's GroupNormAct with SiLU: converted to the fused
               GroupNorm+SiLU by convert_groupnorm itself, or Identity where it has no act)
               both at 4*batch x 3 x --image^2
  segresnet    MONAI SegResNet, its BraTS config (16 init filters, blocks 1-2-2-4, 4 input
               channels), GroupNorm(8), on a --volume^3 patch

Before timing, every variant's output (and, for forward+backward, the input gradient) is
compared with the original model's; a mismatch makes the run exit with status 1.

Where the time goes: profiled iterations per variant and pass (torch.profiler, after the
timing; 1 to 5 iterations, about 4 s) give the milliseconds per iteration and the share of
operator time spent in GroupNorm (ATen's native_group_norm[_backward] or groupnorm_cuda's
forward / backward, outermost calls only, inclusive of what they call) and in SiLU
(aten::silu[_backward]), over the time of all outermost operators (CPU), or over all kernel
time (CUDA). The profiler attributes time per operator without changing the model
(replacing the norms by nn.Identity instead would change the values that flow on, and with
them the cost of data-dependent steps, and would also drop the SiLU fused into a norm); its
per-operator overhead inflates the total a little on small models, so the speed-ups are from
the unprofiled timing.

Usage (from the repository root, with the extension built and the `models` extra installed):
    python benchmarks/bench_models.py --quick                 # ~3 minutes on 2 CPU cores
    python benchmarks/bench_models.py                         # default sizes, ~10 minutes on 2 idle cores
    python benchmarks/bench_models.py --device cuda --compile
    python benchmarks/bench_models.py --models vae-decode,resnet50-gn --vae-latent 64 --batch 1
Timing reuses benchmarks/gnbench (interleaved, median of repeats); the machine description is
gnbench.machine's. Output: a Markdown table on stdout, JSON in benchmarks/out/.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from gnbench.common import fmt_ms, fmt_x, geomean, log, split_list  # noqa: E402
from gnbench.machine import device_info, git_commit  # noqa: E402
from gnbench.impls import raise_recompile_limits  # noqa: E402
from gnbench.timing import measure  # noqa: E402

import groupnorm_cuda  # noqa: E402
from groupnorm_cuda.reference import rel_err  # noqa: E402

ALL_MODELS = ["vae-decode", "unet", "resnet50-gn", "effnet-b0-gn", "segresnet"]
# (cpu, cuda) defaults and the --quick sizes
DEFAULTS = {
    "cpu": dict(batch=1, vae_latent=24, unet_latent=32, image=224, volume=40, budget=6.0),
    "cuda": dict(batch=1, vae_latent=128, unet_latent=64, image=224, volume=128, budget=2.0),
}
QUICK = {
    "cpu": dict(batch=1, vae_latent=16, unet_latent=16, image=128, volume=32, budget=2.0),
    "cuda": dict(batch=1, vae_latent=64, unet_latent=32, image=224, volume=96, budget=1.0),
}
NORM_OPS = {"aten::native_group_norm", "aten::native_group_norm_backward",
            "groupnorm_cuda::forward", "groupnorm_cuda::backward"}
SILU_OPS = {"aten::silu", "aten::silu_", "aten::silu_backward"}


# ---------------------------------------------------------------------------------------
# models: each builder returns (model, inputs, fn) with fn(model, *inputs) -> tensor; the first
# input is the one the gradient is taken for


class _Call(nn.Module):
    def __init__(self, inner, fn):
        super().__init__()
        self.inner, self._fn = inner, fn

    def forward(self, *inputs):
        return self._fn(self.inner, *inputs)


def build_vae_decode(a, device, dtype):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=8 * a.vae_latent)
    vae.encoder = None  # decode only: keeps three copies of the model small
    vae.quant_conv = None
    z = torch.randn(a.batch, 4, a.vae_latent, a.vae_latent)
    return _Call(vae, lambda m, z: m.decode(z).sample), [z], f"{a.batch}x4x{a.vae_latent}x{a.vae_latent} latent"


def build_unet(a, device, dtype):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=a.unet_latent, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(64, 128, 256),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=256, attention_head_dim=8, norm_num_groups=32)
    b = 2 * a.batch
    t = torch.full((b,), 500.0)
    x = torch.randn(b, 4, a.unet_latent, a.unet_latent)
    ctx = torch.randn(b, 77, 256)

    def fn(m, x, ctx):
        return m(x, t.to(x.device), encoder_hidden_states=ctx).sample

    return _Call(unet, fn), [x, ctx], f"{b}x4x{a.unet_latent}x{a.unet_latent} latent, 77 tokens"


def _timm(name):
    def build(a, device, dtype):
        import timm

        net = timm.create_model(name, pretrained=False)
        x = torch.randn(a.batch * 4, 3, a.image, a.image)
        return _Call(net, lambda m, x: m(x)), [x], f"{a.batch * 4}x3x{a.image}x{a.image}"

    return build


def build_segresnet(a, device, dtype):
    from monai.networks.nets import SegResNet

    net = SegResNet(spatial_dims=3, init_filters=16, in_channels=4, out_channels=3, blocks_down=(1, 2, 2, 4),
                    blocks_up=(1, 1, 1), norm=("group", {"num_groups": 8}))
    v = a.volume
    x = torch.randn(a.batch, 4, v, v, v)
    return _Call(net, lambda m, x: m(x)), [x], f"{a.batch}x4x{v}x{v}x{v}"


BUILDERS = {"vae-decode": build_vae_decode, "unet": build_unet, "resnet50-gn": _timm("resnet50_gn"),
            "effnet-b0-gn": _timm("efficientnet_b0_gn"), "segresnet": build_segresnet}


# ---------------------------------------------------------------------------------------
# variants, checks, timing, profile


def perturb_norms(model):
    """Norm weights / biases away from 1 / 0 (fresh models have the identity affine)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.GroupNorm) and m.affine:
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))


def make_variants(model):
    """original, converted, fused (None where fusion found nothing to fuse) + a summary."""
    conv = copy.deepcopy(model)
    _, report = groupnorm_cuda.convert_groupnorm(conv, report=True)
    fused = copy.deepcopy(model)
    _, freport = groupnorm_cuda.convert_groupnorm(fused, fuse_activation=True, report=True)
    n_norms = sum(isinstance(m, nn.GroupNorm) for m in model.modules())
    n_conv = sum(isinstance(m, groupnorm_cuda.GroupNorm) for m in conv.modules())
    n_fused = sum(isinstance(m, groupnorm_cuda.GroupNorm) and m.activation == "silu" for m in fused.modules())
    n_fused_plain = sum(isinstance(m, groupnorm_cuda.GroupNorm) and m.activation == "silu" for m in conv.modules())
    info = dict(norms=n_norms, converted=n_conv, silu_fused=n_fused,
                silu_fused_without_fuse_activation=n_fused_plain,
                declined=sorted({r.reason for r in report if not r.converted}))
    variants = {"original": model, "converted": conv}
    variants["fused"] = fused if n_fused > n_fused_plain else None
    return variants, info


def runner(model, fn, inputs, pass_):
    params = [p for p in model.parameters() if p.requires_grad]
    rest = inputs[1:]
    if pass_ == "fwd":
        return lambda x, dy: fn(model, x, *rest)

    def fwd_bwd(x, dy):
        out = fn(model, x, *rest)
        return torch.autograd.grad(out, [x] + params, dy, allow_unused=True)

    return fwd_bwd


def check(variants, fn, inputs, pass_, dtype):
    """Output (and input gradient) of each variant against the original's. float32: the op and
    nn.GroupNorm round differently, and a deep network amplifies that; the input gradient most
    (ReLU kinks that flip): resnet50_gn's differs by 5e-3 (tests/test_models.py measures such
    differences against float64 and finds the unconverted model equally far). A norm or an
    activation computed wrongly is off by order 1."""
    tol_out, tol_grad = (1e-4, 2e-2) if dtype == torch.float32 else (3e-2, 1e-1)
    errs, ok = {}, True
    results = {}
    for name, model in variants.items():
        x = inputs[0].detach().clone().requires_grad_(pass_ != "fwd")
        with torch.set_grad_enabled(pass_ != "fwd"):
            out = fn(model, x, *inputs[1:])
            g = None
            if pass_ != "fwd":
                dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out)
                (g,) = torch.autograd.grad(out, [x], dy)
        results[name] = (out.detach(), g)
    ref_out, ref_g = results["original"]
    for name, (out, g) in results.items():
        if name == "original":
            continue
        e = {"output": rel_err(out, ref_out)}
        if g is not None:
            e["grad_input"] = rel_err(g, ref_g)
        bad = e["output"] > tol_out or e.get("grad_input", 0) > tol_grad
        ok &= not bad
        errs[name] = e
    return ok, errs


def profile_times(run, x, dy, device, pass_, iters):
    """Milliseconds per iteration in GroupNorm ops, in SiLU ops, and in all ops (CPU: outermost
    operators; CUDA: kernel time), from `iters` profiled iterations."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.set_grad_enabled(pass_ != "fwd"):
        with profile(activities=acts) as prof:
            for _ in range(iters):
                run(x, dy)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    events = prof.events()

    def outermost(names):
        out = []
        for e in events:
            if e.name not in names:
                continue
            p = e.cpu_parent
            while p is not None and p.name not in names:
                p = p.cpu_parent
            if p is None:
                out.append(e)
        return out

    if device.type == "cuda":
        total = sum(e.self_device_time_total for e in events)
        time_of = lambda es: sum(e.device_time_total for e in es)  # noqa: E731
    else:
        total = sum(e.cpu_time_total for e in events if e.cpu_parent is None and e.device_type.name == "CPU")
        time_of = lambda es: sum(e.cpu_time_total for e in es)  # noqa: E731
    per_iter = lambda us: us / 1e3 / iters  # noqa: E731  (profiler times are microseconds)
    return dict(norm_ms=per_iter(time_of(outermost(NORM_OPS))), silu_ms=per_iter(time_of(outermost(SILU_OPS))),
                ops_ms=per_iter(total))


# ---------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--models", action="append", help=f"comma list of {ALL_MODELS} (default all)")
    p.add_argument("--quick", action="store_true", help="smaller sizes and budget")
    p.add_argument("--pass", dest="passes", action="append", help="fwd, fwd+bwd (default both)")
    p.add_argument("--compile", action="store_true", help="also torch.compile every variant (slow on CPU)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="model dtype (default fp32)")
    p.add_argument("--batch", type=int, default=None, help="batch (UNet: 2x, timm: 4x this)")
    p.add_argument("--vae-latent", type=int, default=None, help="VAE latent side (image side = 8x)")
    p.add_argument("--unet-latent", type=int, default=None, help="UNet latent side")
    p.add_argument("--image", type=int, default=None, help="timm image side")
    p.add_argument("--volume", type=int, default=None, help="MONAI volume side")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per variant and pass")
    p.add_argument("--repeats", type=int, default=None, help="fixed timed repeats (default adaptive)")
    p.add_argument("--no-profile", action="store_true", help="skip the GroupNorm share (profiler)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="default benchmarks/out/models_<device>[_quick].json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = (QUICK if a.quick else DEFAULTS)[device.type]
    for k, v in sizes.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    models = split_list(a.models) or ALL_MODELS
    passes = split_list(a.passes) or ["fwd", "fwd+bwd"]
    dev = device_info(device)
    modes = ["eager"] + (["compile"] if a.compile else [])
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                device=device.type, device_name=dev["dev_name"], torch=torch.__version__,
                threads=torch.get_num_threads(), python=platform.python_version(), git_commit=git_commit(),
                dtype=a.dtype, quick=a.quick, argv=sys.argv[1:],
                sizes={k: getattr(a, k) for k in ("batch", "vae_latent", "unet_latent", "image", "volume")},
                budget_s=a.budget, modes=modes, share_method="torch.profiler, outermost norm / SiLU ops over "
                "all outermost ops (CPU) or all kernel time (CUDA), 1-5 iterations")
    print(f"# groupnorm_cuda model benchmark\n\n{meta['date']} | {meta['device_name']} | torch {meta['torch']} "
          f"| threads {meta['threads']} | {a.dtype} | commit {meta['git_commit']}\n")
    results, failures = [], []
    for name in models:
        t0 = time.time()
        torch.manual_seed(0)
        model, inputs, desc = BUILDERS[name](a, device, dtype)
        perturb_norms(model)
        model = model.to(device=device, dtype=dtype).eval()
        inputs = [x.to(device=device, dtype=dtype) for x in inputs]
        variants, info = make_variants(model)
        log(f"[{name}] {desc}: {info['norms']} norms, {info['converted']} converted, "
            f"{info['silu_fused']} fused with SiLU ({time.time() - t0:.1f} s to build)")
        for mode in modes:
            vs = {k: v for k, v in variants.items() if v is not None}
            if mode == "compile":
                # Every variant's _Call.forward is the same code object: its compiled entries (3
                # variants x grad on/off, per model) pass dynamo's default recompile limit (8),
                # past which dynamo silently runs the frame eagerly. The op benchmark's remedy
                # (raise_recompile_limits), and an error rather than an eager fallback if a
                # limit is still hit.
                raise_recompile_limits()
                torch._dynamo.config.fail_on_recompile_limit_hit = True
                vs = {k: torch.compile(v) for k, v in vs.items()}
            for pass_ in passes:
                ok, errs = check(vs, lambda m, *i: m(*i), inputs, pass_, dtype)
                rec = dict(model=name, input=desc, mode=mode, **{"pass": pass_}, **info, errors=errs, correct=ok)
                if not ok:
                    failures.append(f"{name} {mode} {pass_}: {errs}")
                    log(f"  MISMATCH {name} {mode} {pass_}: {errs}")
                    results.append(rec)
                    continue
                x = inputs[0].detach().clone().requires_grad_(pass_ != "fwd")
                with torch.no_grad():
                    out = vs["original"](x.detach(), *inputs[1:])
                dy = torch.randn_like(out)
                runners = {k: runner(v, lambda m, *i: m(*i), [x] + inputs[1:], pass_) for k, v in vs.items()}
                t1 = time.time()
                med, spread, n_rep = measure(runners, [(x, dy)], device, pass_, a.budget, a.repeats,
                                             min_rep=3, max_rep=50)
                best = spread.pop("min")  # fastest single call: the least disturbed on a shared machine
                rec.update(ms={k: v * 1e3 for k, v in med.items()}, min_ms={k: v * 1e3 for k, v in best.items()},
                           iqr_over_median=spread, repeats=n_rep)
                rec["speedup"] = {k: med["original"] / v for k, v in med.items() if k != "original"}
                rec["speedup_of_min"] = {k: best["original"] / v for k, v in best.items() if k != "original"}
                if not a.no_profile and mode == "eager":
                    # about 4 s of profiled iterations per variant (1 to 5 iterations)
                    iters = max(1, min(5, int(4.0 / max(med["original"], 1e-3))))
                    rec["profile_iters"] = iters
                    rec["profile"] = {k: profile_times(r, x, dy, device, pass_, iters) for k, r in runners.items()}
                    rec["norm_share"] = {k: v["norm_ms"] / v["ops_ms"] for k, v in rec["profile"].items()}
                    rec["silu_share"] = {k: v["silu_ms"] / v["ops_ms"] for k, v in rec["profile"].items()}
                log(f"  {mode} {pass_}: " + ", ".join(f"{k} {fmt_ms(v)} ms" for k, v in med.items())
                    + f" ({n_rep} repeats, {time.time() - t1:.0f} s)")
                results.append(rec)
        del model, variants
    print_table(results)
    out = a.json or os.path.join(HERE, "out", f"models_{device.type}{'_quick' if a.quick else ''}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    log(f"wrote {out}")
    if failures:
        print("\nMISMATCHES (not timed):\n" + "\n".join(failures))
        return 1
    return 0


def _pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def _gn_silu(r):
    """Milliseconds per iteration in GroupNorm + SiLU ops (profiler): original -> the fastest variant."""
    prof = r.get("profile")
    if not prof:
        return "-"
    best = min((k for k in prof if k != "original"), key=lambda k: r["ms"][k])
    ms = {k: v["norm_ms"] + v["silu_ms"] for k, v in prof.items()}
    return f"{fmt_ms(ms['original'] / 1e3)} -> {fmt_ms(ms[best] / 1e3)} ({fmt_x(ms['original'] / ms[best])})"


def print_table(results):
    head = ["model", "input", "mode", "pass", "original ms", "converted ms", "speed-up", "(of min)", "fused ms",
            "speed-up",
            "norm share orig -> conv (-> fused)", "SiLU share orig -> fused", "GN+SiLU ms orig -> best",
            "converted / fused norms"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i < 4 else "---:" for i in range(len(head))) + "|")
    for r in results:
        if not r.get("ms"):
            continue
        ms, sp = r["ms"], r["speedup"]
        ns, ss = r.get("norm_share", {}), r.get("silu_share", {})
        share = f"{_pct(ns.get('original'))} -> {_pct(ns.get('converted'))}"
        if "fused" in ns:
            share += f" -> {_pct(ns.get('fused'))}"
        silu = f"{_pct(ss.get('original'))} -> {_pct(ss.get('fused', ss.get('converted')))}"
        row = [r["model"], r["input"], r["mode"], r["pass"], fmt_ms(ms["original"] / 1e3), fmt_ms(ms["converted"] / 1e3),
               fmt_x(sp["converted"]), fmt_x(r["speedup_of_min"]["converted"]),
               fmt_ms(ms["fused"] / 1e3) if "fused" in ms else "-",
               fmt_x(sp.get("fused")), share if ns else "-", silu if ss else "-", _gn_silu(r),
               f"{r['converted']}/{r['norms']}, {r['silu_fused']} fused"]
        print("| " + " | ".join(row) + " |")
    sps = [r["speedup"]["converted"] for r in results if r.get("speedup")]
    best = [max(r["speedup"].values()) for r in results if r.get("speedup")]
    if sps:
        print(f"\ngeometric mean speed-up: converted {fmt_x(geomean(sps))}, best variant {fmt_x(geomean(best))}")


if __name__ == "__main__":
    sys.exit(main())
