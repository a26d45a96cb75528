// Body of the d2c_fast::mbconv CPU kernel (the whole stride-1 MBConv cell body, row-streamed),
// compiled once per CPU capability like dwconv_kernel.h (see there and bn_swish_kernel.h for the
// per-ISA copies, the namespaces and the link order). Float32; and bfloat16 where PyTorch's
// brgemm can pack bf16 weights (AMX): bf16 GEMM operands, float accumulation, the ring and the
// depthwise sums in float32, the depthwise output rounded to bf16 for the project GEMM (as the
// unfused bf16 path stores it), y rounded once. Other bf16 cases: mbconv.cpp converts to float.
//
//   h = swish(x @ We + be)           1x1 expand, C -> E channels   (BN folded by the plan)
//   d = swish(dwconv_kxk(h) + bd)    depthwise, "same" zero padding of h
//   y = d @ Wp + bp                  1x1 project, E -> C2
//
// Why: unfused, the E = 6C hidden tensor goes to memory and back twice per cell (written by the
// expand conv, read and written by the depthwise conv, read by the project conv), the decoder's
// main cost on a bandwidth-starved CPU. Here each thread walks a contiguous range of output rows
// and keeps a ring of k + R expanded rows ([column][E] floats with k/2 zero columns on each
// side) and R depthwise output rows in its caches (1.4-3.4 MB for the ARCH-256 decoder's cells):
//   * output rows go in blocks of R = ceil(256 / W) (so every GEMM has >= ~256 rows and the
//     weights are not re-read per image row); the hidden rows a block needs and the ring lacks
//     are expanded by one GEMM (rows x C times C x E: at::native::cpublas::brgemm, PyTorch's
//     exported oneDNN batch-reduce GEMM micro-kernel, no per-call allocation or dispatch;
//     at::mm_out on torch builds without it), then bias + Swish into their ring slots;
//   * the depthwise conv of each output row reads the ring (rows outside the image are zero
//     padding: their taps are skipped), raw sums per channel chunk, then bias + Swish;
//   * one GEMM projects the block (R*W x E times E x C2) straight into y, then + bp.
// Rows of the ring are recomputed only at the edges of a thread's range (k - 1 rows). Results do
// not depend on the thread count: every output row is computed the same way.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#ifndef D2C_ISA_NS
#error "define D2C_ISA_NS (the namespace of this copy) before including mbconv_kernel.h"
#endif

namespace d2c_fast {

// One call. x: (N, H, W, C) float32 contiguous; y: (N, H, W, C2). Weights float32 contiguous:
// we (C, E) = the expand weight transposed, be (E); wd (E, k*k), bd (E); wp (E, C2) = the
// project weight transposed, bp (C2). k odd, padding k/2, stride 1.
struct MBConvArgs {
  const void* x;  // float32, or bfloat16 when bf16
  void* y;
  const float* we;
  const float* be;
  const float* wd;
  const float* bd;
  const float* wp;
  const float* bp;
  // bf16 only: the expand / project weights as bfloat16 in the VNNI layout of
  // at::native::cpublas::pack, one block per 64 output channels (block j, columns [j, j + 64),
  // starts at element K * j), for the AMX brgemm. Needs C, E even and E, C2 multiples of 16.
  const c10::BFloat16* we16;
  const c10::BFloat16* wp16;
  bool bf16;
  int64_t N, H, W, C, E, C2, k;
};

namespace D2C_ISA_NS {
namespace {

#include "vec_math.h"  // fVec, V, exp/recip/swish lanes (this ISA copy)

// C (M x N, row stride ldc) = A (M x K, lda) * B (K x N, ldb), all row-major float32.
inline void gemm_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float* C, int64_t ldc) {
#ifdef CPUBLAS_BRGEMM_F32F32F32
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, false, A, B, C, false);
#else
  const auto opt = at::TensorOptions().dtype(at::kFloat);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opt);
  at::mm_out(c, at::from_blob(const_cast<float*>(A), {M, K}, {lda, 1}, opt),
             at::from_blob(const_cast<float*>(B), {K, N}, {ldb, 1}, opt));
#endif
}

// C (M x N float, row stride ldc) = A (M x K bfloat16, lda) * B, B packed as MBConvArgs::we16
// (blocks of 64 columns, VNNI); one brgemm per column block.
inline void gemm_rows_bf16(int64_t M, int64_t N, int64_t K, const c10::BFloat16* A, int64_t lda,
                           const c10::BFloat16* Bpacked, float* C, int64_t ldc) {
#ifdef CPUBLAS_BRGEMM_BF16BF16F32
  for (int64_t j = 0; j < N; j += 64) {
    const int64_t nb = std::min<int64_t>(64, N - j);
    at::native::cpublas::brgemm(M, nb, K, lda, nb, ldc, false, A, Bpacked + K * j, C + j, true);
  }
#else
  TORCH_CHECK(false, "d2c_fast::mbconv: the bf16 path needs cpublas::brgemm (torch >= 2.6)");
#endif
}

