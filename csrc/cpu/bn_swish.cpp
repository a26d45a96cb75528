// CPU kernel of d2c_fast::bn_swish(Tensor x, Tensor scale, Tensor shift) -> Tensor.
//
// What it fuses: inference BatchNorm folded to a per-channel affine map, followed by Swish:
//     y = v * sigmoid(v),  v = x * scale[c] + shift[c]
// (scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale; see
// d2c_fast.ops.fold_bn). One read of x and one write of y instead of the 3-4 passes and
// temporaries of the eager PyTorch expression.
//
// Layouts: x is 4-D (N, C, H, W) or 2-D (N, C); the channel is dim 1.
//   * contiguous NCHW: planes of H*W elements share one (scale, shift) pair;
//   * channels-last 4-D (and 2-D, and NCHW with H*W == 1): rows of C elements; the channel
//     parameters are read from a small buffer that repeats scale/shift with a period that is a
//     multiple of the vector width, so the loop runs over the flat array with full vectors
//     whatever C is (C = 1, 3, 17, ...). Very large odd C (period > 64Ki floats) uses a plain
//     per-row loop instead.
//   * anything else (strided views, other dense permutations) is made contiguous in
//     x.suggest_memory_format() first.
//   The output has exactly the strides of at::empty_like(x) (preserve_format), which is what
//   the fake/meta implementation in d2c_fast/ops/bn_swish.py returns.
// Dtypes: x float32, bfloat16 or float16 (y has x's dtype; arithmetic is float32 throughout,
//   low-precision values are converted on load/store). scale/shift: 1-D float32 of size C on
//   the same device.
// Vectorisation: at::vec::Vectorized with ATen-style CPU_CAPABILITY dispatch. The kernel body
//   (bn_swish_kernel.h) is compiled three times: here for the compiler's default target (generic
//   at::vec, lowered to baseline SIMD), and on x86-64 in bn_swish_avx2.cpp / bn_swish_avx512.cpp
//   under `#pragma GCC target` (isa_target.h; no global -march flags, so the binary runs on any
//   x86-64). isa_dispatch.h picks the copy from at::get_cpu_capability(), i.e. what the CPU
//   supports, capped by ATEN_CPU_CAPABILITY=default|avx2|avx512 like ATen's own kernels. exp() is
//   a Cephes-style polynomial written with Vectorized arithmetic (fast in every copy).
// Threads: at::parallel_for (ATen's OpenMP backend; setup.py/CMake pass -fopenmp because
//   ATen's parallel_for is header-inline, without it the loop would run on one thread).
// Limits: no autograd kernel here (the formula is registered from Python); element counts are
//   int64; NaN/Inf propagate like x * sigmoid(x) except that v = -inf gives NaN (as PyTorch).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "op_checks.h"

#define D2C_ISA_NS cpu_default
#include "bn_swish_kernel.h"
#undef D2C_ISA_NS

#include "isa_dispatch.h"

namespace d2c_fast {

D2C_CPU_ISA_DISPATCH(bn_swish_kernel, BnSwishArgs)

namespace {

constexpr const char* kOp = "d2c_fast::bn_swish: ";

at::Tensor bn_swish_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  check_bn_swish_args(kOp, Backend{at::kCPU, /*half=*/true}, x, scale, shift);
  const BnSwishLayout l = bn_swish_layout(x);
  if (x.numel() == 0) return l.output.y;
  const at::Tensor s = scale.contiguous();
  const at::Tensor b = shift.contiguous();

  BnSwishArgs args;
  args.x = l.x.const_data_ptr();
  args.y = l.output.out.mutable_data_ptr();
  args.scale = s.const_data_ptr<float>();
  args.shift = b.const_data_ptr<float>();
  args.total = x.numel();
  args.C = x.size(1);
  args.hw = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  args.rows = l.rows;
  args.dtype = dtype_of(x);
  run_bn_swish_kernel(args);
  return l.output.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CPU, m) {
  m.impl("bn_swish", &bn_swish_cpu);
}

}  // namespace d2c_fast
