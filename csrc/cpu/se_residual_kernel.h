// Body of the d2c_fast::se_residual CPU kernel, compiled once per CPU capability.
//
// Included by csrc/cpu/se_residual.cpp (generic build, namespace d2c_fast::cpu_default) and by
// se_residual_avx2.cpp / se_residual_avx512.cpp under isa_target.h (same scheme as
// bn_swish_kernel.h; se_residual.cpp picks the copy per call through isa_dispatch.h). Everything
// is in an anonymous namespace except D2C_ISA_NS::se_residual_kernel().
//
// Two passes over s:
//   1. per-(n, c) sums of s. Channels-last: the H*W rows of each image are cut into fixed blocks
//      of kRowsPerBlock rows; at::parallel_for runs over (image, block) and each block adds its
//      rows into a float32 partial row of C (vectorised over C, L1-resident); the partials are
//      then added in float64 in a fixed order, so the result does not depend on the thread count.
//      NCHW: one contiguous plane per (n, c), parallel over planes, vector accumulators.
//   2. the gate g[n, c] = alpha * sigmoid(w2 @ relu(w1 @ mean + b1) + b2) in plain float64 loops
//      (a few thousand multiply-adds), then out = skip + g[n, c] * s in one fused, vectorised,
//      parallel pass (one fmadd per element; bf16 converted on load/store).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "dtypes.h"

#ifndef D2C_ISA_NS
#error "define D2C_ISA_NS (the namespace of this copy) before including se_residual_kernel.h"
#endif

namespace d2c_fast {

// Arguments of one call. s/skip/out have the same layout (rows: channels-last (N, H*W, C);
// otherwise contiguous NCHW planes) and the same dtype. w1 (Ch, C), b1 (Ch), w2 (C, Ch), b2 (C)
// float32 contiguous.
struct SeResidualArgs {
  const void* s;
  const void* skip;
  void* out;
  const float* w1;
  const float* b1;
  const float* w2;
  const float* b2;
  int64_t N, C, HW, Ch;
  double alpha;
  bool rows;
  DType dtype;  // float32 or bfloat16
};

namespace D2C_ISA_NS {
namespace {

#include "vec_math.h"  // fVec, V, Lanes<T> (this ISA copy)

constexpr int64_t kRowsPerBlock = 128;    // channels-last rows per partial sum (pass 1)
constexpr int64_t kGrainElems = 32768;    // elements per parallel task (pass 2)

// Pass 1, channels-last: sums[n * C + c] (float64).
template <typename scalar_t>
void sums_rows(const SeResidualArgs& a, const scalar_t* s, std::vector<double>& sums) {
  const int64_t C = a.C, HW = a.HW;
  const int64_t nb = (HW + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t Cp = (C + V - 1) / V * V;
  std::vector<float> partial(a.N * nb * Cp);
  at::parallel_for(0, a.N * nb, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t n = t / nb, blk = t - n * nb;
      const int64_t r0 = blk * kRowsPerBlock, r1 = std::min(HW, r0 + kRowsPerBlock);
      float* acc = partial.data() + t * Cp;
      std::fill(acc, acc + Cp, 0.0f);
      const scalar_t* base = s + (n * HW) * C;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* row = base + r * C;
        int64_t c = 0;
        for (; c + V <= C; c += V) {
          (fVec::loadu(acc + c) + Lanes<scalar_t>::load(row + c)).store(acc + c);
        }
        if (c < C) (fVec::loadu(acc + c) + Lanes<scalar_t>::load(row + c, C - c)).store(acc + c);
      }
    }
  });
  for (int64_t n = 0; n < a.N; ++n) {
    for (int64_t blk = 0; blk < nb; ++blk) {
      const float* acc = partial.data() + (n * nb + blk) * Cp;
      for (int64_t c = 0; c < C; ++c) sums[n * C + c] += acc[c];
    }
  }
}

// Pass 1, NCHW: one plane of HW elements per (n, c).
template <typename scalar_t>
void sums_planes(const SeResidualArgs& a, const scalar_t* s, std::vector<double>& sums) {
  const int64_t HW = a.HW;
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, HW));
  at::parallel_for(0, a.N * a.C, grain, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const scalar_t* x = s + p * HW;
      fVec a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
      int64_t i = 0;
      for (; i + 4 * V <= HW; i += 4 * V) {
        a0 = a0 + Lanes<scalar_t>::load(x + i);
        a1 = a1 + Lanes<scalar_t>::load(x + i + V);
        a2 = a2 + Lanes<scalar_t>::load(x + i + 2 * V);
        a3 = a3 + Lanes<scalar_t>::load(x + i + 3 * V);
      }
      for (; i + V <= HW; i += V) a0 = a0 + Lanes<scalar_t>::load(x + i);
      if (i < HW) a1 = a1 + Lanes<scalar_t>::load(x + i, HW - i);
      float lanes[V];
      ((a0 + a1) + (a2 + a3)).store(lanes);
      double total = 0.0;
      for (int64_t l = 0; l < V; ++l) total += lanes[l];
      sums[p] = total;
    }
  });
}

