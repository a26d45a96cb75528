// AVX512 copy of the d2c_fast::mbconv CPU kernel (body: mbconv_kernel.h; entry point and dispatch:
// mbconv.cpp, which calls this copy only when at::get_cpu_capability() >= AVX512).
// On non-x86-64 or non-GCC-compatible compilers this file compiles to nothing.
#if defined(__x86_64__) && defined(__GNUC__)
#include "isa_avx512.h"
#include "mbconv_kernel.h"
#endif
