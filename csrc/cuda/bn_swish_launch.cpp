// CUDA launcher of d2c_fast::bn_swish: input checks, layout choice and output allocation with
// ATen, then the plain-pointer kernel in bn_swish.cu on the current stream. Registered with
// TORCH_LIBRARY_IMPL(d2c_fast, CUDA). Compiled only by setup.py / CMake against a CUDA build of
// torch (it needs ATen's CUDA headers). Layout rules and output strides match the CPU kernel
// (csrc/cpu/bn_swish.cpp): NCHW and channels-last in place, anything else made contiguous in
// x.suggest_memory_format(); output strides = at::empty_like(x).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "bn_swish_kernel.cuh"

namespace d2c_fast {
namespace {

at::Tensor bn_swish_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  TORCH_CHECK(x.dim() == 4 || x.dim() == 2,
              "d2c_fast::bn_swish: x must be 4-D (N, C, H, W) or 2-D (N, C), got ", x.dim(),
              "-D tensor of shape ", x.sizes());
  TORCH_CHECK(x.is_cuda(), "d2c_fast::bn_swish (CUDA kernel): x must be on CUDA, got ", x.device());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
              "d2c_fast::bn_swish: x must be float32, bfloat16 or float16, got ", dt);
  const int64_t C = x.size(1);
  for (const at::Tensor* t : {&scale, &shift}) {
    const char* name = t == &scale ? "scale" : "shift";
    TORCH_CHECK(t->dim() == 1, "d2c_fast::bn_swish: ", name, " must be 1-D of size C=", C,
                ", got shape ", t->sizes());
    TORCH_CHECK(t->size(0) == C, "d2c_fast::bn_swish: ", name, " has ", t->size(0),
                " channels but x has C=", C, " (dim 1 of shape ", x.sizes(), ")");
    TORCH_CHECK(t->scalar_type() == at::kFloat, "d2c_fast::bn_swish: ", name,
                " must be float32, got ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), "d2c_fast::bn_swish: ", name, " is on ",
                t->device(), " but x is on ", x.device());
  }
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;

  bool rows = false;
  at::Tensor xc = x;
  if (x.is_contiguous()) {
    rows = x.dim() == 2;
  } else if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    rows = true;
  } else {
    const auto fmt = x.suggest_memory_format();
    xc = x.contiguous(fmt);
    rows = fmt == at::MemoryFormat::ChannelsLast;
  }
  at::Tensor yc = y.strides() == xc.strides() ? y : at::empty_like(xc);
  const at::Tensor s = scale.contiguous();
  const at::Tensor b = shift.contiguous();
  const int64_t inner = rows ? 1 : (x.dim() == 4 ? x.size(2) * x.size(3) : 1);
  const int code = dt == at::kFloat ? 0 : dt == at::kBFloat16 ? 1 : 2;
  const cudaError_t err = d2c_bn_swish_cuda(
      xc.const_data_ptr(), yc.mutable_data_ptr(), s.const_data_ptr<float>(),
      b.const_data_ptr<float>(), x.numel(), C, inner, code,
      at::cuda::getCurrentCUDAStream(x.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess, "d2c_fast::bn_swish: CUDA launch failed: ",
              cudaGetErrorString(err));
  if (!yc.is_same(y)) y.copy_(yc);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CUDA, m) {
  m.impl("bn_swish", &bn_swish_cuda);
}

}  // namespace d2c_fast
