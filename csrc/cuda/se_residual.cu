// CUDA kernels of d2c_fast::se_residual: out = skip + alpha * s * SE(s), SE = the squeeze-excitation
// gate sigmoid(w2 @ relu(w1 @ mean_hw(s) + b1) + b2) per image.
//
// Written against plain pointers and the CUDA headers only (no ATen/torch includes), so it can be
// compile-checked with a bare nvcc (scripts/check_cuda_compile.sh) even where torch is a CPU
// build. The ATen side (checks, layout, allocation of out and of the float32 workspace, stream,
// TORCH_LIBRARY_IMPL(d2c_fast, CUDA)) is csrc/cuda/se_residual_launch.cpp.
//
// Three kernels, one read of s for the means and one fused read of s + skip / write of out:
//   1. partial sums of s per (image, split, channel) in float32, deterministic (no atomics):
//      * channels-last (rows): block = (image, split of the H*W rows, window of up to 256
//        channel vectors); threads cover the window's channel vectors (VEC = 4 channels per
//        thread when C % 4 == 0 and the data are aligned) times 256 / window row groups, each
//        adding a strided subset of the split's rows; the row groups are then added in a fixed
//        order through shared memory. Consecutive threads read consecutive channel vectors of
//        one row (coalesced).
//      * NCHW: block = (plane n*C + c, split); vectorised along the contiguous plane
//        (H*W % 4 == 0), tree reduction in shared memory.
//      The number of splits depends on (N, C, H*W, layout) only (d2c_se_residual_cuda_workspace
//      sizes the buffer from the same formula), aiming at ~2048 blocks, at most 128 splits.
//   2. the gate, one block per image: mean[c] = sum of the partials in split order / (H*W), then
//      FC1 (groups of 32 threads per hidden unit, coalesced rows of w1, shared-memory tree), ReLU,
//      FC2 (one thread per channel), sigmoid, times alpha, all float32; gate[n, c] in the
//      workspace.
//   3. out = skip + gate[n, c] * s, grid-stride, VEC = 4 elements per thread (channels-last:
//      C % 4 == 0, 4 gates per vector; NCHW: H*W % 4 == 0, one gate per vector) when aligned,
//      else scalar. float32 arithmetic, one rounding on store.
// dtypes: float32, bfloat16, float16 (conversions and dtype dispatch: common.cuh). Only dynamic
// (extern) shared memory and block-wide barriers are used (no warp intrinsics).
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "se_residual_kernel.cuh"

