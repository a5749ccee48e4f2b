// The mask predicate (SPEC.md sections 2, 3 and 5): its two halves partition it, each named
// policy matches SPEC's table, and the cache keep rule keeps exactly what a future row sees.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <random>

#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

TEST_CASE("AnLLM mask, SPEC section 2, on the sample sentence") {
  // T h e . C a t . S o : anchors at 3 and 7
  const std::vector<std::uint8_t> flags{0, 0, 0, 1, 0, 0, 0, 1, 0, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 10});
  const auto row = [&](MaskPolicy p, int i) {
    std::string s;
    for (int j = 0; j < 10; ++j) s += visible(p, L.query(0, i), L.key(0, j)) ? '#' : '.';
    return s;
  };
  CHECK(row(MaskPolicy::anllm(), 9) == "...#...###");  // earlier anchors + own segment
  CHECK(row(MaskPolicy::anllm(), 7) == "....####..");  // an anchor sees its segment only
  CHECK(row(MaskPolicy::anllm_legacy(), 7) == "...#####..");
  CHECK(row(MaskPolicy::causal(), 5) == "######....");
  CHECK(row(MaskPolicy::sliding_window(2), 5) == "....##....");
  CHECK(row(MaskPolicy::streaming_llm(1, 2), 6) == "#....##...");
  CHECK(row(MaskPolicy::sepllm(1, 2), 9) == "#..#...###");
}

TEST_CASE("local and retained halves partition the predicate, for every policy") {
  std::mt19937 rng(7);
  for (const MaskPolicy& p : test::all_policies()) {
    for (int trial = 0; trial < 60; ++trial) {
      const AnchorLayout L = test::random_layout(rng, 3, 30, 1.0 + trial % 6);
      for (std::int32_t b = 0; b < L.batch(); ++b)
        for (std::int32_t i = 0; i < L.seq_len(b); ++i)
          for (std::int32_t j = 0; j < L.seq_len(b); ++j) {
            const QueryInfo q = L.query(b, i);
            const KeyInfo k = L.key(b, j);
            const bool loc = visible_local(p, q, k), ret = visible_retained(p, q, k);
            CHECK_FALSE((loc && ret));
            CHECK(visible(p, q, k) == (loc || ret));
            if (j > i) CHECK_FALSE(visible(p, q, k));
            if (j == i) CHECK(visible(p, q, k));  // a row always sees itself
          }
    }
  }
}

TEST_CASE("still_visible keeps exactly the keys some future row can see") {
  // Extend a random prefix by random futures; a key is needed iff some future row sees it.
  std::mt19937 rng(11);
  for (const MaskPolicy& p : test::all_policies()) {
    for (int trial = 0; trial < 40; ++trial) {
      const int n = 1 + trial % 25;
      auto prefix = test::random_flags(rng, n, 1.0 + trial % 5);
      std::int32_t open_start = 0;
      for (int j = 0; j < n; ++j)
        if (prefix[j]) open_start = j + 1;
      std::vector<bool> needed(std::size_t(n), false);
      for (int future = 0; future < 30; ++future) {
        auto flags = prefix;
        const auto tail = test::random_flags(rng, 1 + future % 12, 1.0 + future % 4);
        flags.insert(flags.end(), tail.begin(), tail.end());
        const AnchorLayout L =
            build_layout_from_flags(flags, std::vector<std::int32_t>{0, std::int32_t(flags.size())});
        for (std::int32_t i = n; i < L.seq_len(0); ++i)
          for (std::int32_t j = 0; j < n; ++j) needed[j] = needed[j] || visible(p, L.query(0, i), L.key(0, j));
      }
      for (std::int32_t j = 0; j < n; ++j) {
        const bool keep = still_visible(p, KeyInfo{j, prefix[j] != 0}, n, open_start);
        if (needed[j]) CHECK(keep);  // never drop what a future row may see
      }
      // ... and what is kept is seen by the next token if it is a non-anchor.
      std::vector<std::uint8_t> flags = prefix;
      flags.push_back(0);
      const AnchorLayout L =
          build_layout_from_flags(flags, std::vector<std::int32_t>{0, std::int32_t(flags.size())});
      for (std::int32_t j = 0; j < n; ++j)
        CHECK(still_visible(p, L.key(0, j), n, open_start) == visible(p, L.query(0, n), L.key(0, j)));
    }
  }
}

TEST_CASE("policy validation") {
  CHECK_THROWS_WITH_AS(validate_policy(MaskPolicy::sliding_window(0), "f"),
                       "ansan::f: policy.window is 0, expected >= 1", std::invalid_argument);
  CHECK_THROWS_AS(validate_policy(MaskPolicy::streaming_llm(-1, 4), "f"), std::invalid_argument);
  CHECK_NOTHROW(validate_policy(MaskPolicy::anllm(), "f"));
  CHECK(std::string(policy_name(MaskPolicy::sepllm(4, 64))) == "sepllm");
}

TEST_CASE("policies are equal when every field is (what an attention plan compares)") {
  CHECK(MaskPolicy::anllm() == MaskPolicy{});
  CHECK(MaskPolicy::sepllm(4, 64) == MaskPolicy::sepllm(4, 64));
  const MaskPolicy base = MaskPolicy::sepllm(4, 64);
  MaskPolicy other = base;
  other.local = LocalBound::segment_and_window;
  CHECK(other != base);
  other = base, other.window = 65;
  CHECK(other != base);
  other = base, other.retain_anchors = false;
  CHECK(other != base);
  other = base, other.sinks = 5;
  CHECK(other != base);
  other = base, other.retained_rows = RetainedRows::non_anchor;
  CHECK(other != base);
}
