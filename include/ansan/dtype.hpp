// ansan/dtype.hpp - the element types ansan reads and writes: float, fp16 and bf16.
//
// With the CUDA toolkit's headers available, ansan::half and ansan::bf16 are CUDA's own
// __half and __nv_bfloat16, so buffers pass between host and device code unchanged. Without
// them, they are 16-bit storage types with the same bit layout and round-to-nearest-even
// conversion, enough for the CPU path to read and write bf16/fp16 tensors.
//
// to_float(x) and from_float<T>(f) convert on either side; CPU kernels convert whole tiles
// to float before multiplying.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ansan/config.hpp"

#if ANSAN_HAS_CUDA_TYPES
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace ansan {

#if ANSAN_HAS_CUDA_TYPES
using half = __half;
using bf16 = __nv_bfloat16;

ANSAN_HOST_DEVICE float to_float(half x) { return __half2float(x); }
ANSAN_HOST_DEVICE float to_float(bf16 x) { return __bfloat162float(x); }
template <class T>
ANSAN_HOST_DEVICE std::enable_if_t<std::is_same_v<T, half>, T> from_float(float f) {
  return __float2half_rn(f);
}
template <class T>
ANSAN_HOST_DEVICE std::enable_if_t<std::is_same_v<T, bf16>, T> from_float(float f) {
  return __float2bfloat16_rn(f);
}
#else
struct bf16 {
  std::uint16_t bits;
};
struct half {
  std::uint16_t bits;
};

namespace detail {
inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

inline float to_float(bf16 x) { return detail::bits_float(std::uint32_t(x.bits) << 16); }
inline float to_float(half x) {
  const std::uint32_t sign = std::uint32_t(x.bits & 0x8000u) << 16;
  const std::uint32_t exp = (x.bits >> 10) & 0x1fu, mant = x.bits & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float mag = float(mant) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return detail::bits_float(sign | 0x7f800000u | (mant << 13));
  return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <class T>
std::enable_if_t<std::is_same_v<T, bf16>, T> from_float(float f) {
  const std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{std::uint16_t((u >> 16) | 0x40u)};  // NaN
  const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{std::uint16_t(rounded >> 16)};
}
template <class T>
std::enable_if_t<std::is_same_v<T, half>, T> from_float(float f) {
  const std::uint32_t u = detail::float_bits(f);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return half{std::uint16_t(sign | 0x7e00u)};  // NaN
  if (abs >= 0x477ff000u) return half{std::uint16_t(sign | 0x7c00u)};  // overflow to inf
  if (abs < 0x38800000u) {  // subnormal or zero in half: round abs * 2^24 to an integer
    const float scaled = detail::bits_float(abs) * 16777216.0f;
    std::uint32_t m = std::uint32_t(scaled);
    const float frac = scaled - float(m);
    if (frac > 0.5f || (frac == 0.5f && (m & 1u))) ++m;
    return half{std::uint16_t(sign | m)};
  }
  const std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return half{std::uint16_t(sign | ((rounded - (112u << 23)) >> 13))};
}
#endif

ANSAN_HOST_DEVICE float to_float(float x) { return x; }
template <class T>
ANSAN_HOST_DEVICE std::enable_if_t<std::is_same_v<T, float>, T> from_float(float f) {
  return f;
}

// Name of an element type, for error messages and benchmark labels.
template <class T>
constexpr const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, half>) return "float16";
  else if constexpr (std::is_same_v<T, bf16>) return "bfloat16";
  else return "unsupported";
}

}  // namespace ansan
