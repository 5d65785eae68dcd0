"""The CUDA kernels compile with nvcc for sm_80 / sm_90 without register spills or stack
frames (tools/check_ptxas.py), and the checker does catch a spilling kernel. No GPU needed;
skipped when nvcc is absent."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "check_ptxas.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import check_ptxas  # noqa: E402

pytestmark = pytest.mark.skipif(check_ptxas.find_nvcc() is None, reason="nvcc not available")

# Large dynamically indexed local array: lives in local memory (stack frame + spills).
SPILLING_KERNEL = r"""
__global__ void planted_spill(const float* __restrict__ in, float* __restrict__ out, int n) {
  float buf[512];
  for (int i = 0; i < 512; ++i) buf[i] = in[(i * 7 + threadIdx.x) % n];
  float acc = 0.f;
  for (int i = 0; i < n; ++i) acc += buf[(i * 13 + static_cast<int>(threadIdx.x)) & 511];
  out[threadIdx.x] = acc;
}
"""


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=900)


def test_kernels_have_no_spills_or_stack():
    proc = run_tool()
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every kernel of the plan appears for both architectures.
    for name in ("gn_fwd_onchip", "gn_fwd_stats", "gn_fwd_apply", "gn_bwd_sums_nchw", "gn_bwd_sums_nhwc",
                 "gn_bwd_coeffs", "gn_bwd_params", "gn_bwd_dx"):
        for arch in ("sm_80", "sm_90"):
            assert any(name in line and line.startswith(arch) for line in proc.stdout.splitlines()), (name, arch)


def test_checker_flags_a_spilling_kernel(tmp_path):
    src = tmp_path / "planted.cu"
    src.write_text(SPILLING_KERNEL)
    proc = run_tool("--no-kernels", "--arch", "80", "--extra", str(src))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "planted_spill" in proc.stdout and "SPILL/STACK" in proc.stdout


def test_parser():
    report = """ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
ptxas info    : Function properties for _Z1kv
    16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers
"""
    rows = check_ptxas.parse(report)
    assert rows == [{"name": "_Z1kv", "arch": "sm_90", "regs": 255, "stack": 16, "st": 4, "ld": 8}]


# ---------------------------------------------------------------------------------------
# Machine code (tools/check_sass.py): 128-bit tensor accesses, no local memory.

import check_sass  # noqa: E402

KERNELS = os.path.join(ROOT, "csrc", "cuda", "kernels")
STORE_VEC = """      asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p + off), "r"(w[0]), "r"(w[1]), "r"(w[2]),
                   "r"(w[3]));"""


def run_sass(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "check_sass.py"), *args],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(check_sass.find_cuobjdump() is None, reason="cuobjdump not available")
def test_machine_code_gate(tmp_path):
    table = tmp_path / "sass.md"
    proc = run_sass("--markdown", str(table))
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = table.read_text()
    for name in ("gn_fwd_onchip", "gn_fwd_apply", "gn_bwd_dx", "gn_bwd_onchip", "gn_fwd_apply_rows"):
        for arch in ("sm_80", "sm_90"):
            assert f"| {arch} | `{name}<" in text, (name, arch)


@pytest.mark.skipif(check_sass.find_cuobjdump() is None, reason="cuobjdump not available")
def test_machine_code_gate_catches_a_scalarized_store(tmp_path):
    """Planted: store_vec writes element by element (what nvcc made of the old aggregate copy)."""
    dst = tmp_path / "cuda" / "kernels"
    dst.mkdir(parents=True)
    for f in os.listdir(KERNELS):
        src = open(os.path.join(KERNELS, f)).read()
        if f == "common.cuh":
            assert src.count(STORE_VEC) == 1, "store_vec changed: update the planted mutation"
            src = src.replace(STORE_VEC, "    for (int j = 0; j < V; ++j) p[off + j] = v.v[j];")
        (dst / f).write_text(src)
    proc = run_sass("--arch", "90", "--kernels-root", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no 128-bit global store of the output" in proc.stdout
    assert "split store: STG" in proc.stdout


def test_sass_rules_on_a_listing():
    listing = """
        Function : _Z1kv
        /*0040*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0050*/                   STG.E desc[UR10][R38.64+0x4], R13 ;
        /*0060*/                   STG.E desc[UR10][R38.64], R16 ;
        /*0070*/                   STG.E desc[UR10][R38.64+0x8], R29 ;
        /*0080*/                   STG.E desc[UR10][R38.64+0xc], R30 ;
        /*0090*/               @P0 STL [R1+0x4], R2 ;
"""
    insns = check_sass.parse_sass(listing)["_Z1kv"]
    s = check_sass.stats(insns)
    assert (s["LDG.128"], s["STG.32"], s["STL"]) == (1, 4, 1)
    bad = check_sass.check_kernel("gn_fwd_apply", "float", 4, insns, s)
    assert any("local memory" in b for b in bad) and any("split store" in b for b in bad)
    assert any("no 128-bit global store" in b for b in bad)
    assert check_sass.check_kernel("gn_bwd_params", "float", None, insns[:1], check_sass.stats(insns[:1])) == []
    # An on-chip kernel with one 128-bit load (the streaming loop not batched) fails the batch rule.
    onchip = check_sass.parse_sass("""
        Function : _Z1kv
        /*0040*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0050*/                   STS.128 [R7], R4 ;
        /*0060*/                   LDS.128 R8, [R7] ;
        /*0070*/                   STG.E.128 desc[UR10][R38.64], R8 ;
""")["_Z1kv"]
    bad = check_sass.check_kernel("gn_fwd_onchip", "float", 4, onchip, check_sass.stats(onchip))
    assert bad == ["1 128-bit global loads, fewer than the load batch (4 in flight per thread)"], bad
    assert check_sass.check_kernel("gn_fwd_onchip", "__half", 8, onchip * 2, check_sass.stats(onchip * 2)) == []
