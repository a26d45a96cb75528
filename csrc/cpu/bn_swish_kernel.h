// Body of the d2c_fast::bn_swish CPU kernel, compiled once per CPU capability.
//
// Included by csrc/cpu/bn_swish.cpp (generic build, namespace d2c_fast::cpu_default) and by
// csrc/cpu/bn_swish_avx2.cpp / bn_swish_avx512.cpp, which first include isa_target.h: it switches
// the compiler target with `#pragma GCC target` and defines CPU_CAPABILITY /
// CPU_CAPABILITY_AVX2|AVX512 so that at::vec::Vectorized uses its AVX2 / AVX-512 specialisations
// (in ATen's per-capability inline namespace, so the three copies never share a symbol).
// bn_swish.cpp picks the copy at run time through isa_dispatch.h (at::get_cpu_capability(),
// which honours ATEN_CPU_CAPABILITY=default|avx2|avx512).
//
// Everything here is in an anonymous namespace except D2C_ISA_NS::bn_swish_kernel(), so template
// instantiations stay local to each translation unit. Link order puts the generic translation
// unit first, so any inline function from a torch header that more than one copy emits is
// resolved to its generic-target version (safe on every CPU).
//
// See bn_swish.cpp for what the op computes, the layouts and the dtypes.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <vector>

#include "dtypes.h"

#ifndef D2C_ISA_NS
#error "define D2C_ISA_NS (the namespace of this copy) before including bn_swish_kernel.h"
#endif

namespace d2c_fast {

// Arguments of one call; x/y point to data of `dtype` (float32, bfloat16 or float16).
struct BnSwishArgs {
  const void* x;
  void* y;
  const float* scale;
  const float* shift;
  int64_t total;  // elements
  int64_t C;      // channels
  int64_t hw;     // elements per (n, c) plane for the NCHW path
  bool rows;      // true: rows of C elements (channels-last / 2-D); false: NCHW planes
  DType dtype;
};

namespace D2C_ISA_NS {
namespace {

#include "vec_math.h"  // fVec, V, exp_lanes, swish_lanes_lp (this ISA copy)

constexpr int64_t kFSize = V;
// Every loop step handles two float vectors (= one vector of bfloat16/half).
constexpr int64_t kBlock = 2 * kFSize;
constexpr int64_t kGrain = 32768;             // elements per parallel task
constexpr int64_t kMaxPattern = 1 << 16;      // floats in the repeated scale/shift buffer

// swish(v) = v * sigmoid(v) = v / (1 + exp(-v)): an exact division, and e^u overflowing to +inf
// above u ~ 88.7 (v / (1 + inf) -> -0; -inf / inf -> NaN as PyTorch). bfloat16 results with
// AVX-512: the cheaper swish_lanes_lp (~1e-4 relative, far below bf16's rounding step; the same
// special values).
template <typename scalar_t>
inline fVec vswish(fVec v) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) return swish_lanes_lp(v);
#endif
  return v / (fVec(1.0f) + exp_lanes(fVec(0.0f) - v, 89.0f));
}

// Load/store kBlock elements of scalar_t as two float vectors, with an optional count (< kBlock).
template <typename scalar_t>
struct Io {
  static inline void load(const scalar_t* p, fVec& a, fVec& b) {
    std::tie(a, b) = at::vec::convert_to_float<scalar_t>(at::vec::Vectorized<scalar_t>::loadu(p));
  }
  static inline void load(const scalar_t* p, int64_t n, fVec& a, fVec& b) {
    std::tie(a, b) =
        at::vec::convert_to_float<scalar_t>(at::vec::Vectorized<scalar_t>::loadu(p, n));
  }
  static inline void store(scalar_t* p, const fVec& a, const fVec& b) {
    at::vec::convert_from_float<scalar_t>(a, b).store(p);
  }
  static inline void store(scalar_t* p, int64_t n, const fVec& a, const fVec& b) {
    at::vec::convert_from_float<scalar_t>(a, b).store(p, static_cast<int>(n));
  }
};

template <>
struct Io<float> {
  static inline void load(const float* p, fVec& a, fVec& b) {
    a = fVec::loadu(p);
    b = fVec::loadu(p + kFSize);
  }
  static inline void load(const float* p, int64_t n, fVec& a, fVec& b) {
    a = fVec::loadu(p, std::min(n, kFSize));
    b = n > kFSize ? fVec::loadu(p + kFSize, n - kFSize) : fVec(0.0f);
  }
  static inline void store(float* p, const fVec& a, const fVec& b) {
    a.store(p);
    b.store(p + kFSize);
  }
  static inline void store(float* p, int64_t n, const fVec& a, const fVec& b) {
    a.store(p, static_cast<int>(std::min(n, kFSize)));
    if (n > kFSize) b.store(p + kFSize, static_cast<int>(n - kFSize));
  }
};

static_assert(at::vec::Vectorized<c10::BFloat16>::size() == kBlock, "unexpected vector width");
static_assert(at::vec::Vectorized<c10::Half>::size() == kBlock, "unexpected vector width");

// Contiguous NCHW: flat index i is in plane i / hw, channel (i / hw) % C.
template <typename scalar_t>
void kernel_planes(const scalar_t* x, scalar_t* y, const float* scale, const float* shift,
                   int64_t total, int64_t C, int64_t hw) {
  at::parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    while (i < end) {
      const int64_t plane = i / hw;
      const int64_t c = plane % C;
      const int64_t stop = std::min(end, (plane + 1) * hw);
      const fVec s(scale[c]), b(shift[c]);
      fVec a0, a1;
      for (; i + kBlock <= stop; i += kBlock) {
        Io<scalar_t>::load(x + i, a0, a1);
        a0 = vswish<scalar_t>(at::vec::fmadd(a0, s, b));
        a1 = vswish<scalar_t>(at::vec::fmadd(a1, s, b));
        Io<scalar_t>::store(y + i, a0, a1);
      }
      if (i < stop) {
        const int64_t n = stop - i;
        Io<scalar_t>::load(x + i, n, a0, a1);
        a0 = vswish<scalar_t>(at::vec::fmadd(a0, s, b));
        a1 = vswish<scalar_t>(at::vec::fmadd(a1, s, b));
        Io<scalar_t>::store(y + i, n, a0, a1);
        i = stop;
      }
    }
  });
}

