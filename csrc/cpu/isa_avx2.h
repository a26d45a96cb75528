// Switches the rest of the including translation unit to AVX2 code generation and selects
// at::vec's AVX2 specialisations (ATen's per-capability namespace at::vec::AVX2). Include it
// FIRST in a per-ISA copy of a kernel, inside `#if defined(__x86_64__) && defined(__GNUC__)`,
// then include the kernel body. The switch is a pragma rather than a command-line flag because
// setuptools applies one set of flags to every source of an extension. GCC's target pragma
// enables code generation but not the feature macros that the torch / Sleef headers test, so
// those are defined too (matching the pragma's feature list).
#pragma once
#pragma GCC target("avx2,fma,f16c")
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
