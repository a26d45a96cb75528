// AVX2 copy of the d2c_fast::se_residual CPU kernel: the body se_residual_kernel.h compiled
// under isa_target.h; se_residual.cpp calls it when isa_dispatch.h's cpu_isa() allows AVX2.
// On non-x86-64 or non-GCC-compatible compilers this file compiles to nothing.
#if defined(__x86_64__) && defined(__GNUC__)
#define D2C_ISA_TARGET_AVX2 1
#include "isa_target.h"
#include "se_residual_kernel.h"
#endif
