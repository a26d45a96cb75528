// Plain-C++ interface between the CUDA kernel (bn_swish.cu) and its ATen launcher
// (bn_swish_launch.cpp). Only <cuda_runtime.h> types and the DType code of dtypes.h, so both
// sides compile without each other's headers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtypes.h"

// y[i] = swish(x[i] * scale[c] + shift[c]) with c = (i / inner) % C, over n elements.
// x and y hold `dtype` data (float32, bfloat16 or float16). Asynchronous on `stream`; returns
// the launch error.
cudaError_t d2c_bn_swish_cuda(const void* x, void* y, const float* scale, const float* shift,
                              int64_t n, int64_t C, int64_t inner, d2c_fast::DType dtype,
                              cudaStream_t stream);
