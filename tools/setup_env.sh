#!/usr/bin/env bash
# Installs everything groupnorm_cuda needs into ./.venv and builds the extension in place
# (editable). Used by both README commands and by CI (.ci/run). Safe to re-run.
#
#   torch==2.14.1 (CUDA 13.0 build; runs on CPU-only machines too), pytest, ninja, numpy,
#   matplotlib (benchmark plots), the model libraries and ONNX tooling the tests use (diffusers,
#   timm + torchvision, MONAI, onnx, onnxruntime, onnxscript), then
#   `pip install --no-build-isolation -e .`.
# The CUDA kernels are compiled whenever nvcc is found (CUDA_HOME, /usr/local/cuda, PATH),
# with or without a GPU; otherwise the CPU path alone is built (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
"$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.14.1" numpy pytest ninja matplotlib

# The model libraries and ONNX tooling (setup.py's extras `models` and `onnx`), pinned to the
# versions the tests were written against, so that tests/test_models.py and tests/test_export.py
# run here and in CI. timm needs torchvision, and each torchvision release requires one torch
# release: torch is named again with its pin so that pip cannot replace it. About 15 s on a
# 2-core machine with an empty pip cache (2026-12-02), 1-2 s when already installed.
start=$(date +%s)
"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" \
  "diffusers==0.42.1" "timm==1.0.31" "monai==1.6.1" "onnx==1.23.2" "onnxruntime==1.31.1" "onnxscript==0.7.2"
"$PY" -c "import sys; from importlib.metadata import version as v; t = v('torch'); sys.exit(0 if t.split('+')[0] == '2.14.1' else 'setup_env: pip replaced torch 2.14.1 with ' + t)"
echo "setup_env: model libraries and ONNX tooling installed in $(( $(date +%s) - start )) s" >&2

if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  # /usr/local/bin/nvcc may be a wrapper script, which makes torch guess CUDA_HOME=/usr/local.
  export CUDA_HOME=/usr/local/cuda
fi
export MAX_JOBS=${MAX_JOBS:-2}
echo "setup_env: building groupnorm_cuda (CUDA_HOME=${CUDA_HOME:-none}, MAX_JOBS=$MAX_JOBS) ..." >&2
start=$(date +%s)
"$PY" -m pip install --quiet --disable-pip-version-check --no-build-isolation -e .
echo "setup_env: built in $(( $(date +%s) - start )) s" >&2
"$PY" -c "import groupnorm_cuda, torch; print('groupnorm_cuda', groupnorm_cuda.__version__, 'built_with_cuda =', groupnorm_cuda.built_with_cuda, '| torch', torch.__version__)"
