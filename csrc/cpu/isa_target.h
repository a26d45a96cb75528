// Switches the rest of the including translation unit to AVX2 or AVX-512 code generation and
// selects at::vec's specialisations for it (ATen's per-capability namespaces at::vec::AVX2 /
// at::vec::AVX512). A per-ISA copy of a kernel (<op>_avx2.cpp, <op>_avx512.cpp) defines
// D2C_ISA_TARGET_AVX2 or D2C_ISA_TARGET_AVX512, includes this header FIRST inside
// `#if defined(__x86_64__) && defined(__GNUC__)`, then the kernel body, which lands in namespace
// D2C_ISA_NS (cpu_avx2 / cpu_avx512); isa_dispatch.h picks the copy at run time.
// The switch is a pragma rather than a command-line flag because setuptools applies one set of
// flags to every source of an extension. GCC's target pragma enables code generation but not the
// feature macros that the torch / Sleef headers test, so those are defined too (matching the
// pragma's feature list).
#pragma once

#if defined(D2C_ISA_TARGET_AVX512)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
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
#elif defined(D2C_ISA_TARGET_AVX2)
#pragma GCC target("avx2,fma,f16c")
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2 1
#define D2C_ISA_NS cpu_avx2
#else
#error "define D2C_ISA_TARGET_AVX2 or D2C_ISA_TARGET_AVX512 before including isa_target.h"
#endif

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