// Output rows per GEMM block: at least this many GEMM rows (R * W), see run().
#ifndef D2C_MBCONV_BLOCK_ROWS
#define D2C_MBCONV_BLOCK_ROWS 256
#endif
constexpr int64_t kBlockRows = D2C_MBCONV_BLOCK_ROWS;

// v[i] += b over n rows of `width` channels (rows contiguous).
void add_bias_rows(float* v, const float* b, int64_t n, int64_t width) {
  const int64_t full = width / V * V;
  for (int64_t i = 0; i < n; ++i) {
    float* r = v + i * width;
    int64_t c = 0;
    for (; c < full; c += V) (fVec::loadu(r + c) + fVec::loadu(b + c)).store(r + c);
    if (c < width) {
      const int64_t m = width - c;
      (fVec::loadu(r + c, m) + fVec::loadu(b + c, m)).store(r + c, m);
    }
  }
}

// Raw depthwise sums of one output row for channels [c0, c0 + V) (m < V: a tail), columns
// [0, W): acc = sum over valid ring rows `rows[kh]` (nullptr: outside the image) and kw of
// row[(w + kw) * E + c0] * wq[kh * k + kw]. wq: [k*k][V] weights of this chunk.
template <int KC, int T>
inline void dw_tile(const float* const* rows, int64_t k, int64_t E, const float* wq, int64_t w0,
                    int64_t c0, float* out) {
  const int64_t kk = KC > 0 ? KC : k;
  fVec acc[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) acc[j] = fVec(0.0f);
  for (int64_t kh = 0; kh < kk; ++kh) {
    const float* r = rows[kh];
    if (r == nullptr) continue;
    r += w0 * E + c0;
    const float* wk = wq + kh * kk * V;
#pragma GCC unroll 16
    for (int64_t kw = 0; kw < kk; ++kw) {  // kk is a constant (fully unrolled) when KC > 0
      const fVec wv = fVec::loadu(wk + kw * V);
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) acc[j] = at::vec::fmadd(fVec::loadu(r + (j + kw) * E), wv, acc[j]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) acc[j].store(out + (w0 + j) * V);
}

// Two output rows at once (oh, oh + 1): rows[t] is hidden row oh - p + t for t in [0, k]; row t
// feeds oh with tap t (t < k) and oh + 1 with tap t - 1 (t >= 1), so every vector loaded serves
// both rows (half the loads of two dw_tile calls). 2T accumulators.
template <int KC, int T, bool R0, bool R1>
inline void dw_pair_step(const float* r, int64_t E, const float* w0p, const float* w1p,
                         int64_t kk, fVec* a0, fVec* a1) {
  const int64_t kw_n = KC > 0 ? KC : kk;
#pragma GCC unroll 16
  for (int64_t kw = 0; kw < kw_n; ++kw) {
    fVec w0, w1;
    if constexpr (R0) w0 = fVec::loadu(w0p + kw * V);
    if constexpr (R1) w1 = fVec::loadu(w1p + kw * V);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const fVec xv = fVec::loadu(r + (j + kw) * E);
      if constexpr (R0) a0[j] = at::vec::fmadd(xv, w0, a0[j]);
      if constexpr (R1) a1[j] = at::vec::fmadd(xv, w1, a1[j]);
    }
  }
}

