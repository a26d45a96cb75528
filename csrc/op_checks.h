// Argument checks and layout rules shared by the CPU kernels (csrc/cpu/*.cpp) and the CUDA
// launchers (csrc/cuda/*_launch.cpp) of every op, so that both backends accept exactly the same
// inputs with the same messages. Each check_<op>_args takes the Backend that calls it: the
// device its kernels run on and whether they take float16 activations.
#pragma once

#include <ATen/ATen.h>

#include "dtypes.h"

namespace d2c_fast {

// The device an op's kernels run on, and whether they take float16 activations besides float32
// and bfloat16 (the CUDA kernels and the CPU bn_swish kernel do).
struct Backend {
  at::DeviceType device;
  bool half;
};
inline constexpr Backend kCpu{at::kCPU, false};
inline constexpr Backend kCuda{at::kCUDA, true};

// The kernels' code of an activation dtype that check_activation accepted.
inline DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default: return DType::kFloat32;
  }
}

// Activation `name` of `op` on the backend's device, in a dtype its kernels take.
inline void check_activation(const char* op, const Backend& b, const char* name,
                             const at::Tensor& t) {
  const char* dev = b.device == at::kCUDA ? "CUDA" : "CPU";
  TORCH_CHECK(t.device().type() == b.device, op, "(", dev, " kernel) ", name, " must be on ",
              dev, ", got ", t.device());
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || (b.half && dt == at::kHalf), op, name,
              b.half ? " must be float32, bfloat16 or float16, got "
                     : " must be float32 or bfloat16, got ",
              dt);
}

// A 4-D (N, C, H, W) activation of `b`'s device and dtypes.
inline void check_nchw_activation(const char* op, const Backend& b, const char* name,
                                  const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 4, op, name, " must be 4-D (N, C, H, W), got ", t.dim(),
              "-D tensor of shape ", t.sizes());
  check_activation(op, b, name, t);
}

// Output layout of an op whose output follows its input's memory format: channels-last iff the
// input is channels-last (or, for other strides, iff its channel stride is the smaller one).
inline at::MemoryFormat output_memory_format(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::ChannelsLast;
  return x.stride(1) < x.stride(3) ? at::MemoryFormat::ChannelsLast
                                   : at::MemoryFormat::Contiguous;
}

// An op's output `y` and `out`, the buffer its kernel writes: y itself, or a temporary in the
// kernel's layout (and dtype) that finish() copies into y.
struct KernelOutput {
  at::Tensor y;
  at::Tensor out;
  at::Tensor finish() const {
    if (!out.is_same(y)) y.copy_(out);
    return y;
  }
};

// The output of an op whose kernels write channels-last memory: `y`, of `sizes` (N, C, H, W) and
// x's dtype, in x's layout rule (output_memory_format); `out` is y itself when y is channels-last
// contiguous (always for a channels-last x; also NCHW with C == 1 or H*W == 1) and of
// `kernel_dtype`, otherwise a channels-last temporary of that dtype.
inline KernelOutput channels_last_output(const at::Tensor& x, at::IntArrayRef sizes,
                                         at::ScalarType kernel_dtype) {
  at::Tensor y = at::empty(sizes, x.options().memory_format(output_memory_format(x)));
  if (y.scalar_type() == kernel_dtype && y.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return {y, y};
  }
  return {y, at::empty(sizes, x.options().dtype(kernel_dtype).memory_format(
                                  at::MemoryFormat::ChannelsLast))};
}

