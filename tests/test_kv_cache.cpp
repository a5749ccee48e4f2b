// tests/test_kv_cache.cpp - the host anchor KV cache (ansan/kv_cache.hpp).
//
// Random ragged texts are fed to the cache the way anchor-based inference does (a prefill
// chunk, then a few tokens at a time, reduce() after each anchor and at random other times)
// under every policy and both storages. After every reduce() the cache must hold exactly the
// keys that some future query can see, found by brute force with the SPEC predicate over every
// anchor pattern of the next tokens; in between it holds a superset; order, positions, flags and
// K/V data always match what was appended. Also: growth keeps data, bad input leaves the cache
// unchanged, attention over the reduced cache equals attention over the whole text, and a cache
// of several layers equals one cache per layer, refusing calls out of order.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ansan/cpu/attention.hpp"
#include "ansan/kv_cache.hpp"
#include "ansan/reference_attention.hpp"
#include "support/random_layouts.hpp"
#include "support/random_values.hpp"

using namespace ansan;

namespace {

// The K (or V) element of sequence b at position p: distinct, exact in float.
float kv_value(bool value, int b, std::int32_t p, index_t h, index_t d) {
  return float((value ? -1 : 1) * (((b * 4096 + p) * 8 + h) * 16 + d + 1));
}

// Keys j < text.size() that some query at a later position can see, by brute force over every
// anchor pattern of the next `lookahead` tokens.
std::vector<std::int32_t> future_visible(const MaskPolicy& policy,
                                         const std::vector<std::uint8_t>& text) {
  constexpr int lookahead = 3;
  const auto n = std::int32_t(text.size());
  std::vector<bool> seen(text.size(), false);
  for (int pattern = 0; pattern < (1 << lookahead); ++pattern) {
    std::vector<std::uint8_t> longer = text;
    for (int c = 0; c < lookahead; ++c) longer.push_back((pattern >> c) & 1);
    const AnchorLayout L =
        build_layout_from_flags(longer, std::vector<std::int32_t>{0, std::int32_t(longer.size())});
    for (std::int32_t q = n; q < n + lookahead; ++q)
      for (std::int32_t j = 0; j < n; ++j)
        seen[std::size_t(j)] = seen[j] || visible(policy, L.query(0, q), L.key(0, j));
  }
  std::vector<std::int32_t> keys;
  for (std::int32_t j = 0; j < n; ++j)
    if (seen[std::size_t(j)]) keys.push_back(j);
  return keys;
}

// Feeds texts to a cache and checks it against the texts after every step.
struct Feeder {
  std::vector<std::vector<std::uint8_t>> text;  // (B) anchor flags of each whole text
  std::vector<std::int32_t> fed;                // (B) tokens appended so far
  index_t heads, dim;

  // Appends chunk[b] more tokens of each text.
  template <class Cache>
  void append(Cache& cache, const std::vector<std::int32_t>& chunk) {
    std::vector<std::int32_t> cu{0}, pos;
    std::vector<std::uint8_t> anchor;
    for (std::size_t b = 0; b < text.size(); ++b) {
      for (std::int32_t i = 0; i < chunk[b]; ++i) {
        pos.push_back(fed[b] + i);
        anchor.push_back(text[b][std::size_t(fed[b] + i)]);
      }
      cu.push_back(std::int32_t(pos.size()));
    }
    std::vector<float> k(pos.size() * std::size_t(heads * dim)), v(k.size());
    const auto kv = make_view(k.data(), index_t(pos.size()), heads, dim);
    const auto vv = make_view(v.data(), index_t(pos.size()), heads, dim);
    for (std::size_t b = 0; b < text.size(); ++b)
      for (std::int32_t t = cu[b]; t < cu[b + 1]; ++t)
        for (index_t h = 0; h < heads; ++h)
          for (index_t d = 0; d < dim; ++d) {
            kv(t, h, d) = kv_value(false, int(b), pos[std::size_t(t)], h, d);
            vv(t, h, d) = kv_value(true, int(b), pos[std::size_t(t)], h, d);
          }
    cache.append(kv, vv, cu, pos, anchor);
    for (std::size_t b = 0; b < text.size(); ++b) fed[b] += chunk[b];
  }