template <int KC, int T>
inline void dw_tile2(const float* const* rows, int64_t k, int64_t E, const float* wq, int64_t w0,
                     int64_t c0, float* out0, float* out1) {
  const int64_t kk = KC > 0 ? KC : k;
  fVec a0[T], a1[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    a0[j] = fVec(0.0f);
    a1[j] = fVec(0.0f);
  }
  for (int64_t t = 0; t <= kk; ++t) {
    const float* r = rows[t];
    if (r == nullptr) continue;
    r += w0 * E + c0;
    const float* w0p = wq + t * kk * V;        // tap row t of output row oh
    const float* w1p = wq + (t - 1) * kk * V;  // tap row t - 1 of output row oh + 1
    if (t == 0) {
      dw_pair_step<KC, T, true, false>(r, E, w0p, w1p, kk, a0, a1);
    } else if (t == kk) {
      dw_pair_step<KC, T, false, true>(r, E, w0p, w1p, kk, a0, a1);
    } else {
      dw_pair_step<KC, T, true, true>(r, E, w0p, w1p, kk, a0, a1);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    a0[j].store(out0 + (w0 + j) * V);
    a1[j].store(out1 + (w0 + j) * V);
  }
}

// dst[i] = swish(src[i] + b) over n rows of `width` channels (dst and src rows contiguous); the
// bf16 path's cheaper Swish when the rows feed a bf16 result (epilogue<true, out_t>).
template <typename out_t>
void bias_swish_copy(float* dst, const float* src, const float* b, int64_t n, int64_t width) {
  const int64_t full = width / V * V;
  for (int64_t i = 0; i < n; ++i) {
    const float* s = src + i * width;
    float* d = dst + i * width;
    int64_t c = 0;
    for (; c < full; c += V) {
      epilogue<true, out_t>(fVec::loadu(s + c) + fVec::loadu(b + c)).store(d + c);
    }
    if (c < width) {
      const int64_t m = width - c;
      epilogue<true, out_t>(fVec::loadu(s + c, m) + fVec::loadu(b + c, m)).store(d + c, m);
    }
  }
}

template <int KC, bool BF16>
void run(const MBConvArgs& a, const float* wq_all) {
  using in_t = std::conditional_t<BF16, c10::BFloat16, float>;
  const in_t* x = static_cast<const in_t*>(a.x);
  in_t* y = static_cast<in_t*>(a.y);
  const int64_t k = a.k, p = a.k / 2, E = a.E, W = a.W, H = a.H;
  const int64_t nchunk = (E + V - 1) / V;
  // Output rows per block: the GEMMs see M = R * W >= ~256 rows, so narrow images (the 32x32
  // cells, E = 1152) do not re-stream the expand/project weights from memory for every row.
  const int64_t R = std::max<int64_t>(1, std::min<int64_t>(H, (kBlockRows + W - 1) / W));
  const int64_t ring = k + R;     // a block reads R + k - 1 hidden rows
  const int64_t Wb = W + 2 * p;   // columns of a ring slot (p zero columns on each side)
  const int64_t rows_total = a.N * H;
  // One contiguous range of rows per thread (each range recomputes k - 1 ring rows).
  const int nt = std::max(1, at::get_num_threads());
  const int64_t grain = std::max<int64_t>(8, (rows_total + nt - 1) / nt);
  at::parallel_for(0, rows_total, grain, [&](int64_t rb, int64_t re) {
    const int64_t slot_floats = Wb * E;
    // scratch: the expand GEMM's output rows, then the block's depthwise output rows [R*W][E].
    // + V floats of slack: a full-width load of the last (partial) channel chunk may read up
    // to V - 1 floats past a row, never past the allocation.
    // bf16: + the block's depthwise rows in bf16 (the project GEMM's A) and its float output.
    const int64_t extra = BF16 ? (R * W * E + 1) / 2 + R * W * a.C2 : 0;
    std::unique_ptr<float[]> holder(
        new float[ring * slot_floats + R * W * E + 2 * W * V + V + extra]);
    float* ringbuf = holder.get();
    float* scratch = ringbuf + ring * slot_floats;
    float* tmp = scratch + R * W * E;  // raw depthwise sums of one chunk, 2 rows [2][W][V]
    c10::BFloat16* drow16 = reinterpret_cast<c10::BFloat16*>(tmp + 2 * W * V + V);
    float* yf = tmp + 2 * W * V + V + (R * W * E + 1) / 2;
    for (int64_t s = 0; s < ring; ++s) {
      float* slot = ringbuf + s * slot_floats;
      std::memset(slot, 0, sizeof(float) * p * E);
      std::memset(slot + (p + W) * E, 0, sizeof(float) * p * E);
    }
    std::vector<int64_t> held(ring, -1);
    const float* rows[64];
    int64_t r = rb;
    while (r < re) {
      const int64_t n = r / H, oh0 = r - n * H;
      const int64_t nb = std::min<int64_t>({R, re - r, H - oh0});
      // Expand the hidden rows the block needs and the ring lacks: with rows walked in order
      // they are a suffix [first, hi] of [lo, hi]; one GEMM for all of them.
      const int64_t lo = std::max<int64_t>(0, oh0 - p);
      const int64_t hi = std::min<int64_t>(H - 1, oh0 + nb - 1 + p);
      int64_t first = lo;
      while (first <= hi && held[first % ring] == n * H + first) ++first;
      if (first <= hi) {
        const int64_t cnt = hi - first + 1;
        for (int64_t i0 = 0; i0 < cnt; i0 += R) {  // at a range start: up to R + k - 1 rows
          const int64_t m = std::min<int64_t>(R, cnt - i0);
          const int64_t ih0 = first + i0;
          const in_t* xr = x + ((n * H + ih0) * W) * a.C;
          if constexpr (BF16) {
            gemm_rows_bf16(m * W, E, a.C, xr, a.C, a.we16, scratch, E);
          } else {
            gemm_rows(m * W, E, a.C, xr, a.C, a.we, E, scratch, E);
          }
          for (int64_t i = 0; i < m; ++i) {
            const int64_t ih = ih0 + i;
            bias_swish_copy<in_t>(ringbuf + (ih % ring) * slot_floats + p * E, scratch + i * W * E,
                            a.be, W, E);
            held[ih % ring] = n * H + ih;
          }
        }
      }
      // Depthwise: the block's rows two at a time (a last odd row alone), raw sums of one
      // channel chunk in tmp (row 0) / tmp + W * V (row 1), then bias + Swish into the block's
      // depthwise rows (float, or bf16 for the bf16 project GEMM).
      for (int64_t j = 0; j < nb;) {
        const int64_t oh = oh0 + j;
        const int64_t pair = j + 1 < nb ? 2 : 1;
        for (int64_t t = 0; t < k + pair - 1; ++t) {
          const int64_t ih = oh - p + t;
          rows[t] = (ih < 0 || ih >= H) ? nullptr : ringbuf + (ih % ring) * slot_floats;
        }
        for (int64_t c = 0; c < nchunk; ++c) {
          const int64_t c0 = c * V;
          const int64_t m = std::min<int64_t>(V, E - c0);
          const float* wq = wq_all + c * k * k * V;
          int64_t w = 0;
          if (pair == 2) {
            constexpr int T2 = 6;
            for (; w + T2 <= W; w += T2) dw_tile2<KC, T2>(rows, k, E, wq, w, c0, tmp, tmp + W * V);
            for (; w < W; ++w) dw_tile2<KC, 1>(rows, k, E, wq, w, c0, tmp, tmp + W * V);
          } else {
            constexpr int T = 8;
            for (; w + T <= W; w += T) dw_tile<KC, T>(rows, k, E, wq, w, c0, tmp);
            for (; w < W; ++w) dw_tile<KC, 1>(rows, k, E, wq, w, c0, tmp);
          }
          const fVec b = m == V ? fVec::loadu(a.bd + c0) : fVec::loadu(a.bd + c0, m);
          for (int64_t q = 0; q < pair; ++q) {
            const float* tq = tmp + q * W * V;
            for (int64_t jw = 0; jw < W; ++jw) {
              const fVec v = epilogue<true, in_t>(fVec::loadu(tq + jw * V) + b);
              const int64_t off = ((j + q) * W + jw) * E + c0;
              if constexpr (BF16) {
                if (m == V) {
                  Lanes<c10::BFloat16>::store(drow16 + off, v);
                } else {
                  Lanes<c10::BFloat16>::store(drow16 + off, v, m);
                }
              } else if (m == V) {
                v.store(scratch + off);
              } else {
                v.store(scratch + off, m);
              }
            }
          }
        }
        j += pair;
      }
      in_t* yrow = y + ((n * H + oh0) * W) * a.C2;
      if constexpr (BF16) {
        gemm_rows_bf16(nb * W, a.C2, E, drow16, E, a.wp16, yf, a.C2);
        add_bias_rows(yf, a.bp, nb * W, a.C2);
        const int64_t total = nb * W * a.C2;  // C2 % 16 == 0: whole vectors
        for (int64_t i = 0; i < total; i += V) Lanes<c10::BFloat16>::store(yrow + i, fVec::loadu(yf + i));
      } else {
        gemm_rows(nb * W, a.C2, E, scratch, E, a.wp, a.C2, yrow, a.C2);
        add_bias_rows(yrow, a.bp, nb * W, a.C2);
      }
      r += nb;
    }
#if defined(CPUBLAS_BRGEMM_F32F32F32) || defined(CPUBLAS_BRGEMM_BF16BF16F32)
    at::native::cpublas::brgemm_release(BF16);
#endif
  });
}
}  // namespace

void mbconv_kernel(const MBConvArgs& a) {
  // Depthwise weights repacked [chunk][k*k][V], zero padded in the last chunk.
  const int64_t kk = a.k * a.k, nchunk = (a.E + V - 1) / V;
  std::vector<float> wq(nchunk * kk * V, 0.0f);
  for (int64_t c = 0; c < a.E; ++c) {
    for (int64_t t = 0; t < kk; ++t) wq[((c / V) * kk + t) * V + c % V] = a.wd[c * kk + t];
  }
  if (a.bf16) {
    switch (a.k) {
      case 3: run<3, true>(a, wq.data()); break;
      case 5: run<5, true>(a, wq.data()); break;
      case 7: run<7, true>(a, wq.data()); break;
      default: run<0, true>(a, wq.data()); break;
    }
    return;
  }
  switch (a.k) {
    case 3: run<3, false>(a, wq.data()); break;
    case 5: run<5, false>(a, wq.data()); break;
    case 7: run<7, false>(a, wq.data()); break;
    default: run<0, false>(a, wq.data()); break;
  }
}

}  // namespace D2C_ISA_NS
}  // namespace d2c_fast
