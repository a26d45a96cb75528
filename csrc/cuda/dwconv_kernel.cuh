// Plain-C++ interface between the CUDA kernel of d2c_fast::dwconv_bias_swish (dwconv.cu) and its
// ATen launcher (dwconv_launch.cpp). Only <cuda_runtime.h> types and the DType code of dtypes.h,
// so both sides compile without each other's headers (same scheme as bn_swish_kernel.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtypes.h"

// Depthwise k x k convolution (groups == C, zero padding) + bias (+ Swish when `swish`):
//   v[n,oh,ow,c] = bias[c] + sum_{kh,kw} weight[c*k*k + kh*k + kw] * x[n, oh*s-p+kh*d, ow*s-p+kw*d, c]
//   y = swish ? v * sigmoid(v) : v
// x (N, H, W, C) and y (N, Ho, Wo, C) are channels-last CONTIGUOUS data of `dtype` (float32,
// bfloat16 or float16); weight (C, k*k) and bias (C,) float32 contiguous, all on the device of
// `stream`. Ho/Wo are the caller's standard conv output sizes (>= 1). Arithmetic is float32; y is
// rounded once. Asynchronous on `stream`; returns the launch error (cudaErrorInvalidValue for an
// unknown dtype or a non-positive k/stride/dilation or negative padding).
cudaError_t d2c_dwconv_bias_swish_cuda(const void* x, void* y, const float* weight,
                                       const float* bias, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t Ho, int64_t Wo, int64_t k,
                                       int64_t stride, int64_t padding, int64_t dilation,
                                       bool swish, d2c_fast::DType dtype, cudaStream_t stream);
