// Run-time choice among the per-ISA copies of a CPU kernel, the one place where the CPU's
// capability is tested. Every op's kernel body (<op>_kernel.h) is compiled three times: by the
// op's entry point <op>.cpp for the compiler's default target (namespace cpu_default), and on
// x86-64 with GCC/Clang by <op>_avx2.cpp and <op>_avx512.cpp under isa_target.h (namespaces
// cpu_avx2, cpu_avx512). The entry point includes this header (never a per-ISA copy does) and
// writes, inside namespace d2c_fast,
//     D2C_CPU_ISA_DISPATCH(bn_swish_kernel, BnSwishArgs)
// which declares the two x86 copies and defines `void run_bn_swish_kernel(const BnSwishArgs&)`,
// calling the copy that cpu_isa() picks (the generic one elsewhere).
#pragma once

#include <ATen/Version.h>

#include <string>

namespace d2c_fast {

enum class CpuIsa : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest copy this CPU may run, from ATen's view of it: at::get_cpu_capability() is
// "DEFAULT" / "AVX2" / "AVX512", already capped by ATEN_CPU_CAPABILITY=default|avx2|avx512 like
// ATen's own kernels. Read once per process.
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    const std::string cap = at::get_cpu_capability();
    if (cap == "AVX512") return CpuIsa::kAvx512;
    if (cap == "AVX2") return CpuIsa::kAvx2;
    return CpuIsa::kDefault;
  }();
  return isa;
}

}  // namespace d2c_fast

#if defined(__x86_64__) && defined(__GNUC__)
#define D2C_CPU_ISA_DISPATCH(kernel, Args)                \
  namespace cpu_avx2 { void kernel(const Args& a); }      \
  namespace cpu_avx512 { void kernel(const Args& a); }    \
  inline void run_##kernel(const Args& a) {               \
    switch (cpu_isa()) {                                  \
      case CpuIsa::kAvx512: cpu_avx512::kernel(a); break; \
      case CpuIsa::kAvx2: cpu_avx2::kernel(a); break;     \
      default: cpu_default::kernel(a); break;             \
    }                                                     \
  }
#else
#define D2C_CPU_ISA_DISPATCH(kernel, Args) \
  inline void run_##kernel(const Args& a) { cpu_default::kernel(a); }
#endif