namespace {

using namespace d2c_fast::gpu;

constexpr int kThreads = 256;
constexpr int64_t kTargetBlocks = 2048;
constexpr int64_t kMaxSplits = 128;

struct SeParams {
  const void* s;
  const void* skip;
  void* out;
  const float* w1;   // (Ch, C)
  const float* b1;   // (Ch,)
  const float* w2;   // (C, Ch)
  const float* b2;   // (C,)
  float* partial;    // (N, nsplit, C)
  float* hid;        // (N, Ch)
  float* gate;       // (N, C): the means, then alpha * gate
  int64_t N, HW;
  int C, Ch;
  int nsplit;
  int64_t rows_per;  // rows (channels-last) or elements (NCHW) per split
  float alpha;
};

extern __shared__ __align__(16) float d2c_se_smem[];

// --- 1a. partial sums, channels-last ------------------------------------------------------------
// Grid: nchb * nsplit * N blocks (channel window fastest); blockDim.x == kThreads.
template <typename T, int VEC>
__global__ void se_sum_rows_kernel(const SeParams p) {
  float* red = d2c_se_smem;  // [kThreads][VEC]
  const int cvt = p.C / VEC;
  const int nchb = (cvt + kThreads - 1) / kThreads;
  int64_t bid = blockIdx.x;
  const int cb = static_cast<int>(bid % nchb);
  bid /= nchb;
  const int sp = static_cast<int>(bid % p.nsplit);
  const int64_t n = bid / p.nsplit;
  const int v0 = cb * kThreads;
  const int wb = min(kThreads, cvt - v0);   // channel vectors in this window
  const int groups = kThreads / wb;         // row groups
  const int tid = threadIdx.x;
  const int rg = tid / wb, cv = tid - rg * wb;
  float acc[VEC];
#pragma unroll
  for (int l = 0; l < VEC; ++l) acc[l] = 0.0f;
  const int64_t r0 = sp * p.rows_per;
  const int64_t r1 = min(p.HW, r0 + p.rows_per);
  if (rg < groups) {
    const T* src = static_cast<const T*>(p.s) + (n * p.HW) * p.C + static_cast<int64_t>(v0 + cv) * VEC;
    for (int64_t r = r0 + rg; r < r1; r += groups) {
      float v[VEC];
      IO<T, VEC>::load(src + r * p.C, v);
#pragma unroll
      for (int l = 0; l < VEC; ++l) acc[l] += v[l];
    }
  }
#pragma unroll
  for (int l = 0; l < VEC; ++l) red[tid * VEC + l] = acc[l];
  __syncthreads();
  if (tid < wb) {
    float sum[VEC];
#pragma unroll
    for (int l = 0; l < VEC; ++l) sum[l] = 0.0f;
    for (int g = 0; g < groups; ++g) {
#pragma unroll
      for (int l = 0; l < VEC; ++l) sum[l] += red[(g * wb + tid) * VEC + l];
    }
    float* dst = p.partial + (n * p.nsplit + sp) * p.C + static_cast<int64_t>(v0 + tid) * VEC;
#pragma unroll
    for (int l = 0; l < VEC; ++l) dst[l] = sum[l];
  }
}

// --- 1b. partial sums, NCHW ---------------------------------------------------------------------
// Grid: N * C * nsplit blocks (split fastest); blockDim.x a power of two <= kThreads.
template <typename T, int VEC>
__global__ void se_sum_planes_kernel(const SeParams p) {
  float* red = d2c_se_smem;  // [blockDim.x]
  const int64_t bid = blockIdx.x;
  const int sp = static_cast<int>(bid % p.nsplit);
  const int64_t plane = bid / p.nsplit;
  const int64_t n = plane / p.C;
  const int c = static_cast<int>(plane - n * p.C);
  const int tid = threadIdx.x;
  const int64_t e0 = sp * p.rows_per;
  const int64_t e1 = min(p.HW, e0 + p.rows_per);
  const T* src = static_cast<const T*>(p.s) + plane * p.HW;
  float acc = 0.0f;
  for (int64_t e = e0 + static_cast<int64_t>(tid) * VEC; e < e1; e += static_cast<int64_t>(blockDim.x) * VEC) {
    float v[VEC];
    IO<T, VEC>::load(src + e, v);
#pragma unroll
    for (int l = 0; l < VEC; ++l) acc += v[l];
  }
  red[tid] = acc;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (tid < off) red[tid] += red[tid + off];
    __syncthreads();
  }
  if (tid == 0) p.partial[(n * p.nsplit + sp) * p.C + c] = red[0];
}

