// Body of the d2c_fast::dwconv_bias_swish CPU kernel, compiled once per CPU capability.
//
// Included by csrc/cpu/dwconv.cpp (generic build, namespace d2c_fast::cpu_default) and by
// csrc/cpu/dwconv_avx2.cpp / dwconv_avx512.cpp under isa_target.h, like bn_swish_kernel.h (see
// there); dwconv.cpp picks the copy per call through isa_dispatch.h.
//
// Everything here is in an anonymous namespace except D2C_ISA_NS::dwconv_kernel(), so template
// instantiations stay local to each translation unit (see the link-order note in
// bn_swish_kernel.h: the generic translation unit of each op is linked before its ISA copies).
//
// Algorithm (channels-last, x = (N, H, W, C) contiguous, y = (N, Ho, Wo, C) contiguous):
//   * Channels are cut into chunks of V = Vectorized<float>::size() lanes (16 with AVX-512, 8
//     otherwise); the last chunk may be partial (C = 1, 3, 17, 100, ...). Weights are repacked
//     once per call to [chunk][k*k][V] float32 and the bias to [chunk][V], zero padded.
//   * at::parallel_for splits the N*Ho output rows into one contiguous range per thread. Each
//     thread keeps a ring buffer of the (k-1)*dilation+3 input rows that the current output rows
//     reads, converted to float32 and laid out [chunk][slot][column][V] with `padding` zero
//     columns on the left and enough on the right: the inner loops then have no column bounds
//     checks and no channel tails, and a bf16 input is converted once per element (not k*k
//     times). Rows above/below the image are skipped (the kh range is clipped per output row).
//   * k in {3, 5, 7} with stride 1 or 2 and dilation 1 (the MBConv cases) are compiled with k
//     and stride as constants and compute TWO output rows per pass (conv_row2): per chunk, tiles
//     of 6 columns x 2 rows = 12 accumulators in registers; every input vector loaded feeds both
//     rows (halves L1/L2 traffic vs. one row at a time). Other k / stride / dilation run
//     single-row tiles of 12 columns with runtime k, stride and dilation (conv_row).
//   * The bias is the accumulators' start value; raw sums go to an L1-resident row of the chunk
//     and a separate epilogue pass (finish) applies Swish (exp polynomial + reciprocal estimate
//     refined by one Newton step) and stores straight into y (masked store for a partial chunk,
//     bf16 rounded to nearest even). Doing Swish inside the register tiles spilled.
//   * Results do not depend on the thread count (each output is computed the same way whatever
//     the row range of its thread).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "dtypes.h"

#ifndef D2C_ISA_NS
#error "define D2C_ISA_NS (the namespace of this copy) before including dwconv_kernel.h"
#endif

