// CUDA kernel of d2c_fast::bn_swish: y = v * sigmoid(v), v = x * scale[c] + shift[c].
//
// Written against plain pointers and the CUDA headers only (no ATen/torch includes), so it can be
// compile-checked with a bare nvcc (scripts/check_cuda_compile.sh) even where torch is a CPU
// build. The ATen side (checks, allocation, stream, TORCH_LIBRARY_IMPL(d2c_fast, CUDA)) is
// csrc/cuda/bn_swish_launch.cpp, compiled only against a CUDA torch.
//
// Layouts: `inner` = H*W for contiguous NCHW (channel = (i / inner) % C) and 1 for channels-last
// or 2-D (channel = i % C). dtypes: float32, bfloat16, float16; arithmetic is float32,
// scale/shift are float32. Elementwise grid-stride loop, 64-bit indices; no vectorised loads
// (memory-bound; kept simple). Conversions and dtype dispatch: common.cuh.
#include <cuda_runtime.h>

#include <cstdint>

#include "bn_swish_kernel.cuh"
#include "common.cuh"

namespace {

using namespace d2c_fast::gpu;

template <typename T>
__global__ void bn_swish_kernel(const T* __restrict__ x, T* __restrict__ y,
                                const float* __restrict__ scale, const float* __restrict__ shift,
                                int64_t n, int64_t C, int64_t inner) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t c = (i / inner) % C;
    float v;
    IO<T, 1>::load(x + i, &v);
    v = swish(fmaf(v, __ldg(scale + c), __ldg(shift + c)));
    IO<T, 1>::store(y + i, &v);
  }
}

}  // namespace

cudaError_t d2c_bn_swish_cuda(const void* x, void* y, const float* scale, const float* shift,
                              int64_t n, int64_t C, int64_t inner, d2c_fast::DType dtype,
                              cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int kThreads = 256;
    bn_swish_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), scale, shift, n, C, inner);
    return cudaGetLastError();
  });
}
