// Device-independent argument checks and layout rules shared by the CPU kernels
// (csrc/cpu/*.cpp) and the CUDA launchers (csrc/cuda/*_launch.cpp) of the same op, so that
// both backends accept exactly the same inputs with the same messages. Each backend still
// checks the device and the activation dtypes it supports itself.
#pragma once

#include <ATen/ATen.h>

namespace d2c_fast {

// Output layout of an op whose output follows its input's memory format: channels-last iff the
// input is channels-last (or, for other strides, iff its channel stride is the smaller one).
inline at::MemoryFormat output_memory_format(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::ChannelsLast;
  return x.stride(1) < x.stride(3) ? at::MemoryFormat::ChannelsLast
                                   : at::MemoryFormat::Contiguous;
}

// Standard convolution output length floor((size + 2p - d(k-1) - 1) / s) + 1.
inline int64_t conv_out_size(int64_t size, int64_t k, int64_t stride, int64_t padding,
                             int64_t dilation) {
  return (size + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
}

// dwconv_bias_swish: everything but x's device and dtype.
inline void check_dwconv_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& bias, int64_t stride, int64_t padding,
                              int64_t dilation) {
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

// up2_dwconv_bias_swish: everything but x's device and dtype.
inline void check_up2_dwconv_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& bias) {
  check_dwconv_args(op, x, weight, bias, 1, (weight.dim() == 4 ? weight.size(2) - 1 : 0) / 2, 1);
  TORCH_CHECK(weight.size(2) % 2 == 1, op, "kernel size k must be odd ('same' padding), got ",
              weight.size(2));
}

// mbconv: everything but x's device and dtype.
inline void check_mbconv_args(const char* op, const at::Tensor& x, const at::Tensor& w_expand,
                              const at::Tensor& b_expand, const at::Tensor& w_dw,
                              const at::Tensor& b_dw, const at::Tensor& w_project,
                              const at::Tensor& b_project) {
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

// se_residual: everything but s's device and dtype.
inline void check_se_residual_args(const char* op, const at::Tensor& s, const at::Tensor& skip,
                                   const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2) {
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

}  // namespace d2c_fast
