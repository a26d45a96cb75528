// CUDA kernel of d2c_fast::dwconv_bias_swish: depthwise k x k conv + bias (+ Swish), channels-last.
//
// Written against plain pointers and the CUDA headers only (no ATen/torch includes), so it can be
// compile-checked with a bare nvcc (scripts/check_cuda_compile.sh) even where torch is a CPU
// build. The ATen side (checks, layout, allocation, stream, TORCH_LIBRARY_IMPL(d2c_fast, CUDA)) is
// csrc/cuda/dwconv_launch.cpp, compiled only against a CUDA torch. NCHW inputs are converted to
// channels-last by the launcher (one extra pass each way, like the CPU kernel); this file only
// sees (N, H, W, C) contiguous x and (N, Ho, Wo, C) contiguous y.
//
// Tiled kernel (dw_tile_kernel), the normal path:
//   * one thread block = one image x one output tile of TH x TW pixels x one chunk of kChunk = 32
//     channels. The block first stages the input tile with its halo, IH x IW pixels
//     (IH = (TH-1)*s + (k-1)*d + 1), as float32 in shared memory ([pixel][32 channels]; outside
//     the image and past C: zeros, which is the zero padding), and the chunk's weights transposed
//     to [k*k][32]. Global loads are vectorised along C: VEC = 4 channels per thread (16 bytes
//     for float32, 8 bytes for bfloat16/float16) when C % 4 == 0 and x/y are aligned to
//     4 elements, else VEC = 1. Consecutive threads read consecutive vectors of one pixel, so a
//     pixel's 32 channels are one coalesced segment.
//   * thread (cv, px): channel vector cv (VEC channels) of R = 4 consecutive output columns of
//     one tile row; fp32 accumulators start at the bias. For the MBConv kernels (k 3/5/7, stride
//     1/2, dilation 1) k and stride are compile-time constants and each tap row is first read
//     into registers ((R-1)*s + k vectors) and reused by the R outputs; other k (any size),
//     stride and dilation run the same tile with runtime loops.
//   * epilogue: Swish v / (1 + exp(-v)) in float32 (expf: accurate to ~1 ulp; memory-bound
//     kernel), one rounding to the output dtype, vector store.
//   * tile size: 8 x 16 outputs (256 threads at VEC = 4) by default, shrunk for small images and
//     until the staged tile fits 48 KiB of shared memory (no opt-in needed). Grid: 1-D,
//     channel chunk fastest, then tile column, tile row, image.
// Direct kernel (dw_direct_kernel): one thread per output element, taps read from global memory
//   with bounds checks; used only when even the smallest tile's halo does not fit (very large
//   k * dilation).
// All index arithmetic that can exceed 2^31 (global offsets) is 64-bit. Works with torch's
// -D__CUDA_NO_HALF_OPERATORS__/-D__CUDA_NO_BFLOAT16_CONVERSIONS__ flags (conversions, dtype
// dispatch: common.cuh).
// Only shared memory declared `extern` (dynamic) is used, and no warp intrinsics, so the file
// can also be run by a CPU emulation of the thread hierarchy for debugging.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "dwconv_kernel.cuh"

