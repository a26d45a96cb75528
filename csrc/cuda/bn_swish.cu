// CUDA kernel of d2c_fast::bn_swish: y = v * sigmoid(v), v = x * scale[c] + shift[c].
//
// Written against plain pointers and the CUDA headers only (no ATen/torch includes), so it can be
// compile-checked with a bare nvcc (scripts/check_cuda_compile.sh) even where torch is a CPU
// build. The ATen side (checks, allocation, stream, TORCH_LIBRARY_IMPL(d2c_fast, CUDA)) is
// csrc/cuda/bn_swish_launch.cpp, compiled only against a CUDA torch.
//
// Layouts: `inner` = H*W for contiguous NCHW (channel = (i / inner) % C) and 1 for channels-last
// or 2-D (channel = i % C). dtypes: float32, bfloat16, float16 (dtype code 0/1/2); arithmetic is
// float32, scale/shift are float32. Elementwise grid-stride loop, 64-bit indices; no
// vectorised loads (memory-bound; kept simple). Works with torch's
// -D__CUDA_NO_HALF_OPERATORS__/-D__CUDA_NO_BFLOAT16_CONVERSIONS__ flags: only explicit
// conversion intrinsics are used.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "bn_swish_kernel.cuh"

namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

template <typename T>
__global__ void bn_swish_kernel(const T* __restrict__ x, T* __restrict__ y,
                                const float* __restrict__ scale, const float* __restrict__ shift,
                                int64_t n, int64_t C, int64_t inner) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t c = (i / inner) % C;
    const float v = fmaf(to_float(x[i]), __ldg(scale + c), __ldg(shift + c));
    y[i] = from_float<T>(v / (1.0f + expf(-v)));
  }
}

template <typename T>
cudaError_t launch(const void* x, void* y, const float* scale, const float* shift, int64_t n,
                   int64_t C, int64_t inner, cudaStream_t stream) {
  constexpr int kThreads = 256;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  const int64_t kMaxBlocks = 65535LL * 8;  // grid-stride loop covers the rest
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  if (blocks < 1) blocks = 1;
  bn_swish_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<T*>(y), scale, shift, n, C, inner);
  return cudaGetLastError();
}

}  // namespace

cudaError_t d2c_bn_swish_cuda(const void* x, void* y, const float* scale, const float* shift,
                              int64_t n, int64_t C, int64_t inner, int dtype,
                              cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  switch (dtype) {
    case 0: return launch<float>(x, y, scale, shift, n, C, inner, stream);
    case 1: return launch<__nv_bfloat16>(x, y, scale, shift, n, C, inner, stream);
    case 2: return launch<__half>(x, y, scale, shift, n, C, inner, stream);
    default: return cudaErrorInvalidValue;
  }
}