// The squeeze-excitation MLP on the means: gate[n * C + c] = alpha * sigmoid(...).
void gates(const SeResidualArgs& a, const std::vector<double>& sums, std::vector<float>& gate) {
  const int64_t C = a.C, Ch = a.Ch;
  std::vector<double> mean(C), hidden(Ch);
  for (int64_t n = 0; n < a.N; ++n) {
    for (int64_t c = 0; c < C; ++c) mean[c] = sums[n * C + c] / static_cast<double>(a.HW);
    for (int64_t j = 0; j < Ch; ++j) {
      const float* wr = a.w1 + j * C;
      double v = a.b1[j];
      for (int64_t c = 0; c < C; ++c) v += static_cast<double>(wr[c]) * mean[c];
      hidden[j] = v > 0.0 ? v : 0.0;
    }
    for (int64_t c = 0; c < C; ++c) {
      const float* wr = a.w2 + c * Ch;
      double v = a.b2[c];
      for (int64_t j = 0; j < Ch; ++j) v += static_cast<double>(wr[j]) * hidden[j];
      gate[n * C + c] = static_cast<float>(a.alpha / (1.0 + std::exp(-v)));
    }
  }
}

// Pass 2, channels-last: out[row, c] = skip[row, c] + gate[n, c] * s[row, c].
template <typename scalar_t>
void apply_rows(const SeResidualArgs& a, const scalar_t* s, const scalar_t* skip, scalar_t* out,
                const float* gate) {
  const int64_t C = a.C, HW = a.HW;
  const int64_t grain = std::max<int64_t>(1, kGrainElems / C);
  at::parallel_for(0, a.N * HW, grain, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const float* g = gate + (r / HW) * C;
      const int64_t off = r * C;
      int64_t c = 0;
      for (; c + V <= C; c += V) {
        const fVec v = at::vec::fmadd(Lanes<scalar_t>::load(s + off + c), fVec::loadu(g + c),
                                      Lanes<scalar_t>::load(skip + off + c));
        Lanes<scalar_t>::store(out + off + c, v);
      }
      if (c < C) {
        const int64_t m = C - c;
        const fVec v = at::vec::fmadd(Lanes<scalar_t>::load(s + off + c, m), fVec::loadu(g + c, m),
                                      Lanes<scalar_t>::load(skip + off + c, m));
        Lanes<scalar_t>::store(out + off + c, v, m);
      }
    }
  });
}

// Pass 2, NCHW: plane p = n * C + c has one gate value.
template <typename scalar_t>
void apply_planes(const SeResidualArgs& a, const scalar_t* s, const scalar_t* skip, scalar_t* out,
                  const float* gate) {
  const int64_t HW = a.HW, total = a.N * a.C * HW;
  at::parallel_for(0, total, kGrainElems, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    while (i < end) {
      const int64_t p = i / HW;
      const int64_t stop = std::min(end, (p + 1) * HW);
      const fVec g(gate[p]);
      for (; i + V <= stop; i += V) {
        Lanes<scalar_t>::store(out + i, at::vec::fmadd(Lanes<scalar_t>::load(s + i), g,
                                                       Lanes<scalar_t>::load(skip + i)));
      }
      if (i < stop) {
        const int64_t m = stop - i;
        Lanes<scalar_t>::store(out + i, at::vec::fmadd(Lanes<scalar_t>::load(s + i, m), g,
                                                       Lanes<scalar_t>::load(skip + i, m)), m);
        i = stop;
      }
    }
  });
}

template <typename scalar_t>
void run(const SeResidualArgs& a) {
  const auto* s = static_cast<const scalar_t*>(a.s);
  const auto* skip = static_cast<const scalar_t*>(a.skip);
  auto* out = static_cast<scalar_t*>(a.out);
  std::vector<double> sums(a.N * a.C, 0.0);
  if (a.rows) {
    sums_rows<scalar_t>(a, s, sums);
  } else {
    sums_planes<scalar_t>(a, s, sums);
  }
  std::vector<float> gate(a.N * a.C);
  gates(a, sums, gate);
  if (a.rows) {
    apply_rows<scalar_t>(a, s, skip, out, gate.data());
  } else {
    apply_planes<scalar_t>(a, s, skip, out, gate.data());
  }
}

}  // namespace

void se_residual_kernel(const SeResidualArgs& a) {
  if (a.dtype == DType::kFloat32) {
    run<float>(a);
  } else {
    run<c10::BFloat16>(a);
  }
}

}  // namespace D2C_ISA_NS
}  // namespace d2c_fast
