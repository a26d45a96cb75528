// CUDA launcher of d2c_fast::se_residual: input checks, layout choice, output and workspace
// allocation with ATen, then the plain-pointer kernels in se_residual.cu on the current stream.
// Registered with TORCH_LIBRARY_IMPL(d2c_fast, CUDA). Compiled only by setup.py / CMake against a
// CUDA build of torch (it needs ATen's CUDA headers). Checks, layout rules and output strides match
// the CPU kernel (csrc/cpu/se_residual.cpp), except that float16 is accepted as well: the output
// has s's memory format (channels-last iff s is channels-last contiguous and not NCHW contiguous,
// or, dense in neither, s.stride(1) < s.stride(3)); s and skip are made contiguous in that format
// when they are not already. The float32 workspace (partial sums, hidden layer, gate) comes from
// the caching allocator on the current stream, so the op can be captured in a CUDA graph.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "op_checks.h"

#include "se_residual_kernel.cuh"

namespace d2c_fast {
namespace {

constexpr const char* kOp = "d2c_fast::se_residual: ";

void check_inputs(const at::Tensor& s, const at::Tensor& skip, const at::Tensor& w1,
                  const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  TORCH_CHECK(s.dim() == 4, kOp, "s must be 4-D (N, C, H, W), got ", s.dim(),
              "-D tensor of shape ", s.sizes());
  TORCH_CHECK(s.is_cuda(), kOp, "(CUDA kernel) s must be on CUDA, got ", s.device());
  const auto dt = s.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, kOp,
              "s must be float32, bfloat16 or float16, got ", dt);
  check_se_residual_args(kOp, s, skip, w1, b1, w2, b2);
}

at::Tensor se_residual_cuda(const at::Tensor& s, const at::Tensor& skip, const at::Tensor& w1,
                            const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                            double alpha) {
  check_inputs(s, skip, w1, b1, w2, b2);
  const c10::cuda::CUDAGuard guard(s.device());
  const auto fmt = output_memory_format(s);
  at::Tensor out = at::empty(s.sizes(), s.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const int64_t N = s.size(0), C = s.size(1), HW = s.size(2) * s.size(3);
  const int64_t Ch = w1.size(0);
  // Kernel layout: channels-last rows or NCHW planes. Size-1 dims make both descriptions of the
  // same memory valid (C == 1 or H*W == 1); use the one out's strides allow.
  const bool rows = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor sc = s.contiguous(fmt);
  const at::Tensor kc = skip.contiguous(fmt);
  const at::Tensor w1c = w1.contiguous(), b1c = b1.contiguous();
  const at::Tensor w2c = w2.contiguous(), b2c = b2.contiguous();
  at::Tensor ws = at::empty({d2c_se_residual_cuda_workspace(N, C, HW, Ch, rows)},
                            s.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous));
  const auto dt = s.scalar_type();
  const int code = dt == at::kFloat ? 0 : dt == at::kBFloat16 ? 1 : 2;
  const cudaError_t err = d2c_se_residual_cuda(
      sc.const_data_ptr(), kc.const_data_ptr(), out.mutable_data_ptr(),
      w1c.const_data_ptr<float>(), b1c.const_data_ptr<float>(), w2c.const_data_ptr<float>(),
      b2c.const_data_ptr<float>(), N, C, HW, Ch, alpha, rows, code, ws.mutable_data_ptr<float>(),
      at::cuda::getCurrentCUDAStream(s.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess, "d2c_fast::se_residual: CUDA launch failed: ",
              cudaGetErrorString(err));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CUDA, m) {
  m.impl("se_residual", &se_residual_cuda);
}

}  // namespace d2c_fast