namespace d2c_fast {

// Arguments of one call. x/y are channels-last contiguous data of `dtype`; weight is (C, k*k)
// float32 contiguous, bias (C,) float32.
struct DwConvArgs {
  const void* x;
  void* y;
  const float* weight;
  const float* bias;
  int64_t N, C, H, W, Ho, Wo;
  int64_t k, stride, pad, dil;
  bool swish;
  bool up2;     // nearest x2 up-sampling of x in front of the conv (y is 2H x 2W; see run_up2)
  DType dtype;  // float32 or bfloat16
};

namespace D2C_ISA_NS {
namespace {

#include "vec_math.h"  // fVec, V, exp/recip/swish lanes, Lanes<T> (this ISA copy)

constexpr int64_t kMinWorkPerTask = 16384;  // output elements per parallel task, at least

// Geometry shared by all threads of one call.
struct Geo {
  int64_t N, C, H, W, Ho, Wo, k, s, pad, dil;
  int64_t nchunk;  // ceil(C / V)
  int64_t span;    // (k - 1) * dil + 1 input rows seen by one output row
  int64_t ring;    // ring slots: span + 2 (a pair of output rows at stride <= 2 sees span + s)
  int64_t Wb;      // buffered columns per row (left zero padding, W columns, right zeros)
  bool swish;
};

template <typename scalar_t>
inline void store_out(scalar_t* o, const fVec& v, int64_t nch) {
  if (nch == V) {
    Lanes<scalar_t>::store(o, v);
  } else {
    Lanes<scalar_t>::store(o, v, nch);
  }
}

// Epilogue of Wo raw outputs of one chunk (tp: [Wo][V] float32, L1-resident): Swish (if SW),
// conversion, store to y (stride C between columns). A separate pass rather than inside the
// register tiles: there the accumulators and the Swish constants do not fit the register file.
// `C` is the distance between consecutive output columns in y (2C when the columns of one
// parity of an up-sampled row are written).
template <bool SW, typename scalar_t>
inline void finish(const float* tp, int64_t Wo, scalar_t* yp, int64_t C, int64_t nch) {
  int64_t ow = 0;
  for (; ow + 4 <= Wo; ow += 4) {
    const fVec v0 = epilogue<SW, scalar_t>(fVec::loadu(tp + ow * V));
    const fVec v1 = epilogue<SW, scalar_t>(fVec::loadu(tp + (ow + 1) * V));
    const fVec v2 = epilogue<SW, scalar_t>(fVec::loadu(tp + (ow + 2) * V));
    const fVec v3 = epilogue<SW, scalar_t>(fVec::loadu(tp + (ow + 3) * V));
    store_out(yp + ow * C, v0, nch);
    store_out(yp + (ow + 1) * C, v1, nch);
    store_out(yp + (ow + 2) * C, v2, nch);
    store_out(yp + (ow + 3) * C, v3, nch);
  }
  for (; ow < Wo; ++ow) store_out(yp + ow * C, epilogue<SW, scalar_t>(fVec::loadu(tp + ow * V)), nch);
}

// --- one output row ------------------------------------------------------------------------------
// T output columns starting at `ow` of one output row, one channel chunk. `rows[kh]` points at
// the buffered row (column 0 of this chunk) for kh in [kh0, kh1). Weights wq: [k*k][V].
// KC/SC/DC > 0: kernel size / stride / dilation known at compile time (then every address
// offset in the tile is an immediate); 0: read from g.
template <int KC, int SC, int DC, int T>
inline void conv_tile(const Geo& g, const float* const* rows, int64_t kh0, int64_t kh1,
                      const float* wq, const fVec& bias, int64_t ow, float* tp) {
  const int64_t k = KC > 0 ? KC : g.k;
  const int64_t cs = (SC > 0 ? SC : g.s) * V;    // column step between outputs, in floats
  const int64_t ds = (DC > 0 ? DC : g.dil) * V;  // column step between taps, in floats
  fVec acc[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) acc[j] = bias;
  for (int64_t kh = kh0; kh < kh1; ++kh) {
    const float* r = rows[kh] + ow * cs;
    const float* wk = wq + kh * k * V;
    if constexpr (KC > 0) {
#pragma GCC unroll 16
      for (int kw = 0; kw < KC; ++kw) {
        const fVec w = fVec::loadu(wk + kw * V);
        const float* rk = r + kw * ds;
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) acc[j] = at::vec::fmadd(fVec::loadu(rk + j * cs), w, acc[j]);
      }
    } else {
      for (int64_t kw = 0; kw < k; ++kw) {
        const fVec w = fVec::loadu(wk + kw * V);
        const float* rk = r + kw * ds;
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) acc[j] = at::vec::fmadd(fVec::loadu(rk + j * cs), w, acc[j]);
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) acc[j].store(tp + (ow + j) * V);
}

template <int KC, int SC, int DC, bool SW, typename scalar_t>
void conv_row(const Geo& g, const float* buf, const int64_t* slot_of_kh, int64_t kh0,
              int64_t kh1, const float* wpack, const float* bpack, float* tmp, scalar_t* yrow) {
  constexpr int T = 12;
  const int64_t k = KC > 0 ? KC : g.k;
  const float* rows[64];
  for (int64_t c = 0; c < g.nchunk; ++c) {
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      rows[kh] = buf + ((c * g.ring + slot_of_kh[kh]) * g.Wb) * V;
    }
    const float* wq = wpack + c * k * k * V;
    const fVec bias = fVec::loadu(bpack + c * V);
    const int64_t nch = std::min<int64_t>(V, g.C - c * V);
    int64_t ow = 0;
    for (; ow + T <= g.Wo; ow += T) {
      conv_tile<KC, SC, DC, T>(g, rows, kh0, kh1, wq, bias, ow, tmp);
    }
    for (; ow < g.Wo; ++ow) {
      conv_tile<KC, SC, DC, 1>(g, rows, kh0, kh1, wq, bias, ow, tmp);
    }
    finish<SW, scalar_t>(tmp, g.Wo, yrow + c * V, g.C, nch);
  }
}

// --- two output rows at once (compile-time k, dilation 1, stride 1 or 2) ----------------------------
// Output rows oh and oh + 1 read input rows ih0 + t, t in [0, K + S): row 0 with tap kh = t
// (t < K), row 1 with kh = t - S (t >= S). Each input vector loaded feeds both rows, so the L1/L2
// traffic per output is (K + S) / 2 rows instead of K, and 2T independent accumulator chains
// keep both FMA pipes busy.
template <int KC, int SC, int T, bool R0, bool R1>
inline void pair_step(const float* r, const float* wq, int t, fVec* a0, fVec* a1) {
  const float* w0p = wq + (R0 ? t : 0) * KC * V;
  const float* w1p = wq + (R1 ? t - SC : 0) * KC * V;
#pragma GCC unroll 16
  for (int kw = 0; kw < KC; ++kw) {
    fVec w0, w1;
    if constexpr (R0) w0 = fVec::loadu(w0p + kw * V);
    if constexpr (R1) w1 = fVec::loadu(w1p + kw * V);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const fVec xv = fVec::loadu(r + (j * SC + kw) * V);
      if constexpr (R0) a0[j] = at::vec::fmadd(xv, w0, a0[j]);
      if constexpr (R1) a1[j] = at::vec::fmadd(xv, w1, a1[j]);
    }
  }
}

template <int KC, int SC, int T>
inline void conv_tile2(const Geo& g, const float* const* rowt, const float* wq, const fVec& bias,
                       int64_t ow, float* t0, float* t1) {
  fVec a0[T], a1[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    a0[j] = bias;
    a1[j] = bias;
  }
#pragma GCC unroll 16
  for (int t = 0; t < KC + SC; ++t) {
    if (rowt[t] == nullptr) continue;  // input row outside the image
    const float* r = rowt[t] + ow * SC * V;
    if (t < SC) {
      pair_step<KC, SC, T, true, false>(r, wq, t, a0, a1);
    } else if (t >= KC) {
      pair_step<KC, SC, T, false, true>(r, wq, t, a0, a1);
    } else {
      pair_step<KC, SC, T, true, true>(r, wq, t, a0, a1);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    a0[j].store(t0 + (ow + j) * V);
    a1[j].store(t1 + (ow + j) * V);
  }
}

// slot_of_t[t]: ring slot of input row ih0 + t, or -1 outside the image.
template <int KC, int SC, bool SW, typename scalar_t>
void conv_row2(const Geo& g, const float* buf, const int64_t* slot_of_t, const float* wpack,
               const float* bpack, float* tmp, scalar_t* y0, scalar_t* y1) {
  constexpr int T = 6;
  const float* rowt[KC + SC];
  for (int64_t c = 0; c < g.nchunk; ++c) {
    for (int t = 0; t < KC + SC; ++t) {
      rowt[t] = slot_of_t[t] < 0 ? nullptr : buf + ((c * g.ring + slot_of_t[t]) * g.Wb) * V;
    }
    const float* wq = wpack + c * KC * KC * V;
    const fVec bias = fVec::loadu(bpack + c * V);
    const int64_t nch = std::min<int64_t>(V, g.C - c * V);
    float* t1 = tmp + g.Wo * V;
    int64_t ow = 0;
    for (; ow + T <= g.Wo; ow += T) {
      conv_tile2<KC, SC, T>(g, rowt, wq, bias, ow, tmp, t1);
    }
    for (; ow < g.Wo; ++ow) {
      conv_tile2<KC, SC, 1>(g, rowt, wq, bias, ow, tmp, t1);
    }
    finish<SW, scalar_t>(tmp, g.Wo, y0 + c * V, g.C, nch);
    finish<SW, scalar_t>(t1, g.Wo, y1 + c * V, g.C, nch);
  }
}

// Convert input row `ih` of image `n` into ring slot `slot` (all chunks).
template <typename scalar_t>
void fill_row(const Geo& g, const scalar_t* x, int64_t n, int64_t ih, int64_t slot, float* buf) {
  const scalar_t* src = x + ((n * g.H + ih) * g.W) * g.C;
  const int64_t full = g.C / V;
  const int64_t tail = g.C - full * V;
  const int64_t chunk_stride = g.ring * g.Wb * V;
  float* dst = buf + (slot * g.Wb + g.pad) * V;
  for (int64_t w = 0; w < g.W; ++w) {
    const scalar_t* s = src + w * g.C;
    float* d = dst + w * V;
    for (int64_t c = 0; c < full; ++c) {
      Lanes<float>::store(d + c * chunk_stride, Lanes<scalar_t>::load(s + c * V));
    }
    if (tail) {
      Lanes<float>::store(d + full * chunk_stride, Lanes<scalar_t>::load(s + full * V, tail));
    }
  }
}

template <int KC, int SC, int DC, bool SW, typename scalar_t>
void run(const Geo& g, const scalar_t* x, scalar_t* y, const float* wpack, const float* bpack) {
  // Row pairs need a compile-time k, dilation 1 and stride 1 or 2.
  constexpr bool kPairs = KC > 0 && DC == 1 && (SC == 1 || SC == 2);
  const int64_t rows_total = g.N * g.Ho;
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(1, g.Wo * g.C));
  at::parallel_for(0, rows_total, grain, [&](int64_t rb, int64_t re) {
    // Ring buffer, then 2 rows of Wo raw (pre-activation) outputs of one chunk.
    const int64_t buf_floats = g.nchunk * g.ring * g.Wb * V;
    std::unique_ptr<float[]> holder(new float[buf_floats + 2 * g.Wo * V]);
    float* buf = holder.get();
    float* tmp = buf + buf_floats;
    // Zero the padding columns once; the data columns are always written before being read.
    for (int64_t cs = 0; cs < g.nchunk * g.ring; ++cs) {
      float* row = buf + cs * g.Wb * V;
      std::memset(row, 0, sizeof(float) * g.pad * V);
      std::memset(row + (g.pad + g.W) * V, 0, sizeof(float) * (g.Wb - g.pad - g.W) * V);
    }
    std::vector<int64_t> held(g.ring, -1);  // global input row (n * H + ih) held by each slot
    // Ring slot of input row ih of image n, converting the row first if the slot holds another.
    auto slot_for = [&](int64_t n, int64_t ih) {
      const int64_t slot = ih % g.ring;
      const int64_t tag = n * g.H + ih;
      if (held[slot] != tag) {
        fill_row<scalar_t>(g, x, n, ih, slot, buf);
        held[slot] = tag;
      }
      return slot;
    };
    int64_t slots[64 + 2];
    int64_t r = rb;
    while (r < re) {
      const int64_t n = r / g.Ho;
      const int64_t oh = r - n * g.Ho;
      const int64_t ih0 = oh * g.s - g.pad;
      scalar_t* yrow = y + ((n * g.Ho + oh) * g.Wo) * g.C;
      if constexpr (kPairs) {
        if (r + 1 < re && oh + 1 < g.Ho) {
          for (int t = 0; t < KC + SC; ++t) {
            const int64_t ih = ih0 + t;
            slots[t] = (ih < 0 || ih >= g.H) ? -1 : slot_for(n, ih);
          }
          conv_row2<KC, SC, SW, scalar_t>(g, buf, slots, wpack, bpack, tmp, yrow, yrow + g.Wo * g.C);
          r += 2;
          continue;
        }
      }
      // Valid taps: 0 <= ih0 + kh * dil < H.
      const int64_t kh0 = ih0 >= 0 ? 0 : (-ih0 + g.dil - 1) / g.dil;
      const int64_t kh1 = ih0 >= g.H ? 0 : std::min<int64_t>(g.k, (g.H - 1 - ih0) / g.dil + 1);
      if (kh1 <= kh0) {  // the whole receptive field is padding: bias only
        for (int64_t c = 0; c < g.nchunk; ++c) {
          const fVec v = epilogue<SW, scalar_t>(fVec::loadu(bpack + c * V));
          const int64_t nch = std::min<int64_t>(V, g.C - c * V);
          for (int64_t ow = 0; ow < g.Wo; ++ow) store_out(yrow + ow * g.C + c * V, v, nch);
        }
      } else {
        for (int64_t kh = kh0; kh < kh1; ++kh) slots[kh] = slot_for(n, ih0 + kh * g.dil);
        conv_row<KC, SC, DC, SW, scalar_t>(g, buf, slots, kh0, kh1, wpack, bpack, tmp, yrow);
      }
      r += 1;
    }
  });
}

// Compile-time k for 3, 5, 7 (the MBConv kernels) at stride 1 or 2 and dilation 1; every other
// case (k 9, 11, even k, dilation > 1, stride > 2) runs the generic loops with runtime k, stride
// and dilation (still vectorised over channels, single-row tiles).
template <bool SW, typename scalar_t>
void dispatch(const Geo& g, const scalar_t* x, scalar_t* y, const float* wpack,
              const float* bpack) {
  const int key = g.dil == 1 && (g.s == 1 || g.s == 2) ? static_cast<int>(g.k * 10 + g.s) : 0;
  switch (key) {
    case 31: run<3, 1, 1, SW, scalar_t>(g, x, y, wpack, bpack); break;
    case 32: run<3, 2, 1, SW, scalar_t>(g, x, y, wpack, bpack); break;
    case 51: run<5, 1, 1, SW, scalar_t>(g, x, y, wpack, bpack); break;
    case 52: run<5, 2, 1, SW, scalar_t>(g, x, y, wpack, bpack); break;
    case 71: run<7, 1, 1, SW, scalar_t>(g, x, y, wpack, bpack); break;
    case 72: run<7, 2, 1, SW, scalar_t>(g, x, y, wpack, bpack); break;
    default: run<0, 0, 0, SW, scalar_t>(g, x, y, wpack, bpack); break;
  }
}

// --- nearest x2 up-sampling in front of the conv (odd k, stride 1, dilation 1, pad (k-1)/2) -----
// y = conv(up2(x)), y of size 2H x 2W. Output row 2i+a reads up-sampled rows 2i+a-p+kh, i.e.
// input rows i + floor((a-p+kh)/2): per output parity (a, b) the conv is a kp x kp conv over x
// itself (kp = k/2 + 1) at input offset o_a = floor((a-p)/2). Both parities fit one KU x KU
// window at offset o0 = floor(-p/2) (KU = kp + o_1 - o_0; the taps a parity does not use are
// zero), with weights summed per parity once per call. For k = 5 that is 9 taps per output
// instead of 25, reading the small input instead of the 4x larger up-sampled one (which is never
// materialised). Zero padding of the up-sampled image is exactly zero padding of x: up-sampled
// rows -p..-1 and 2H..2H+p-1 map to input rows < 0 and >= H.
struct UpGeo {
  int64_t N, C, H, W, ku, o0, nchunk, ring, Wb;
};

// Both column parities of T consecutive input columns j0.. of one output row parity: acc0 for
// output columns 2j, acc1 for 2j+1. rows[u] is the buffered input row i + o0 + u (column 0 of
// the window at buffer column 0), valid for u in [u0, u1). w0/w1: [KU*KU][V] of parity b = 0/1.
template <int KUC, int T>
inline void up2_tile(const UpGeo& g, const float* const* rows, int64_t u0, int64_t u1,
                     const float* w0, const float* w1, const fVec& bias, int64_t j0, float* t0,
                     float* t1) {
  const int64_t ku = KUC > 0 ? KUC : g.ku;
  fVec a0[T], a1[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    a0[j] = bias;
    a1[j] = bias;
  }
  const int64_t nv = KUC > 0 ? KUC : ku;  // a constant (fully unrolled) when KUC > 0
  for (int64_t u = u0; u < u1; ++u) {
    const float* r = rows[u] + j0 * V;
    const float* p0 = w0 + u * ku * V;
    const float* p1 = w1 + u * ku * V;
#pragma GCC unroll 16
    for (int64_t v = 0; v < nv; ++v) {
      const fVec wa = fVec::loadu(p0 + v * V);
      const fVec wb = fVec::loadu(p1 + v * V);
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        const fVec xv = fVec::loadu(r + (j + v) * V);
        a0[j] = at::vec::fmadd(xv, wa, a0[j]);
        a1[j] = at::vec::fmadd(xv, wb, a1[j]);
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    a0[j].store(t0 + (j0 + j) * V);
    a1[j].store(t1 + (j0 + j) * V);
  }
}

// wpack: [chunk][a][b][KU*KU][V]; bpack: [chunk][V].
template <int KUC, bool SW, typename scalar_t>
void run_up2(const UpGeo& g, const scalar_t* x, scalar_t* y, const float* wpack,
             const float* bpack) {
  constexpr int T = 6;
  const int64_t ku = KUC > 0 ? KUC : g.ku;
  const int64_t kk = ku * ku;
  const int64_t Wo = 2 * g.W;
  const int64_t rows_total = g.N * g.H;  // one task step = output rows 2i and 2i+1
  const int64_t grain =
      std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(1, 4 * g.W * g.C));
  // fill_row's geometry: rows of W columns, -o0 zero columns on the left.
  Geo fg;
  fg.N = g.N; fg.C = g.C; fg.H = g.H; fg.W = g.W;
  fg.pad = -g.o0; fg.ring = g.ring; fg.Wb = g.Wb; fg.nchunk = g.nchunk;
  at::parallel_for(0, rows_total, grain, [&](int64_t rb, int64_t re) {
    const int64_t buf_floats = g.nchunk * g.ring * g.Wb * V;
    std::unique_ptr<float[]> holder(new float[buf_floats + 2 * g.W * V]);
    float* buf = holder.get();
    float* t0 = buf + buf_floats;
    float* t1 = t0 + g.W * V;
    for (int64_t cs = 0; cs < g.nchunk * g.ring; ++cs) {
      float* row = buf + cs * g.Wb * V;
      std::memset(row, 0, sizeof(float) * fg.pad * V);
      std::memset(row + (fg.pad + g.W) * V, 0, sizeof(float) * (g.Wb - fg.pad - g.W) * V);
    }
    std::vector<int64_t> held(g.ring, -1);
    int64_t slot_of_u[64];
    const float* rows[64];
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / g.H;
      const int64_t i = r - n * g.H;
      const int64_t ih0 = i + g.o0;
      const int64_t u0 = std::max<int64_t>(0, -ih0);
      const int64_t u1 = std::min<int64_t>(ku, g.H - ih0);
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t ih = ih0 + u;
        const int64_t slot = ih % g.ring;
        const int64_t tag = n * g.H + ih;
        if (held[slot] != tag) {
          fill_row<scalar_t>(fg, x, n, ih, slot, buf);
          held[slot] = tag;
        }
        slot_of_u[u] = slot;
      }
      for (int64_t c = 0; c < g.nchunk; ++c) {
        for (int64_t u = u0; u < u1; ++u) rows[u] = buf + ((c * g.ring + slot_of_u[u]) * g.Wb) * V;
        const fVec bias = fVec::loadu(bpack + c * V);
        const int64_t nch = std::min<int64_t>(V, g.C - c * V);
        for (int64_t a = 0; a < 2; ++a) {
          const float* w0 = wpack + ((c * 4 + a * 2) * kk) * V;
          const float* w1 = w0 + kk * V;
          int64_t j = 0;
          for (; j + T <= g.W; j += T) up2_tile<KUC, T>(g, rows, u0, u1, w0, w1, bias, j, t0, t1);
          for (; j < g.W; ++j) up2_tile<KUC, 1>(g, rows, u0, u1, w0, w1, bias, j, t0, t1);
          scalar_t* yrow = y + ((n * 2 * g.H + 2 * i + a) * Wo) * g.C + c * V;
          finish<SW, scalar_t>(t0, g.W, yrow, 2 * g.C, nch);
          finish<SW, scalar_t>(t1, g.W, yrow + g.C, 2 * g.C, nch);
        }
      }
    }
  });
}

