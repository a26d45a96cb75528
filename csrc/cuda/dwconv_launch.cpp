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
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launcher.h"
#include "op_checks.h"

#include "dwconv_kernel.cuh"

namespace d2c_fast {
namespace {

constexpr const char* kOp = "d2c_fast::dwconv_bias_swish: ";

at::Tensor dwconv_bias_swish_cuda(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& bias, int64_t stride, int64_t padding,
                                  int64_t dilation, bool swish) {
  check_dwconv_args(kOp, kCuda, x, weight, bias, stride, padding, dilation);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t k = weight.size(2);
  const int64_t Ho = conv_out_size(H, k, stride, padding, dilation);
  const int64_t Wo = conv_out_size(W, k, stride, padding, dilation);
  // The kernel writes y itself where y is channels-last, otherwise a temporary copied back.
  const KernelOutput o = channels_last_output(x, {N, C, Ho, Wo}, x.scalar_type());
  if (o.y.numel() == 0) return o.y;

  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wc = weight.contiguous();
  const at::Tensor bc = bias.contiguous();
  check_launch(kOp, d2c_dwconv_bias_swish_cuda(
      xc.const_data_ptr(), o.out.mutable_data_ptr(), wc.const_data_ptr<float>(),
      bc.const_data_ptr<float>(), N, C, H, W, Ho, Wo, k, stride, padding, dilation, swish,
      dtype_of(x), stream_of(x)));
  return o.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CUDA, m) {
  m.impl("dwconv_bias_swish", &dwconv_bias_swish_cuda);
}

}  // namespace d2c_fast
