#!/usr/bin/env python3
"""Machine-code gate for the CUDA kernels (no GPU needed).

Compiles every kernel instantiation (the driver of tools/check_ptxas.py) for sm_90 and sm_80,
disassembles it (cuobjdump: CUDA_HOME's, or the copy that ships with torch's triton), prints a
per-kernel table of memory instructions and fails when:

  * any kernel touches local memory (LDL / STL: spills or stack arrays);
  * a vector-path kernel (V elements of T = 16 bytes) that writes a tensor (y or dx) has no
    128-bit global store, or writes a 16-byte vector as several narrow stores (3 or more
    accesses of one width from the same base register covering one aligned 16-byte window:
    the split nvcc makes of an aggregate copy);
  * a vector-path kernel that reads a tensor (x, dy) has no 128-bit global load;
  * an on-chip kernel reads its shared-memory tile back as split narrow loads, or with no
    128-bit shared load at all;
  * an on-chip kernel streams its group with fewer 128-bit global loads than its load batch
    (common.cuh kLoadBatch: 4 vectors per thread in flight for float, 2 for 16-bit types;
    the backward's batch covers x and dy): one load in flight per thread cannot keep HBM busy
    when a CTA of 227 KiB is alone on its SM.

Scalar loads and stores of parameters and statistics (weight, bias, mean, rstd, partial sums)
are legitimate and not counted against a kernel; 8-byte scalars (float64) are not checked for
splitting (two STG.E.64 of a split float64 vector look like two float64 scalars).

    python tools/check_sass.py [--arch 90 --arch 80] [--kernels-root DIR] [--markdown FILE]

--kernels-root DIR: a directory holding cuda/kernels/*.cuh that shadow csrc's (planted-bug
tests compile a mutated copy). Exit status 0 = pass, 1 = a rule failed, 2 = tool error.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_ptxas  # noqa: E402  (the driver, nvcc lookup, demangling)

INSN_RE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);")
FUNC_RE = re.compile(r"Function : (\S+)")
ADDR_RE = re.compile(r"\[(R\d+)(?:\.64)?(?:\+(-?0x[0-9a-f]+))?\]")
MEM_OPS = ("LDG", "STG", "LDS", "STS", "LDL", "STL")

# Kernels that write / read tensor data (the rest move parameters and statistics only).
WRITES_TENSOR = {"gn_fwd_onchip", "gn_fwd_cluster", "gn_fwd_bundle", "gn_bwd_cluster", "gn_fwd_apply", "gn_fwd_apply_rows", "gn_bwd_dx", "gn_bwd_dx_rows",
                 "gn_bwd_onchip"}
READS_TENSOR = WRITES_TENSOR | {"gn_fwd_stats", "gn_fwd_stats_rows", "gn_bwd_sums_nchw", "gn_bwd_sums_nhwc",
                                "gn_bwd_sums_rows"}
ONCHIP = {"gn_fwd_onchip", "gn_fwd_cluster", "gn_fwd_bundle", "gn_bwd_onchip", "gn_bwd_cluster"}
SM90_ONLY = {"gn_fwd_cluster", "gn_bwd_cluster"}  # thread-block clusters
ELEM_BYTES = {"float": 4, "double": 8, "__half": 2, "__nv_bfloat16": 2}
# Fewest 128-bit global loads of an on-chip kernel's streaming loop (kLoadBatch in common.cuh).
ONCHIP_MIN_LDG128 = {"float": 4, "__half": 2, "__nv_bfloat16": 2, "double": 1}


def find_cuobjdump():
    cands = [os.environ.get("CUOBJDUMP"), os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "cuobjdump"),
             "/usr/local/cuda/bin/cuobjdump", shutil.which("cuobjdump")]
    try:
        import triton  # type: ignore

        cands.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except Exception:
        pass
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def width_bits(op):
    """Access width of a memory opcode such as STG.E.128, LDS.U16, LDG.E.64.CONSTANT."""
    parts = op.split(".")
    for p in parts[1:]:
        if p in ("128", "64"):
            return int(p)
        if p in ("U16", "S16"):
            return 16
        if p in ("U8", "S8"):
            return 8
    return 32


def parse_sass(text):
    """{mangled function name: [(opcode, operands)]}"""
    funcs, cur = {}, None
    for line in text.splitlines():
        m = FUNC_RE.search(line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        if cur is None:
            continue
        m = INSN_RE.search(line)
        if m:
            cur.append((m.group(1), m.group(2)))
    return funcs


def split_accesses(insns, family):
    """Groups of >= 3 narrow (<= 4-byte) accesses of `family` with one width and base register
    whose offsets fall in one aligned 16-byte window and cover it: a 16-byte vector split up."""
    groups = defaultdict(set)
    for op, args in insns:
        if op.split(".")[0] != family:
            continue
        bits = width_bits(op)
        if bits > 32:
            continue
        addrs = ADDR_RE.findall(args)
        if not addrs:
            continue
        reg, off = addrs[-1]
        off = int(off, 16) if off else 0
        groups[(reg, bits, off // 16)].add(off)
    found = []
    for (reg, bits, win), offs in groups.items():
        if len(offs) >= 3 and len(offs) * bits // 8 >= 16:
            found.append(f"{family} {len(offs)}x{bits}-bit at [{reg}+{win * 16:#x}..]")
    return found


def kernel_facts(name):
    """(short name, element type, V) of a demangled kernel name."""
    m = re.search(r"kernels::(\w+)<([^>]*)>", name)
    if not m:
        return name, None, None
    args = [a.strip() for a in m.group(2).split(",")]
    v = int(args[-1]) if args[-1].isdigit() else None
    return m.group(1), args[0], v


def stats(insns):
    s = defaultdict(int)
    for op, _ in insns:
        fam = op.split(".")[0]
        if fam in MEM_OPS:
            s[f"{fam}.{width_bits(op)}"] += 1
            s[fam] += 1
        elif fam == "MUFU":
            s["MUFU"] += 1
        elif fam in ("FFMA", "DFMA", "HFMA2"):
            s["FMA"] += 1
    return s


def check_kernel(short, elem, v, insns, s):
    """The rule failures of one kernel."""
    bad = []
    if s["LDL"] or s["STL"]:
        bad.append(f"local memory: {s['LDL']} LDL, {s['STL']} STL")
    vector = elem in ELEM_BYTES and v is not None and ELEM_BYTES[elem] * v == 16
    if not vector:
        return bad
    if short in WRITES_TENSOR:
        if not s["STG.128"]:
            bad.append("no 128-bit global store of the output")
        bad += [f"split store: {g}" for g in split_accesses(insns, "STG")]
    if short in READS_TENSOR and not s["LDG.128"]:
        bad.append("no 128-bit global load of the input")
    if short in ONCHIP:
        if not s["LDS.128"]:
            bad.append("shared tile never read with a 128-bit load")
        bad += [f"split tile read: {g}" for g in split_accesses(insns, "LDS")]
        need = ONCHIP_MIN_LDG128.get(elem, 1)
        if s["LDG.128"] < need:
            bad.append(f"{s['LDG.128']} 128-bit global loads, fewer than the load batch ({need} in flight per thread)")
    return bad


def sass_of(obj, arch, cuobjdump):
    proc = subprocess.run([cuobjdump, "-sass", "-arch", f"sm_{arch}", obj], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cuobjdump failed on {obj}: {proc.stderr.strip()}")
    return proc.stdout


def compile_driver(nvcc, arch, tmp, kernels_root):
    drv = os.path.join(tmp, "gn_kernels_driver.cu")
    with open(drv, "w") as f:
        f.write(check_ptxas.DRIVER)
    includes = [kernels_root] if kernels_root else []
    rc, out = check_ptxas.compile_one(nvcc, drv, arch, tmp, includes=includes)
    if rc != 0:
        raise RuntimeError(f"nvcc failed for sm_{arch}:\n{out}")
    return os.path.join(tmp, f"out_{arch}_{os.path.basename(drv)}.o")


COLS = ["LDG.128", "LDG.64", "LDG.32", "LDG.16", "STG.128", "STG.64", "STG.32", "STG.16", "LDS.128", "LDS.32",
        "LDS.16", "STS.128", "STS.32", "LDL", "STL", "MUFU", "FMA"]


def table(rows, markdown=False):
    head = ["arch", "kernel"] + COLS + ["verdict"]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
    else:
        lines.append(f"{'arch':5} {'kernel':58} " + " ".join(f"{c:>7}" for c in COLS) + "  verdict")
    for arch, name, s, bad in rows:
        cells = [str(s.get(c, 0)) for c in COLS]
        verdict = "; ".join(bad) if bad else "ok"
        if markdown:
            lines.append(f"| sm_{arch} | `{name}` | " + " | ".join(cells) + f" | {verdict} |")
        else:
            lines.append(f"{arch:5} {name[:58]:58} " + " ".join(f"{c:>7}" for c in cells) + f"  {verdict}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", help="SM version(s), default 90 and 80")
    ap.add_argument("--kernels-root", default=None, help="directory with cuda/kernels/*.cuh shadowing csrc's")
    ap.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    args = ap.parse_args(argv)
    nvcc, cuobjdump = check_ptxas.find_nvcc(), find_cuobjdump()
    if nvcc is None or cuobjdump is None:
        print(f"check_sass: nvcc={nvcc} cuobjdump={cuobjdump}: both are needed", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for arch in args.arch or ["90", "80"]:
                funcs = parse_sass(sass_of(compile_driver(nvcc, arch, tmp, args.kernels_root), arch, cuobjdump))
                names = check_ptxas.demangle(sorted(funcs))
                for mangled, insns in funcs.items():
                    pretty = re.sub(r"^void |groupnorm_cuda::kernels::|\(.*$", "", names[mangled])
                    short, elem, v = kernel_facts(names[mangled])
                    s = stats(insns)
                    if short in SM90_ONLY and int(arch) < 90:
                        continue  # compiled to a trap below sm_90: the planner never launches it there
                    rows.append((arch, pretty, s, check_kernel(short, elem, v, insns, s)))
        except RuntimeError as e:
            print(f"check_sass: {e}", file=sys.stderr)
            return 2
    if not rows:
        print("check_sass: no kernels found in the disassembly", file=sys.stderr)
        return 2
    rows.sort(key=lambda r: (r[0], r[1]))
    print(table(rows))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table(rows, markdown=True) + "\n")
    failed = [r for r in rows if r[3]]
    if failed:
        print(f"check_sass: {len(failed)} of {len(rows)} kernel compilations fail the machine-code rules",
              file=sys.stderr)
        return 1
    print(f"check_sass: {len(rows)} kernel compilations pass (128-bit tensor accesses, no local memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
