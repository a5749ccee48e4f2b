// tests/support/mask_checks.hpp - shared checks of the mask export tests: the brute-force mask
// of one sequence straight from ansan::visible, and "this call throws naming that argument".
//
// Include after <doctest/doctest.h> (and its DOCTEST_CONFIG_* define) in the test file.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <doctest/doctest.h>

#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

namespace ansan::test {

// Sequence b's (n, n) row-major 0/1 mask, element by element from the SPEC predicate.
inline std::vector<std::uint8_t> sequence_mask(const AnchorLayout& L, const MaskPolicy& p,
                                               std::int32_t b) {
  const std::int32_t n = L.seq_len(b);
  std::vector<std::uint8_t> mask(std::size_t(n) * n);
  for (std::int32_t i = 0; i < n; ++i)
    for (std::int32_t j = 0; j < n; ++j)
      mask[std::size_t(i) * n + j] = visible(p, L.query(b, i), L.key(b, j));
  return mask;
}

// Checks that call() throws std::invalid_argument whose message names `argument`.
template <class F>
void check_throws_naming(F&& call, const char* argument) {
  try {
    call();
    FAIL("no exception for a bad ", argument);
  } catch (const std::invalid_argument& e) {
    CHECK_MESSAGE(std::strstr(e.what(), argument) != nullptr, e.what());
  }
}

}  // namespace ansan::test
