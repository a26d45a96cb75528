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
//   under `#pragma GCC target` (no global -march flags, so the binary runs on any x86-64). The
//   copy is chosen per call from at::get_cpu_capability(), i.e. what the CPU supports, capped by
//   ATEN_CPU_CAPABILITY=default|avx2|avx512 like ATen's own kernels. exp() is a Cephes-style
//   polynomial written with Vectorized arithmetic (fast in every copy).
// Threads: at::parallel_for (ATen's OpenMP backend; setup.py/CMake pass -fopenmp because
//   ATen's parallel_for is header-inline, without it the loop would run on one thread).
// Limits: no autograd kernel here (the formula is registered from Python); element counts are
//   int64; NaN/Inf propagate like x * sigmoid(x) except that v = -inf gives NaN (as PyTorch).
#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <torch/library.h>

#define D2C_ISA_NS cpu_default
#include "bn_swish_kernel.h"
#undef D2C_ISA_NS

#if defined(__x86_64__) && defined(__GNUC__)
#define D2C_X86_ISA_COPIES 1
namespace d2c_fast {
namespace cpu_avx2 { void bn_swish_kernel(const BnSwishArgs& a); }
namespace cpu_avx512 { void bn_swish_kernel(const BnSwishArgs& a); }
}  // namespace d2c_fast
#endif

namespace d2c_fast {
namespace {

#ifdef D2C_X86_ISA_COPIES
// 0: generic, 1: AVX2, 2: AVX-512, from ATen's view of the CPU (at::get_cpu_capability() is
// "DEFAULT" / "AVX2" / "AVX512", already capped by ATEN_CPU_CAPABILITY). Read once per process.
int cpu_capability_level() {
  const std::string cap = at::get_cpu_capability();
  if (cap == "AVX512") return 2;
  if (cap == "AVX2") return 1;
  return 0;
}
#endif

void check_inputs(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  TORCH_CHECK(x.dim() == 4 || x.dim() == 2,
              "d2c_fast::bn_swish: x must be 4-D (N, C, H, W) or 2-D (N, C), got ", x.dim(),
              "-D tensor of shape ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "d2c_fast::bn_swish (CPU kernel): x must be on CPU, got ",
              x.device());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
              "d2c_fast::bn_swish: x must be float32, bfloat16 or float16, got ", dt);
  const int64_t C = x.size(1);
  auto check_param = [&](const char* name, const at::Tensor& t) {
    TORCH_CHECK(t.dim() == 1, "d2c_fast::bn_swish: ", name, " must be 1-D of size C=", C,
                ", got shape ", t.sizes());
    TORCH_CHECK(t.size(0) == C, "d2c_fast::bn_swish: ", name, " has ", t.size(0),
                " channels but x has C=", C, " (dim 1 of shape ", x.sizes(), ")");
    TORCH_CHECK(t.scalar_type() == at::kFloat, "d2c_fast::bn_swish: ", name,
                " must be float32, got ", t.scalar_type());
    TORCH_CHECK(t.device() == x.device(), "d2c_fast::bn_swish: ", name, " is on ", t.device(),
                " but x is on ", x.device());
  };
  check_param("scale", scale);
  check_param("shift", shift);
}

at::Tensor bn_swish_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  check_inputs(x, scale, shift);
  // Same strides as the fake implementation: torch.empty_like(x) (preserve_format).
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;

  const at::Tensor s = scale.contiguous();
  const at::Tensor b = shift.contiguous();
  const int64_t C = x.size(1);
  const int64_t total = x.numel();

  bool rows = false;
  at::Tensor xc = x;
  if (x.is_contiguous()) {
    rows = x.dim() == 2 || x.size(2) * x.size(3) == 1;
  } else if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    rows = true;
  } else {
    const auto fmt = x.suggest_memory_format();
    xc = x.contiguous(fmt);
    rows = fmt == at::MemoryFormat::ChannelsLast;
  }
  // If y's strides differ from xc's (x was a non-contiguous dense permutation), compute into a
  // temporary in xc's layout and copy back.
  at::Tensor yc = y.strides() == xc.strides() ? y : at::empty_like(xc);
  const int64_t hw = x.dim() == 4 ? x.size(2) * x.size(3) : 1;

  BnSwishArgs args;
  args.x = xc.const_data_ptr();
  args.y = yc.mutable_data_ptr();
  args.scale = s.const_data_ptr<float>();
  args.shift = b.const_data_ptr<float>();
  args.total = total;
  args.C = C;
  args.hw = hw;
  args.rows = rows;
  args.dtype = xc.scalar_type() == at::kFloat ? 0 : xc.scalar_type() == at::kBFloat16 ? 1 : 2;
#ifdef D2C_X86_ISA_COPIES
  static const int cap = cpu_capability_level();
  if (cap >= 2) {
    cpu_avx512::bn_swish_kernel(args);
  } else if (cap >= 1) {
    cpu_avx2::bn_swish_kernel(args);
  } else {
    cpu_default::bn_swish_kernel(args);
  }
#else
  cpu_default::bn_swish_kernel(args);
#endif
  if (!yc.is_same(y)) y.copy_(yc);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2c_fast, CPU, m) {
  m.impl("bn_swish", &bn_swish_cpu);
}

}  // namespace d2c_fast