  // Held rows are in order, carry their flags and data, and include every key a future query
  // can see (exactly those when `exact`).
  template <class Cache>
  void check(const Cache& cache, const MaskPolicy& policy, bool exact) const {
    std::int64_t held = 0;
    for (std::size_t b = 0; b < text.size(); ++b) {
      const auto B = std::int32_t(b);
      const std::vector<std::uint8_t> so_far(text[b].begin(), text[b].begin() + fed[b]);
      const std::vector<std::int32_t> must = future_visible(policy, so_far);
      const std::vector<std::int32_t> pos = cache.positions(B);
      const std::vector<std::uint8_t> flags = cache.anchor_flags(B);
      const std::vector<float> keys = cache.keys(B), values = cache.values(B);
      held += std::int64_t(pos.size());
      CAPTURE(b);
      if (exact)
        CHECK(pos == must);
      else
        CHECK(std::includes(pos.begin(), pos.end(), must.begin(), must.end()));
      CHECK(std::is_sorted(pos.begin(), pos.end()));
      REQUIRE(flags.size() == pos.size());
      REQUIRE(keys.size() == pos.size() * std::size_t(heads * dim));
      for (std::size_t i = 0; i < pos.size(); ++i) {
        REQUIRE(pos[i] < fed[b]);
        CHECK(flags[i] == text[b][std::size_t(pos[i])]);
        for (index_t h = 0; h < heads; ++h)
          for (index_t d = 0; d < dim; ++d) {
            const std::size_t e =
                (i * std::size_t(heads) + std::size_t(h)) * std::size_t(dim) + std::size_t(d);
            REQUIRE(keys[e] == kv_value(false, int(b), pos[i], h, d));
            REQUIRE(values[e] == kv_value(true, int(b), pos[i], h, d));
          }
      }
      CHECK(cache.next_pos(B) == fed[b]);
      std::int32_t open = 0;
      for (std::int32_t i = 0; i < fed[b]; ++i)
        if (text[b][std::size_t(i)]) open = i + 1;
      CHECK(cache.open_seg_start(B) == open);
    }
    CHECK(cache.entries() == held);
    const std::size_t row_bytes = 2 * std::size_t(heads * dim) * sizeof(float);
    CHECK(cache.bytes() == std::size_t(held) * row_bytes);
    std::int64_t total = 0;
    for (const auto n : fed) total += n;
    CHECK(cache.full_cache_bytes() == std::size_t(total) * row_bytes);
  }
};

const KVStorage storages[] = {KVStorage::nhd, KVStorage::hnd};

}  // namespace

