// Plain-C++ interface between the CUDA kernel (bn_swish.cu) and its ATen launcher
// (bn_swish_launch.cpp). Only <cuda_runtime.h> types, so both sides compile without each
// other's headers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// y[i] = swish(x[i] * scale[c] + shift[c]) with c = (i / inner) % C, over n elements.
// dtype: 0 float32, 1 bfloat16, 2 float16. Asynchronous on `stream`; returns the launch error.
cudaError_t d2c_bn_swish_cuda(const void* x, void* y, const float* scale, const float* shift,
                              int64_t n, int64_t C, int64_t inner, int dtype,
                              cudaStream_t stream);
