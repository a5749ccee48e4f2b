// ansan/cpu/detail/softmax_exp.hpp - e^x over a run of floats, for the online softmax.
//
// The softmax exponentiates every score it keeps: about one exp per 4 * head_dim flops of
// matrix products. Eigen's vectorised exp for plain SSE2 (what a build without -march gets)
// costs about as much as libm's scalar expf, a sixth of the whole CPU forward. This loop is
// written so that compilers vectorise it with SSE2 alone: round to the nearest multiple of
// ln 2 with the 1.5 * 2^23 trick, a degree-6 polynomial on the remainder, and the power of two
// built in the exponent bits. Its domain is what the softmax feeds it: scores minus their
// running max (so <= 0), clamped from below so that no result is a denormal. (The clamp is the
// caller's: a comparison inside the loop keeps GCC from vectorising it without -ffast-math.)
//
//   e^x = 2^n * e^r,   n = round(x / ln 2),   r = x - n ln 2 in [-ln2/2, ln2/2]
//
// Relative error against std::exp: under 4e-7 (tested), i.e. a few ulp.
#pragma once

#include <cstdint>
#include <cstring>

#include "ansan/config.hpp"

namespace ansan::cpu::detail {

// x[i] = e^x[i] for i in [0, count); needs -87 <= x[i] <= 0.
inline void exp_nonpositive(float* x, index_t count) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr std::int32_t kRoundBits = 0x4B400000;  // its bit pattern
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln 2 = hi + lo
  for (index_t i = 0; i < count; ++i) {
    const float v = x[i];
    const float shifted = v * kLog2e + kRound;  // n sits in the low mantissa bits
    const float n = shifted - kRound;
    const float r = (v - n * kLn2Hi) - n * kLn2Lo;
    float p = 1.f / 720.f;  // Taylor series of e^r to r^6: truncation under 1.2e-7
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    std::int32_t bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    const std::int32_t power_bits = (bits - kRoundBits + 127) << 23;  // 2^n as a float
    float power;
    std::memcpy(&power, &power_bits, sizeof power);
    x[i] = p * power;
  }
}

}  // namespace ansan::cpu::detail