template <bool SW, typename scalar_t>
void up2_dispatch(const UpGeo& g, const scalar_t* x, scalar_t* y, const float* wp,
                  const float* bp) {
  switch (g.ku) {  // window 3 (k = 3, 5) and 5 (k = 7) compiled with the size as a constant
    case 3: run_up2<3, SW, scalar_t>(g, x, y, wp, bp); break;
    case 5: run_up2<5, SW, scalar_t>(g, x, y, wp, bp); break;
    default: run_up2<0, SW, scalar_t>(g, x, y, wp, bp); break;
  }
}

inline int64_t floor_div2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

template <typename scalar_t>
void up2_entry(const DwConvArgs& a, const scalar_t* x, scalar_t* y) {
  UpGeo g;
  g.N = a.N; g.C = a.C; g.H = a.H; g.W = a.W;
  const int64_t k = a.k, p = a.pad;
  g.o0 = floor_div2(-p);
  const int64_t o1 = floor_div2(1 - p);
  g.ku = k / 2 + 1 + (o1 - g.o0);
  g.nchunk = (a.C + V - 1) / V;
  g.ring = g.ku + 1;
  g.Wb = a.W + g.ku - 1;  // -o0 zeros, W columns, the rest zeros (window of the last column)
  const int64_t kk = g.ku * g.ku;
  std::vector<float> wpack(g.nchunk * 4 * kk * V, 0.0f), bpack(g.nchunk * V, 0.0f);
  for (int64_t c = 0; c < a.C; ++c) {
    const int64_t chunk = c / V, lane = c % V;
    bpack[chunk * V + lane] = a.bias[c];
    for (int64_t pa = 0; pa < 2; ++pa) {
      for (int64_t pb = 0; pb < 2; ++pb) {
        float* dst = wpack.data() + ((chunk * 4 + pa * 2 + pb) * kk) * V + lane;
        for (int64_t kh = 0; kh < k; ++kh) {
          const int64_t u = floor_div2(pa - p + kh) - g.o0;
          for (int64_t kw = 0; kw < k; ++kw) {
            const int64_t v = floor_div2(pb - p + kw) - g.o0;
            dst[(u * g.ku + v) * V] += a.weight[(c * k + kh) * k + kw];
          }
        }
      }
    }
  }
  const float* wp = wpack.data();
  const float* bp = bpack.data();
  a.swish ? up2_dispatch<true, scalar_t>(g, x, y, wp, bp)
          : up2_dispatch<false, scalar_t>(g, x, y, wp, bp);
}

}  // namespace

