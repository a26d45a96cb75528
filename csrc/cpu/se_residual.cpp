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

#if defined(__x86_64__) && defined(__GNUC__)
#define D2C_X86_ISA_COPIES 1
namespace d2c_fast {
namespace cpu_avx2 { void se_residual_kernel(const SeResidualArgs& a); }
namespace cpu_avx512 { void se_residual_kernel(const SeResidualArgs& a); }
}  // namespace d2c_fast
#endif

namespace d2c_fast {
namespace {

#ifdef D2C_X86_ISA_COPIES
int se_cpu_capability_level() {
  const std::string cap = at::get_cpu_capability();
  if (cap == "AVX512") return 2;
  if (cap == "AVX2") return 1;
  return 0;
}
#endif

constexpr const char* kOp = "d2c_fast::se_residual: ";

void check_inputs(const at::Tensor& s, const at::Tensor& skip, const at::Tensor& w1,
                  const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  TORCH_CHECK(s.dim() == 4, kOp, "s must be 4-D (N, C, H, W), got ", s.dim(),
              "-D tensor of shape ", s.sizes());
  TORCH_CHECK(s.device().is_cpu(), kOp, "(CPU kernel) s must be on CPU, got ", s.device());
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == at::kBFloat16, kOp,
              "s must be float32 or bfloat16, got ", s.scalar_type());
  check_se_residual_args(kOp, s, skip, w1, b1, w2, b2);
}

at::Tensor se_residual_cpu(const at::Tensor& s, const at::Tensor& skip, const at::Tensor& w1,
                           const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                           double alpha) {
  check_inputs(s, skip, w1, b1, w2, b2);
  const auto fmt = output_memory_format(s);
  at::Tensor out = at::empty(s.sizes(), s.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const int64_t N = s.size(0), C = s.size(1), HW = s.size(2) * s.size(3);
  // Kernel layout: channels-last rows or NCHW planes. Size-1 dims make both descriptions of the
  // same memory valid (C == 1 or H*W == 1); use the one out's strides allow.
  const bool rows = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor sc = s.contiguous(fmt);
  const at::Tensor kc = skip.contiguous(fmt);
  const at::Tensor w1c = w1.contiguous(), b1c = b1.contiguous();
  const at::Tensor w2c = w2.contiguous(), b2c = b2.contiguous();

  SeResidualArgs a;
  a.s = sc.const_data_ptr();
  a.skip = kc.const_data_ptr();
  a.out = out.mutable_data_ptr();
  a.w1 = w1c.const_data_ptr<float>();
  a.b1 = b1c.const_data_ptr<float>();
  a.w2 = w2c.const_data_ptr<float>();
  a.b2 = b2c.const_data_ptr<float>();
  a.N = N; a.C = C; a.HW = HW; a.Ch = w1.size(0);
  a.alpha = alpha;
  a.rows = rows;
  a.dtype = s.scalar_type() == at::kFloat ? 0 : 1;
#ifdef D2C_X86_ISA_COPIES
  static const int cap = se_cpu_capability_level();
  if (cap >= 2) {
    cpu_avx512::se_residual_kernel(a);
  } else if (cap >= 1) {
    cpu_avx2::se_residual_kernel(a);
  } else {
    cpu_default::se_residual_kernel(a);
  }
#else
  cpu_default::se_residual_kernel(a);
#endif
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CPU, m) {
  m.impl("se_residual", &se_residual_cpu);
}

}  // namespace d2c_fast