// --- 2. the gate, one block per image -----------------------------------------------------------
// blockDim.x == kThreads (8 groups of 32 threads for FC1).
__global__ void se_gate_kernel(const SeParams p) {
  float* red = d2c_se_smem;  // [kThreads]
  const int64_t n = blockIdx.x;
  const int tid = threadIdx.x;
  float* mean = p.gate + n * p.C;  // the means live in the gate row until FC2 overwrites it
  float* hid = p.hid + n * p.Ch;
  const float inv_hw = 1.0f / static_cast<float>(p.HW);
  for (int c = tid; c < p.C; c += kThreads) {
    float sum = 0.0f;
    for (int sp = 0; sp < p.nsplit; ++sp) sum += p.partial[(n * p.nsplit + sp) * p.C + c];
    mean[c] = sum * inv_hw;
  }
  __syncthreads();
  constexpr int kGroup = 32;
  constexpr int kGroups = kThreads / kGroup;
  const int g = tid / kGroup, lane = tid - g * kGroup;
  for (int j0 = 0; j0 < p.Ch; j0 += kGroups) {
    const int j = j0 + g;
    float a = 0.0f;
    if (j < p.Ch) {
      const float* wrow = p.w1 + static_cast<int64_t>(j) * p.C;
      for (int c = lane; c < p.C; c += kGroup) a = fmaf(__ldg(wrow + c), mean[c], a);
    }
    red[tid] = a;
    __syncthreads();
    for (int off = kGroup / 2; off > 0; off >>= 1) {
      if (lane < off) red[tid] += red[tid + off];
      __syncthreads();
    }
    if (lane == 0 && j < p.Ch) hid[j] = fmaxf(red[tid] + __ldg(p.b1 + j), 0.0f);
    __syncthreads();
  }
  for (int c = tid; c < p.C; c += kThreads) {
    const float* wrow = p.w2 + static_cast<int64_t>(c) * p.Ch;
    float a = __ldg(p.b2 + c);
    for (int j = 0; j < p.Ch; ++j) a = fmaf(__ldg(wrow + j), hid[j], a);
    mean[c] = p.alpha / (1.0f + expf(-a));
  }
}

// --- 3. out = skip + gate * s -------------------------------------------------------------------
template <typename T, int VEC, bool ROWS>
__global__ void se_apply_kernel(const SeParams p) {
  const T* s = static_cast<const T*>(p.s);
  const T* k = static_cast<const T*>(p.skip);
  T* out = static_cast<T*>(p.out);
  const int64_t total = p.N * p.C * p.HW;
  const int64_t nvec = total / VEC;
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < nvec;
       v += step) {
    const int64_t i = v * VEC;
    float g[VEC];
    if constexpr (ROWS) {
      const int64_t c = i % p.C;
      const int64_t n = i / (p.HW * p.C);
      load_floats<VEC>(p.gate + n * p.C + c, g);
    } else {
      const float gv = p.gate[i / p.HW];
#pragma unroll
      for (int l = 0; l < VEC; ++l) g[l] = gv;
    }
    float sv[VEC], kv[VEC];
    IO<T, VEC>::load(s + i, sv);
    IO<T, VEC>::load(k + i, kv);
#pragma unroll
    for (int l = 0; l < VEC; ++l) kv[l] = fmaf(g[l], sv[l], kv[l]);
    IO<T, VEC>::store(out + i, kv);
  }
}

// --- host side ----------------------------------------------------------------------------------
int64_t round4(int64_t v) { return (v + 3) / 4 * 4; }

int64_t num_splits(int64_t N, int64_t C, int64_t HW, bool rows) {
  int64_t per_split, cap;
  if (rows) {
    per_split = N * ((C + kThreads - 1) / kThreads);  // blocks per split (channel windows, VEC = 1)
    cap = (HW + 31) / 32;                               // >= 32 rows per split
  } else {
    per_split = N * C;
    cap = (HW + 1023) / 1024;                           // >= 1024 elements per split
  }
  int64_t ns = (kTargetBlocks + per_split - 1) / per_split;
  if (ns > cap) ns = cap;
  if (ns > kMaxSplits) ns = kMaxSplits;
  return ns < 1 ? 1 : ns;
}

int64_t rows_per_split(int64_t HW, int64_t nsplit, bool rows) {
  const int64_t r = (HW + nsplit - 1) / nsplit;
  return rows ? r : round4(r);  // NCHW splits start on 4-element boundaries
}

