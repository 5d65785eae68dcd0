"""tools/gpu_check.sh and its helpers, as far as they run without a GPU: argument handling,
the report files, the driver's cases (on the CPU op), and the ncu-vs-model report on CSV text
shaped like ncu's."""
import json
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join(ROOT, "tools", "gpu_check.sh")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_driver  # noqa: E402
import gpu_report  # noqa: E402


def run_check(*args, timeout=120):
    return subprocess.run(["bash", CHECK, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("args", [(), ("--only",), ("OUT", "--only", "env,nope"), ("OUT", "--frobnicate"),
                                  ("A", "B")])
def test_bad_arguments_exit_2_with_usage(args, tmp_path):
    args = tuple(str(tmp_path / a) if a in ("OUT", "A", "B") else a for a in args)
    r = run_check(*args)
    assert r.returncode == 2, r
    assert "gpu_check" in r.stderr


def test_dry_run_lists_every_step_within_eight_minutes(tmp_path):
    r = run_check(str(tmp_path / "out"), "--dry-run")
    assert r.returncode == 0, r.stderr
    steps = [l for l in r.stdout.splitlines() if l.startswith("[")]
    assert [s.split("]")[0][1:] for s in steps] == ["env", "build", "tests", "bench", "ncu", "sanitizer"]
    limits = [int(s.split("(limit ")[1].split("s)")[0]) for s in steps]
    assert sum(limits) <= 8 * 60, limits
    assert not os.listdir(tmp_path / "out")  # a dry run writes no report


def test_env_step_writes_the_report_files(tmp_path):
    out = tmp_path / "out"
    r = run_check(str(out), "--only", "env", "--python", sys.executable)
    files = sorted(os.listdir(out))
    assert files == ["gpu_check.log", "raw.tar.gz", "summary.md"], files
    summary = (out / "summary.md").read_text()
    assert "| env |" in summary and "## environment" in summary
    assert "torch" in summary  # the env step's own output made it into the summary
    with tarfile.open(out / "raw.tar.gz") as t:
        assert "raw/env.txt" in t.getnames()
    import torch

    # Without a GPU the env step fails (and says so), and so does the whole check.
    expect_ok = torch.cuda.is_available()
    assert (r.returncode == 0) == expect_ok, (r.returncode, summary)
    assert ("passed" in summary) == expect_ok


def test_driver_cases_run_on_the_cpu_op():
    # The same cases the sanitizers run on the GPU, through the CPU kernels: every case parses,
    # builds its input (the misaligned view included) and matches the float64 reference.
    assert gpu_driver.main(["--device", "cpu", "--set", "sanitizer"]) == 0


def test_driver_rejects_bad_cases():
    with pytest.raises(SystemExit) as e:
        gpu_driver.main(["--case", "2x8x4x4_g2:float32:sideways"])
    assert e.value.code == 2


def _ncu_csv(launches, scale):
    """CSV text shaped like `ncu --csv --page raw --print-units base`: noise lines, the header,
    the units row, one row per kernel with a demangled name."""
    head = ['"ID","Process ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum"',
            '"","","","byte","byte","nsecond"']
    rows = [f'"{i}","77","void groupnorm_cuda::kernels::{l["kernel"]}<float, float, 4>(groupnorm_cuda::kernels::P)",'
            f'"{l["read"] * scale:.0f}","{l["write"] * scale:.0f}","1234"' for i, l in enumerate(launches)]
    return "\n".join(["==PROF== Connected to process 77", "OK  case: y=1e-7", *head, *rows])


def test_report_compares_measured_bytes_with_the_model(tmp_path):
    plan = gpu_driver.plan_bytes("resnet50_32x256x56x56_g32:float32:nchw", 132)
    launches = plan["forward"] + plan["backward"]
    rows = gpu_report.parse_ncu_csv(_ncu_csv(launches, 1.1))
    assert [r["kernel"] for r in rows] == [l["kernel"] for l in launches]
    lines, ok = gpu_report.compare(plan, rows)
    assert ok
    per_kernel = [l for l in lines if "total" not in l]
    assert len(per_kernel) == len(launches)
    assert all("| 1.10 |" in l for l in per_kernel), per_kernel
    totals = [l for l in lines if "total" in l]
    fwd_ratio = plan["traffic"]["forward"]["ratio"]
    assert f"({1.1 * fwd_ratio:.2f}x floor)" in totals[0], totals[0]

    # A planned kernel that did not run, or one the plan does not list, is a mismatch.
    _, ok = gpu_report.compare(plan, rows[1:])
    assert not ok
    _, ok = gpu_report.compare(plan, rows + rows[:1])
    assert not ok

    # The command line: plan JSON + one CSV per case -> markdown, exit 0.
    (tmp_path / "plan.json").write_text(json.dumps([plan]))
    (tmp_path / "c.csv").write_text(_ncu_csv(launches, 1.0))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_report.py"), "--plan",
                        str(tmp_path / "plan.json"), "--ncu", str(tmp_path / "c.csv")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(gpu_report.HEADER[0]) and "forward total" in r.stdout


def test_report_rejects_scaled_units():
    text = _ncu_csv([{"kernel": "gn_fwd_onchip", "read": 1, "write": 1}], 1).replace('"1234"', '"1,2 us"')
    with pytest.raises(ValueError, match="base units"):
        gpu_report.parse_ncu_csv(text)
