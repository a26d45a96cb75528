// AVX512 copy of the d2c_fast::dwconv_bias_swish CPU kernel (body: dwconv_kernel.h; entry point and
// dispatch: dwconv.cpp, which calls this copy only when at::get_cpu_capability() >= AVX512).
// The target switch is a pragma rather than a command-line flag because setuptools applies one
// set of flags to every source of an extension. Defining CPU_CAPABILITY / CPU_CAPABILITY_AVX512
// selects at::vec's AVX512 specialisations in ATen's per-capability namespace (at::vec::AVX512).
// On non-x86-64 or non-GCC-compatible compilers this file compiles to nothing.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
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
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512 1
#define D2C_ISA_NS cpu_avx512
#include "dwconv_kernel.h"
#endif
