"""The REAL CUDA kernels (csrc/cuda/kernels) executed on the CPU by the SIMT emulator.

kernel_harness.cpp runs launch_forward / launch_backward with the planner's launches and compares
y, mean, rstd, dx, dweight, dbias with a long-double reference: the fused ops, and the split ops
over shards (split_harness.h). Here:
  * plain build, every case, two block-order seeds: all pass, bitwise identical outputs;
  * ThreadSanitizer and AddressSanitizer+UBSan builds, a subset covering every kernel: clean;
  * planted bugs in a mutated COPY of the kernels (mutations.py), each with its specific detection.
Builds are cached by build.py (tests/simt/build/); each is compiled once per session.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.simt

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("simt_mutations", HERE / "mutations.py")
mutations = importlib.util.module_from_spec(_spec)
sys.modules["simt_mutations"] = mutations  # dataclasses look their module up there
_spec.loader.exec_module(mutations)
simt_build = mutations.simt_build

HARNESS = HERE / "kernel_harness.cpp"
SANITIZER_MARKERS = ("ThreadSanitizer", "AddressSanitizer", "LeakSanitizer", "runtime error:")
ALL_KERNELS = {"gn_fwd_onchip", "gn_fwd_cluster", "gn_fwd_bundle", "gn_bwd_bundle", "gn_bwd_cluster", "gn_fwd_stats", "gn_fwd_apply", "gn_bwd_sums_nchw", "gn_bwd_sums_nhwc",
               "gn_bwd_coeffs", "gn_bwd_params", "gn_bwd_dx", "gn_bwd_onchip", "gn_fwd_stats_rows", "gn_fwd_finalize",
               "gn_fwd_apply_rows", "gn_bwd_silu_r", "gn_bwd_sums_rows", "gn_bwd_dx_rows", "gn_split_moments",
               "gn_split_given"}
CASE_RE = re.compile(r"^CASE (\S+)\s+fwd\[(.*?)\] bwd\[(.*?)\] kernels=(\S+) err\[(.*?)\] tol=\S+ "
                     r"hash=([0-9a-f]{16}) ms=(\d+) (PASS|FAIL)(.*)$")

_exes: dict[str, Path] = {}
_runs: dict[tuple, tuple] = {}


def _timed(label: str, fn):
    t0 = time.monotonic()
    r = fn()
    print(f"[simt timing] {label}: {time.monotonic() - t0:.1f} s")
    return r


def exe(mode: str) -> Path:
    if mode not in _exes:
        try:
            _exes[mode] = _timed(f"build kernel_harness [{mode}]", lambda: simt_build.build(HARNESS, mode))
        except simt_build.SkipBuild as e:
            pytest.skip(str(e))
    return _exes[mode]


def run_harness(mode: str, args: list[str], seed: int = 1, timeout: float = 400):
    key = (mode, tuple(args), seed)
    if key not in _runs:
        e = exe(mode)
        rc, out, err = _timed(f"run kernel_harness [{mode}] {' '.join(args) or 'all'} SIMT_SEED={seed}",
                              lambda: simt_build.run(e, args, mode=mode, timeout=timeout,
                                                     env={"SIMT_SEED": str(seed)}))
        assert "build.py: TIMEOUT" not in err, f"[{mode}] hung:\n{err[-4000:]}"
        _runs[key] = (rc, out, err)
    return _runs[key]


def parse(out: str) -> dict[str, dict]:
    cases = {}
    for line in out.splitlines():
        m = CASE_RE.match(line)
        if not m:
            continue
        name, fwd, bwd, kern, err, h, ms, status, why = m.groups()
        kv = lambda s: dict(t.split("=", 1) if "=" in t else (t, "1") for t in s.split())  # noqa: E731
        cases[name] = dict(fwd=kv(fwd), bwd=kv(bwd), kernels=set(kern.split(",")), hash=h, ms=int(ms),
                           status=status, why=why.strip(), line=line)
    return cases


def check_clean(mode: str, rc: int, out: str, err: str) -> dict[str, dict]:
    cases = parse(out)
    failed = [c["line"] for c in cases.values() if c["status"] != "PASS"]
    assert rc == 0 and not failed, f"[{mode}] rc={rc}\nfailed:\n" + "\n".join(failed) + f"\n{out[-3000:]}\n{err[-6000:]}"
    m = re.search(r"SUMMARY (\d+) cases, 0 failures", out)
    assert m and int(m.group(1)) == len(cases) > 0, out[-2000:]
    assert not any(s in err for s in SANITIZER_MARKERS) and "SIMT ERROR" not in err, err[-6000:]
    kernels = set().union(*(c["kernels"] for c in cases.values()))
    assert kernels == ALL_KERNELS, f"[{mode}] kernels not run: {sorted(ALL_KERNELS - kernels)}"
    return cases


def _features(cases: dict[str, dict]) -> set[str]:
    """Coverage facts read back from the plans the harness printed."""
    f = set()
    for name, c in cases.items():
        fwd, bwd = c["fwd"], c["bwd"]
        lay = "nhwc" if "nhwc" in bwd else "nchw"
        f.add(f"dtype:{name.split('_')[0]}")
        f.add(f"vec:{lay}:{'scalar' if fwd['vec'] == '1' else 'vector'}")
        if "onchip" in fwd:
            f.add(f"onchip:{lay}:{'gpb1' if fwd['gpb'] == '1' else 'gpb>1'}")
        elif int(fwd["splits"]) > 1:
            f.add(f"split>1:{lay}")
        if "cluster" in fwd:
            f.add(f"cluster:{lay}:{'even' if int(fwd['splits']) % 2 == 0 else 'odd'}")
        if "rows" in fwd:
            f.add(f"rows:{lay}:{'pieces1' if fwd['splits'] == '1' else 'pieces>1'}")
        if "onchip" in bwd:
            f.add(f"bwd_onchip:{lay}:{'gpb1' if fwd['gpb'] == '1' else 'gpb>1'}")
        if int(bwd["pieces"]) > 1:
            f.add(f"pieces>1:{lay}")
        if int(fwd["block"]) >= 256:
            f.add("fwd_block>=256")
        if int(bwd["sums_block"]) >= 256:
            f.add(f"sums_block>=256:{lay}")
        if "silu" in name:
            f.add(f"silu:{lay}")
        if "shards" in fwd:
            f.add(f"shards:{lay}:{'rows' if 'rows' in fwd else 'split'}")
    return f


# f16of32 / bf16of32: a float32 y of a 16-bit x (autocast's output on CUDA)
REQUIRED_PLAIN = {f"dtype:{d}" for d in ("f32", "f64", "f16", "f16wf32", "bf16", "bf16wf32", "f16of32",
                                         "bf16of32")} | {
    "fwd_block>=256", "sums_block>=256:nchw", "sums_block>=256:nhwc"}
for _lay in ("nchw", "nhwc"):
    REQUIRED_PLAIN |= {f"vec:{_lay}:scalar", f"vec:{_lay}:vector", f"onchip:{_lay}:gpb1", f"onchip:{_lay}:gpb>1",
                       f"split>1:{_lay}", f"pieces>1:{_lay}", f"silu:{_lay}", f"bwd_onchip:{_lay}:gpb1",
                       f"bwd_onchip:{_lay}:gpb>1"}
REQUIRED_PLAIN |= {"rows:nhwc:pieces1", "rows:nhwc:pieces>1", "cluster:nchw:even", "cluster:nhwc:even",
                   "cluster:nhwc:odd", "shards:nchw:split", "shards:nhwc:split", "shards:nhwc:rows"}


# ------------------------------------------------------------------------- correct kernels
def test_plain_all_cases_pass():
    rc, out, err = run_harness("plain", [], seed=1)
    cases = check_clean("plain", rc, out, err)
    missing = REQUIRED_PLAIN - _features(cases)
    assert not missing, f"coverage lost (planner or case table changed): {sorted(missing)}"
    print(f"[simt] plain: {len(cases)} cases, emulated kernel time {sum(c['ms'] for c in cases.values()) / 1e3:.1f} s")


def test_plain_outputs_bitwise_identical_across_block_orders():
    a = check_clean("plain", *run_harness("plain", [], seed=1))
    b = check_clean("plain", *run_harness("plain", [], seed=2))
    assert a.keys() == b.keys()
    diff = [n for n in a if a[n]["hash"] != b[n]["hash"]]
    assert not diff, f"outputs depend on block order (SIMT_SEED 1 vs 2): {diff}"


@pytest.mark.parametrize("mode", ["tsan", "asan"])
def test_sanitizer_subset_clean(mode):
    rc, out, err = run_harness(mode, ["--subset", mode])
    cases = check_clean(mode, rc, out, err)
    f = _features(cases)
    for need in ("vec:nchw:scalar", "vec:nchw:vector", "vec:nhwc:scalar", "vec:nhwc:vector", "fwd_block>=256"):
        assert need in f, f"[{mode}] subset lost {need}"
    print(f"[simt] {mode}: {len(cases)} cases, emulated kernel time {sum(c['ms'] for c in cases.values()) / 1e3:.1f} s")


def test_case_list_and_filter():
    rc, out, err = run_harness("plain", ["--list"])
    assert rc == 0
    names = [l.split()[0] for l in out.splitlines() if l.strip()]
    assert len(names) == len(set(names)) >= 90
    rc, out, err = run_harness("plain", ["--case-filter", "f64_split_nchw"])
    cases = parse(out)
    assert rc == 0 and list(cases) == ["f64_split_nchw"], out


# ------------------------------------------------------------------------- planted bugs
def test_mutation_patterns_apply_exactly_once():
    for m in mutations.MUTATIONS.values():
        files = mutations.mutated_source(m)  # raises unless the pattern occurs exactly once
        assert m.new in files[m.file]


@pytest.mark.parametrize("name", sorted(mutations.MUTATIONS))
def test_planted_bug_is_detected(name):
    m = mutations.MUTATIONS[name]
    try:
        _timed(f"build mutant {name} [{m.mode}]", lambda: mutations.build_mutant(m))
    except simt_build.SkipBuild as e:
        pytest.skip(str(e))
    rc, out, err = _timed(f"run mutant {name} [{m.mode}]", lambda: mutations.run_mutant(m))
    assert "build.py: TIMEOUT" not in err, err[-4000:]
    missing = mutations.detected(m, rc, out, err)
    assert not missing, f"{name} ({m.what}) not detected as expected; missing {missing}\nrc={rc}\n{out[-2000:]}\n{err[-6000:]}"
    if m.stream == "stderr" and m.located:  # the report points at the mutated kernel copy, not at the originals
        assert "groupnorm_simt_mutants" in err
    first = next((l for l in err.splitlines() if any(s in l for s in ("WARNING:", "ERROR:", "runtime error"))), "")
    print(f"[simt] {name} [{m.mode}] rc={rc}: {first.strip()}")
