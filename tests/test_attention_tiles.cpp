// The key-range arithmetic of the CUDA attention kernels (cuda/detail/attention_tiles.hpp),
// on the host: a row's local band plus its retained prefix is exactly the set the predicate
// ansan::visible allows, tiles classified "none"/"full" really are, decode splits partition
// the keys, the query-tile table maps every tile to its sequence, and prefill_work counts
// what the tensor kernel's walk does.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "ansan/cuda/detail/attention_tiles.hpp"
#include "ansan/cuda/prefill_work.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;
using namespace ansan::cuda::detail;

namespace {

// One sequence's keys as a cache holds them: some positions of [0, n), ascending, stored at
// rows [first_row, first_row + size) of a larger buffer (rows outside are slack).
struct Cache {
  std::vector<std::int32_t> k_pos;            // (rows)
  std::vector<std::uint8_t> k_is_anchor;      // (rows)
  std::vector<std::int32_t> retained_prefix;  // (rows + 1)
  std::vector<std::int32_t> retained_rows;    // (retained keys)
  std::int32_t first_row = 0, keys = 0;
};

Cache make_cache(std::mt19937& rng, const MaskPolicy& p, const AnchorLayout& L, double keep) {
  Cache c;
  std::uniform_int_distribution<int> slack(0, 3);
  std::bernoulli_distribution kept(keep);
  c.first_row = slack(rng);
  c.k_pos.assign(std::size_t(c.first_row), -7);  // slack rows: garbage the kernels never read
  c.k_is_anchor.assign(std::size_t(c.first_row), 1);
  for (std::int32_t j = 0; j < L.seq_len(0); ++j)
    if (kept(rng)) {
      c.k_pos.push_back(j);
      c.k_is_anchor.push_back(L.is_anchor[std::size_t(j)]);
      ++c.keys;
    }
  for (int s = slack(rng); s > 0; --s) c.k_pos.push_back(-7), c.k_is_anchor.push_back(1);
  // retained flags over every row (0 for slack), prefix-summed, as build_plan does
  c.retained_prefix.assign(c.k_pos.size() + 1, 0);
  for (std::size_t t = 0; t < c.k_pos.size(); ++t) {
    const bool inside = std::int32_t(t) >= c.first_row && std::int32_t(t) < c.first_row + c.keys;
    const bool flag = inside && is_retained(p, KeyInfo{c.k_pos[t], c.k_is_anchor[t] != 0});
    c.retained_prefix[t + 1] = c.retained_prefix[t] + flag;
    if (flag) c.retained_rows.push_back(std::int32_t(t));
  }
  return c;
}

std::set<std::int32_t> rows_of(const RowKeys& rk, const Cache& c) {
  std::set<std::int32_t> rows;
  for (std::int32_t t = rk.local_begin; t < rk.local_end; ++t) rows.insert(t);
  const std::int32_t base = c.retained_prefix[std::size_t(c.first_row)];
  for (std::int32_t r = 0; r < rk.retained; ++r) {
    const std::int32_t row = c.retained_rows[std::size_t(base + r)];
    CHECK_MESSAGE(rows.count(row) == 0, "retained key ", row, " is also in the local band");
    rows.insert(row);
  }
  return rows;
}

}  // namespace

TEST_CASE("first_key_at_or_after equals std::lower_bound on strictly ascending positions") {
  std::mt19937 rng(77);
  for (int trial = 0; trial < 400; ++trial) {
    // Dense runs (a prefill's keys) and gaps of every size (compacted caches), after slack rows.
    std::vector<std::int32_t> k_pos(std::size_t(rng() % 4), -9);
    const std::int32_t begin = std::int32_t(k_pos.size()), n = std::int32_t(rng() % 70);
    const int gap_odds = int(rng() % 4);  // 0: no gaps at all
    std::int32_t p = std::int32_t(rng() % 5);
    for (std::int32_t i = 0; i < n; ++i) {
      k_pos.push_back(p);
      p += 1 + (gap_odds && rng() % 4 < unsigned(gap_odds) ? std::int32_t(rng() % 9) : 0);
    }
    const std::int32_t end = std::int32_t(k_pos.size());
    k_pos.push_back(-9);  // slack after the range: never read
    for (std::int32_t pos = -3; pos <= p + 3; ++pos) {
      const auto expected =
          std::lower_bound(k_pos.begin() + begin, k_pos.begin() + end, pos) - k_pos.begin();
      REQUIRE(first_key_at_or_after(k_pos.data(), begin, end, pos) == expected);
    }
  }
}

