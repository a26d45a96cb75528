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
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launcher.h"
#include "op_checks.h"

#include "se_residual_kernel.cuh"

namespace d2c_fast {
namespace {

constexpr const char* kOp = "d2c_fast::se_residual: ";

at::Tensor se_residual_cuda(const at::Tensor& s, const at::Tensor& skip, const at::Tensor& w1,
                            const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                            double alpha) {
  check_se_residual_args(kOp, kCuda, s, skip, w1, b1, w2, b2);
  const c10::cuda::CUDAGuard guard(s.device());
  const SeResidualLayout l = se_residual_layout(s, skip);
  if (l.out.numel() == 0) return l.out;
  const int64_t N = s.size(0), C = s.size(1), HW = s.size(2) * s.size(3);
  const int64_t Ch = w1.size(0);
  const at::Tensor w1c = w1.contiguous(), b1c = b1.contiguous();
  const at::Tensor w2c = w2.contiguous(), b2c = b2.contiguous();
  at::Tensor ws = at::empty({d2c_se_residual_cuda_workspace(N, C, HW, Ch, l.rows)},
                            s.options().dtype(at::kFloat));
  check_launch(kOp, d2c_se_residual_cuda(
      l.s.const_data_ptr(), l.skip.const_data_ptr(), l.out.mutable_data_ptr(),
      w1c.const_data_ptr<float>(), b1c.const_data_ptr<float>(), w2c.const_data_ptr<float>(),
      b2c.const_data_ptr<float>(), N, C, HW, Ch, alpha, l.rows, dtype_of(s),
      ws.mutable_data_ptr<float>(), stream_of(s)));
  return l.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CUDA, m) {
  m.impl("se_residual", &se_residual_cuda);
}

}  // namespace d2c_fast
