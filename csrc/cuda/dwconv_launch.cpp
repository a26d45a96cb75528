// CUDA launcher of d2c_fast::dwconv_bias_swish: input checks, layout choice and output allocation
// with ATen, then the plain-pointer kernel in dwconv.cu on the current stream. Registered with
// TORCH_LIBRARY_IMPL(d2c_fast, CUDA). Compiled only by setup.py / CMake against a CUDA build of
// torch (it needs ATen's CUDA headers). Checks, layout rules and output strides match the CPU
// kernel (csrc/cpu/dwconv.cpp), except that float16 is accepted as well: the kernel runs on
// channels-last contiguous data; any other x is first made channels-last contiguous (one extra
// pass), and an NCHW output is written through a channels-last temporary and copied back (one
// more pass). The output is channels-last iff x is (d2c_fast/ops/dwconv_bias_swish.py's
// output_memory_format rule).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "op_checks.h"

#include "dwconv_kernel.cuh"

namespace d2c_fast {
namespace {

constexpr const char* kOp = "d2c_fast::dwconv_bias_swish: ";

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  int64_t stride, int64_t padding, int64_t dilation) {
  TORCH_CHECK(x.dim() == 4, kOp, "x must be 4-D (N, C, H, W), got ", x.dim(),
              "-D tensor of shape ", x.sizes());
  TORCH_CHECK(x.is_cuda(), kOp, "(CUDA kernel) x must be on CUDA, got ", x.device());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, kOp,
              "x must be float32, bfloat16 or float16, got ", dt);
  check_dwconv_args(kOp, x, weight, bias, stride, padding, dilation);
}

at::Tensor dwconv_bias_swish_cuda(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& bias, int64_t stride, int64_t padding,
                                  int64_t dilation, bool swish) {
  check_inputs(x, weight, bias, stride, padding, dilation);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t k = weight.size(2);
  const int64_t Ho = conv_out_size(H, k, stride, padding, dilation);
  const int64_t Wo = conv_out_size(W, k, stride, padding, dilation);
  const auto fmt = output_memory_format(x);
  at::Tensor y = at::empty({N, C, Ho, Wo}, x.options().memory_format(fmt));
  if (y.numel() == 0) return y;

  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  // y itself when its memory is already (N, Ho, Wo, C)-ordered (always for channels-last; also
  // NCHW with C == 1 or Ho*Wo == 1), otherwise a channels-last temporary copied back.
  at::Tensor yc = y.is_contiguous(at::MemoryFormat::ChannelsLast)
                      ? y
                      : at::empty({N, C, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const at::Tensor wc = weight.contiguous();
  const at::Tensor bc = bias.contiguous();
  const auto dt = x.scalar_type();
  const int code = dt == at::kFloat ? 0 : dt == at::kBFloat16 ? 1 : 2;
  const cudaError_t err = d2c_dwconv_bias_swish_cuda(
      xc.const_data_ptr(), yc.mutable_data_ptr(), wc.const_data_ptr<float>(),
      bc.const_data_ptr<float>(), N, C, H, W, Ho, Wo, k, stride, padding, dilation, swish, code,
      at::cuda::getCurrentCUDAStream(x.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess, "d2c_fast::dwconv_bias_swish: CUDA launch failed: ",
              cudaGetErrorString(err));
  if (!yc.is_same(y)) y.copy_(yc);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CUDA, m) {
  m.impl("dwconv_bias_swish", &dwconv_bias_swish_cuda);
}

}  // namespace d2c_fast
