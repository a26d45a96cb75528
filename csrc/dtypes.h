// The element types the kernels read and write, as a named code that the ATen side (CPU entry
// points, CUDA launchers: dtype_of() in op_checks.h) hands to the plain-pointer kernels
// (csrc/cpu/*_kernel.h, csrc/cuda/*.cu). Plain C++ without ATen or CUDA headers, so that a bare
// nvcc compiles the CUDA kernels that include it (scripts/check_cuda_compile.sh).
#pragma once

namespace d2c_fast {

// Activation dtype of a kernel call. Arithmetic is float32 for every one of them.
enum class DType : int {
  kFloat32 = 0,
  kBFloat16 = 1,
  kFloat16 = 2,  // CUDA kernels and CPU bn_swish only
};

}  // namespace d2c_fast
