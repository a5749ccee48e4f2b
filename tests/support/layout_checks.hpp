// tests/support/layout_checks.hpp - comparison of a built AnchorLayout with the expected one,
// for the host and GPU layout-builder tests (plain C++: compiles under g++ and nvcc).
//
// Include after <doctest/doctest.h> (or support/gpu_main.hpp) in the test file.
#pragma once

#include <doctest/doctest.h>

#include "ansan/layout.hpp"

namespace ansan::test {

// Checks every per-token and per-anchor array of `got` against `want` (not cu_seqlens: each
// caller decides whether a wrong cu_seqlens stops the test).
inline void check_same_layout_arrays(const AnchorLayout& got, const AnchorLayout& want) {
  CHECK(got.pos == want.pos);
  CHECK(got.is_anchor == want.is_anchor);
  CHECK(got.seg == want.seg);
  CHECK(got.seg_start == want.seg_start);
  CHECK(got.cu_anchors == want.cu_anchors);
  CHECK(got.anchor_pos == want.anchor_pos);
}

}  // namespace ansan::test