template <typename T>
cudaError_t run(SeParams& p, bool rows, cudaStream_t stream) {
  const bool aligned = aligned4<T>(p.s) && aligned4<T>(p.skip) && aligned4<T>(p.out);
  const bool vec = aligned && (rows ? p.C % 4 == 0 : p.HW % 4 == 0);
  // 1. partial sums
  if (rows) {
    const int cvt = vec ? p.C / 4 : p.C;
    const int64_t blocks = static_cast<int64_t>((cvt + kThreads - 1) / kThreads) * p.nsplit * p.N;
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
    const dim3 grid(static_cast<unsigned>(blocks));
    const dim3 block(kThreads);
    if (vec) {
      se_sum_rows_kernel<T, 4><<<grid, block, kThreads * 4 * sizeof(float), stream>>>(p);
    } else {
      se_sum_rows_kernel<T, 1><<<grid, block, kThreads * sizeof(float), stream>>>(p);
    }
  } else {
    const int64_t blocks = p.N * p.C * p.nsplit;
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
    const int64_t per_thread = vec ? 4 : 1;
    int threads = 32;
    while (threads < kThreads && static_cast<int64_t>(threads) * per_thread < p.rows_per) threads *= 2;
    const dim3 grid(static_cast<unsigned>(blocks));
    const dim3 block(threads);
    if (vec) {
      se_sum_planes_kernel<T, 4><<<grid, block, threads * sizeof(float), stream>>>(p);
    } else {
      se_sum_planes_kernel<T, 1><<<grid, block, threads * sizeof(float), stream>>>(p);
    }
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  // 2. gate
  if (p.N > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  {
    const dim3 grid(static_cast<unsigned>(p.N));
    const dim3 block(kThreads);
    se_gate_kernel<<<grid, block, kThreads * sizeof(float), stream>>>(p);
  }
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  // 3. apply
  {
    const int64_t nvec = p.N * p.C * p.HW / (vec ? 4 : 1);
    const dim3 grid(grid_stride_blocks(nvec, kThreads));
    const dim3 block(kThreads);
    if (rows) {
      if (vec) {
        se_apply_kernel<T, 4, true><<<grid, block, 0, stream>>>(p);
      } else {
        se_apply_kernel<T, 1, true><<<grid, block, 0, stream>>>(p);
      }
    } else {
      if (vec) {
        se_apply_kernel<T, 4, false><<<grid, block, 0, stream>>>(p);
      } else {
        se_apply_kernel<T, 1, false><<<grid, block, 0, stream>>>(p);
      }
    }
  }
  return cudaGetLastError();
}

}  // namespace

int64_t d2c_se_residual_cuda_workspace(int64_t N, int64_t C, int64_t HW, int64_t Ch, bool rows) {
  const int64_t ns = num_splits(N, C, HW, rows);
  return round4(N * ns * C) + round4(N * Ch) + N * C;
}

cudaError_t d2c_se_residual_cuda(const void* s, const void* skip, void* out, const float* w1,
                                 const float* b1, const float* w2, const float* b2, int64_t N,
                                 int64_t C, int64_t HW, int64_t Ch, double alpha, bool rows,
                                 d2c_fast::DType dtype, float* workspace,
                                 cudaStream_t stream) {
  if (C > 0x7fffffffLL || Ch > 0x7fffffffLL || Ch < 1) return cudaErrorInvalidValue;
  if (N <= 0 || C <= 0 || HW <= 0) return cudaSuccess;
  SeParams p{};
  p.s = s; p.skip = skip; p.out = out;
  p.w1 = w1; p.b1 = b1; p.w2 = w2; p.b2 = b2;
  p.N = N; p.HW = HW;
  p.C = static_cast<int>(C); p.Ch = static_cast<int>(Ch);
  p.nsplit = static_cast<int>(num_splits(N, C, HW, rows));
  p.rows_per = rows_per_split(HW, p.nsplit, rows);
  p.alpha = static_cast<float>(alpha);
  p.partial = workspace;
  p.hid = workspace + round4(N * p.nsplit * C);
  p.gate = p.hid + round4(N * Ch);
  return dispatch_dtype(dtype, [&](auto tag) {
    return run<typename decltype(tag)::type>(p, rows, stream);
  });
}
