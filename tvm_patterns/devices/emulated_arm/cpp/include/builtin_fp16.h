/*
 * tvm-patterns: IEEE-754 narrowing/widening conversions that the TVM runtime includes as
 * <builtin_fp16.h> (builtin_fp16.cc exports __gnu_f2h_ieee etc. from them). Written here for
 * the binary formats with fewer exponent bits in the narrow type (float/double <-> half);
 * narrowing rounds to nearest even, NaNs stay quiet NaNs.
 */
#ifndef TVM_PATTERNS_BUILTIN_FP16_H_
#define TVM_PATTERNS_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace tvm_patterns_fp {

template <typename REP_T, int SIG_BITS>
struct Format {
  static constexpr int kBits = sizeof(REP_T) * 8;
  static constexpr int kExpBits = kBits - SIG_BITS - 1;
  static constexpr int kExpMax = (1 << kExpBits) - 1;  // all-ones exponent: inf / NaN
  static constexpr int kBias = kExpMax >> 1;
  static constexpr REP_T kSigMask = (REP_T(1) << SIG_BITS) - 1;
};

template <typename TO, typename FROM>
inline TO BitCast(FROM v) {
  static_assert(sizeof(TO) == sizeof(FROM), "size mismatch");
  TO out;
  std::memcpy(&out, &v, sizeof(TO));
  return out;
}

}  // namespace tvm_patterns_fp

/*! \brief Narrow SRC (e.g. float) to DST (e.g. the bits of a half), rounding to nearest even. */
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
inline DST_T __truncXfYf2__(SRC_T a) {
  using S = tvm_patterns_fp::Format<SRC_REP_T, SRC_SIG_BITS>;
  using D = tvm_patterns_fp::Format<DST_REP_T, DST_SIG_BITS>;
  constexpr int kDrop = SRC_SIG_BITS - DST_SIG_BITS;
  const SRC_REP_T bits = tvm_patterns_fp::BitCast<SRC_REP_T>(a);
  const DST_REP_T sign = static_cast<DST_REP_T>(bits >> (S::kBits - 1)) << (D::kBits - 1);
  const int exp = static_cast<int>((bits >> SRC_SIG_BITS) & SRC_REP_T(S::kExpMax));
  const SRC_REP_T sig = bits & S::kSigMask;

  uint64_t out;  // exponent and significand of the result
  if (exp == S::kExpMax) {
    out = (uint64_t(D::kExpMax) << DST_SIG_BITS);
    if (sig != 0) out |= (uint64_t(1) << (DST_SIG_BITS - 1)) | uint64_t(sig >> kDrop);  // quiet NaN
  } else {
    const int e = exp - S::kBias + D::kBias;  // biased exponent in the narrow format
    if (e >= D::kExpMax) {
      out = uint64_t(D::kExpMax) << DST_SIG_BITS;  // overflow -> inf
    } else if (exp == 0) {
      out = 0;  // source denormals lie far below the narrow format's range
    } else {
      // Normal result: drop kDrop low bits; the exponent sits above them, so a rounding carry
      // moves into it (up to inf). Denormal result: exponent field 0, shift the full significand.
      SRC_REP_T full = e > 0 ? sig : (sig | (SRC_REP_T(1) << SRC_SIG_BITS));
      const int shift = e > 0 ? kDrop : kDrop + 1 - e;
      const uint64_t high = e > 0 ? uint64_t(e) << DST_SIG_BITS : 0;
      if (shift > SRC_SIG_BITS + 1) {
        out = 0;  // below half of the smallest denormal
      } else {
        const SRC_REP_T kept = full >> shift;
        const SRC_REP_T rem = full & ((SRC_REP_T(1) << shift) - 1);
        const SRC_REP_T half = SRC_REP_T(1) << (shift - 1);
        out = high + uint64_t(kept);
        if (rem > half || (rem == half && (kept & 1))) out += 1;
      }
    }
  }
  return tvm_patterns_fp::BitCast<DST_T>(static_cast<DST_REP_T>(sign | DST_REP_T(out)));
}

/*! \brief Widen SRC (e.g. the bits of a half) to DST (e.g. float); exact. */
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
inline DST_T __extendXfYf2__(SRC_T a) {
  using S = tvm_patterns_fp::Format<SRC_REP_T, SRC_SIG_BITS>;
  using D = tvm_patterns_fp::Format<DST_REP_T, DST_SIG_BITS>;
  constexpr int kGrow = DST_SIG_BITS - SRC_SIG_BITS;
  const SRC_REP_T bits = tvm_patterns_fp::BitCast<SRC_REP_T>(a);
  const DST_REP_T sign = DST_REP_T(bits >> (S::kBits - 1)) << (D::kBits - 1);
  int exp = static_cast<int>((bits >> SRC_SIG_BITS) & SRC_REP_T(S::kExpMax));
  DST_REP_T sig = DST_REP_T(bits & S::kSigMask);

  DST_REP_T out;
  if (exp == S::kExpMax) {
    out = (DST_REP_T(D::kExpMax) << DST_SIG_BITS) | (sig << kGrow);
    if (sig != 0) out |= DST_REP_T(1) << (DST_SIG_BITS - 1);
  } else if (exp == 0) {
    if (sig == 0) {
      out = 0;
    } else {  // denormal source: normalise
      int e = 1 - S::kBias + D::kBias;
      while ((sig & (DST_REP_T(1) << SRC_SIG_BITS)) == 0) {
        sig <<= 1;
        --e;
      }
      sig &= DST_REP_T(S::kSigMask);
      out = (DST_REP_T(e) << DST_SIG_BITS) | (sig << kGrow);
    }
  } else {
    out = (DST_REP_T(exp - S::kBias + D::kBias) << DST_SIG_BITS) | (sig << kGrow);
  }
  return tvm_patterns_fp::BitCast<DST_T>(DST_REP_T(sign | out));
}

#endif  // TVM_PATTERNS_BUILTIN_FP16_H_