namespace {

using namespace d2c_fast::gpu;

constexpr int kChunk = 32;                 // channels per block
constexpr int kR = 4;                      // output columns per thread
constexpr int64_t kSmemLimit = 48 * 1024;  // bytes of dynamic shared memory without opt-in

struct DwParams {
  const void* x;
  void* y;
  const float* w;  // (C, k*k)
  const float* b;  // (C,)
  int64_t N;
  int C, H, W, Ho, Wo;
  int k, s, pad, dil;
  int TH, TW;      // output tile
  int IH, IW;      // staged input tile (with halo)
  int tilesH, tilesW, nchunk;
  int swish;
};

extern __shared__ __align__(16) float d2c_dw_smem[];

// --- tiled kernel -----------------------------------------------------------------------------
// K, S > 0: compile-time kernel size and stride, dilation 1. K == 0: everything from p.
template <typename T, int VEC, int K, int S>
__global__ void dw_tile_kernel(const DwParams p) {
  constexpr int CV = kChunk / VEC;  // channel vectors per chunk == blockDim.x
  const int k = K > 0 ? K : p.k;
  const int s = K > 0 ? S : p.s;
  const int d = K > 0 ? 1 : p.dil;
  const int kk = k * k;
  float* xs = d2c_dw_smem;                        // [IH * IW][kChunk]
  float* ws = xs + p.IH * p.IW * kChunk;          // [k * k][kChunk]

  int64_t bid = blockIdx.x;
  const int chunk = static_cast<int>(bid % p.nchunk);
  bid /= p.nchunk;
  const int tw = static_cast<int>(bid % p.tilesW);
  bid /= p.tilesW;
  const int th = static_cast<int>(bid % p.tilesH);
  const int64_t n = bid / p.tilesH;
  const int c0 = chunk * kChunk;
  const int oh0 = th * p.TH, ow0 = tw * p.TW;
  const int ih0 = oh0 * s - p.pad, iw0 = ow0 * s - p.pad;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int nthr = blockDim.x * blockDim.y;

  // Weights of the chunk, transposed to [tap][channel]; zeros past C.
  for (int i = tid; i < kk * kChunk; i += nthr) {
    const int t = i / kChunk, cl = i - t * kChunk;
    const int c = c0 + cl;
    ws[i] = c < p.C ? __ldg(p.w + static_cast<int64_t>(c) * kk + t) : 0.0f;
  }
  // Input tile + halo as float32; zeros outside the image (padding) and past C.
  const T* x = static_cast<const T*>(p.x);
  const int npix = p.IH * p.IW;
  for (int i = tid; i < npix * CV; i += nthr) {
    const int pos = i / CV, cv = i - pos * CV;
    const int r = pos / p.IW;
    const int ih = ih0 + r, iw = iw0 + (pos - r * p.IW);
    const int c = c0 + cv * VEC;
    float v[VEC];
    if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W && c < p.C) {
      IO<T, VEC>::load(x + ((n * p.H + ih) * p.W + iw) * p.C + c, v);
    } else {
#pragma unroll
      for (int l = 0; l < VEC; ++l) v[l] = 0.0f;
    }
    float* dst = xs + pos * kChunk + cv * VEC;
    if constexpr (VEC == 4) {
      *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      dst[0] = v[0];
    }
  }
  __syncthreads();

  const int cv = threadIdx.x;
  const int groups_w = p.TW / kR;
  const int tr = threadIdx.y / groups_w;             // tile row
  const int tg = threadIdx.y - tr * groups_w;        // column group
  const int oh = oh0 + tr;
  const int owb = ow0 + tg * kR;
  const int c = c0 + cv * VEC;
  if (oh >= p.Ho || owb >= p.Wo || c >= p.C) return;  // no barrier below

  float acc[kR][VEC];
  {
    float bv[VEC];
#pragma unroll
    for (int l = 0; l < VEC; ++l) bv[l] = __ldg(p.b + c + l);
#pragma unroll
    for (int j = 0; j < kR; ++j)
#pragma unroll
      for (int l = 0; l < VEC; ++l) acc[j][l] = bv[l];
  }
  // Top-left input of this thread's first output, in the staged tile.
  const float* xbase = xs + (tr * s * p.IW + tg * kR * s) * kChunk + cv * VEC;
  const float* wbase = ws + cv * VEC;
  if constexpr (K > 0) {
    constexpr int NW = (kR - 1) * S + K;  // input vectors of one tap row used by R outputs
#pragma unroll 1
    for (int kh = 0; kh < K; ++kh) {
      const float* xr = xbase + kh * p.IW * kChunk;
      float win[NW][VEC];
#pragma unroll
      for (int q = 0; q < NW; ++q) load_floats<VEC>(xr + q * kChunk, win[q]);
#pragma unroll
      for (int kw = 0; kw < K; ++kw) {
        float wv[VEC];
        load_floats<VEC>(wbase + (kh * K + kw) * kChunk, wv);
#pragma unroll
        for (int j = 0; j < kR; ++j)
#pragma unroll
          for (int l = 0; l < VEC; ++l) acc[j][l] = fmaf(win[j * S + kw][l], wv[l], acc[j][l]);
      }
    }
  } else {
    for (int kh = 0; kh < k; ++kh) {
      const float* xr = xbase + kh * d * p.IW * kChunk;
      for (int kw = 0; kw < k; ++kw) {
        float wv[VEC];
        load_floats<VEC>(wbase + (kh * k + kw) * kChunk, wv);
        const float* xk = xr + kw * d * kChunk;
#pragma unroll
        for (int j = 0; j < kR; ++j) {
          float xv[VEC];
          load_floats<VEC>(xk + j * s * kChunk, xv);
#pragma unroll
          for (int l = 0; l < VEC; ++l) acc[j][l] = fmaf(xv[l], wv[l], acc[j][l]);
        }
      }
    }
  }