// Standard convolution output length floor((size + 2p - d(k-1) - 1) / s) + 1.
inline int64_t conv_out_size(int64_t size, int64_t k, int64_t stride, int64_t padding,
                             int64_t dilation) {
  return (size + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
}

// bn_swish: x (N, C, H, W) or (N, C); scale and shift 1-D float32 of size C on x's device.
inline void check_bn_swish_args(const char* op, const Backend& b, const at::Tensor& x,
                                const at::Tensor& scale, const at::Tensor& shift) {
  TORCH_CHECK(x.dim() == 4 || x.dim() == 2, op, "x must be 4-D (N, C, H, W) or 2-D (N, C), got ",
              x.dim(), "-D tensor of shape ", x.sizes());
  check_activation(op, b, "x", x);
  const int64_t C = x.size(1);
  for (const at::Tensor* t : {&scale, &shift}) {
    const char* name = t == &scale ? "scale" : "shift";
    TORCH_CHECK(t->dim() == 1, op, name, " must be 1-D of size C=", C, ", got shape ",
                t->sizes());
    TORCH_CHECK(t->size(0) == C, op, name, " has ", t->size(0), " channels but x has C=", C,
                " (dim 1 of shape ", x.sizes(), ")");
    TORCH_CHECK(t->scalar_type() == at::kFloat, op, name, " must be float32, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, name, " is on ", t->device(), " but x is on ",
                x.device());
  }
}

// bn_swish's layout. The kernels read `x` either as rows of C elements (`rows`: channels-last
// 4-D, 2-D, or H*W == 1) or as contiguous NCHW planes; any other x (strided views, other dense
// permutations) is first made contiguous in x.suggest_memory_format(). The output y has the
// strides of at::empty_like(x) (those of the fake implementation in d2c_fast/ops/bn_swish.py);
// where they differ from the input's the kernel writes a temporary in the input's layout.
struct BnSwishLayout {
  at::Tensor x;  // the input in a layout the kernels read
  bool rows;
  KernelOutput output;
};
inline BnSwishLayout bn_swish_layout(const at::Tensor& x) {
  BnSwishLayout l{x, false, {}};
  if (x.is_contiguous()) {
    l.rows = x.dim() == 2 || x.size(2) * x.size(3) == 1;
  } else if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    l.rows = true;
  } else {
    const auto fmt = x.suggest_memory_format();
    l.x = x.contiguous(fmt);
    l.rows = fmt == at::MemoryFormat::ChannelsLast;
  }
  l.output.y = at::empty_like(x);
  l.output.out = l.output.y.strides() == l.x.strides() ? l.output.y : at::empty_like(l.x);
  return l;
}

// dwconv_bias_swish: x (N, C, H, W); weight (C, 1, k, k) and bias (C,) float32 on x's device.
inline void check_dwconv_args(const char* op, const Backend& b, const at::Tensor& x,
                              const at::Tensor& weight, const at::Tensor& bias, int64_t stride,
                              int64_t padding, int64_t dilation) {
  check_nchw_activation(op, b, "x", x);
  const int64_t C = x.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3) && weight.size(2) >= 1,
              op, "weight must be (C, 1, k, k) with C=", C, ", got shape ", weight.sizes());
  TORCH_CHECK(weight.size(2) <= 63, op, "kernel size k must be <= 63, got ", weight.size(2));
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == C, op, "bias must be 1-D of size C=", C,
              ", got shape ", bias.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat, op, "weight must be float32, got ",
              weight.scalar_type());
  TORCH_CHECK(bias.scalar_type() == at::kFloat, op, "bias must be float32, got ",
              bias.scalar_type());
  TORCH_CHECK(weight.device() == x.device() && bias.device() == x.device(), op,
              "weight and bias must be on x's device ", x.device());
  TORCH_CHECK(stride >= 1, op, "stride must be >= 1, got ", stride);
  TORCH_CHECK(padding >= 0, op, "padding must be >= 0, got ", padding);
  TORCH_CHECK(dilation >= 1, op, "dilation must be >= 1, got ", dilation);
  const int64_t k = weight.size(2);
  const int64_t Ho = conv_out_size(x.size(2), k, stride, padding, dilation);
  const int64_t Wo = conv_out_size(x.size(3), k, stride, padding, dilation);
  TORCH_CHECK(x.size(2) + 2 * padding - dilation * (k - 1) - 1 >= 0 &&
                  x.size(3) + 2 * padding - dilation * (k - 1) - 1 >= 0 && Ho >= 1 && Wo >= 1,
              op, "output size is too small: input ", x.sizes(), ", k=", k, ", padding=",
              padding, ", dilation=", dilation);
}

// up2_dwconv_bias_swish: dwconv_bias_swish's arguments at stride 1, 'same' padding (odd k).
inline void check_up2_dwconv_args(const char* op, const Backend& b, const at::Tensor& x,
                                  const at::Tensor& weight, const at::Tensor& bias) {
  check_dwconv_args(op, b, x, weight, bias, 1, (weight.dim() == 4 ? weight.size(2) - 1 : 0) / 2,
                    1);
  TORCH_CHECK(weight.size(2) % 2 == 1, op, "kernel size k must be odd ('same' padding), got ",
              weight.size(2));
}

