#!/usr/bin/env python3
"""Build and run a SIMT harness (CUDA kernel source executed on the CPU, see simt_runtime.h).

    python tests/simt/build.py [--mode plain|tsan|asan] [harness.cpp] [-- args...]

Library use (from pytest):
    from build import build, run, cuda_include_dir
    exe = build("tests/simt/selftest.cpp", "tsan")
    rc, out, err = run(exe, ["race"], mode="tsan", timeout=120)

Modes:
    plain  -O2
    tsan   -O1 -g -fsanitize=thread
    asan   -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all

Binaries are cached in tests/simt/build/ (git-ignored; override with SIMT_BUILD_DIR), keyed by a
hash of the compiler command, the harness and every header under tests/simt/ and csrc/.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CSRC = REPO / "csrc"

MODES = {
    "plain": ["-O2"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
    "asan": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
}
COMMON = ["-std=c++17", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter", "-DGROUPNORM_SIMT"]

# Sanitizer runtime options: fail loudly, exit nonzero, keep reports readable.
SAN_ENV = {
    "TSAN_OPTIONS": "halt_on_error=1 exitcode=66 second_deadlock_stack=1 report_signal_unsafe=0",
    "ASAN_OPTIONS": "abort_on_error=0 exitcode=67 detect_leaks=1 allocator_may_return_null=0",
    "UBSAN_OPTIONS": "print_stacktrace=1 halt_on_error=1 exitcode=68",
}


class SkipBuild(RuntimeError):
    """The toolchain needed for SIMT builds is missing (tests should skip)."""


def cuda_include_dir() -> Path | None:
    """Directory holding cuda_fp16.h / vector_types.h (CUDA_HOME, CUDA_PATH, /usr/local/cuda,
    nvcc on PATH, or the pip packages nvidia/cu13 / nvidia/cuda_runtime)."""
    cands: list[Path] = []
    for var in ("SIMT_CUDA_INCLUDE", "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        v = os.environ.get(var)
        if v:
            cands += [Path(v), Path(v) / "include", Path(v) / "targets" / f"{platform.machine()}-linux" / "include"]
    cands += [Path("/usr/local/cuda/include"), Path(f"/usr/local/cuda/targets/{platform.machine()}-linux/include")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(Path(nvcc).resolve().parent.parent / "include")
    for p in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cuda_runtime/include", "nvidia/cuda_nvcc/include"):
            cands.append(Path(p) / sub)
    for c in cands:
        if (c / "cuda_fp16.h").is_file() and (c / "vector_types.h").is_file():
            return c
    return None


def compiler() -> str:
    cxx = os.environ.get("SIMT_CXX") or shutil.which("g++")
    if not cxx:
        raise SkipBuild("no g++ found (set SIMT_CXX)")
    return cxx


def _flags(mode: str, inc: Path, include_first: list[Path] | None = None) -> list[str]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
    first: list[str] = []
    for d in include_first or []:
        first += ["-I", str(d)]
    return COMMON + MODES[mode] + first + ["-I", str(HERE), "-I", str(CSRC), "-isystem", str(inc)]


def _dep_hash(src: Path, cmd: list[str], extra_roots: list[Path] | None = None) -> str:
    h = hashlib.sha256("\0".join(cmd).encode())
    files = [src]
    for root in (HERE, CSRC, *(extra_roots or [])):
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix in (".h", ".cuh", ".hpp", ".inl") and p.is_file())
    for f in files:
        h.update(str(f).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    d = Path(os.environ.get("SIMT_BUILD_DIR", HERE / "build"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def build(src: str | os.PathLike, mode: str = "plain", extra_flags: list[str] | None = None,
          verbose: bool = False, include_first: list[str | os.PathLike] | None = None,
          variant: str | None = None) -> Path:
    """Compile `src` in `mode`; returns the executable (cached by content hash).

    include_first: directories searched before tests/simt and csrc (e.g. a mutated copy of
    csrc/cuda/kernels laid out as <dir>/cuda/kernels/*.cuh); their headers are part of the hash.
    variant: a name part for the executable ("<stem>-<variant>-<mode>-<hash>"), so that builds of
    one harness with different flags/headers are cached side by side instead of replacing each other.
    """
    src = Path(src).resolve()
    inc = cuda_include_dir()
    if inc is None:
        raise SkipBuild("CUDA headers (cuda_fp16.h, vector_types.h) not found: set CUDA_HOME or install "
                        "CUDA / the nvidia-cuda-runtime pip package; SIMT tests skipped")
    first = [Path(d).resolve() for d in (include_first or [])]
    cmd_flags = _flags(mode, inc, first) + list(extra_flags or [])
    cxx = compiler()
    key = _dep_hash(src, [cxx] + cmd_flags, first)
    stem = f"{src.stem}-{variant}" if variant else src.stem
    out = build_dir() / f"{stem}-{mode}-{key}"
    if out.exists():
        return out
    # One compile at a time per build dir (machines here have 2 shared cores).
    with open(build_dir() / ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if out.exists():
            return out
        tmp = out.with_suffix(".tmp")
        cmd = [cxx] + cmd_flags + [str(src), "-o", str(tmp)]
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"SIMT build failed ({mode}):\n{' '.join(cmd)}\n{r.stderr[-20000:]}")
        tmp.rename(out)
        for old in build_dir().glob(f"{stem}-{mode}-*"):  # drop stale builds of this harness/variant/mode
            if old != out and len(old.name) == len(out.name) and not old.name.endswith(".tmp"):
                old.unlink(missing_ok=True)
    return out


_TSAN_MAPPING_ERRORS = ("unexpected memory mapping", "FATAL: ThreadSanitizer")
_use_setarch = {"tsan": False}


def run(exe: str | os.PathLike, args: list[str] | None = None, mode: str = "plain", timeout: float = 300,
        env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a harness; returns (returncode, stdout, stderr). A timeout gives returncode -9 and a
    note in stderr (the layer itself should have reported a hang long before)."""
    full_env = dict(os.environ)
    for k, v in SAN_ENV.items():
        full_env.setdefault(k, v)
    full_env.update(env or {})
    cmd = [str(exe)] + list(args or [])
    # TSan of older GCCs can die at start-up with "FATAL: ThreadSanitizer: unexpected memory
    # mapping" when vm.mmap_rnd_bits is large (ASLR); running with ASLR off (setarch -R) fixes it.
    if mode == "tsan" and _use_setarch["tsan"]:
        cmd = ["setarch", platform.machine(), "-R"] + cmd
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
        if (mode == "tsan" and not _use_setarch["tsan"] and r.returncode != 0
                and any(m in r.stderr for m in _TSAN_MAPPING_ERRORS) and "data race" not in r.stderr
                and shutil.which("setarch")):
            _use_setarch["tsan"] = True
            return run(exe, args, mode, timeout, env)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        def _s(x):
            return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
        return -9, _s(e.stdout), _s(e.stderr) + f"\nbuild.py: TIMEOUT after {timeout} s: {' '.join(cmd)}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="plain", choices=sorted(MODES))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("src", nargs="?", default=str(HERE / "selftest.cpp"))
    argv = sys.argv[1:]
    args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, args = argv[:i], argv[i + 1:]
    a = ap.parse_args(argv)
    try:
        exe = build(a.src, a.mode, verbose=True)
    except SkipBuild as e:
        print(f"SKIP: {e}", file=sys.stderr)
        return 0
    rc, out, err = run(exe, args, mode=a.mode, timeout=a.timeout)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