void dwconv_kernel(const DwConvArgs& a) {
  if (a.up2) {
    if (a.dtype == DType::kFloat32) {
      up2_entry<float>(a, static_cast<const float*>(a.x), static_cast<float*>(a.y));
    } else {
      up2_entry<c10::BFloat16>(a, static_cast<const c10::BFloat16*>(a.x),
                               static_cast<c10::BFloat16*>(a.y));
    }
    return;
  }
  Geo g;
  g.N = a.N; g.C = a.C; g.H = a.H; g.W = a.W; g.Ho = a.Ho; g.Wo = a.Wo;
  g.k = a.k; g.s = a.stride; g.pad = a.pad; g.dil = a.dil; g.swish = a.swish;
  g.nchunk = (a.C + V - 1) / V;
  g.span = (a.k - 1) * a.dil + 1;
  g.ring = g.span + 2;
  g.Wb = std::max<int64_t>(a.pad + a.W, (a.Wo - 1) * a.stride + g.span);
  // Repack weights [chunk][k*k][V] and bias [chunk][V], zero padded.
  const int64_t kk = a.k * a.k;
  std::vector<float> wpack(g.nchunk * kk * V, 0.0f), bpack(g.nchunk * V, 0.0f);
  for (int64_t c = 0; c < a.C; ++c) {
    const int64_t chunk = c / V, lane = c % V;
    for (int64_t t = 0; t < kk; ++t) wpack[(chunk * kk + t) * V + lane] = a.weight[c * kk + t];
    bpack[chunk * V + lane] = a.bias[c];
  }
  const auto* wp = wpack.data();
  const auto* bp = bpack.data();
  if (a.dtype == DType::kFloat32) {
    const auto* x = static_cast<const float*>(a.x);
    auto* y = static_cast<float*>(a.y);
    a.swish ? dispatch<true, float>(g, x, y, wp, bp) : dispatch<false, float>(g, x, y, wp, bp);
  } else {
    const auto* x = static_cast<const c10::BFloat16*>(a.x);
    auto* y = static_cast<c10::BFloat16*>(a.y);
    a.swish ? dispatch<true, c10::BFloat16>(g, x, y, wp, bp)
            : dispatch<false, c10::BFloat16>(g, x, y, wp, bp);
  }
}

}  // namespace D2C_ISA_NS
}  // namespace d2c_fast