TEST_CASE("row_keys: local band + retained prefix == the predicate, every policy and cache") {
  std::mt19937 rng(20240521);
  int rows_checked = 0;
  for (const MaskPolicy& p : test::all_policies()) {
    for (int trial = 0; trial < 150; ++trial) {
      const double mean_segment = 1.0 + trial % 9;
      AnchorLayout L = test::random_layout(rng, 1, 40, mean_segment);
      if (trial < int(test::edge_flags().size()))
        L = build_layout_from_flags(test::edge_flags()[std::size_t(trial)],
                                    std::vector<std::int32_t>{0, std::int32_t(test::edge_flags()[std::size_t(trial)].size())});
      const double keep = trial % 3 == 0 ? 1.0 : (trial % 3 == 1 ? 0.7 : 0.3);  // full, thinned caches
      const Cache c = make_cache(rng, p, L, keep);
      for (std::int32_t i = 0; i < L.seq_len(0); ++i) {
        const QueryInfo q = L.query(0, i);
        const RowKeys rk = row_keys(p, q, c.k_pos.data(), c.retained_prefix.data(), c.first_row,
                                    c.first_row + c.keys);
        std::set<std::int32_t> expected;
        for (std::int32_t t = c.first_row; t < c.first_row + c.keys; ++t)
          if (visible(p, q, KeyInfo{c.k_pos[std::size_t(t)], c.k_is_anchor[std::size_t(t)] != 0}))
            expected.insert(t);
        REQUIRE_MESSAGE(rows_of(rk, c) == expected, policy_name(p), " trial ", trial, " row ", i);
        for (std::int32_t t = rk.local_begin; t < rk.local_end; ++t)  // the band is the local half
          CHECK(visible_local(p, q, KeyInfo{c.k_pos[std::size_t(t)], c.k_is_anchor[std::size_t(t)] != 0}));
        ++rows_checked;
      }
    }
  }
  CHECK(rows_checked > 10000);
}

TEST_CASE("classify_tile: 'none' tiles hold no visible pair, 'full' tiles only visible pairs") {
  std::mt19937 rng(77);
  int full = 0, none = 0, partial = 0;
  for (const MaskPolicy& p : test::all_policies()) {
    for (int trial = 0; trial < 60; ++trial) {
      const AnchorLayout L = test::random_layout(rng, 1, 120, 2.0 + trial % 20);
      const Cache c = make_cache(rng, p, L, trial % 2 ? 1.0 : 0.6);
      const std::int32_t n = L.seq_len(0);
      for (const int tile_rows : {1, 4, 16}) {
        for (const int tile_keys : {1, 8, 16}) {
          for (std::int32_t q0 = 0; q0 < n; q0 += tile_rows) {
            std::vector<RowKeys> rks;
            TileBounds local = TileBounds::empty(), retained = TileBounds::empty();
            for (std::int32_t i = q0; i < std::min(n, q0 + tile_rows); ++i) {
              rks.push_back(row_keys(p, L.query(0, i), c.k_pos.data(), c.retained_prefix.data(),
                                     c.first_row, c.first_row + c.keys));
              local.add(rks.back().local_begin, rks.back().local_end);
              retained.add(0, rks.back().retained);
            }
            for (int part = 0; part < 2; ++part) {
              const TileBounds& bounds = part == 0 ? retained : local;
              // the walk [first, last) covers every index any row sees
              for (const RowKeys& rk : rks) {
                const std::int32_t lo = part == 0 ? 0 : rk.local_begin;
                const std::int32_t hi = part == 0 ? rk.retained : rk.local_end;
                if (lo < hi) CHECK((lo >= bounds.first() && hi <= bounds.last()));
              }
              for (std::int32_t begin = bounds.first(); begin < bounds.last(); begin += tile_keys) {
                const TileMask mask = classify_tile(bounds, begin, begin + tile_keys);
                int seen = 0, pairs = 0;
                for (const RowKeys& rk : rks)
                  for (std::int32_t x = begin; x < begin + tile_keys; ++x, ++pairs)
                    seen += part == 0 ? x < rk.retained : (x >= rk.local_begin && x < rk.local_end);
                if (mask == TileMask::none) {
                  CHECK(seen == 0);
                  ++none;
                }
                if (mask == TileMask::full) {
                  CHECK(seen == pairs);
                  ++full;
                }
                partial += mask == TileMask::partial;
              }
            }
          }
        }
      }
    }
  }
  CHECK(full > 0);  // every class occurs, so none of the checks above is vacuous
  CHECK(partial > 0);
  CHECK(none + full + partial > 1000);
}

