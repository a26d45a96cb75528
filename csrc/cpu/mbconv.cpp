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
// Dtypes: x float32, or bfloat16: AMX brgemm on bf16 operands where PyTorch can pack bf16
//   weights and C, E are even, E and C2 multiples of 16 (mbconv_kernel.h); otherwise
//   converted to float32 and back (one rounding of y).
// Layout: any; channels-last contiguous is the no-copy path. y follows the output layout rule
//   of dwconv_bias_swish (op_checks.h output_memory_format).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "op_checks.h"

#define D2C_ISA_NS cpu_default
#include "mbconv_kernel.h"
#undef D2C_ISA_NS

#include "isa_dispatch.h"

namespace d2c_fast {

D2C_CPU_ISA_DISPATCH(mbconv_kernel, MBConvArgs)

namespace {

constexpr const char* kOp = "d2c_fast::mbconv: ";

// The bf16 path multiplies with PyTorch's brgemm on VNNI-packed weights (AMX): it packs column
// blocks of 16..64 (multiples of 16) over an even K.
bool bf16_gemm_shapes_ok(int64_t C, int64_t E, int64_t C2) {
#if defined(CPUBLAS_BRGEMM_BF16BF16F32)
  static const bool can = at::native::cpublas::could_pack(at::kBFloat16);
  return can && C % 2 == 0 && E % 16 == 0 && C2 % 16 == 0;
#else
  return false;
#endif
}

// (K, N) bfloat16 row-major -> column blocks of 64, each packed to VNNI by cpublas::pack; block
// j (columns [j, j + 64)) starts at element K * j.
at::Tensor pack_vnni(const at::Tensor& b) {
  const int64_t K = b.size(0), N = b.size(1);
  at::Tensor out = at::empty({K * N}, b.options());
#if defined(CPUBLAS_BRGEMM_BF16BF16F32)
  for (int64_t j = 0; j < N; j += 64) {
    const int64_t nb = std::min<int64_t>(64, N - j);
    at::native::cpublas::pack(K, nb, N, nb, at::kBFloat16, at::kBFloat16,
                              b.const_data_ptr<c10::BFloat16>() + j,
                              out.mutable_data_ptr<c10::BFloat16>() + K * j);
  }
#endif
  return out;
}

at::Tensor mbconv_cpu(const at::Tensor& x, const at::Tensor& w_expand, const at::Tensor& b_expand,
                      const at::Tensor& w_dw, const at::Tensor& b_dw, const at::Tensor& w_project,
                      const at::Tensor& b_project) {
  check_mbconv_args(kOp, kCpu, x, w_expand, b_expand, w_dw, b_dw, w_project, b_project);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t E = w_expand.size(0), C2 = w_project.size(0), k = w_dw.size(2);
  const bool amx_bf16 = x.scalar_type() == at::kBFloat16 && bf16_gemm_shapes_ok(C, E, C2);
  const auto in_dtype = amx_bf16 ? at::kBFloat16 : at::kFloat;
  const KernelOutput o = channels_last_output(x, {N, C2, H, W}, in_dtype);
  if (o.y.numel() == 0) return o.y;

  const at::Tensor we = w_expand.reshape({E, C}).t().contiguous();    // (C, E)
  const at::Tensor wp = w_project.reshape({C2, E}).t().contiguous();  // (E, C2)
  const at::Tensor wd = w_dw.reshape({E, k * k}).contiguous();
  const at::Tensor be = b_expand.contiguous(), bd = b_dw.contiguous(), bp = b_project.contiguous();
  at::Tensor we16, wp16;
  if (amx_bf16) {
    we16 = pack_vnni(we.to(at::kBFloat16));
    wp16 = pack_vnni(wp.to(at::kBFloat16));
  }
  const at::Tensor xc = x.to(in_dtype).contiguous(at::MemoryFormat::ChannelsLast);

  MBConvArgs a;
  a.x = xc.const_data_ptr();
  a.y = o.out.mutable_data_ptr();
  a.we = we.const_data_ptr<float>();
  a.be = be.const_data_ptr<float>();
  a.wd = wd.const_data_ptr<float>();
  a.bd = bd.const_data_ptr<float>();
  a.wp = wp.const_data_ptr<float>();
  a.bp = bp.const_data_ptr<float>();
  a.we16 = amx_bf16 ? we16.const_data_ptr<c10::BFloat16>() : nullptr;
  a.wp16 = amx_bf16 ? wp16.const_data_ptr<c10::BFloat16>() : nullptr;
  a.bf16 = amx_bf16;
  a.N = N; a.H = H; a.W = W; a.C = C; a.E = E; a.C2 = C2; a.k = k;
  run_mbconv_kernel(a);
  return o.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CPU, m) {
  m.impl("mbconv", &mbconv_cpu);
}

}  // namespace d2c_fast
