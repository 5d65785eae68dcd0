"""Build script for groupnorm_cuda.

One compiled extension, ``groupnorm_cuda._C``:

* CPU sources are always compiled.
* CUDA sources are compiled whenever nvcc and a CUDA-enabled torch are present, even on a
  machine with no GPU (``TORCH_CUDA_ARCH_LIST`` defaults to "8.0;9.0" then).
* ``GROUPNORM_FORCE_CUDA=1`` makes a missing CUDA toolchain an error;
  ``GROUPNORM_FORCE_CPU=1`` builds the CPU path alone.
* ``GROUPNORM_CPU_ISA`` picks the vector ISA of the CPU kernels: ``native`` (default: the best
  of AVX-512, AVX2+FMA or baseline that the build machine has), ``avx512``, ``avx2`` or
  ``baseline``.

Install into an environment that already has torch:
``pip install --no-build-isolation .``
"""
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _find_cuda_home():
    """CUDA_HOME, looked for the way torch does, minus its trap.

    /usr/local/bin/nvcc on our machines is a wrapper script, so torch's guess (the parent of
    the parent of ``which nvcc``) is /usr/local, which has no lib64/libcudart. Prefer an
    explicit CUDA_HOME / CUDA_PATH, then /usr/local/cuda, then the real nvcc's location.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        path = os.environ.get(var)
        if path and os.path.exists(os.path.join(path, "bin", "nvcc")):
            return path
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        home = os.path.dirname(os.path.dirname(real))
        if os.path.exists(os.path.join(home, "lib64")) or os.path.exists(os.path.join(home, "lib")):
            return home
    return None


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_AVX2 = ("avx2", "fma", "f16c")
_AVX512 = _AVX2 + ("avx512f", "avx512bw", "avx512vl", "avx512dq")


def _cpu_isa_flags():
    """Vector ISA of the CPU kernels. at::vec picks its implementation from the
    CPU_CAPABILITY_* macros; the CPU_CAPABILITY inline namespace keeps its symbols apart from
    torch's own copies."""
    isa = os.environ.get("GROUPNORM_CPU_ISA", "native").strip().lower()
    if isa not in ("native", "avx512", "avx2", "baseline"):
        sys.exit(f"GROUPNORM_CPU_ISA must be native, avx512, avx2 or baseline, got {isa!r}")
    bf16 = False
    if isa == "native":
        flags = _cpu_flags()
        isa = "avx512" if all(f in flags for f in _AVX512) else "avx2" if all(f in flags for f in _AVX2) else "baseline"
        # The hardware float -> bf16 conversion, only where this CPU has it (not with an
        # explicit GROUPNORM_CPU_ISA=avx512, which must run on any AVX-512 machine).
        bf16 = isa == "avx512" and "avx512_bf16" in flags
    print(f"groupnorm_cuda: CPU kernels built for {isa}{' + avx512_bf16' if bf16 else ''}", flush=True)
    if isa == "avx512":
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"] + (["-mavx512bf16"] if bf16 else [])
    if isa == "avx2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def _extensions():
    force_cuda = _flag("GROUPNORM_FORCE_CUDA")
    force_cpu = _flag("GROUPNORM_FORCE_CPU")
    if force_cuda and force_cpu:
        sys.exit("GROUPNORM_FORCE_CUDA and GROUPNORM_FORCE_CPU are both set; pick one")

    cuda_home = None if force_cpu else _find_cuda_home()
    if cuda_home:
        # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
        os.environ["CUDA_HOME"] = cuda_home
    import torch
    from torch.utils import cpp_extension

    with_cuda = (not force_cpu) and cuda_home is not None and torch.version.cuda is not None
    if force_cuda and not with_cuda:
        sys.exit(
            "GROUPNORM_FORCE_CUDA=1 but no CUDA build is possible: "
            f"nvcc home={cuda_home!r}, torch.version.cuda={torch.version.cuda!r}"
        )

    sources = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/autocast.cpp", "csrc/split_ops.cpp", "csrc/module.cpp",
               "csrc/cpu/group_norm_cpu.cpp"]
    # -fopenmp: at::parallel_for is a header template that expands to `#pragma omp parallel`
    # in OUR translation unit; without the flag the CPU kernels silently run on one thread.
    # The libgomp torch ships is already loaded by libtorch_cpu, so the two share one runtime.
    # -ffp-contract=off: GCC's default for C++ fuses a * b + c into an FMA wherever it sees
    # one, and where it does depends on inlining, so the CPU bits changed between builds of the
    # same arithmetic (1 ulp in scalar tails). The kernels ask for their FMAs explicitly
    # (at::vec::fmadd); everything else rounds as written, in every build.
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=off"] + _cpu_isa_flags()
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra = {"cxx": cxx_flags}
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # Without a GPU torch cannot guess the architectures; cover Ampere and Hopper.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        sources.append("csrc/cuda/group_norm_cuda.cu")
        define_macros.append(("GROUPNORM_WITH_CUDA", "1"))
        # The pip-installed CUDA headers carry what /usr/local/cuda lacks (cuBLAS, cuSPARSE),
        # which ATen/cuda headers pull in.
        try:
            import nvidia.cu13 as _cu13  # type: ignore

            include_dirs.append(os.path.join(os.path.dirname(_cu13.__file__), "include"))
        except Exception:
            pass
        extra["nvcc"] = ["-O3", "-std=c++20", "-lineinfo", "-Xptxas=-v"]
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    print(f"groupnorm_cuda: building {'CPU + CUDA' if with_cuda else 'CPU only'} extension",
          flush=True)
    return [
        ext_cls(
            name="groupnorm_cuda._C",
            sources=sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
        )
    ], cpp_extension.BuildExtension


ext_modules, build_ext = _extensions()

setup(
    name="groupnorm_cuda",
    version="0.1.0",
    description="Fused GroupNorm (+SiLU) for PyTorch: CUDA kernels and a fast C++ CPU path",
    packages=find_packages(include=["groupnorm_cuda", "groupnorm_cuda.*"]),
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext.with_options(use_ninja=True)},
    python_requires=">=3.9",
    # Optional: the model libraries whose GroupNorm subclasses convert_groupnorm knows
    # (groupnorm_cuda/library_classes.py) and the ONNX tooling of groupnorm_cuda.onnx. Tested
    # with diffusers 0.42.1, timm 1.0.31, MONAI 1.6.1, onnx 1.23.2, onnxruntime 1.31.1,
    # onnxscript 0.7.2 (tools/setup_env.sh installs exactly those). timm needs torchvision:
    # install the torchvision release made for your torch, or pip may replace torch.
    extras_require={
        "models": ["diffusers>=0.42", "timm>=1.0", "monai>=1.6"],
        "onnx": ["onnx>=1.23", "onnxscript>=0.7", "onnxruntime>=1.31"],
    },
    zip_safe=False,
)
