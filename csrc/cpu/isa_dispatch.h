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

#include <cstdlib>
#include <string>

namespace d2c_fast {

enum class CpuIsa : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

// What the processor itself runs. ATEN_CPU_CAPABILITY=avx512 makes at::get_cpu_capability()
// say "AVX512" even on a CPU without it (torch 2.13 does not check), so the hardware is asked
// too: AVX-512 copies need F/BW/VL/DQ (what ATen's AVX512 build uses), AVX2 copies AVX2 + FMA.
inline CpuIsa hardware_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kDefault;
}

// The widest copy to run: ATen's view (at::get_cpu_capability(): "DEFAULT" / "AVX2" /
// "AVX512", capped by ATEN_CPU_CAPABILITY=default|avx2|avx512 like ATen's own kernels), never
// wider than the hardware. Read once per process.
// D2C_FAST_CPU_ISA=default|avx2|avx512 caps the copies of this library alone (tests compare
// the copies without pushing ATen's own kernels onto an ISA the CPU lacks).
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    auto parse = [](const std::string& cap) {
      if (cap == "AVX512" || cap == "avx512") return CpuIsa::kAvx512;
      if (cap == "AVX2" || cap == "avx2") return CpuIsa::kAvx2;
      return CpuIsa::kDefault;
    };
    auto narrower = [](CpuIsa a, CpuIsa b) {
      return static_cast<int>(a) < static_cast<int>(b) ? a : b;
    };
    CpuIsa isa = narrower(parse(at::get_cpu_capability()), hardware_isa());
    if (const char* own = std::getenv("D2C_FAST_CPU_ISA")) isa = narrower(isa, parse(own));
    return isa;
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