  T* y = static_cast<T*>(p.y);
  const int64_t yrow = (n * p.Ho + oh) * p.Wo;
#pragma unroll
  for (int j = 0; j < kR; ++j) {
    const int ow = owb + j;
    if (ow < p.Wo) {
      if (p.swish) {
#pragma unroll
        for (int l = 0; l < VEC; ++l) acc[j][l] = swish(acc[j][l]);
      }
      IO<T, VEC>::store(y + (yrow + ow) * p.C + c, acc[j]);
    }
  }
}

// --- direct kernel (fallback for halos too large for shared memory) --------------------------
template <typename T>
__global__ void dw_direct_kernel(const DwParams p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const int64_t total = p.N * p.Ho * p.Wo * p.C;
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int kk = p.k * p.k;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const int c = static_cast<int>(i % p.C);
    int64_t t = i / p.C;
    const int ow = static_cast<int>(t % p.Wo);
    t /= p.Wo;
    const int oh = static_cast<int>(t % p.Ho);
    const int64_t n = t / p.Ho;
    float acc = __ldg(p.b + c);
    const float* wc = p.w + static_cast<int64_t>(c) * kk;
    for (int kh = 0; kh < p.k; ++kh) {
      const int ih = oh * p.s - p.pad + kh * p.dil;
      if (ih < 0 || ih >= p.H) continue;
      for (int kw = 0; kw < p.k; ++kw) {
        const int iw = ow * p.s - p.pad + kw * p.dil;
        if (iw < 0 || iw >= p.W) continue;
        float xv;
        IO<T, 1>::load(x + ((n * p.H + ih) * p.W + iw) * p.C + c, &xv);
        acc = fmaf(xv, __ldg(wc + kh * p.k + kw), acc);
      }
    }
    if (p.swish) acc = swish(acc);
    IO<T, 1>::store(y + i, &acc);
  }
}

// --- host side ----------------------------------------------------------------------------------
int64_t tile_smem_bytes(int64_t IH, int64_t IW, int64_t k) {
  return (IH * IW + k * k) * kChunk * static_cast<int64_t>(sizeof(float));
}

// Picks the output tile (TH, TW) for `cv` channel vectors per block: the first candidate whose
// staged tile fits kSmemLimit, after clamping it to the image. False: none fits.
bool choose_tile(DwParams& p, int cv) {
  static const int kCand4[][2] = {{8, 16}, {8, 8}, {4, 8}, {4, 4}, {2, 4}, {1, 4}};
  static const int kCand1[][2] = {{4, 8}, {2, 8}, {2, 4}, {1, 4}};
  const int (*cand)[2] = cv == kChunk ? kCand1 : kCand4;
  const int ncand = cv == kChunk ? 4 : 6;
  const int wo_r = (p.Wo + kR - 1) / kR * kR;
  const int64_t span = static_cast<int64_t>(p.k - 1) * p.dil + 1;
  for (int i = 0; i < ncand; ++i) {
    int TH = cand[i][0], TW = cand[i][1];
    while (TW > kR && TW / 2 >= wo_r) TW /= 2;
    while (TH > 1 && TH / 2 >= p.Ho) TH /= 2;
    const int64_t IH = static_cast<int64_t>(TH - 1) * p.s + span;
    const int64_t IW = static_cast<int64_t>(TW - 1) * p.s + span;
    if (tile_smem_bytes(IH, IW, p.k) <= kSmemLimit) {
      p.TH = TH; p.TW = TW;
      p.IH = static_cast<int>(IH); p.IW = static_cast<int>(IW);
      p.tilesH = (p.Ho + TH - 1) / TH;
      p.tilesW = (p.Wo + TW - 1) / TW;
      p.nchunk = (p.C + kChunk - 1) / kChunk;
      return true;
    }
  }
  return false;
}