TEST_CASE("split_range: the splits of a sequence partition its keys in whole tiles") {
  for (std::int32_t keys = 0; keys < 300; keys += 7)
    for (const std::int32_t splits : {1, 2, 3, 5, 8, 64})
      for (const std::int32_t tile : {1, 16, 64}) {
        std::int32_t next = 0;
        for (std::int32_t s = 0; s < splits; ++s) {
          const SplitRange r = split_range(keys, splits, s, tile);
          CHECK(r.begin == next);
          CHECK(r.end >= r.begin);
          CHECK((r.begin % tile == 0 || r.begin == keys));
          next = r.end;
        }
        CHECK(next == keys);
      }
}

TEST_CASE("query-tile table: every tile maps to the sequence that owns it") {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const int batch = 1 + trial % 9;
    std::uniform_int_distribution<int> len(0, trial % 2 ? 5 : 200);  // many empty sequences too
    const int tile_rows = trial % 3 == 0 ? 16 : 64;
    std::vector<std::int32_t> prefix{0};
    for (int b = 0; b < batch; ++b) prefix.push_back(prefix.back() + tiles_of(len(rng), tile_rows));
    for (std::int32_t x = 0; x < prefix.back(); ++x) {
      const std::int32_t b = sequence_of_tile(prefix.data(), batch, x);
      REQUIRE((b >= 0 && b < batch));
      CHECK(prefix[std::size_t(b)] <= x);
      CHECK(x < prefix[std::size_t(b) + 1]);
    }
  }
  CHECK(tiles_of(0, 64) == 0);
  CHECK(tiles_of(64, 64) == 1);
  CHECK(tiles_of(65, 64) == 2);
}

namespace {

// Replays one kernel's walk over a ragged batch on the host and counts, per (query row, key
// row), how often the kernel would add that pair to the softmax. It must be exactly once for
// each visible pair and never for anything else (a zero-filled slot included).
//   block_rows / warp_rows / tile_keys: the kernel's tile shape
//   predicate_in_partial: simt asks visible_retained / visible_local per element, the tensor
//   kernel compares indices (TileWalk::seen) with a per-warp class
// Returns the tiles it loaded and the (warp, tile) products it did not skip.
struct WalkCounts {
  double loaded_tiles = 0, warp_tiles = 0, held_groups = 0;
};
WalkCounts replay_walk(const MaskPolicy& p, const AnchorLayout& L, double keep, std::mt19937& rng,
                       int block_rows, int warp_rows, int tile_keys, bool predicate_in_partial) {
  WalkCounts counts;
  // Keys: each sequence's kept positions after a few slack rows, in one buffer.
  std::bernoulli_distribution kept(keep);
  std::vector<std::int32_t> k_pos, k_begin, k_end;
  std::vector<std::uint8_t> k_anchor;
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    for (int s = int(rng() % 3); s > 0; --s) k_pos.push_back(-5), k_anchor.push_back(1);
    k_begin.push_back(std::int32_t(k_pos.size()));
    for (std::int32_t j = 0; j < L.seq_len(b); ++j)
      if (kept(rng)) k_pos.push_back(j), k_anchor.push_back(L.is_anchor[std::size_t(L.cu_seqlens[std::size_t(b)] + j)]);
    k_end.push_back(std::int32_t(k_pos.size()));
  }
  std::vector<std::int32_t> prefix(k_pos.size() + 1, 0), retained_rows;
  for (std::int32_t b = 0; b < L.batch(); ++b)
    for (std::int32_t t = k_begin[std::size_t(b)]; t < k_end[std::size_t(b)]; ++t)
      if (is_retained(p, KeyInfo{k_pos[std::size_t(t)], k_anchor[std::size_t(t)] != 0})) prefix[std::size_t(t) + 1] = 1;
  for (std::size_t t = 0; t < k_pos.size(); ++t) {
    if (prefix[t + 1]) retained_rows.push_back(std::int32_t(t));
    prefix[t + 1] += prefix[t];
  }
  const auto key = [&](std::int32_t row) { return KeyInfo{k_pos[std::size_t(row)], k_anchor[std::size_t(row)] != 0}; };