// mbconv: x (N, C, H, W); the folded conv weights and biases float32 on x's device.
inline void check_mbconv_args(const char* op, const Backend& b, const at::Tensor& x,
                              const at::Tensor& w_expand, const at::Tensor& b_expand,
                              const at::Tensor& w_dw, const at::Tensor& b_dw,
                              const at::Tensor& w_project, const at::Tensor& b_project) {
  check_nchw_activation(op, b, "x", x);
  const int64_t C = x.size(1);
  TORCH_CHECK(w_expand.dim() == 4 && w_expand.size(1) == C && w_expand.size(2) == 1 &&
                  w_expand.size(3) == 1 && w_expand.size(0) >= 1,
              op, "w_expand must be (E, C, 1, 1) with C=", C, ", got shape ", w_expand.sizes());
  const int64_t E = w_expand.size(0);
  TORCH_CHECK(w_dw.dim() == 4 && w_dw.size(0) == E && w_dw.size(1) == 1 &&
                  w_dw.size(2) == w_dw.size(3) && w_dw.size(2) % 2 == 1 && w_dw.size(2) <= 63,
              op, "w_dw must be (E, 1, k, k) with E=", E, " and odd k <= 63, got shape ",
              w_dw.sizes());
  TORCH_CHECK(w_project.dim() == 4 && w_project.size(1) == E && w_project.size(2) == 1 &&
                  w_project.size(3) == 1 && w_project.size(0) >= 1,
              op, "w_project must be (C2, E, 1, 1) with E=", E, ", got shape ", w_project.sizes());
  const int64_t C2 = w_project.size(0);
  TORCH_CHECK(b_expand.dim() == 1 && b_expand.size(0) == E, op, "b_expand must be 1-D of size E=",
              E, ", got shape ", b_expand.sizes());
  TORCH_CHECK(b_dw.dim() == 1 && b_dw.size(0) == E, op, "b_dw must be 1-D of size E=", E,
              ", got shape ", b_dw.sizes());
  TORCH_CHECK(b_project.dim() == 1 && b_project.size(0) == C2, op,
              "b_project must be 1-D of size C2=", C2, ", got shape ", b_project.sizes());
  for (const at::Tensor* t : {&w_expand, &b_expand, &w_dw, &b_dw, &w_project, &b_project}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, op, "weights and biases must be float32, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, "weights and biases must be on x's device ",
                x.device(), ", got ", t->device());
  }
}

// se_residual: s and skip (N, C, H, W) of one shape and dtype; the SE weights float32 on s's
// device.
inline void check_se_residual_args(const char* op, const Backend& b, const at::Tensor& s,
                                   const at::Tensor& skip, const at::Tensor& w1,
                                   const at::Tensor& b1, const at::Tensor& w2,
                                   const at::Tensor& b2) {
  check_nchw_activation(op, b, "s", s);
  TORCH_CHECK(skip.sizes() == s.sizes(), op, "skip must have s's shape ", s.sizes(), ", got ",
              skip.sizes());
  TORCH_CHECK(skip.scalar_type() == s.scalar_type(), op, "skip must have s's dtype ",
              s.scalar_type(), ", got ", skip.scalar_type());
  const int64_t C = s.size(1);
  TORCH_CHECK(w1.dim() == 2 && w1.size(1) == C && w1.size(0) >= 1, op,
              "w1 must be (Ch, C) with C=", C, ", got shape ", w1.sizes());
  const int64_t Ch = w1.size(0);
  TORCH_CHECK(b1.dim() == 1 && b1.size(0) == Ch, op, "b1 must be 1-D of size Ch=", Ch,
              ", got shape ", b1.sizes());
  TORCH_CHECK(w2.dim() == 2 && w2.size(0) == C && w2.size(1) == Ch, op, "w2 must be (C, Ch) = (",
              C, ", ", Ch, "), got shape ", w2.sizes());
  TORCH_CHECK(b2.dim() == 1 && b2.size(0) == C, op, "b2 must be 1-D of size C=", C,
              ", got shape ", b2.sizes());
  for (const at::Tensor* t : {&w1, &b1, &w2, &b2}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, op, "w1, b1, w2, b2 must be float32, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == s.device(), op, "w1, b1, w2, b2 must be on s's device ",
                s.device(), ", got ", t->device());
  }
  TORCH_CHECK(skip.device() == s.device(), op, "skip must be on s's device ", s.device());
}

// se_residual's layout: `out` in s's layout rule (output_memory_format); the kernels read `s` and
// `skip` made contiguous in the same format, as channels-last rows (`rows`) or NCHW planes. Size-1
// dims make both descriptions of the same memory valid (C == 1 or H*W == 1); the one out's
// strides allow is used.
struct SeResidualLayout {
  at::Tensor out, s, skip;
  bool rows;
};
inline SeResidualLayout se_residual_layout(const at::Tensor& s, const at::Tensor& skip) {
  const auto fmt = output_memory_format(s);
  return {at::empty(s.sizes(), s.options().memory_format(fmt)), s.contiguous(fmt),
          skip.contiguous(fmt), fmt == at::MemoryFormat::ChannelsLast};
}

}  // namespace d2c_fast
