"""Tests of the SIMT layer (tests/simt/simt_runtime.h): CUDA kernel source executed on the CPU.

selftest.cpp is compiled once per mode (plain / tsan / asan+ubsan); each planted bug is chosen
by a command-line argument, and each test asserts the specific detection.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.simt

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("simt_build", HERE / "build.py")
simt_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(simt_build)

SELFTEST = HERE / "selftest.cpp"
LAYER_EXIT = 87  # simt::kErrorExitCode
SANITIZER_MARKERS = ("ThreadSanitizer", "AddressSanitizer", "LeakSanitizer", "runtime error:")

_exes: dict[str, Path] = {}


def exe(mode: str) -> Path:
    if mode not in _exes:
        try:
            _exes[mode] = simt_build.build(SELFTEST, mode)
        except simt_build.SkipBuild as e:
            pytest.skip(str(e))
    return _exes[mode]


def run(mode: str, case: str, env: dict[str, str] | None = None, timeout: float = 180):
    rc, out, err = simt_build.run(exe(mode), [case], mode=mode, timeout=timeout, env=env)
    assert "build.py: TIMEOUT" not in err, f"{case} [{mode}] hung:\n{err[-4000:]}"
    return rc, out, err


def _clean(err: str) -> bool:
    return not any(m in err for m in SANITIZER_MARKERS) and "SIMT ERROR" not in err


# ------------------------------------------------------------------------- correct kernels
@pytest.mark.parametrize("mode", ["plain", "tsan", "asan"])
def test_correct_kernels_pass_clean(mode):
    rc, out, err = run(mode, "correct")
    assert rc == 0, f"rc={rc}\n{out}\n{err[-6000:]}"
    assert "ALL CORRECT KERNELS PASSED" in out
    assert _clean(err), err[-6000:]
    assert re.search(r"simt: SIMT_SEED=\d+", err), "the block-order seed must be printed once"
    assert err.count("SIMT_SEED=") == 1


# ------------------------------------------------------------------------- planted bugs
@pytest.mark.parametrize("case,kernel", [
    ("race", "race_kernel"),                            # missing __syncthreads in a smem reduction
    ("race_across_warps", "race_across_warps_kernel"),  # shuffles must not order different warps
    ("race_in_warp", "race_in_warp_kernel"),            # missing __syncwarp between lanes
])
def test_a_missing_syncthreads_is_a_tsan_data_race(case, kernel):
    rc, out, err = run("tsan", case)
    assert rc != 0
    assert "WARNING: ThreadSanitizer: data race" in err, err[-4000:]
    assert kernel in err and "selftest.cpp:" in err  # reported with file:line in the kernel


def test_b_out_of_bounds_global_read_is_caught_by_asan():
    rc, out, err = run("asan", "oob")
    assert rc != 0
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in err, err[-4000:]
    assert "oob_kernel" in err


def test_b2_dynamic_shared_memory_overrun_is_caught_by_asan():
    rc, out, err = run("asan", "smem_overrun")
    assert rc != 0
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in err, err[-4000:]
    assert "smem_overrun_kernel" in err


def test_c_misaligned_float4_load_is_caught_by_ubsan():
    rc, out, err = run("asan", "misaligned")
    assert rc != 0
    assert re.search(r"runtime error: .*misaligned address .* 'const struct float4', which requires 16 byte "
                     r"alignment", err), err[-4000:]
    assert "misaligned_kernel" in err


@pytest.mark.parametrize("mode", ["plain", "tsan", "asan"])
@pytest.mark.parametrize("case,message", [
    ("bad_mask", "warp collective mismatch"),
    ("bad_mask_exit", "exited"),  # either "exited while lanes .. wait" or "have already exited"
    ("mask_self", "does not include the calling lane"),
])
def test_d_bad_shuffle_mask_is_reported_by_the_layer(mode, case, message):
    rc, out, err = run(mode, case)
    assert rc == LAYER_EXIT, f"rc={rc}\n{err[-4000:]}"
    assert "SIMT ERROR:" in err and message in err, err[-4000:]
    assert not any(m in err for m in SANITIZER_MARKERS), err[-4000:]  # the layer itself stays clean


def test_e_inter_block_dependency_shows_up_across_seeds():
    def checksum(env):
        rc, out, err = run("plain", "interblock", env=env)
        assert rc == 0, err
        m = re.search(r"interblock checksum (-?\d+)", out)
        assert m, out
        return m.group(1)

    seeds = {s: checksum({"SIMT_SEED": str(s)}) for s in (1, 2, 3)}
    assert len(set(seeds.values())) > 1, f"block order did not change the result: {seeds}"
    assert checksum({"SIMT_SEED": "2"}) == seeds[2], "the same seed must reproduce the same block order"
    linear = checksum({"SIMT_BLOCK_ORDER": "linear"})
    assert linear == checksum({"SIMT_BLOCK_ORDER": "linear", "SIMT_SEED": "5"})


@pytest.mark.parametrize("mode", ["plain", "tsan"])
@pytest.mark.parametrize("case,message", [
    ("divergent_barrier", "DEADLOCK: divergent __syncthreads()"),
    ("shfl_barrier_deadlock", "DEADLOCK: every thread of the block is waiting"),
    ("spin", "TIMEOUT: block (0,0,0) did not finish"),
])
def test_f_deadlock_is_reported_not_hung(mode, case, message):
    rc, out, err = run(mode, case, env={"SIMT_TIMEOUT": "3"}, timeout=90)
    assert rc == LAYER_EXIT, f"rc={rc}\n{err[-4000:]}"
    assert message in err, err[-4000:]
    assert "thread states of block" in err  # where every thread is waiting
    assert not any(m in err for m in SANITIZER_MARKERS), err[-4000:]


def test_invalid_launch_configuration_is_reported():
    rc, out, err = run("plain", "bad_launch")
    assert rc == LAYER_EXIT
    assert "SIMT ERROR: invalid launch configuration: block (2048,1,1)" in err