  for (std::int32_t b = 0; b < L.batch(); ++b) {
    const std::int32_t kb = k_begin[std::size_t(b)], ke = k_end[std::size_t(b)], n = L.seq_len(b);
    const std::int32_t retained_base = prefix[std::size_t(kb)];
    for (std::int32_t q0 = 0; q0 < n; q0 += block_rows) {
      const std::int32_t rows = std::min(block_rows, n - q0);
      std::vector<RowKeys> rk;
      for (std::int32_t r = 0; r < rows; ++r) rk.push_back(row_keys(p, L.query(b, q0 + r), k_pos.data(), prefix.data(), kb, ke));
      const auto bounds_of = [&](std::int32_t r0, std::int32_t r1, int part) {
        TileBounds bounds = TileBounds::empty();
        for (std::int32_t r = r0; r < std::min(r1, rows); ++r)
          part == 0 ? bounds.add(0, rk[std::size_t(r)].retained) : bounds.add(rk[std::size_t(r)].local_begin, rk[std::size_t(r)].local_end);
        return bounds;
      };
      const TileWalk walk{bounds_of(0, rows, 0), bounds_of(0, rows, 1), tile_keys};
      counts.loaded_tiles += walk.count();
      std::vector<std::vector<int>> count(std::size_t(rows), std::vector<int>(std::size_t(ke - kb), 0));
      for (std::int32_t j = 0; j < walk.count(); ++j) {
        const std::int32_t begin = walk.begin(j);
        counts.held_groups += walk.groups_held(j, 16);
        // The held groups cover every held slot, and the last group holds a key.
        REQUIRE(walk.groups_held(j, 16) * 16 >= walk.slots_held(j));
        REQUIRE((walk.groups_held(j, 16) - 1) * 16 < walk.slots_held(j));
        for (std::int32_t w0 = 0; w0 < rows; w0 += warp_rows) {
          const TileMask mask = walk.classify(bounds_of(w0, w0 + warp_rows, 0), bounds_of(w0, w0 + warp_rows, 1), j);
          if (mask != TileMask::none) counts.warp_tiles += 1;
          for (std::int32_t r = w0; r < std::min(w0 + warp_rows, rows); ++r)
            for (std::int32_t index = begin; index < begin + tile_keys; ++index) {
              const std::int32_t row = walk.key_row(index, retained_rows.data() + retained_base);
              REQUIRE((row >= 0) ==
                      (index - begin < walk.slots_held(j)));  // the loader's zero fill
              bool seen;
              if (predicate_in_partial) {
                const QueryInfo q = L.query(b, q0 + r);
                seen = mask == TileMask::full ||
                       (mask == TileMask::partial && row >= 0 &&
                        (walk.in_retained(index) ? visible_retained(p, q, key(row)) : visible_local(p, q, key(row))));
              } else {
                seen = walk.seen(mask, rk[std::size_t(r)], j).contains(index);
              }
              if (!seen) continue;
              REQUIRE_MESSAGE((row >= kb && row < ke), "pair (", q0 + r, ", slot ", index, ") counted outside the keys");
              ++count[std::size_t(r)][std::size_t(row - kb)];
            }
        }
      }
      for (std::int32_t r = 0; r < rows; ++r)
        for (std::int32_t t = kb; t < ke; ++t) {
          const int expected = visible(p, L.query(b, q0 + r), key(t)) ? 1 : 0;
          REQUIRE_MESSAGE(count[std::size_t(r)][std::size_t(t - kb)] == expected, policy_name(p), " sequence ", b,
                          " row ", q0 + r, " key row ", t, " (pos ", k_pos[std::size_t(t)], ")");
        }
    }
  }
  return counts;
}

}  // namespace

