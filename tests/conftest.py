import os
import sys

import pytest
import torch

# Tests import the installed package; fail with a clear message when it is missing.
try:
    import groupnorm_cuda  # noqa: F401
except ImportError as e:  # pragma: no cover
    raise ImportError(
        "groupnorm_cuda is not importable: install it first with "
        "`pip install --no-build-isolation -e .` (see README.md)"
    ) from e

HAS_CUDA = torch.cuda.is_available() and groupnorm_cuda.built_with_cuda

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def pytest_report_header(config):
    return (
        f"torch {torch.__version__}, groupnorm_cuda built_with_cuda={groupnorm_cuda.built_with_cuda}, "
        f"cuda available={torch.cuda.is_available()}, threads={torch.get_num_threads()}"
    )


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
