// CUDA launcher of d2c_fast::bn_swish: input checks, layout choice and output allocation with
// ATen, then the plain-pointer kernel in bn_swish.cu on the current stream. Registered with
// TORCH_LIBRARY_IMPL(d2c_fast, CUDA). Compiled only by setup.py / CMake against a CUDA build of
// torch (it needs ATen's CUDA headers). Checks, layout rules and output strides are the CPU
// kernel's (op_checks.h, shared with csrc/cpu/bn_swish.cpp): NCHW and channels-last in place,
// anything else made contiguous in x.suggest_memory_format(); output strides =
// at::empty_like(x).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launcher.h"
#include "op_checks.h"

#include "bn_swish_kernel.cuh"

namespace d2c_fast {
namespace {

constexpr const char* kOp = "d2c_fast::bn_swish: ";

at::Tensor bn_swish_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  check_bn_swish_args(kOp, kCuda, x, scale, shift);
  const c10::cuda::CUDAGuard guard(x.device());
  const BnSwishLayout l = bn_swish_layout(x);
  if (x.numel() == 0) return l.output.y;
  const at::Tensor s = scale.contiguous();
  const at::Tensor b = shift.contiguous();
  const int64_t inner = l.rows || x.dim() == 2 ? 1 : x.size(2) * x.size(3);
  check_launch(kOp, d2c_bn_swish_cuda(
      l.x.const_data_ptr(), l.output.out.mutable_data_ptr(), s.const_data_ptr<float>(),
      b.const_data_ptr<float>(), x.numel(), x.size(1), inner, dtype_of(x),
      stream_of(x)));
  return l.output.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CUDA, m) {
  m.impl("bn_swish", &bn_swish_cuda);
}

}  // namespace d2c_fast
