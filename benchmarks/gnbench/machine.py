"""The machine the benchmark runs on: CPU model, cache sizes, CUDA device, git commit, and the
run metadata (the JSON's `meta`)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from typing import Optional

import torch

from .common import BYTES_FORMULA, MiB

# the repository root (benchmarks/gnbench/machine.py -> ../..)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _size_bytes(s: str) -> int:
    s = s.strip()
    mult = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(s[-1].upper(), 1)
    return int(s[:-1]) * mult if s[-1].isalpha() else int(s)


def cpu_caches() -> dict:
    """The data / unified caches cpu0 sees (sysfs): {"L1d": (bytes, cpus sharing it), "L2": ..., "L3": ...}."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            d = os.path.join(base, idx)
            try:
                with open(os.path.join(d, "type")) as f:
                    kind = f.read().strip()
                if kind == "Instruction":
                    continue
                with open(os.path.join(d, "level")) as f:
                    level = f.read().strip()
                with open(os.path.join(d, "size")) as f:
                    size = _size_bytes(f.read())
                shared = 1
                try:
                    with open(os.path.join(d, "shared_cpu_list")) as f:
                        shared = sum((int(b) - int(a) + 1) if "-" in r else 1
                                     for r in f.read().strip().split(",") if r
                                     for a, _, b in [r.partition("-")])
                except (OSError, ValueError):
                    pass
                out[f"L{level}{'d' if kind == 'Data' else ''}"] = (size, shared)
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        pass
    return out


def cpu_isa() -> str:
    """The vector extensions that matter to the CPU kernels, as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
            else:
                flags = set()
    except OSError:
        flags = set()
    want = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_bf16")
    return " ".join(f for f in want if f in flags) or "no AVX2"


def cpu_description() -> str:
    """CPU model, caches (size per instance, and how many CPUs share one) and ISA, in one line."""
    caches = ", ".join(f"{k} {v[0] / 1024:.0f} KiB" + (f" (shared by {v[1]} CPUs)" if v[1] > 1 else "")
                       for k, v in cpu_caches().items())
    return f"{cpu_model()}; {caches}; ISA: {cpu_isa()}"


def cpu_llc_bytes() -> int:
    """Size of the last-level cache (used to size the rotating input buffers on CPU)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in os.listdir(base):
            try:
                with open(os.path.join(base, idx, "size")) as f:
                    s = f.read().strip()
                mult = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(s[-1].upper(), 1)
                val = int(s[:-1]) * mult if s[-1].isalpha() else int(s)
                best = max(best, val)
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return best or 32 * MiB


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


def device_info(device: torch.device) -> dict:
    """Device name, the cache size the input ring must exceed, the memory cap of that ring and
    the bounds of the adaptive repeat count."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev_name = f"{props.name} ({props.multi_processor_count} SMs, L2 {props.L2_cache_size / MiB:.0f} MiB)"
        cache_bytes = props.L2_cache_size
        free, _total = torch.cuda.mem_get_info(device)
        rotate_cap = int(min(4 * 1024 * MiB, 0.25 * free))
        min_rep, max_rep = 10, 500
    else:
        dev_name = cpu_description()
        cache_bytes = cpu_llc_bytes()
        rotate_cap = 1024 * MiB
        min_rep, max_rep = 7, 200  # medians of fewer samples swing by 10-30% on a busy VM
    return dict(dev_name=dev_name, cache_bytes=cache_bytes, rotate_cap=rotate_cap,
                min_rep=min_rep, max_rep=max_rep)


def run_meta(args, device: torch.device, dev_name: str, cache_bytes: int, cand_desc: str,
             scope: str, peers, peer_notes, dtypes, layouts, passes, acts) -> dict:
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device.type, device_name=dev_name, torch=torch.__version__,
        cuda=torch.version.cuda, threads=torch.get_num_threads(), python=platform.python_version(),
        host=platform.node(), candidate=cand_desc, git_commit=git_commit(),
        cache_bytes_for_rotation=cache_bytes, quick=args.quick, compile_scope=scope,
        max_mb=args.max_mb, budget_s=args.budget, repeats=args.repeats, bytes_formula=BYTES_FORMULA,
        argv=sys.argv[1:], peers=list(peers), peer_notes=peer_notes,
        dtypes=dtypes, layouts=layouts, passes=passes, activations=acts,
    )