template <typename T, int VEC, int K, int S>
cudaError_t launch_tile(const DwParams& p, cudaStream_t stream) {
  const int64_t blocks = p.N * p.tilesH * p.tilesW * p.nchunk;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(blocks));
  const dim3 block(kChunk / VEC, p.TH * p.TW / kR);
  const size_t smem = static_cast<size_t>(tile_smem_bytes(p.IH, p.IW, p.k));
  dw_tile_kernel<T, VEC, K, S><<<grid, block, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_direct(const DwParams& p, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t total = p.N * p.Ho * p.Wo * p.C;
  dw_direct_kernel<T><<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch(DwParams& p, cudaStream_t stream) {
  const bool vec = p.C % 4 == 0 && aligned4<T>(p.x) && aligned4<T>(p.y);
  if (vec && choose_tile(p, kChunk / 4)) {
    const int key = p.dil == 1 && (p.s == 1 || p.s == 2) ? p.k * 10 + p.s : 0;
    switch (key) {
      case 31: return launch_tile<T, 4, 3, 1>(p, stream);
      case 32: return launch_tile<T, 4, 3, 2>(p, stream);
      case 51: return launch_tile<T, 4, 5, 1>(p, stream);
      case 52: return launch_tile<T, 4, 5, 2>(p, stream);
      case 71: return launch_tile<T, 4, 7, 1>(p, stream);
      case 72: return launch_tile<T, 4, 7, 2>(p, stream);
      default: return launch_tile<T, 4, 0, 0>(p, stream);
    }
  }
  if (!vec && choose_tile(p, kChunk)) return launch_tile<T, 1, 0, 0>(p, stream);
  return launch_direct<T>(p, stream);
}

}  // namespace

cudaError_t d2c_dwconv_bias_swish_cuda(const void* x, void* y, const float* weight,
                                       const float* bias, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t Ho, int64_t Wo, int64_t k,
                                       int64_t stride, int64_t padding, int64_t dilation,
                                       bool swish, d2c_fast::DType dtype,
                                       cudaStream_t stream) {
  if (k < 1 || stride < 1 || dilation < 1 || padding < 0) return cudaErrorInvalidValue;
  if (C > 0x7fffffffLL || H > 0x7fffffffLL || W > 0x7fffffffLL || k > 0xffffLL ||
      stride > 0xffffLL || dilation > 0xffffLL || padding > 0x7fffffffLL)
    return cudaErrorInvalidValue;
  if (N <= 0 || C <= 0 || Ho <= 0 || Wo <= 0) return cudaSuccess;
  DwParams p{};
  p.x = x; p.y = y; p.w = weight; p.b = bias;
  p.N = N;
  p.C = static_cast<int>(C); p.H = static_cast<int>(H); p.W = static_cast<int>(W);
  p.Ho = static_cast<int>(Ho); p.Wo = static_cast<int>(Wo);
  p.k = static_cast<int>(k); p.s = static_cast<int>(stride);
  p.pad = static_cast<int>(padding); p.dil = static_cast<int>(dilation);
  p.swish = swish ? 1 : 0;
  return dispatch_dtype(dtype, [&](auto tag) {
    return launch<typename decltype(tag)::type>(p, stream);
  });
}
