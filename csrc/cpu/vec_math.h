// Vector maths shared by the CPU kernel bodies (bn_swish_kernel.h, dwconv_kernel.h,
// mbconv_kernel.h, se_residual_kernel.h): float lanes of the current ISA copy, a polynomial exp, a refined
// reciprocal estimate, Swish (and a cheaper one for bf16 results), and float <-> float/bfloat16
// loads and stores. Included INSIDE `namespace d2c_fast::D2C_ISA_NS::{anonymous}`
// of a kernel body (so every ISA copy and translation unit gets its own), never on its own.
// No include guard on purpose: each kernel body of a translation unit includes it once.

using fVec = at::vec::Vectorized<float>;
using iVec = at::vec::Vectorized<int32_t>;

constexpr int64_t V = fVec::size();

// exp(u) on float lanes: u = n*ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), a degree-6
// polynomial for e^r (Cephes expf coefficients), times 2^n. u is clamped to [-87.3, hi]: at the
// bottom e^u ~ 1e-38 (it is only ever added to 1); at the default top e^87 ~ 6e37 keeps
// 1 / (1 + e^u) a normal float (for recip_lanes); hi = 89 lets e^u overflow to +inf instead
// (bn_swish's exact division wants that: -inf / inf = NaN, as PyTorch's SiLU(-inf)). A NaN u
// gives some finite value here; the caller multiplies by v, so NaN still propagates.
inline fVec exp_lanes(fVec u, float hi = 87.0f) {
  u = at::vec::clamp(u, fVec(-87.3f), fVec(hi));
#if defined(CPU_CAPABILITY_AVX512)
  // n by one rounding instruction, 2^n by vscalefps: 4 instructions fewer than the portable path.
  const __m512 uu = u;
  const __m512 nn = _mm512_roundscale_ps(_mm512_mul_ps(uu, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const fVec n(nn);
#else
  const fVec shifter(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the mantissa
  const fVec t = at::vec::fmadd(u, fVec(1.44269504088896341f), shifter);
  const fVec n = t - shifter;
#endif
  fVec r = at::vec::fmadd(n, fVec(-0.693359375f), u);
  r = at::vec::fmadd(n, fVec(2.12194440e-4f), r);
  fVec p(1.9875691500e-4f);
  p = at::vec::fmadd(p, r, fVec(1.3981999507e-3f));
  p = at::vec::fmadd(p, r, fVec(8.3333452e-3f));
  p = at::vec::fmadd(p, r, fVec(4.1665795894e-2f));
  p = at::vec::fmadd(p, r, fVec(1.6666665459e-1f));
  p = at::vec::fmadd(p, r, fVec(5.0000001201e-1f));
  p = at::vec::fmadd(p, r * r, r + fVec(1.0f));
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_scalef_ps(p, nn);
#else
  // The integer bits of t are 0x4B400000 + n; (n + 127) << 23 are the bits of 2^n.
  const iVec bits = (at::vec::cast<int32_t>(t) - iVec(0x4B400000 - 127)) * iVec(1 << 23);
  return p * at::vec::cast<float>(bits);
#endif
}

// 1 / d for d in [1, 6e37]: the hardware reciprocal estimate (14 bits with AVX-512, 12 with
// AVX2) refined by one Newton step r' = r * (2 - d * r) (relative error < 3e-7), instead of a
// division, whose throughput would otherwise cost as much as the whole 5x5 convolution.
inline fVec recip_lanes(const fVec& d) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 dd = d;
  const __m512 r = _mm512_rcp14_ps(dd);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(dd, r, _mm512_set1_ps(2.0f)));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256 dd = d;
  const __m256 r = _mm256_rcp_ps(dd);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(dd, r, _mm256_set1_ps(2.0f)));
#else
  return fVec(1.0f) / d;
#endif
}

inline fVec swish_lanes(const fVec& v) {
  return v * recip_lanes(fVec(1.0f) + exp_lanes(fVec(0.0f) - v));
}

// Swish for values that end up in bfloat16 (stored as bf16, or the fp32 hidden rows of the bf16
// MBConv path, whose depthwise sums are rounded to bf16): 13 instructions instead of 21 with
// AVX-512. One bound instead of a clamp (vscalefps saturates 2^n to inf by itself), one-constant
// ln2 reduction, degree-4 Taylor polynomial for e^r (|r| <= ln2/2: relative error < 4.3e-5), the
// bare 14-bit reciprocal estimate (< 6.2e-5): the result is within ~1.1e-4 relative of Swish,
// 35x below bf16's rounding step (2^-8). Other ISAs: swish_lanes, with -inf -> NaN as here.
inline fVec swish_lanes_lp(const fVec& v) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 vv = v;
  // u = max(-v, -88): v = +inf then gives e^u ~ 0 and inf * 1 = inf (Swish(+inf)); a NaN v
  // gives u = -88 here (maxps returns its second operand) and NaN through the final v * ...
  const __m512 u = _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), vv), _mm512_set1_ps(-88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(u, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147180559945f), u);
  __m512 p = _mm512_set1_ps(1.0f / 24.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512 d = _mm512_add_ps(_mm512_scalef_ps(p, n), _mm512_set1_ps(1.0f));
  return fVec(_mm512_mul_ps(vv, _mm512_rcp14_ps(d)));
#else
  // swish_lanes gives -inf * (tiny) = -inf at -inf; PyTorch's SiLU (and the AVX-512 form above)
  // give NaN there
  const fVec neg_inf(-__builtin_inff());
  return fVec::blendv(swish_lanes(v), fVec(__builtin_nanf("")), v == neg_inf);
#endif
}

// The epilogue of a value stored as out_t: Swish (if SW), the cheaper one for bfloat16.
template <bool SW, typename out_t = float>
inline fVec epilogue(const fVec& v) {
  if constexpr (!SW) {
    return v;
  } else if constexpr (std::is_same_v<out_t, c10::BFloat16>) {
    return swish_lanes_lp(v);
  } else {
    return swish_lanes(v);
  }
}

// Load V (or n < V) elements as float lanes; store float lanes as V (or n) elements.
template <typename scalar_t>
struct Lanes;

template <>
struct Lanes<float> {
  static inline fVec load(const float* p) { return fVec::loadu(p); }
  static inline fVec load(const float* p, int64_t n) { return fVec::loadu(p, n); }
  static inline void store(float* p, const fVec& v) { v.store(p); }
  static inline void store(float* p, const fVec& v, int64_t n) { v.store(p, n); }
};

template <>
struct Lanes<c10::BFloat16> {
  using bVec = at::vec::Vectorized<c10::BFloat16>;
  static_assert(bVec::size() == 2 * V, "unexpected bfloat16 vector width");
  static inline fVec load(const c10::BFloat16* p) {
    fVec v;
    at::vec::load_to_float<c10::BFloat16>(p, v);
    return v;
  }
  static inline fVec load(const c10::BFloat16* p, int64_t n) {
    return std::get<0>(at::vec::convert_to_float<c10::BFloat16>(bVec::loadu(p, n)));
  }
  static inline void store(c10::BFloat16* p, const fVec& v) {
    at::vec::convert_from_float<c10::BFloat16>(v, v).store(p, V);
  }
  static inline void store(c10::BFloat16* p, const fVec& v, int64_t n) {
    at::vec::convert_from_float<c10::BFloat16>(v, v).store(p, n);
  }
};

