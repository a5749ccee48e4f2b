// tests/support/row_checks.hpp - bitwise comparisons of KV rows for the host and GPU compaction
// and cache tests (plain C++: compiles under g++ and nvcc).
//
// Include after <doctest/doctest.h> (or support/gpu_main.hpp) in the test file.
#pragma once

#include <cstring>
#include <vector>

#include <doctest/doctest.h>

namespace ansan::test {

// Same length and the same bytes (so NaN payloads and signed zeros count).
template <class E>
bool same_bytes(const std::vector<E>& a, const std::vector<E>& b) {
  // memcmp must not see the null data() of an empty vector, even for zero bytes.
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(E)) == 0);
}

// Checks that two row sets (members k, v, pos, anchor) hold the same rows, K and V bit for bit.
template <class Rows>
void check_same_rows(const Rows& got, const Rows& want) {
  CHECK(same_bytes(got.k, want.k));
  CHECK(same_bytes(got.v, want.v));
  CHECK(got.pos == want.pos);
  CHECK(got.anchor == want.anchor);
}

}  // namespace ansan::test
