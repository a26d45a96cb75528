// CPU kernel of d2c_fast::mbconv(Tensor x, Tensor w_expand, Tensor b_expand, Tensor w_dw,
//                                Tensor b_dw, Tensor w_project, Tensor b_project) -> Tensor.
//
// The body of a stride-1 MBConv cell with its BatchNorms folded (d2c_fast/models/plan.py):
//   y = conv1x1(swish(dwconv_kxk(swish(conv1x1(x, w_expand) + b_expand)) + b_dw), w_project)
//       + b_project
// row-streamed so that the 6x expanded hidden tensor never goes to memory (mbconv_kernel.h).
// Shapes: x (N, C, H, W); w_expand (E, C, 1, 1), b_expand (E); w_dw (E, 1, k, k) with k odd
// ("same" zero padding k/2 of the hidden tensor, stride 1), b_dw (E); w_project (C2, E, 1, 1),
// b_project (C2); y (N, C2, H, W). Weights float32 on x's device.
// Dtypes: x float32 (the kernel) or bfloat16 (converted to float32 and back: one rounding of
//   y; the fast plan keeps bf16 cells on the unfused ops, whose bf16 GEMMs are faster).
// Layout: any; channels-last contiguous is the no-copy path. y follows the output layout rule
//   of dwconv_bias_swish (op_checks.h output_memory_format).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "op_checks.h"

#define D2C_ISA_NS cpu_default
#include "mbconv_kernel.h"
#undef D2C_ISA_NS

#if defined(__x86_64__) && defined(__GNUC__)
#define D2C_X86_ISA_COPIES 1
namespace d2c_fast {
namespace cpu_avx2 { void mbconv_kernel(const MBConvArgs& a); }
namespace cpu_avx512 { void mbconv_kernel(const MBConvArgs& a); }
}  // namespace d2c_fast
#endif

namespace d2c_fast {
namespace {

constexpr const char* kOp = "d2c_fast::mbconv: ";

at::Tensor mbconv_cpu(const at::Tensor& x, const at::Tensor& w_expand, const at::Tensor& b_expand,
                      const at::Tensor& w_dw, const at::Tensor& b_dw, const at::Tensor& w_project,
                      const at::Tensor& b_project) {
  TORCH_CHECK(x.dim() == 4, kOp, "x must be 4-D (N, C, H, W), got ", x.dim(),
              "-D tensor of shape ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), kOp, "(CPU kernel) x must be on CPU, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, kOp,
              "x must be float32 or bfloat16, got ", x.scalar_type());
  check_mbconv_args(kOp, x, w_expand, b_expand, w_dw, b_dw, w_project, b_project);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t E = w_expand.size(0), C2 = w_project.size(0), k = w_dw.size(2);
  const auto fmt = output_memory_format(x);
  at::Tensor y = at::empty({N, C2, H, W}, x.options().memory_format(fmt));
  if (y.numel() == 0) return y;

  const at::Tensor xc = x.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  const bool direct = x.scalar_type() == at::kFloat && y.is_contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor yc = direct ? y
                         : at::empty({N, C2, H, W}, x.options().dtype(at::kFloat).memory_format(
                                                         at::MemoryFormat::ChannelsLast));
  const at::Tensor we = w_expand.reshape({E, C}).t().contiguous();    // (C, E)
  const at::Tensor wp = w_project.reshape({C2, E}).t().contiguous();  // (E, C2)
  const at::Tensor wd = w_dw.reshape({E, k * k}).contiguous();
  const at::Tensor be = b_expand.contiguous(), bd = b_dw.contiguous(), bp = b_project.contiguous();

  MBConvArgs a;
  a.x = xc.const_data_ptr<float>();
  a.y = yc.mutable_data_ptr<float>();
  a.we = we.const_data_ptr<float>();
  a.be = be.const_data_ptr<float>();
  a.wd = wd.const_data_ptr<float>();
  a.bd = bd.const_data_ptr<float>();
  a.wp = wp.const_data_ptr<float>();
  a.bp = bp.const_data_ptr<float>();
  a.N = N; a.H = H; a.W = W; a.C = C; a.E = E; a.C2 = C2; a.k = k;
#ifdef D2C_X86_ISA_COPIES
  static const int cap = [] {
    const std::string c = at::get_cpu_capability();
    return c == "AVX512" ? 2 : (c == "AVX2" ? 1 : 0);
  }();
  if (cap >= 2) {
    cpu_avx512::mbconv_kernel(a);
  } else if (cap >= 1) {
    cpu_avx2::mbconv_kernel(a);
  } else {
    cpu_default::mbconv_kernel(a);
  }
#else
  cpu_default::mbconv_kernel(a);
#endif
  if (!yc.is_same(y)) y.copy_(yc);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CPU, m) {
  m.impl("mbconv", &mbconv_cpu);
}

}  // namespace d2c_fast
