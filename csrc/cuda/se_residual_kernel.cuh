// Plain-C++ interface between the CUDA kernels of d2c_fast::se_residual (se_residual.cu) and its
// ATen launcher (se_residual_launch.cpp). Only <cuda_runtime.h> types and the DType code of
// dtypes.h, so both sides compile without each other's headers (same scheme as
// bn_swish_kernel.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtypes.h"

// Float32 workspace (number of floats) that d2c_se_residual_cuda needs for these sizes: the
// per-(image, split, channel) partial sums, the per-image hidden layer and the gate.
int64_t d2c_se_residual_cuda_workspace(int64_t N, int64_t C, int64_t HW, int64_t Ch, bool rows);

// out = skip + alpha * s * sigmoid(w2 @ relu(w1 @ mean_hw(s[n]) + b1) + b2)[n, c].
// s, skip, out: the same layout, contiguous: rows == true: channels-last (N, H*W, C);
// rows == false: NCHW (N, C, H*W). `dtype`: float32, bfloat16 or float16 (all three).
// w1 (Ch, C), b1 (Ch,), w2 (C, Ch), b2 (C,) float32 contiguous. `workspace`: at least
// d2c_se_residual_cuda_workspace(N, C, HW, Ch, rows) floats of device memory, 16-byte aligned
// (overwritten). Three kernels on `stream`: per-(n, c) partial sums, the two FCs (one block per
// image), the fused elementwise pass. Asynchronous; returns the first launch error.
cudaError_t d2c_se_residual_cuda(const void* s, const void* skip, void* out, const float* w1,
                                 const float* b1, const float* w2, const float* b2, int64_t N,
                                 int64_t C, int64_t HW, int64_t Ch, double alpha, bool rows,
                                 d2c_fast::DType dtype, float* workspace, cudaStream_t stream);
