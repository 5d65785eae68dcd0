#!/usr/bin/env python3
"""Compile every CUDA kernel of csrc/cuda/kernels (no torch) with nvcc -Xptxas -v and fail on
register spills or a non-empty stack frame.

A generated driver instantiates kernels::launch_forward / launch_backward for every
(input, parameter) dtype pair, and both directions with a float y (and dy) of a 16-bit input,
which instantiates every kernel the extension can launch.

    python tools/check_ptxas.py                  # sm_80 and sm_90
    python tools/check_ptxas.py --arch 80        # one architecture
    python tools/check_ptxas.py --extra bad.cu   # also compile (and check) another source

Exit status: 0 clean, 1 spills / stack frames found, 2 compile error or no nvcc.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

DRIVER = r"""
#include "cuda/kernels/launcher.cuh"
using namespace groupnorm_cuda;
using namespace groupnorm_cuda::kernels;
// O: the type of y and dy (T, or float for a 16-bit T: autocast's output, group_norm_cuda.cu).
template <typename T, typename W, typename O> void instantiate_all() {
  ForwardArgs<T, W, O> fa{};
  BackwardArgs<T, W, O> ba{};
  plan::ForwardPlan fp;
  plan::BackwardPlan bp;
  launch_forward<T, W, O>(fa, fp, nullptr, 0);
  launch_backward<T, W, O>(ba, bp, nullptr, 0);
}
template void instantiate_all<float, float, float>();
template void instantiate_all<double, double, double>();
template void instantiate_all<__half, __half, __half>();
template void instantiate_all<__half, float, __half>();
template void instantiate_all<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16>();
template void instantiate_all<__nv_bfloat16, float, __nv_bfloat16>();
template void instantiate_all<__half, float, float>();
template void instantiate_all<__nv_bfloat16, float, float>();
"""

ENTRY_RE = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
STACK_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGS_RE = re.compile(r"Used (\d+) registers")


def find_nvcc():
    for cand in (os.environ.get("NVCC"), os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "nvcc"),
                 "/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def demangle(names):
    filt = shutil.which("c++filt")
    if not filt or not names:
        return {n: n for n in names}
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def parse(report):
    """[(arch, mangled, regs, stack, spill_st, spill_ld)] from nvcc -Xptxas -v output."""
    rows, cur = [], None
    for line in report.splitlines():
        m = ENTRY_RE.search(line)
        if m:
            cur = {"name": m.group(1), "arch": m.group(2), "regs": None, "stack": 0, "st": 0, "ld": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = STACK_RE.search(line)
        if m:
            cur["stack"], cur["st"], cur["ld"] = (int(g) for g in m.groups())
        m = REGS_RE.search(line)
        if m:
            cur["regs"] = int(m.group(1))
    return rows


def compile_one(nvcc, src, arch, workdir, includes=()):
    """nvcc -c of src for sm_<arch> with the ptxas report; `includes` come before csrc."""
    cmd = [nvcc, "-std=c++17", "-O3", *[a for d in includes for a in ("-I", d)], "-I", CSRC,
           "-gencode", f"arch=compute_{arch},code=sm_{arch}", "-Xptxas", "-v", "-c", src,
           "-o", os.path.join(workdir, f"out_{arch}_{os.path.basename(src)}.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", help="SM version(s), default 80 and 90")
    ap.add_argument("--extra", action="append", default=[], help="additional .cu file(s) to compile and check")
    ap.add_argument("--no-kernels", action="store_true", help="check only the --extra sources")
    args = ap.parse_args(argv)
    archs = args.arch or ["80", "90"]
    nvcc = find_nvcc()
    if nvcc is None:
        print("check_ptxas: nvcc not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        sources = []
        if not args.no_kernels:
            drv = os.path.join(tmp, "gn_kernels_driver.cu")
            with open(drv, "w") as f:
                f.write(DRIVER)
            sources.append(drv)
        sources += [os.path.abspath(s) for s in args.extra]
        rows = []
        for arch in archs:
            for src in sources:
                rc, out = compile_one(nvcc, src, arch, tmp)
                if rc != 0:
                    print(out, file=sys.stderr)
                    print(f"check_ptxas: nvcc failed on {src} for sm_{arch}", file=sys.stderr)
                    return 2
                rows += parse(out)
    if not rows:
        print("check_ptxas: no kernels found in the ptxas report", file=sys.stderr)
        return 2
    names = demangle(sorted({r["name"] for r in rows}))
    bad = 0
    print(f"{'arch':6} {'regs':>4} {'stack':>5} {'spill_st':>8} {'spill_ld':>8}  kernel")
    for r in sorted(rows, key=lambda r: (r["arch"], names[r["name"]])):
        flag = r["stack"] > 0 or r["st"] > 0 or r["ld"] > 0
        bad += flag
        short = re.sub(r"groupnorm_cuda::kernels::", "", names[r["name"]])
        short = re.sub(r"^void ", "", short)
        print(f"{r['arch']:6} {r['regs'] if r['regs'] is not None else '?':>4} {r['stack']:>5} {r['st']:>8} "
              f"{r['ld']:>8}  {short}{'   <-- SPILL/STACK' if flag else ''}")
    if bad:
        print(f"check_ptxas: {bad} kernel(s) spill or use a stack frame", file=sys.stderr)
        return 1
    print(f"check_ptxas: {len(rows)} kernel compilations, no spills, no stack frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
