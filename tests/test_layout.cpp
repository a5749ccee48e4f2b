// Anchor layouts (SPEC.md section 1): the O(n) builders against the definitions, and the
// argument checks.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <random>

#include "ansan/layout.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

// SPEC section 1, word for word, in O(n^2): seg = anchors strictly before i, seg_start = one
// past the last anchor before i.
static void check_against_definition(const AnchorLayout& L) {
  REQUIRE(L.cu_anchors.size() == L.cu_seqlens.size());
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    std::vector<std::int32_t> anchors;
    for (std::int32_t i = 0; i < L.seq_len(b); ++i) {
      const std::int64_t t = L.cu_seqlens[b] + i;
      std::int32_t before = 0, start = 0;
      for (std::int32_t j = 0; j < i; ++j)
        if (L.is_anchor[L.cu_seqlens[b] + j]) ++before, start = j + 1;
      CHECK(L.pos[t] == i);
      CHECK(L.seg[t] == before);
      CHECK(L.seg_start[t] == start);
      if (L.is_anchor[t]) anchors.push_back(i);
    }
    const std::vector<std::int32_t> got(L.anchor_pos.begin() + L.cu_anchors[b],
                                        L.anchor_pos.begin() + L.cu_anchors[b + 1]);
    CHECK(got == anchors);
  }
}

TEST_CASE("layout from token ids, EP and AC selectors") {
  //                         T  h  e  .  C  a  t  .  S  o
  const std::vector<std::int32_t> tokens{84, 104, 101, 46, 67, 97, 116, 46, 83, 111};
  const std::vector<std::int32_t> cu{0, 10};
  const AnchorLayout L = build_layout(tokens, cu, AnchorSelector::endpoint({46}), 256);
  CHECK(L.anchor_pos == std::vector<std::int32_t>{3, 7});
  CHECK(L.seg == std::vector<std::int32_t>{0, 0, 0, 0, 1, 1, 1, 1, 2, 2});
  CHECK(L.seg_start == std::vector<std::int32_t>{0, 0, 0, 0, 4, 4, 4, 4, 8, 8});
  check_against_definition(L);

  const AnchorLayout ac = build_layout(tokens, cu, AnchorSelector::appended(116), 256);
  CHECK(ac.anchor_pos == std::vector<std::int32_t>{6});
}

TEST_CASE("layout builders agree with the definition on random ragged batches") {
  std::mt19937 rng(20240211);
  for (int trial = 0; trial < 300; ++trial) {
    const AnchorLayout L = test::random_layout(rng, 1 + trial % 7, 40, 1.0 + trial % 9);
    check_against_definition(L);
    const AnchorLayout P = build_layout_from_positions(L.anchor_pos, L.cu_anchors, L.cu_seqlens);
    CHECK(P.is_anchor == L.is_anchor);
    CHECK(P.seg_start == L.seg_start);
    std::vector<std::int32_t> ids(L.is_anchor.begin(), L.is_anchor.end());
    for (auto& id : ids) id = id ? 7 : int(rng() % 7);  // id 7 marks an anchor
    const AnchorLayout T = build_layout(ids, L.cu_seqlens, AnchorSelector::appended(7), 8);
    CHECK(T.seg == L.seg);
  }
}

TEST_CASE("edge layouts") {
  for (const auto& flags : test::edge_flags()) {
    const std::vector<std::int32_t> cu{0, std::int32_t(flags.size())};
    check_against_definition(build_layout_from_flags(flags, cu));
  }
  const AnchorLayout empty_batch = build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0});
  CHECK(empty_batch.batch() == 0);
}

TEST_CASE("bad input is rejected with the argument named") {
  const std::vector<std::int32_t> tokens{1, 2, 3};
  const auto ep = AnchorSelector::endpoint({2});
  CHECK_THROWS_WITH_AS(build_layout(tokens, std::vector<std::int32_t>{0, 2, 1, 3}, ep, 8),
                       doctest::Contains("cu_seqlens[2] is 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(build_layout(tokens, std::vector<std::int32_t>{1, 3}, ep, 8),
                       doctest::Contains("cu_seqlens[0] is 1, expected 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(build_layout(tokens, std::vector<std::int32_t>{0, 2}, ep, 8),
                       doctest::Contains("expected the token count 3"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(build_layout(std::vector<std::int32_t>{1, 9, 3}, std::vector<std::int32_t>{0, 3}, ep, 8),
                       doctest::Contains("tokens[1] is 9"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(build_layout(tokens, std::vector<std::int32_t>{0, 3}, AnchorSelector::appended(-1), 8),
                       doctest::Contains("selector.anchor_ids[0] is -1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(build_layout_from_positions(std::vector<std::int32_t>{2, 1}, std::vector<std::int32_t>{0, 2},
                                                   std::vector<std::int32_t>{0, 4}),
                       doctest::Contains("anchor_pos[1] is 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(build_layout_from_positions(std::vector<std::int32_t>{4}, std::vector<std::int32_t>{0, 1},
                                                   std::vector<std::int32_t>{0, 4}),
                       doctest::Contains("anchor_pos[0] is 4"), std::invalid_argument);
}
