// ansan/detail/lower_bound.hpp - std::lower_bound over a range of int32 indices, callable from
// host and device code (the CUDA kernels search sorted positions and packed token lists).
#pragma once

#include <cstdint>

#include "ansan/config.hpp"

namespace ansan::detail {

// The first i in [lo, hi) with values[i] >= x (values ascending there), or hi.
ANSAN_HOST_DEVICE std::int32_t lower_bound_index(const std::int32_t* values, std::int32_t lo,
                                                 std::int32_t hi, std::int32_t x) {
  while (lo < hi) {
    const std::int32_t mid = lo + (hi - lo) / 2;
    if (values[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace ansan::detail
