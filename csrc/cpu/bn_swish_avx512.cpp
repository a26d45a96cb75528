// AVX-512 copy of the d2c_fast::bn_swish CPU kernel: the body bn_swish_kernel.h compiled
// under isa_target.h; bn_swish.cpp calls it when isa_dispatch.h's cpu_isa() allows AVX-512.
// On non-x86-64 or non-GCC-compatible compilers this file compiles to nothing.
#if defined(__x86_64__) && defined(__GNUC__)
#define D2C_ISA_TARGET_AVX512 1
#include "isa_target.h"
#include "bn_swish_kernel.h"
#endif
