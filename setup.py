"""Build script for groupnorm_cuda.

One compiled extension, ``groupnorm_cuda._C``:

* CPU sources are always compiled.
* CUDA sources are compiled whenever nvcc and a CUDA-enabled torch are present, even on a
  machine with no GPU (``TORCH_CUDA_ARCH_LIST`` defaults to "8.0;9.0" then).
* ``GROUPNORM_FORCE_CUDA=1`` makes a missing CUDA toolchain an error;
  ``GROUPNORM_FORCE_CPU=1`` builds the CPU path alone.
* ``GROUPNORM_CPU_ISA`` picks the vector ISA of the CPU kernels: ``native`` (default: AVX2+FMA
  when the build machine has it, else baseline), ``avx2`` or ``baseline``.

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


def _cpu_has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return all(f" {flag}" in flags for flag in ("avx2", "fma", "f16c"))


def _cpu_isa_flags():
    isa = os.environ.get("GROUPNORM_CPU_ISA", "native").strip().lower()
    if isa not in ("native", "avx2", "baseline"):
        sys.exit(f"GROUPNORM_CPU_ISA must be native, avx2 or baseline, got {isa!r}")
    use_avx2 = isa == "avx2" or (isa == "native" and _cpu_has_avx2())
    if use_avx2:
        # at::vec picks its AVX2 implementation from these macros; the inline namespace keeps
        # its symbols apart from torch's own copies.
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

    sources = ["csrc/ops.cpp", "csrc/cpu/group_norm_cpu.cpp"]
    cxx_flags = ["-O3", "-std=c++20"] + _cpu_isa_flags()
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
    zip_safe=False,
)