TEST_CASE("reduce keeps exactly the keys some future query can see (every policy, both storages)") {
  std::mt19937 rng(21);
  for (const MaskPolicy& policy : test::all_policies())
    for (const KVStorage storage : storages)
      for (int trial = 0; trial < 12; ++trial) {
        Feeder f;
        if (trial < 2) {  // the edge texts side by side in one batch
          f.text = test::edge_flags();
        } else {
          const int batch = 1 + int(rng() % 4);
          for (int b = 0; b < batch; ++b)
            f.text.push_back(test::random_flags(rng, int(rng() % 40), 1.0 + rng() % 6));
        }
        const auto B = std::int32_t(f.text.size());
        f.fed.assign(f.text.size(), 0);
        f.heads = 1 + index_t(rng() % 3), f.dim = 1 + index_t(rng() % 5);
        INFO(std::string(policy_name(policy)), " ", std::string(storage_name(storage)), " trial ",
             trial);
        KVCache<float> cache(B, std::int32_t(f.heads), std::int32_t(f.dim), policy,
                             std::int32_t(rng() % 3), storage);
        std::vector<std::int32_t> chunk(f.text.size());
        for (std::int32_t b = 0; b < B; ++b)  // prefill a random prompt
          chunk[b] = std::int32_t(rng() % (f.text[b].size() + 1));
        f.append(cache, chunk);
        f.check(cache, policy, false);
        std::int64_t before = cache.entries();
        std::int64_t dropped = cache.reduce();
        CHECK(dropped == before - cache.entries());
        f.check(cache, policy, true);
        for (bool more = true; more;) {  // decode a few tokens at a time
          more = false;
          bool anchor = false;
          for (std::int32_t b = 0; b < B; ++b) {
            const auto left = std::int32_t(f.text[b].size()) - f.fed[b];
            chunk[b] = std::min<std::int32_t>(left, std::int32_t(rng() % 3));
            for (std::int32_t i = 0; i < chunk[b]; ++i)
              anchor |= f.text[b][std::size_t(f.fed[b] + i)] != 0;
            more |= left > 0;
          }
          f.append(cache, chunk);
          f.check(cache, policy, false);
          if (anchor || rng() % 5 == 0) {
            before = cache.entries();
            dropped = cache.reduce(int(1 + rng() % 3));
            CHECK(dropped == before - cache.entries());
            f.check(cache, policy, true);
            if (rng() % 4 == 0) {  // again, with nothing new: a reduced cache is already exact
              CHECK(cache.reduce() == 0);
              f.check(cache, policy, true);
            }
          }
        }
      }
}

TEST_CASE("growth keeps the data of every sequence") {
  std::mt19937 rng(22);
  for (const KVStorage storage : storages) {
    Feeder f{{}, {0, 0, 0}, 3, 4};
    for (int b = 0; b < 3; ++b) f.text.push_back(test::random_flags(rng, 200, 5));
    KVCache<float> cache(3, 3, 4, MaskPolicy::causal(), 1, storage);
    CHECK(cache.capacity_per_seq() == 1);
    std::int32_t capacity = 1;
    for (int step = 0; step < 12; ++step) {
      f.append(cache, {std::int32_t(1 + step), std::int32_t(step % 3), std::int32_t(2 * step)});
      f.check(cache, MaskPolicy::causal(), true);  // causal: everything stays
      CHECK(cache.capacity_per_seq() >= std::max({f.fed[0], f.fed[1], f.fed[2]}));
      CHECK(cache.capacity_per_seq() >= capacity);
      capacity = cache.capacity_per_seq();
      CHECK(cache.allocated_bytes() == std::size_t(3 * capacity) * 2 * 12 * sizeof(float));
    }
    CHECK(capacity > 16);
    CHECK(cache.reduce() == 0);
  }
}

