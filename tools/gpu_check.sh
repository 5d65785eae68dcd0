#!/usr/bin/env bash
# One command for a lent GPU machine (H100/H200 with PyTorch and nvcc preinstalled, no network):
#
#   tools/gpu_check.sh OUT_DIR [--python PY] [--only STEP,...] [--jobs N] [--dry-run]
#
# Steps, in this order, each under its own time limit (8 minutes in all, at most):
#   env        GPU, driver, torch, nvcc, ncu and compute-sanitizer versions
#   build      the extension in place against the machine's torch, sm_90 only (TORCH_CUDA_ARCH_LIST
#              from the environment wins)
#   tests      the test suite on CUDA (device parametrization, tests/test_cuda.py with its
#              > 2^31-element case), without the CPU-only emulator and nvcc-gate tests, which CI runs
#   bench      benchmarks/bench_groupnorm.py --device cuda --quick (no torch.compile baseline: time),
#              then the split ops' kernels over chunks (benchmarks/bench_sharded.py --chunks)
#   ncu        DRAM bytes per kernel for three benchmark shapes, against the planner's traffic model
#   sanitizer  compute-sanitizer memcheck, racecheck and synccheck on tools/gpu_driver.py --set sanitizer
#
# OUT_DIR receives at most six files (what the device tool brings back): summary.md (a table of
# the steps, the environment, the traffic table), gpu_check.log (every step's output),
# bench_cuda.json, bench_cuda.csv, traffic.md and raw.tar.gz (the ncu CSVs, the plan JSON, the
# pytest junit XML). Exit status: 0 when every step passed, 1 when one failed, 2 on bad arguments.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# ncu and compute-sanitizer where CUDA and Nsight Compute install them, if not on the PATH.
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/nsight-compute/*; do
  [ -d "$d" ] && PATH=$PATH:$d
done
export PATH

OUT="" PY=python3 ONLY="" DRY=0 JOBS=""
ALL_STEPS="env build tests bench ncu sanitizer"
while [ $# -gt 0 ]; do
  case "$1" in
    --python) [ $# -ge 2 ] || usage; PY=$2; shift 2 ;;
    --only) [ $# -ge 2 ] || usage; ONLY=${2//,/ }; shift 2 ;;
    --jobs) [ $# -ge 2 ] || usage; JOBS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "gpu_check: one OUT_DIR only" >&2; usage; }; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_check: OUT_DIR is required" >&2; usage; }
for s in $ONLY; do
  case " $ALL_STEPS " in *" $s "*) ;; *) echo "gpu_check: unknown step $s (steps: $ALL_STEPS)" >&2; exit 2 ;; esac
done
STEPS=${ONLY:-$ALL_STEPS}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
XDIST=$(( JOBS > 8 ? 8 : JOBS ))

mkdir -p "$OUT/raw" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
SUMMARY=$OUT/summary.md
: >"$LOG"
{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo
  echo "| step | status | seconds | limit |"
  echo "|---|---|---|---|"
} >"$SUMMARY"
FAILED=0

# run_step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, appends its output to the log
# and a row to the summary.
run_step() {
  local name=$1 limit=$2
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  if [ "$DRY" = 1 ]; then
    echo "[$name] (limit ${limit}s) $*"
    return 0
  fi
  echo "== [$name] $*" >>"$LOG"
  echo "gpu_check: $name ..." >&2
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" bash -o pipefail -c "$*" >>"$LOG" 2>&1
  rc=$?
  local status=passed
  if [ $rc = 124 ] || [ $rc = 137 ]; then status="TIMED OUT"; FAILED=1
  elif [ $rc != 0 ]; then status="FAILED (exit $rc)"; FAILED=1; fi
  echo "== [$name] $status in $((SECONDS - t0)) s" >>"$LOG"
  echo "| $name | $status | $((SECONDS - t0)) | $limit |" >>"$SUMMARY"
  echo "gpu_check: $name $status ($((SECONDS - t0)) s)" >&2
}

step_env() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'); sys.exit(0 if torch.cuda.is_available() else 3)"
  local rc=$?
  nvcc --version | tail -n 2 || true
  ncu --version | tail -n 1 || true
  compute-sanitizer --version | tail -n 1 || true
  return $rc
}

step_build() {
  local cuda_home=${CUDA_HOME:-}
  if [ -z "$cuda_home" ] && [ -x /usr/local/cuda/bin/nvcc ]; then cuda_home=/usr/local/cuda; fi
  CUDA_HOME=$cuda_home TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=$JOBS \
    "$PY" setup.py build_ext --inplace &&
    "$PY" -c "import groupnorm_cuda, sys; print('built_with_cuda =', groupnorm_cuda.built_with_cuda); sys.exit(0 if groupnorm_cuda.built_with_cuda else 3)"
}

step_tests() {
  local par=()
  if "$PY" -c "import xdist" 2>/dev/null; then par=(-n "$XDIST"); fi
  "$PY" -m pytest -q -p no:cacheprovider "${par[@]}" -m "not simt" \
    --ignore=tests/test_cuda_build.py --ignore=tests/simt --junitxml="$OUT/raw/tests.xml" tests
}

step_bench() {
  "$PY" benchmarks/bench_groupnorm.py --device cuda --quick --no-compile \
    --json "$OUT/bench_cuda.json" --csv "$OUT/bench_cuda.csv" --plot "$OUT/raw/bench_cuda.png" &&
    "$PY" benchmarks/bench_sharded.py --chunks --device cuda --quick --repeats 7 --json "$OUT/raw/chunks_cuda.json"
}

step_ncu() {
  local cases rc=0 i=0 files=()
  cases=$("$PY" -c "import sys; sys.path.insert(0, 'tools'); import gpu_driver; print(' '.join(gpu_driver.NCU_SET))") || return 1
  "$PY" tools/gpu_driver.py --plan --set ncu >"$OUT/raw/plan.json" || return 1
  for c in $cases; do
    i=$((i + 1))
    ncu --csv --page raw --print-units base --kernel-name regex:gn_ \
      --metrics dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \
      --log-file "$OUT/raw/ncu_$i.csv" "$PY" tools/gpu_driver.py --case "$c" || rc=1
    files+=(--ncu "$OUT/raw/ncu_$i.csv")
  done
  "$PY" tools/gpu_report.py --plan "$OUT/raw/plan.json" "${files[@]}" >"$OUT/traffic.md" || rc=1
  cat "$OUT/traffic.md"
  return $rc
}

step_sanitizer() {
  local rc=0 tool
  for tool in memcheck racecheck synccheck; do
    echo "-- compute-sanitizer --tool $tool"
    compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all \
      "$PY" tools/gpu_driver.py --set sanitizer || rc=1
  done
  return $rc
}

export PY OUT JOBS XDIST
export -f step_env step_build step_tests step_bench step_ncu step_sanitizer
run_step env 20 "step_env | tee '$OUT/raw/env.txt'"
run_step build 150 step_build
run_step tests 105 step_tests
run_step bench 75 step_bench
run_step ncu 50 step_ncu
run_step sanitizer 80 step_sanitizer
[ "$DRY" = 1 ] && { rm -rf "$OUT/raw" "$LOG" "$SUMMARY"; exit 0; }

{
  echo
  echo "## environment"
  echo
  echo '```'
  cat "$OUT/raw/env.txt" 2>/dev/null
  echo '```'
  if [ -s "$OUT/traffic.md" ]; then
    echo
    echo "## DRAM traffic: ncu against the planner's model"
    echo
    cat "$OUT/traffic.md"
  fi
} >>"$SUMMARY"
tar czf "$OUT/raw.tar.gz" -C "$OUT" raw && rm -rf "$OUT/raw"
echo "gpu_check: $( [ $FAILED = 0 ] && echo 'all steps passed' || echo 'some steps FAILED' ); see $SUMMARY" >&2
exit $FAILED
