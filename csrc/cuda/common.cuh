// Device helpers shared by the CUDA kernels (csrc/cuda/*.cu): element conversion between the
// activation dtypes and float32, the dtype dispatch of the plain-pointer entry points, Swish and
// the grid size of grid-stride loops. CUDA headers only (no ATen), like the kernels.
//
// Conversions use only explicit intrinsics and bit manipulation, so they compile under torch's
// -D__CUDA_NO_HALF_OPERATORS__ / -D__CUDA_NO_HALF_CONVERSIONS__ /
// -D__CUDA_NO_BFLOAT16_CONVERSIONS__ flags. Loads go through the read-only cache (__ldg).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dtypes.h"

namespace d2c_fast {
namespace gpu {

// --- element conversion ------------------------------------------------------------------------
// One 16-bit value, as the low 16 bits of an unsigned, <-> float.
template <typename T> struct Bits16;

template <> struct Bits16<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(unsigned u) {
    return __uint_as_float((u & 0xffffu) << 16);
  }
  static __device__ __forceinline__ unsigned from_float(float f) {
    return static_cast<unsigned>(__bfloat16_as_ushort(__float2bfloat16_rn(f)));
  }
};
template <> struct Bits16<__half> {
  static __device__ __forceinline__ float to_float(unsigned u) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(u & 0xffffu)));
  }
  static __device__ __forceinline__ unsigned from_float(float f) {
    return static_cast<unsigned>(__half_as_ushort(__float2half_rn(f)));
  }
};

// VEC (1 or 4) consecutive values of T <-> float, rounded to nearest on store. VEC = 4 is one
// 16-byte (float) or 8-byte (bfloat16 / float16) access: the pointer must be aligned to it.
template <typename T, int VEC>
struct IO {
  static_assert(VEC == 1 || VEC == 4, "IO: VEC must be 1 or 4");
  using B = Bits16<T>;
  static __device__ __forceinline__ void load(const T* p, float* v) {
    if constexpr (VEC == 4) {
      const uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
      v[0] = B::to_float(q.x); v[1] = B::to_float(q.x >> 16);
      v[2] = B::to_float(q.y); v[3] = B::to_float(q.y >> 16);
    } else {
      v[0] = B::to_float(__ldg(reinterpret_cast<const unsigned short*>(p)));
    }
  }
  static __device__ __forceinline__ void store(T* p, const float* v) {
    if constexpr (VEC == 4) {
      uint2 q;
      q.x = B::from_float(v[0]) | (B::from_float(v[1]) << 16);
      q.y = B::from_float(v[2]) | (B::from_float(v[3]) << 16);
      *reinterpret_cast<uint2*>(p) = q;
    } else {
      *reinterpret_cast<unsigned short*>(p) = static_cast<unsigned short>(B::from_float(v[0]));
    }
  }
};

template <int VEC>
struct IO<float, VEC> {
  static_assert(VEC == 1 || VEC == 4, "IO: VEC must be 1 or 4");
  static __device__ __forceinline__ void load(const float* p, float* v) {
    if constexpr (VEC == 4) {
      const float4 q = __ldg(reinterpret_cast<const float4*>(p));
      v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    } else {
      v[0] = __ldg(p);
    }
  }
  static __device__ __forceinline__ void store(float* p, const float* v) {
    if constexpr (VEC == 4) {
      *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      p[0] = v[0];
    }
  }
};

// VEC floats from memory the kernel itself wrote (shared memory, a workspace): a plain load,
// 16-byte aligned when VEC == 4.
template <int VEC>
__device__ __forceinline__ void load_floats(const float* p, float* v) {
  if constexpr (VEC == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
  } else {
#pragma unroll
    for (int l = 0; l < VEC; ++l) v[l] = p[l];
  }
}

// True when `p` may be read as vectors of 4 elements of T.
template <typename T>
__host__ __device__ __forceinline__ bool aligned4(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0;
}

// Swish v * sigmoid(v) = v / (1 + exp(-v)) in float32 (expf: ~1 ulp; the kernels are
// memory-bound).
__device__ __forceinline__ float swish(float v) { return v / (1.0f + expf(-v)); }

// --- host side ---------------------------------------------------------------------------------
// Blocks for a grid-stride loop over `n` items with `threads` per block: enough for one item per
// thread, capped (the loop covers the rest), at least 1.
inline unsigned grid_stride_blocks(int64_t n, int threads) {
  constexpr int64_t kMaxBlocks = 65535LL * 8;
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

template <typename T> struct TypeTag { using type = T; };

// Calls f(TypeTag<T>{}) with T the CUDA element type of `dtype` (float, __nv_bfloat16 or __half)
// and returns its result; cudaErrorInvalidValue for a code outside the enum.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(TypeTag<float>{});
    case DType::kBFloat16: return f(TypeTag<__nv_bfloat16>{});
    case DType::kFloat16: return f(TypeTag<__half>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace gpu
}  // namespace d2c_fast
