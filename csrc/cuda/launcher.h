// ATen-side helpers of the CUDA launchers (csrc/cuda/*_launch.cpp): the stream the kernels are
// queued on and the check of their launch error. Compiled only against a CUDA build of torch.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>

namespace d2c_fast {

// The current CUDA stream of t's device (what torch's own kernels and CUDA graphs use).
inline cudaStream_t stream_of(const at::Tensor& t) {
  return at::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// Raises (TORCH_CHECK) naming `op` when a plain-pointer entry point reports a launch error.
inline void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, "CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace d2c_fast