// Rows of C (channels-last, 2-D): channel of flat index i is i % C. `ps`/`pb` repeat
// scale/shift with period P (a multiple of both C and kBlock) and have kBlock extra entries,
// so a full vector can be read at any offset in [0, P).
template <typename scalar_t>
void kernel_rows_pattern(const scalar_t* x, scalar_t* y, const float* ps, const float* pb,
                         int64_t total, int64_t P) {
  at::parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
    int64_t off = begin % P;
    int64_t i = begin;
    fVec a0, a1;
    for (; i + kBlock <= end; i += kBlock) {
      Io<scalar_t>::load(x + i, a0, a1);
      a0 = vswish<scalar_t>(at::vec::fmadd(a0, fVec::loadu(ps + off), fVec::loadu(pb + off)));
      a1 = vswish<scalar_t>(at::vec::fmadd(a1, fVec::loadu(ps + off + kFSize), fVec::loadu(pb + off + kFSize)));
      Io<scalar_t>::store(y + i, a0, a1);
      off += kBlock;
      if (off >= P) off -= P;
    }
    if (i < end) {
      const int64_t n = end - i;
      Io<scalar_t>::load(x + i, n, a0, a1);
      a0 = vswish<scalar_t>(at::vec::fmadd(a0, fVec::loadu(ps + off), fVec::loadu(pb + off)));
      a1 = vswish<scalar_t>(at::vec::fmadd(a1, fVec::loadu(ps + off + kFSize), fVec::loadu(pb + off + kFSize)));
      Io<scalar_t>::store(y + i, n, a0, a1);
    }
  });
}

// Rows of C for very large C: one row at a time, channel vectors read straight from scale/shift.
template <typename scalar_t>
void kernel_rows_plain(const scalar_t* x, scalar_t* y, const float* scale, const float* shift,
                       int64_t rows, int64_t C) {
  const int64_t grain = std::max<int64_t>(1, kGrain / C);
  at::parallel_for(0, rows, grain, [&](int64_t rb, int64_t re) {
    fVec a0, a1, s0, s1, b0, b1;
    for (int64_t r = rb; r < re; ++r) {
      const scalar_t* xr = x + r * C;
      scalar_t* yr = y + r * C;
      int64_t c = 0;
      for (; c + kBlock <= C; c += kBlock) {
        Io<scalar_t>::load(xr + c, a0, a1);
        Io<float>::load(scale + c, s0, s1);
        Io<float>::load(shift + c, b0, b1);
        a0 = vswish<scalar_t>(at::vec::fmadd(a0, s0, b0));
        a1 = vswish<scalar_t>(at::vec::fmadd(a1, s1, b1));
        Io<scalar_t>::store(yr + c, a0, a1);
      }
      if (c < C) {
        const int64_t n = C - c;
        Io<scalar_t>::load(xr + c, n, a0, a1);
        Io<float>::load(scale + c, n, s0, s1);
        Io<float>::load(shift + c, n, b0, b1);
        a0 = vswish<scalar_t>(at::vec::fmadd(a0, s0, b0));
        a1 = vswish<scalar_t>(at::vec::fmadd(a1, s1, b1));
        Io<scalar_t>::store(yr + c, n, a0, a1);
      }
    }
  });
}

template <typename scalar_t>
void run_rows(const scalar_t* x, scalar_t* y, const float* scale, const float* shift,
              int64_t total, int64_t C) {
  const int64_t P = std::lcm(C, kBlock);
  if (P > kMaxPattern) {
    kernel_rows_plain<scalar_t>(x, y, scale, shift, total / C, C);
    return;
  }
  std::vector<float> ps(P + kBlock), pb(P + kBlock);
  for (int64_t j = 0; j < P + kBlock; ++j) {
    ps[j] = scale[j % C];
    pb[j] = shift[j % C];
  }
  kernel_rows_pattern<scalar_t>(x, y, ps.data(), pb.data(), total, P);
}

}  // namespace

void bn_swish_kernel(const BnSwishArgs& a) {
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    const auto* x = static_cast<const scalar_t*>(a.x);
    auto* y = static_cast<scalar_t*>(a.y);
    if (a.rows) {
      run_rows<scalar_t>(x, y, a.scale, a.shift, a.total, a.C);
    } else {
      kernel_planes<scalar_t>(x, y, a.scale, a.shift, a.total, a.C, a.hw);
    }
  };
  switch (a.dtype) {
    case DType::kFloat32: run(float{}); break;
    case DType::kBFloat16: run(c10::BFloat16{}); break;
    case DType::kFloat16: run(c10::Half{}); break;
  }
}

}  // namespace D2C_ISA_NS
}  // namespace d2c_fast