TEST_CASE("bad input throws, names the argument and leaves the cache unchanged") {
  Feeder f{{{0, 0, 1, 0, 0, 1, 0, 0}, {1, 0, 0, 0, 0, 0, 0, 0}}, {0, 0}, 2, 3};
  KVCache<float> cache(2, 2, 3, MaskPolicy::anllm(), 4, KVStorage::hnd);
  f.append(cache, {3, 1});
  const auto snapshot = [&] {
    std::vector<std::vector<float>> s;
    for (std::int32_t b = 0; b < 2; ++b) {
      const auto p = cache.positions(b);
      const auto a = cache.anchor_flags(b);
      s.push_back(cache.keys(b)), s.push_back(cache.values(b));
      s.emplace_back(p.begin(), p.end()), s.emplace_back(a.begin(), a.end());
      s.push_back({float(cache.next_pos(b)), float(cache.open_seg_start(b))});
    }
    s.push_back(
        {float(cache.entries()), float(cache.capacity_per_seq()), float(cache.full_cache_bytes())});
    return s;
  };
  std::vector<float> k(2 * 2 * 3, 1.f), v(k.size(), 2.f);
  auto kv = make_view(k.data(), 2, 2, 3), vv = make_view(v.data(), 2, 2, 3);
  std::vector<std::int32_t> cu{0, 1, 2}, pos{3, 1};
  std::vector<std::uint8_t> anchor{0, 0};
  const auto expect_throw = [&](const char* argument) {
    const auto before = snapshot();
    CHECK_THROWS_WITH_AS(cache.append(kv, vv, cu, pos, anchor), doctest::Contains(argument),
                         std::invalid_argument);
    CHECK(snapshot() == before);
  };
  SUBCASE("the valid call works") {
    cache.append(kv, vv, cu, pos, anchor);
    CHECK(cache.entries() == 6);
  }
  SUBCASE("flags length mismatch") {
    anchor.push_back(0);
    expect_throw("is_anchor.size()");
  }
  SUBCASE("positions length mismatch") {
    pos.pop_back();
    expect_throw("pos.size()");
  }
  SUBCASE("offsets not monotone") {
    cu = {0, 2, 1};
    expect_throw("cu_new[2]");
  }
  SUBCASE("offsets of the wrong batch") {
    cu = {0, 2};
    expect_throw("cu_new.size()");
  }
  SUBCASE("offsets not covering the chunk") {
    cu = {0, 1, 1};
    expect_throw("cu_new[B]");
  }
  SUBCASE("positions going backwards") {
    pos = {2, 1};
    expect_throw("pos[0]");
  }
  SUBCASE("head count mismatch") {
    kv.shape[1] = vv.shape[1] = 1;
    expect_throw("k.shape");
  }
  SUBCASE("capacity overflow with growth disabled") {
    cache.set_growth(false);
    k.assign(4 * 2 * 3, 1.f), v.assign(k.size(), 2.f);
    kv = make_view(k.data(), 4, 2, 3), vv = make_view(v.data(), 4, 2, 3);
    cu = {0, 2, 4}, pos = {3, 4, 1, 2}, anchor = {0, 0, 0, 0};
    expect_throw("rows of sequence 0");
    cache.set_growth(true);
    cache.append(kv, vv, cu, pos, anchor);
    CHECK(cache.entries() == 8);
  }
  SUBCASE("constructor arguments") {
    CHECK_THROWS_WITH_AS(KVCache<float>(2, 0, 3, MaskPolicy::anllm()),
                         doctest::Contains("heads_kv"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(KVCache<float>(2, 1, 3, MaskPolicy::sliding_window(0)),
                         doctest::Contains("policy.window"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(cache.positions(2), doctest::Contains("sequence index b"),
                         std::invalid_argument);
  }
}

// A cache of L layers, fed rows once and each layer's K/V in a random order, against L
// one-layer caches fed the same rows with append(); the one-layer caches are checked against
// the SPEC predicate above. L = 1 compares append_rows() + write(0) with append().
TEST_CASE("a cache of several layers equals one cache per layer, step by step") {
  std::mt19937 rng(24);
  for (const MaskPolicy& policy : test::all_policies())
    for (const KVStorage storage : storages)
      for (const std::int32_t layers : {1, 3}) {
        std::vector<std::vector<std::uint8_t>> text = test::edge_flags();
        text.push_back(test::random_flags(rng, 50, 4));
        const auto B = std::int32_t(text.size());
        const std::int32_t heads = 1 + std::int32_t(rng() % 3), dim = 1 + std::int32_t(rng() % 5);
        INFO(std::string(policy_name(policy)), " ", std::string(storage_name(storage)), " layers ",
             layers);
        KVCache<float> layered(LayerCount{layers}, B, heads, dim, policy, 0, storage);
        std::vector<KVCache<float>> single;
        for (std::int32_t l = 0; l < layers; ++l)
          single.emplace_back(B, heads, dim, policy, 0, storage);
        CHECK(layered.layers() == layers);
        const auto check_same = [&] {
          REQUIRE(layered.entries() == single[0].entries());
          CHECK(layered.capacity_per_seq() == single[0].capacity_per_seq());
          CHECK(layered.bytes() == std::size_t(layers) * single[0].bytes());
          CHECK(layered.full_cache_bytes() == std::size_t(layers) * single[0].full_cache_bytes());
          CHECK(layered.allocated_bytes() == std::size_t(layers) * single[0].allocated_bytes());
          for (std::int32_t b = 0; b < B; ++b) {
            CHECK(layered.positions(b) == single[0].positions(b));
            CHECK(layered.anchor_flags(b) == single[0].anchor_flags(b));
            CHECK(layered.next_pos(b) == single[0].next_pos(b));
            CHECK(layered.open_seg_start(b) == single[0].open_seg_start(b));
            for (std::int32_t l = 0; l < layers; ++l) {
              CHECK(layered.keys(b, l) == single[l].keys(b));
              CHECK(layered.values(b, l) == single[l].values(b));
            }
          }
        };
        std::vector<std::int32_t> fed(text.size(), 0);
        for (bool more = true; more;) {
          const test::CacheChunk chunk = test::next_chunk(rng, text, fed, 4);
          const std::vector<std::int32_t>& cu = chunk.cu;
          const std::vector<std::int32_t>& pos = chunk.pos;
          const std::vector<std::uint8_t>& anchor = chunk.is_anchor;
          more = false;
          for (std::int32_t b = 0; b < B; ++b) more |= fed[b] < std::int32_t(text[b].size());
          const auto m = index_t(pos.size());
          layered.append_rows(cu, pos, anchor);
          CHECK(layered.chunk_rows() == m);
          std::vector<std::int32_t> order(static_cast<std::size_t>(layers));
          for (std::int32_t l = 0; l < layers; ++l) order[l] = l;
          std::shuffle(order.begin(), order.end(), rng);
          for (const std::int32_t l : order) {
            CHECK(layered.written(l) == (m == 0));
            std::vector<float> k(std::size_t(m * heads * dim)), v(k.size());
            test::fill_standard_normal(rng, {&k, &v});
            const auto kv = make_view<const float>(k.data(), m, heads, dim);
            const auto vv = make_view<const float>(v.data(), m, heads, dim);
            layered.write(l, kv, vv);
            CHECK(layered.written(l));
            single[l].append(kv, vv, cu, pos, anchor);
          }
          check_same();
          if (chunk.any_anchor || rng() % 4 == 0) {
            const std::int64_t dropped = layered.reduce(int(1 + rng() % 2));
            for (auto& cache : single) CHECK(cache.reduce() == dropped);
            CHECK(layered.chunk_rows() == 0);
            check_same();
          }
        }
        // Layers share every metadata pointer and differ in K and V only.
        AttentionArgs<float> first, last;
        layered.bind_keys(first, 0);
        layered.bind_keys(last, layers - 1);
        CHECK(first.cu_seqlens_k == last.cu_seqlens_k);
        CHECK(first.k_pos == last.k_pos);
        CHECK(first.k_is_anchor == last.k_is_anchor);
        CHECK(first.maybe_k_seq_start == last.maybe_k_seq_start);
        CHECK((first.k.data == last.k.data) == (layers == 1));
        CHECK((first.v.data == last.v.data) == (layers == 1));
      }
}

TEST_CASE("a cache of several layers refuses calls out of order or without a layer") {
  KVCache<float> cache(LayerCount{2}, 2, 2, 3, MaskPolicy::anllm(), 1, KVStorage::hnd);
  std::vector<float> k(3 * 2 * 3, 1.f), v(k.size(), 2.f);
  const auto kv = make_view<const float>(k.data(), 3, 2, 3);
  const auto vv = make_view<const float>(v.data(), 3, 2, 3);
  const std::vector<std::int32_t> cu{0, 2, 3}, pos{0, 1, 0}, later{2, 3, 1};
  const std::vector<std::uint8_t> anchor{0, 1, 0};
  cache.append_rows(cu, pos, anchor);
  cache.write(0, kv, vv);
  const auto snapshot = [&] {
    std::vector<std::vector<float>> s;
    for (std::int32_t b = 0; b < 2; ++b) {
      const auto p = cache.positions(b);
      s.emplace_back(p.begin(), p.end());
      for (std::int32_t l = 0; l < 2; ++l)
        s.push_back(cache.keys(b, l)), s.push_back(cache.values(b, l));
      s.push_back({float(cache.next_pos(b)), float(cache.open_seg_start(b))});
    }
    s.push_back({float(cache.entries()), float(cache.capacity_per_seq()),
                 float(cache.chunk_rows()), float(cache.written(0)), float(cache.written(1))});
    return s;
  };
  const auto before = snapshot();
  const auto refuses = [&](const auto& call, const char* argument) {
    CHECK_THROWS_WITH_AS(call(), doctest::Contains(argument), std::invalid_argument);
    CHECK(snapshot() == before);
  };
  refuses([&] { cache.append_rows(cu, later, anchor); }, "layer 1");
  refuses([&] { cache.reduce(); }, "layer 1");
  refuses([&] { cache.write(2, kv, vv); }, "layer");
  refuses([&] { cache.write(-1, kv, vv); }, "layer");
  const auto two_rows = make_view<const float>(k.data(), 2, 2, 3);
  refuses([&] { cache.write(1, two_rows, two_rows); }, "k.shape");
  refuses([&] { cache.append(kv, vv, cu, later, anchor); }, "layers()");
  AttentionArgs<float> args;
  refuses([&] { cache.bind_keys(args); }, "layers()");
  refuses([&] { cache.bind_keys(args, 2); }, "layer");
  refuses([&] { cache.keys(0); }, "layers()");
  refuses([&] { cache.values(1, 5); }, "layer");
  CHECK_THROWS_WITH_AS(KVCache<float>(LayerCount{0}, 1, 1, 4, MaskPolicy::anllm()),
                       doctest::Contains("layers"), std::invalid_argument);
  // Once layer 1 is written, the next step and a reduction go through; an empty chunk needs
  // no write.
  cache.write(1, kv, vv);
  cache.append_rows(std::vector<std::int32_t>{0, 0, 0}, {}, {});
  CHECK(cache.written(0));
  CHECK(cache.written(1));
  cache.append_rows(cu, later, anchor);
  cache.write(1, kv, vv);
  cache.write(0, kv, vv);
  CHECK(cache.reduce() == 2);  // sequence 0 keeps its anchors 1 and 3; sequence 1 has none
  CHECK(cache.positions(0) == std::vector<std::int32_t>{1, 3});
  CHECK(cache.positions(1) == std::vector<std::int32_t>{0, 1});
}

// Anchor-based inference in miniature (SPEC section 3's exactness invariant): prefill a prompt,
// reduce, decode token by token reducing after each anchor; every output row equals the row of
// one whole-text forward.
TEST_CASE("attention over the reduced cache equals attention over the whole text") {
  std::mt19937 rng(23);
  const index_t heads_q = 4, heads_kv = 2, dim = 8;
  for (const MaskPolicy& policy : test::all_policies())
    for (const KVStorage storage : storages) {
      const AnchorLayout L = test::random_layout(rng, 3, 28, 4.0);
      const auto B = L.batch();
      const auto n = std::size_t(L.total_tokens());
      std::vector<float> q(n * heads_q * dim), k(n * heads_kv * dim), v(k.size());
      test::fill_standard_normal(rng, {&q, &k, &v});
      const auto qv = make_view(q.data(), index_t(n), heads_q, dim);
      const auto kv = make_view(k.data(), index_t(n), heads_kv, dim);
      const auto vv = make_view(v.data(), index_t(n), heads_kv, dim);
      const float scale = 1.f / std::sqrt(float(dim));
      std::vector<float> full(q.size(), std::nanf(""));
      reference_attention<double>(
          prefill_args<float>(L, qv, kv, vv, make_view(full.data(), index_t(n), heads_q, dim),
                              TensorView<float, 2>{}, policy, scale));
      INFO(std::string(policy_name(policy)), " ", std::string(storage_name(storage)));

      KVCache<float> cache(B, std::int32_t(heads_kv), std::int32_t(dim), policy, 0, storage);
      std::vector<std::int32_t> fed(static_cast<std::size_t>(B), 0), prompt(fed);
      for (std::int32_t b = 0; b < B; ++b) prompt[b] = std::int32_t(rng() % (L.seq_len(b) + 1));
      bool first = true;
      while (true) {
        // This step's tokens: the prompt first, then one token per unfinished sequence.
        std::vector<std::int32_t> cu{0}, rows;
        for (std::int32_t b = 0; b < B; ++b) {
          const std::int32_t m = first ? prompt[b] : std::min(1, L.seq_len(b) - fed[b]);
          for (std::int32_t i = 0; i < m; ++i) rows.push_back(L.cu_seqlens[b] + fed[b] + i);
          cu.push_back(std::int32_t(rows.size()));
        }
        if (!first && rows.empty()) break;
        const auto m = index_t(rows.size());
        std::vector<float> sq(std::size_t(m * heads_q * dim)), sk(std::size_t(m * heads_kv * dim)),
            sv(sk.size());
        std::vector<std::int32_t> pos, seg_start;
        std::vector<std::uint8_t> anchor;
        bool any_anchor = false;
        for (index_t r = 0; r < m; ++r) {
          const auto t = std::size_t(rows[std::size_t(r)]);
          std::copy_n(&q[t * heads_q * dim], heads_q * dim, &sq[std::size_t(r * heads_q * dim)]);
          std::copy_n(&k[t * heads_kv * dim], heads_kv * dim, &sk[std::size_t(r * heads_kv * dim)]);
          std::copy_n(&v[t * heads_kv * dim], heads_kv * dim, &sv[std::size_t(r * heads_kv * dim)]);
          pos.push_back(L.pos[t]), seg_start.push_back(L.seg_start[t]),
              anchor.push_back(L.is_anchor[t]);
          any_anchor |= L.is_anchor[t] != 0;
        }
        cache.append(make_view<const float>(sk.data(), m, heads_kv, dim),
                     make_view<const float>(sv.data(), m, heads_kv, dim), cu, pos, anchor);
        for (std::int32_t b = 0; b < B; ++b) fed[b] += cu[b + 1] - cu[b];
        const bool prefill = first;
        first = false;
        if (m == 0) continue;
        std::vector<float> out_ref(sq.size(), std::nanf("")), out_cpu(sq.size(), std::nanf(""));
        AttentionArgs<float> a;
        a.q = make_view<const float>(sq.data(), m, heads_q, dim);
        a.batch = B;
        a.cu_seqlens_q = cu.data();
        a.q_pos = pos.data(), a.q_seg_start = seg_start.data(), a.q_is_anchor = anchor.data();
        a.policy = policy, a.softmax_scale = scale;
        cache.bind_keys(a);
        a.out = make_view(out_ref.data(), m, heads_q, dim);
        reference_attention<double>(a);
        a.out = make_view(out_cpu.data(), m, heads_q, dim);
        cpu::attention_forward(a, 2);
        for (index_t r = 0; r < m; ++r)
          for (index_t e = 0; e < heads_q * dim; ++e) {
            const float want = full[std::size_t(rows[std::size_t(r)] * heads_q * dim + e)];
            REQUIRE(out_ref[std::size_t(r * heads_q * dim + e)] ==
                    doctest::Approx(want).epsilon(1e-6));
            REQUIRE(out_cpu[std::size_t(r * heads_q * dim + e)] ==
                    doctest::Approx(want).epsilon(1e-4));
          }
        if (prefill || any_anchor)
          cache.reduce();  // Algorithm 1: after the prefill and after every anchor
      }
      CHECK(cache.entries() <= L.total_tokens());
    }
}
