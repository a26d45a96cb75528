// CPU kernel of d2c_fast::dwconv_bias_swish(Tensor x, Tensor weight, Tensor bias, int stride,
//                                          int padding, int dilation, bool swish) -> Tensor.
//
// What it fuses: the depthwise k x k convolution of an MBConv cell (groups == channels, zero
// padding, square kernel, BatchNorm folded into weight/bias) with its bias add and Swish:
//     v[n,c,oh,ow] = bias[c] + sum_{kh,kw} weight[c,0,kh,kw] * x[n,c,oh*s-p+kh*d, ow*s-p+kw*d]
//     y = swish ? v * sigmoid(v) : v
// up2_dwconv_bias_swish(x, weight, bias, swish): the same after a nearest x2 up-sampling of x
// (the decoder's up cells), 'same' padding, odd k, without materialising the up-sampled x.
// One read of x and one write of y (oneDNN's fused depthwise+swish primitive is several times
// slower than that on the decoder's shapes).
//
// Layouts: x is (N, C, H, W) in any strides. Channels-last contiguous is the fast path (the
//   kernel vectorises over C). Any other layout is first made channels-last contiguous (one
//   extra pass over x). The output is channels-last iff x is: x.is_contiguous(ChannelsLast) and
//   not x.is_contiguous(), or, for a tensor dense in neither format, stride(1) < stride(3)
//   (channel-innermost-like strides). Otherwise it is contiguous NCHW (written through a
//   channels-last temporary). d2c_fast/ops/dwconv_bias_swish.py's fake kernel applies the same
//   rule.
// Dtypes: x float32 or bfloat16 (y has x's dtype; float32 accumulation, bf16 rounded once on
//   store); weight (C, 1, k, k) and bias (C,) float32 on x's device.
// Parameters: k >= 1 (specialised for 3, 5, 7 at stride 1/2, dilation 1; any other k up to 63,
//   stride, dilation use a generic loop), stride >= 1, padding >= 0, dilation >= 1; Ho/Wo are
//   the standard conv sizes floor((H + 2p - d(k-1) - 1) / s) + 1 and must be >= 1. Swish(-inf)
//   gives -inf (PyTorch: NaN); NaN propagates.
// Vectorisation/threads: see dwconv_kernel.h (at::vec, per-ISA copies chosen at run time like
//   bn_swish, at::parallel_for over output rows with a per-thread ring buffer of input rows).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "op_checks.h"

#define D2C_ISA_NS cpu_default
#include "dwconv_kernel.h"
#undef D2C_ISA_NS

#include "isa_dispatch.h"

namespace d2c_fast {

D2C_CPU_ISA_DISPATCH(dwconv_kernel, DwConvArgs)

namespace {

constexpr const char* kOp = "d2c_fast::dwconv_bias_swish: ";
constexpr const char* kUpOp = "d2c_fast::up2_dwconv_bias_swish: ";

// Allocates y (N, C, Ho, Wo) in x's layout rule and runs the kernel (`a` carries the conv
// parameters; shapes, pointers and dtype are filled here) from a channels-last x into y, through
// a channels-last temporary where y is not channels-last (channels_last_output).
at::Tensor launch(const at::Tensor& x, int64_t Ho, int64_t Wo, const at::Tensor& weight,
                  const at::Tensor& bias, DwConvArgs a) {
  const int64_t N = x.size(0), C = x.size(1);
  const KernelOutput o = channels_last_output(x, {N, C, Ho, Wo}, x.scalar_type());
  if (o.y.numel() == 0) return o.y;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wc = weight.contiguous();
  const at::Tensor bc = bias.contiguous();
  a.x = xc.const_data_ptr();
  a.y = o.out.mutable_data_ptr();
  a.weight = wc.const_data_ptr<float>();
  a.bias = bc.const_data_ptr<float>();
  a.N = N; a.C = C; a.H = x.size(2); a.W = x.size(3); a.Ho = Ho; a.Wo = Wo;
  a.dtype = dtype_of(x);
  run_dwconv_kernel(a);
  return o.finish();
}

at::Tensor dwconv_bias_swish_cpu(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, int64_t stride, int64_t padding,
                                 int64_t dilation, bool swish) {
  check_dwconv_args(kOp, kCpu, x, weight, bias, stride, padding, dilation);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t k = weight.size(2);
  const int64_t Ho = conv_out_size(H, k, stride, padding, dilation);
  const int64_t Wo = conv_out_size(W, k, stride, padding, dilation);
  DwConvArgs a;
  a.k = k; a.stride = stride; a.pad = padding; a.dil = dilation;
  a.swish = swish;
  a.up2 = false;
  return launch(x, Ho, Wo, weight, bias, a);
}

// y = dwconv_bias_swish(nearest_upsample_x2(x), weight, bias, 1, (k-1)/2, 1, swish) without the
// up-sampled tensor (see run_up2 in dwconv_kernel.h): odd k, output (N, C, 2H, 2W).
at::Tensor up2_dwconv_bias_swish_cpu(const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias, bool swish) {
  check_up2_dwconv_args(kUpOp, kCpu, x, weight, bias);
  const int64_t k = weight.size(2);
  DwConvArgs a;
  a.k = k; a.stride = 1; a.pad = (k - 1) / 2; a.dil = 1;
  a.swish = swish;
  a.up2 = true;
  return launch(x, 2 * x.size(2), 2 * x.size(3), weight, bias, a);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CPU, m) {
  m.impl("dwconv_bias_swish", &dwconv_bias_swish_cpu);
  m.impl("up2_dwconv_bias_swish", &up2_dwconv_bias_swish_cpu);
}

}  // namespace d2c_fast
