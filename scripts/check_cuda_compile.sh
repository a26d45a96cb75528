#!/usr/bin/env bash
# Compile-check the CUDA kernels with the machine's nvcc, without a CUDA build of torch.
#
# The kernel files (csrc/cuda/*.cu: bn_swish, dwconv, se_residual) include only CUDA headers and
# the plain ones of csrc/ (cuda/common.cuh, dtypes.h), so they compile standalone; each must be
# present (EXPECTED below) and compile for every arch. The
# ATen launchers (csrc/cuda/*.cpp) need torch's CUDA headers and are only built by setup.py /
# CMake against a CUDA torch. Where torch's headers and g++ are at hand (the project venv), they
# get a syntax-only pass (g++ -fsyntax-only) with one-line stand-ins for the CUDA library headers
# that a CPU torch's ATen/cuda includes but the toolkit may lack (cuBLAS, cuSPARSE, cuSOLVER):
# informational (SYNTAX OK / SYNTAX WARN), it never changes the exit status unless
# D2C_CHECK_LAUNCHERS=strict.
# Flags mimic torch's CUDAExtension (-std=c++17 and the __CUDA_NO_*_CONVERSIONS__ defines).
# Usage: scripts/check_cuda_compile.sh [arch ...]   (default: sm_90 sm_80). Exits non-zero on
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda_compile: nvcc not found (set NVCC=/path/to/nvcc)" >&2
  exit 2
fi
ARCHS=("$@")
[ ${#ARCHS[@]} -eq 0 ] && ARCHS=(sm_90 sm_80)
EXPECTED=(csrc/cuda/bn_swish.cu csrc/cuda/dwconv.cu csrc/cuda/se_residual.cu)
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
echo "check_cuda_compile: $("$NVCC" --version | tail -1)"
status=0
shopt -s nullglob
for src in "${EXPECTED[@]}"; do
  if [ ! -f "$src" ]; then
    echo "  FAIL  $src is missing" >&2
    status=1
  fi
done
for src in csrc/cuda/*.cu; do
  for arch in "${ARCHS[@]}"; do
    obj="$OUT/$(basename "$src" .cu).$arch.o"
    if "$NVCC" -c -std=c++17 -O3 -arch="$arch" -Icsrc -Icsrc/cuda \
        -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
        -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
        --expt-relaxed-constexpr -Xcompiler -Wall "$src" -o "$obj"; then
      echo "  OK    nvcc -c -arch=$arch $src"
    else
      echo "  FAIL  nvcc -c -arch=$arch $src" >&2
      status=1
    fi
  done
done
# --- ATen launchers: syntax-only pass against torch's headers, when available -------------------
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
TORCH_INC="$("$PY" -c 'import torch.utils.cpp_extension as c; print(" ".join("-I" + p for p in c.include_paths()))' 2>/dev/null || true)"
CUDA_INC=""
for root in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$(command -v "$NVCC")")")")" /usr/local/cuda; do
  if [ -n "$root" ] && [ -f "$root/include/cuda_runtime_api.h" ]; then CUDA_INC="$root/include"; break; fi
done
CXX_BIN="${CXX:-g++}"
if [ -n "$TORCH_INC" ] && [ -n "$CUDA_INC" ] && command -v "$CXX_BIN" >/dev/null 2>&1; then
  STUB="$OUT/stub_include"
  mkdir -p "$STUB"
  # Only the handle/status typedefs that ATen/cuda's headers name; never linked.
  printf '#pragma once\ntypedef struct cusparseContext* cusparseHandle_t;\ntypedef int cusparseStatus_t;\n' > "$STUB/cusparse.h"
  printf '#pragma once\ntypedef struct cublasContext* cublasHandle_t;\ntypedef int cublasStatus_t;\n' > "$STUB/cublas_v2.h"
  printf '#pragma once\ntypedef struct cublasLtContext* cublasLtHandle_t;\n' > "$STUB/cublasLt.h"
  printf '#pragma once\ntypedef struct cusolverDnContext* cusolverDnHandle_t;\ntypedef int cusolverStatus_t;\n' > "$STUB/cusolverDn.h"
  printf '#pragma once\n' > "$STUB/cusolver_common.h"
  mkdir -p "$STUB/c10/cuda/impl"
  printf '#pragma once\n' > "$STUB/c10/cuda/impl/cuda_cmake_macros.h"
  for src in csrc/cuda/*.cpp; do
    # shellcheck disable=SC2086
    if "$CXX_BIN" -std=c++17 -fsyntax-only $TORCH_INC -I"$CUDA_INC" -idirafter "$STUB" -Icsrc \
        -Icsrc/cuda "$src" >"$OUT/syntax.log" 2>&1; then
      echo "  SYNTAX OK    $src (g++ -fsyntax-only against torch's headers; not built: needs a CUDA torch)"
    else
      echo "  SYNTAX WARN  $src: $(grep -m1 'error' "$OUT/syntax.log" || tail -1 "$OUT/syntax.log")"
      [ "${D2C_CHECK_LAUNCHERS:-}" = strict ] && status=1
    fi
  done
else
  for src in csrc/cuda/*.cpp; do
    echo "  SKIP  $src (ATen launcher; compiled only against a CUDA build of torch)"
  done
fi
[ $status -eq 0 ] && echo "check_cuda_compile: all kernels compiled" || echo "check_cuda_compile: FAILED" >&2
exit $status
