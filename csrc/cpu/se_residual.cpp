// CPU kernel of d2c_fast::se_residual(Tensor s, Tensor skip, Tensor w1, Tensor b1, Tensor w2,
//                                    Tensor b2, float alpha) -> Tensor.
//
// What it fuses: the tail of an MBConv / residual cell, squeeze-excitation + scaled residual:
//     m[n, c]  = mean over (h, w) of s[n, c]
//     g[n, :]  = sigmoid(w2 @ relu(w1 @ m[n, :] + b1) + b2)        (Linear(C, Ch), ReLU, Linear)
//     out      = skip + alpha * s * g[n, c]
// in two passes over s (sums; then one fused read of s and skip and write of out) instead of the
// 5-6 passes and temporaries of the eager expression.
//
// Layouts: s, skip (N, C, H, W) of the same shape and dtype, any strides. The output has s's
//   memory format by the same rule as dwconv_bias_swish (channels-last iff s is channels-last
//   contiguous and not NCHW contiguous, or, dense in neither, s.stride(1) < s.stride(3)); s and
//   skip are made contiguous in that format when they are not already (skip may be in another
//   layout than s). d2c_fast/ops/se_residual.py's fake kernel applies the same rule.
// Dtypes: s/skip float32 or bfloat16 (out has their dtype; all arithmetic in float32, the
//   means and the MLP in float64). w1 (Ch, C), b1 (Ch,), w2 (C, Ch), b2 (C,) float32 on s's device.
// Vectorisation/threads: see se_residual_kernel.h (at::vec, per-ISA copies chosen at run time
//   like bn_swish, at::parallel_for; results do not depend on the thread count).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "op_checks.h"

#define D2C_ISA_NS cpu_default
#include "se_residual_kernel.h"
#undef D2C_ISA_NS

#include "isa_dispatch.h"

namespace d2c_fast {

D2C_CPU_ISA_DISPATCH(se_residual_kernel, SeResidualArgs)

namespace {

constexpr const char* kOp = "d2c_fast::se_residual: ";

at::Tensor se_residual_cpu(const at::Tensor& s, const at::Tensor& skip, const at::Tensor& w1,
                           const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                           double alpha) {
  check_se_residual_args(kOp, kCpu, s, skip, w1, b1, w2, b2);
  const SeResidualLayout l = se_residual_layout(s, skip);
  if (l.out.numel() == 0) return l.out;
  const at::Tensor w1c = w1.contiguous(), b1c = b1.contiguous();
  const at::Tensor w2c = w2.contiguous(), b2c = b2.contiguous();

  SeResidualArgs a;
  a.s = l.s.const_data_ptr();
  a.skip = l.skip.const_data_ptr();
  a.out = l.out.mutable_data_ptr();
  a.w1 = w1c.const_data_ptr<float>();
  a.b1 = b1c.const_data_ptr<float>();
  a.w2 = w2c.const_data_ptr<float>();
  a.b2 = b2c.const_data_ptr<float>();
  a.N = s.size(0); a.C = s.size(1); a.HW = s.size(2) * s.size(3); a.Ch = w1.size(0);
  a.alpha = alpha;
  a.rows = l.rows;
  a.dtype = dtype_of(s);
  run_se_residual_kernel(a);
  return l.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CPU, m) {
  m.impl("se_residual", &se_residual_cpu);
}

}  // namespace d2c_fast