TEST_CASE("tile walks of the tensor and simt kernels add each visible pair exactly once") {
  std::mt19937 rng(4242);
  for (const MaskPolicy& p : test::all_policies())
    for (int trial = 0; trial < 12; ++trial) {
      const AnchorLayout L = test::random_layout(rng, 1 + trial % 4, trial % 3 == 0 ? 400 : 150, 1.5 + 3 * trial);
      const double keep = trial % 2 ? 1.0 : 0.75;
      replay_walk(p, L, keep, rng, 64, 16, 64, false);  // attention_mma_sm80.cuh
      replay_walk(p, L, keep, rng, 16, 16, 32, true);   // attention_simt.cuh (block-level class)
    }
}

TEST_CASE("prefill_work counts the tensor kernel's walk: by hand, and against the replay") {
  // Causal, one sequence of 128: block 0 walks key tile 0 with its 4 warps; block 1 walks tiles
  // 0 (full for every warp) and 1 (partial for every warp).
  const std::vector<std::uint8_t> none(128, 0);
  const ansan::cuda::PrefillWork hand = ansan::cuda::prefill_work(
      build_layout_from_flags(none, std::vector<std::int32_t>{0, 128}), MaskPolicy::causal());
  CHECK(hand.query_tiles == 2);
  CHECK(hand.loaded_tiles == 3);
  CHECK(hand.warp_tiles == 12);
  CHECK(hand.computed_pairs() == 12 * 16 * 64);
  CHECK(hand.visible_pairs == 128 * 129 / 2);
  CHECK(hand.causal_pairs == 128 * 129 / 2);
  CHECK(hand.held_groups == 3 * 4);
  CHECK(hand.warpgroup_pairs(false) == 3 * 64 * 64);
  CHECK(hand.warpgroup_pairs(true) == 3 * 64 * 64);
  // Each block's band is its whole causal range; row i of a block of 64 misses 63 - i of it.
  CHECK(hand.local_masked_pairs == 2 * (64 * 63 / 2));
  CHECK(hand.retained_masked_pairs == 0);
  CHECK(hand.padding_pairs == 0);
  // 100 tokens: block 1's second tile holds keys 64..99, 3 groups of 16; S still whole tiles.
  const ansan::cuda::PrefillWork short_tail = ansan::cuda::prefill_work(
      build_layout_from_flags(std::vector<std::uint8_t>(100, 0), std::vector<std::int32_t>{0, 100}),
      MaskPolicy::causal());
  CHECK(short_tail.loaded_tiles == 3);
  CHECK(short_tail.held_groups == 4 + 4 + 3);
  CHECK(short_tail.warpgroup_pairs(false) == 3 * 64 * 64);
  CHECK(short_tail.warpgroup_pairs(true) == 0.5 * (3 * 64 * 64 + 11 * 16 * 64));
  // Block 1 has 36 rows over 100 keys in 2 tiles: 28 empty slots and 28 absent rows.
  CHECK(short_tail.padding_pairs == 2 * 64 * 64 - 100 * 36);
  CHECK(short_tail.local_masked_pairs == 64 * 63 / 2 + 35 * 36 / 2);

  std::mt19937 rng(777);
  for (const MaskPolicy& p : test::all_policies())
    for (int trial = 0; trial < 6; ++trial) {
      const AnchorLayout L =
          test::random_layout(rng, 1 + trial % 3, trial % 2 ? 300 : 120, 2.0 + 4 * trial);
      double visible_pairs = 0;
      for (std::int32_t b = 0; b < L.batch(); ++b)
        for (std::int32_t i = 0; i < L.seq_len(b); ++i)
          for (std::int32_t j = 0; j < L.seq_len(b); ++j) {
            const std::size_t t = std::size_t(L.cu_seqlens[std::size_t(b)] + j);
            visible_pairs +=
                visible(p, L.query(b, i), KeyInfo{L.pos[t], L.is_anchor[t] != 0}) ? 1 : 0;
          }
      for (const TileShape shape : {ansan::cuda::detail::kTensorTileShape, TileShape{16, 16, 32}}) {
        const WalkCounts replayed =
            replay_walk(p, L, 1.0, rng, shape.block_rows, shape.warp_rows, shape.tile_keys, false);
        const ansan::cuda::PrefillWork work = ansan::cuda::prefill_work(L, p, shape);
        CAPTURE(policy_name(p));
        CHECK(work.loaded_tiles == replayed.loaded_tiles);
        CHECK(work.warp_tiles == replayed.warp_tiles);
        CHECK(work.held_groups == replayed.held_groups);
        CHECK(work.visible_pairs == visible_pairs);
        CHECK(work.computed_pairs() >= work.visible_pairs);
        CHECK(work.padding_pairs >= 0);
        CHECK(work.retained_masked_pairs >= 0);
        CHECK(work.local_masked_pairs >= 0);
        CHECK(work.visible_pairs + work.padding_pairs + work.retained_masked_pairs +
                  work.local_masked_pairs ==
              work.warpgroup_pairs(false));
      }
    }
}

