// AVX2 copy of the d2c_fast::se_residual CPU kernel (body: se_residual_kernel.h; entry point and dispatch:
// se_residual.cpp, which calls this copy only when at::get_cpu_capability() >= AVX2).
// On non-x86-64 or non-GCC-compatible compilers this file compiles to nothing.
#if defined(__x86_64__) && defined(__GNUC__)
#include "isa_avx2.h"
#include "se_residual_kernel.h"
#endif
