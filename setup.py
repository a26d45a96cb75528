"""Build script of d2c_fast: packages plus the compiled operator library ``d2c_fast._C``.

Always build in the project venv without isolation, so the extension compiles against the
torch that is installed there::

    pip install -e . --no-build-isolation        # builds d2c_fast/_C*.so in place

What gets compiled
------------------
* ``csrc/registration.cpp`` (TORCH_LIBRARY: the D2C_OP schemas of the operator list
  ``d2c_fast/ops/schemas.def``, which is also installed as package data for the Python side;
  plus a module-init stub) and ``csrc/cpu/*.cpp`` (CPU kernels, TORCH_LIBRARY_IMPL(..., CPU))
  as a ``CppExtension``.
* With a CUDA build of torch AND a CUDA toolkit (``torch.cuda.is_available()``, or
  ``torch.version.cuda`` set and CUDA_HOME found) it becomes a ``CUDAExtension`` that adds
  ``csrc/cuda/*.cu`` (plain-pointer kernels) and ``csrc/cuda/*.cpp`` (ATen launchers,
  TORCH_LIBRARY_IMPL(..., CUDA)); TORCH_CUDA_ARCH_LIST defaults to "8.0;8.6;8.9;9.0".
  ``D2C_FAST_WITH_CUDA=0`` forces the CPU-only build, ``=1`` demands CUDA (error if impossible).

Flags and CPU target choice
---------------------------
``-O3 -std=c++17`` (``D2C_DEBUG=1``: ``-O0 -g``). No ``-march=native``: the binary may be built
on one machine and run on another. Every CPU kernel body (``csrc/cpu/<op>_kernel.h``) is
compiled three times, with one set of flags for all sources: by ``<op>.cpp`` for the compiler's
default target (ATen's generic ``at::vec::Vectorized``, lowered to baseline SIMD: SSE2 on
x86-64), and on x86-64 with GCC/Clang by ``<op>_avx2.cpp`` / ``<op>_avx512.cpp``, which switch
the target with ``#pragma GCC target`` (``csrc/cpu/isa_target.h``). The copy runs that
``csrc/cpu/isa_dispatch.h`` picks per process from ``at::get_cpu_capability()`` (capped by
``ATEN_CPU_CAPABILITY`` like ATen's own kernels). ``-fopenmp`` IS passed: ATen's
``at::parallel_for`` is header-inline on top of OpenMP in this torch build, so without it the
kernels would run on a single thread.

The Python module only carries a ``PyInit__C`` stub; every tensor function is reached through
the dispatcher (``torch.ops.d2c_fast.*``). CMakeLists.txt builds the same sources into a plain
shared library (``libd2c_fast_ops.so``) for ``torch.ops.load_library``.
"""
from __future__ import annotations

import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _want_cuda(torch, cuda_home) -> bool:
    forced = os.environ.get("D2C_FAST_WITH_CUDA")
    possible = torch.cuda.is_available() or (torch.version.cuda is not None and cuda_home is not None)
    if forced == "0":
        return False
    if forced == "1" and not possible:
        raise RuntimeError(
            "D2C_FAST_WITH_CUDA=1 but torch is not a CUDA build or no CUDA toolkit was found "
            f"(torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={cuda_home!r})")
    return possible


def _extensions():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:  # pragma: no cover - torch is a hard build requirement
        raise RuntimeError("building d2c_fast needs torch installed; use "
                           "`pip install -e . --no-build-isolation` in the project venv") from exc

    debug = os.environ.get("D2C_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags = opt + ["-std=c++17", "-fopenmp"]
    sources = _rel("csrc/registration.cpp") + _rel("csrc/cpu/*.cpp")
    common = dict(name="d2c_fast._C", include_dirs=[os.path.join(ROOT, "csrc")],
                  extra_link_args=["-fopenmp"])

    if _want_cuda(torch, cpp_extension.CUDA_HOME):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.6;8.9;9.0")
        sources += _rel("csrc/cuda/*.cu") + _rel("csrc/cuda/*.cpp")
        nvcc_flags = opt + ["-std=c++17", "--expt-relaxed-constexpr"] + (["-lineinfo"] if not debug else ["-G"])
        ext = cpp_extension.CUDAExtension(
            sources=sources, extra_compile_args={"cxx": cxx_flags + ["-DD2C_WITH_CUDA"], "nvcc": nvcc_flags},
            **common)
    else:
        ext = cpp_extension.CppExtension(sources=sources, extra_compile_args={"cxx": cxx_flags}, **common)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
# uvloop and httptools: uvicorn uses them when present (its event loop and HTTP parser in C;
# the server spent 10% less CPU per edit with them, benchmarks/RESULTS.md).
SERVE = ["fastapi", "uvicorn", "python-multipart", "uvloop; sys_platform != 'win32'", "httptools"]

setup(
    packages=sorted(set(find_packages(include=["d2c_fast", "d2c_fast.*"]))
                    | {"d2c_fast", "d2c_fast.models", "d2c_fast.ops", "d2c_fast.kernels"}),
    # Triton kernels live in the top-level folder kernels/ but are only ever installed and
    # imported as d2c_fast.kernels (never as a top-level `kernels`).
    package_dir={"d2c_fast.kernels": "kernels"},
    package_data={"d2c_fast": ["assets/*", "assets/attributes/*", "configs/*.json",
                               "ops/schemas.def", "serve/static/*"]},
    include_package_data=False,
    install_requires=["numpy", "pyyaml", "safetensors", "pillow", "tqdm", "torch>=2.4"],
    # serve: `d2c-fast serve` (HTTP API, web editor); test: its API and browser tests too
    # (the browser itself is Debian's chromium + chromium-driver, installed by .ci/run).
    extras_require={"serve": SERVE,
                    "test": ["pytest", "pytest-benchmark", "httpx", "selenium"] + SERVE},
    entry_points={"console_scripts": ["d2c-fast = d2c_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
