#!/usr/bin/env bash
# Compile-check the CUDA kernels with the machine's nvcc, without a CUDA build of torch.
#
# The kernel files (csrc/cuda/*.cu) include only CUDA headers, so they compile standalone. The
# ATen launchers (csrc/cuda/*.cpp) need torch's CUDA headers and are only built by setup.py /
# CMake against a CUDA torch; they are listed here but not compiled.
# Flags mimic torch's CUDAExtension (-std=c++17 and the __CUDA_NO_*_CONVERSIONS__ defines).
# Usage: scripts/check_cuda_compile.sh [arch ...]   (default: sm_90). Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda_compile: nvcc not found (set NVCC=/path/to/nvcc)" >&2
  exit 2
fi
ARCHS=("$@")
[ ${#ARCHS[@]} -eq 0 ] && ARCHS=(sm_90)
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
echo "check_cuda_compile: $("$NVCC" --version | tail -1)"
status=0
shopt -s nullglob
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
for src in csrc/cuda/*.cpp; do
  echo "  SKIP  $src (ATen launcher; compiled only against a CUDA build of torch)"
done
[ $status -eq 0 ] && echo "check_cuda_compile: all kernels compiled" || echo "check_cuda_compile: FAILED" >&2
exit $status