TEST_CASE("the walk packs a query tile's retained keys and its band end to end") {
  // AnLLM, 200 tokens: segments of 2 up to the anchor at 39, then one open segment from 40.
  // Rows 64..127 see the 20 anchors and the band [40, row]: walk indices 0..19 are the anchors
  // (key rows 1, 3, .., 39), 20..107 key rows 40..127, so 2 tiles where one for the anchors
  // and two for the band's 88 keys would be 3.
  std::vector<std::uint8_t> flags(200, 0);
  for (int t = 1; t < 40; t += 2) flags[std::size_t(t)] = 1;
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 200});
  std::vector<std::int32_t> retained_rows;
  for (int t = 1; t < 40; t += 2) retained_rows.push_back(t);
  std::vector<std::int32_t> tiles;
  ansan::cuda::for_each_query_tile(
      L, MaskPolicy::anllm(), ansan::cuda::detail::kTensorTileShape,
      [&](const ansan::cuda::QueryTileWalk& t) {
        tiles.push_back(t.walk.count());
        if (t.q_begin != 64) return;
        const TileWalk& w = t.walk;
        CHECK(w.end() == 108);
        CHECK(w.local_shift() == 20 - 40);
        CHECK(w.key_row(0, retained_rows.data()) == 1);
        CHECK(w.key_row(19, retained_rows.data()) == 39);
        CHECK(w.key_row(20, retained_rows.data()) == 40);
        CHECK(w.key_row(107, retained_rows.data()) == 127);
        CHECK(w.key_row(108, retained_rows.data()) == -1);
        CHECK(w.in_retained(19));
        CHECK_FALSE(w.in_retained(20));
        CHECK(w.slots_held(0) == 64);
        CHECK(w.slots_held(1) == 44);
        CHECK(w.groups_held(1, 16) == 3);
        // Warp 0 (rows 64..79): every anchor, and key rows 40..row of the band.
        CHECK(t.warp_class(0, 0) == TileMask::partial);  // anchors full, band masked
        CHECK(t.warp_class(0, 1) == TileMask::none);  // key rows 84..127: beyond rows 64..79
        const SeenKeys row_64 = w.seen(TileMask::partial, t.rows[0], 0);
        CHECK(row_64.retained.begin == 0);
        CHECK(row_64.retained.end == 20);
        CHECK(row_64.local.begin == 20);  // key row 40
        CHECK(row_64.local.end == 20 + 25);  // key rows 40..64
        CHECK(t.warp_class(3, 1) == TileMask::partial);  // rows 112..127 see 84..112 and more
        // Classes of the two parts combine: full for one part and nothing of the other is full.
        CHECK(w.classify(TileBounds{0, 0, 64, 64}, TileBounds::empty(), 0) == TileMask::full);
        CHECK(w.classify(TileBounds::empty(), TileBounds{0, 0, 500, 500}, 1) == TileMask::full);
        CHECK(w.classify(TileBounds::empty(), TileBounds::empty(), 0) == TileMask::none);
      });
  // Rows 0..63: 20 anchors + band [0, 64); 64..127: 20 + 88; 128..191: 20 + 152; 192..199:
  // 20 + 160. Packed: 2, 2, 3, 3 tiles (each part in its own tiles: 2, 3, 4, 4).
  CHECK(tiles == std::vector<std::int32_t>{2, 2, 3, 3});
}
