// Density report (mask_density.hpp): pair counts and tile counts against brute-force
// enumeration with ansan::visible, for every policy, random ragged batches and the edge
// layouts; SPEC section 4's estimate at n = 8192, L = 20; and bad input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>

#include "ansan/mask_density.hpp"
#include "support/mask_checks.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

namespace {

std::vector<AnchorLayout> layouts_under_test(std::mt19937& rng, int random_count) {
  std::vector<AnchorLayout> layouts;
  for (int k = 0; k < random_count; ++k)
    layouts.push_back(test::random_layout(rng, 1 + k % 5, 1 + k % 50, 1.0 + k % 10));
  for (AnchorLayout& edge : test::edge_layouts()) layouts.push_back(std::move(edge));
  layouts.push_back(build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0}));
  return layouts;
}

}  // namespace

TEST_CASE("pair and tile counts equal brute-force enumeration") {
  std::mt19937 rng(505);
  auto layouts = layouts_under_test(rng, 500);
  for (int k = 0; k < 4; ++k)  // several tiles of 64 per sequence
    layouts.push_back(test::random_layout(rng, 2, 500, 4.0 + 12.0 * k));
  const std::vector<std::int32_t> tiles{1, 2, 3, 5, 8, 64, std::numeric_limits<std::int32_t>::max()};
  for (const MaskPolicy& p : test::all_policies())
    for (const AnchorLayout& L : layouts) {
      const MaskDensity d = mask_density(L, p, tiles);
      REQUIRE(d.visible_pairs.size() == std::size_t(L.batch()));
      REQUIRE(d.tiles.size() == tiles.size());
      std::int64_t total_visible = 0, total_causal = 0;
      std::vector<TileDensity> want(tiles.size());
      for (std::int32_t b = 0; b < L.batch(); ++b) {
        const std::int32_t n = L.seq_len(b);
        const std::vector<std::uint8_t> dense = test::sequence_mask(L, p, b);  // (n, n)
        const std::int64_t pairs = std::count(dense.begin(), dense.end(), std::uint8_t(1));
        CHECK(d.visible_pairs[b] == pairs);
        CHECK(d.causal_pairs[b] == std::int64_t(n) * (n + 1) / 2);
        total_visible += pairs;
        total_causal += std::int64_t(n) * (n + 1) / 2;
        for (std::size_t s = 0; s < tiles.size(); ++s) {
          const std::int64_t t = tiles[s];
          for (std::int64_t qt = 0; qt * t < n; ++qt)
            for (std::int64_t kt = 0; kt <= qt; ++kt) {
              std::int64_t seen = 0, inside = 0;
              for (std::int64_t i = qt * t; i < std::min<std::int64_t>(n, (qt + 1) * t); ++i)
                for (std::int64_t j = kt * t; j < std::min<std::int64_t>(n, (kt + 1) * t); ++j)
                  seen += dense[std::size_t(i) * n + j], ++inside;
              ++want[s].causal_tiles;
              want[s].visited_tiles += seen > 0;
              want[s].full_tiles += seen == inside;
            }
        }
      }
      CHECK(d.total_visible == total_visible);
      CHECK(d.total_causal == total_causal);
      for (std::size_t s = 0; s < tiles.size(); ++s) {
        CHECK(d.tiles[s].tile == tiles[s]);
        CHECK(d.tiles[s].causal_tiles == want[s].causal_tiles);
        CHECK(d.tiles[s].visited_tiles == want[s].visited_tiles);
        CHECK(d.tiles[s].full_tiles == want[s].full_tiles);
      }
    }
}

TEST_CASE("SPEC section 4: at n = 8192, L = 20, about 19x fewer pairs but almost every tile") {
  std::mt19937 rng(8192);
  const auto flags = test::random_flags(rng, 8192, 20.0);
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 8192});
  const MaskDensity d = mask_density(L, MaskPolicy::anllm());
  const double fewer = 1.0 / d.pair_fraction();
  CHECK(fewer > 15.0);  // SPEC's n*L/2 + n^2/(2L) estimate gives 19x; segments are random
  CHECK(fewer < 24.0);
  REQUIRE(d.tiles.size() == 2);
  CHECK(d.tiles[0].tile == 64);
  CHECK(d.tiles[0].visited_fraction() > 0.9);
  CHECK(d.tiles[1].visited_fraction() > 0.9);
  CHECK(density_report(d).find("tile 128") != std::string::npos);
  // Plain causal: every pair and every causal tile, the diagonal tiles never full.
  const MaskDensity c = mask_density(L, MaskPolicy::causal());
  CHECK(c.total_visible == c.total_causal);
  CHECK(c.tiles[0].visited_tiles == c.tiles[0].causal_tiles);
  CHECK(c.tiles[0].full_tiles == c.tiles[0].causal_tiles - 8192 / 64);
}

TEST_CASE("mask_density rejects bad input") {
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0, 0, 0, 1, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 4, 10});
  test::check_throws_naming([&] { mask_density(L, MaskPolicy::anllm(), {64, 0}); }, "tile_sizes[1]");
  test::check_throws_naming([&] { mask_density(L, MaskPolicy::anllm(), {-3}); }, "tile_sizes[0]");
  test::check_throws_naming([&] { mask_density(L, MaskPolicy::sliding_window(0)); }, "policy.window");
  MaskPolicy both = MaskPolicy::anllm();
  both.local = LocalBound::segment_and_window;  // window left at 0
  test::check_throws_naming([&] { mask_density(L, both); }, "policy.window");
  AnchorLayout broken = L;
  broken.cu_seqlens = {0, 11, 10};
  test::check_throws_naming([&] { mask_density(broken, MaskPolicy::anllm()); }, "layout.cu_seqlens[2]");
  broken = L;
  broken.pos[5] = 4;
  test::check_throws_naming([&] { mask_density(broken, MaskPolicy::anllm()); }, "layout.pos[5]");
}
