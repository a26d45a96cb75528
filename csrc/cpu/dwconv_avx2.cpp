// AVX2 copy of the d2c_fast::dwconv_bias_swish CPU kernel (body: dwconv_kernel.h; entry point and
// dispatch: dwconv.cpp, which calls this copy only when at::get_cpu_capability() >= AVX2).
// The target switch is a pragma rather than a command-line flag because setuptools applies one
// set of flags to every source of an extension. Defining CPU_CAPABILITY / CPU_CAPABILITY_AVX2
// selects at::vec's AVX2 specialisations in ATen's per-capability namespace (at::vec::AVX2).
// On non-x86-64 or non-GCC-compatible compilers this file compiles to nothing.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c")
// GCC's target pragma enables code generation but not the feature macros that the torch /
// Sleef headers test, so define those too (matching the pragma's feature list).
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2 1
#define D2C_ISA_NS cpu_avx2
#include "dwconv_kernel.h"
#endif
