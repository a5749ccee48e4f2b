// Dense exports (dense_mask.hpp): the boolean masks and Hugging Face's additive mask, element
// by element against ansan::visible on random ragged batches and the edge layouts, for every
// policy; and bad input rejected before any output element is written.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <random>

#include "ansan/dense_mask.hpp"
#include "support/mask_checks.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

namespace {

constexpr std::uint8_t kPoison = 0xAB;  // neither 0 nor 1: an unwritten element fails

bool truth(const AnchorLayout& L, const MaskPolicy& p, std::int32_t b, std::int32_t i,
           std::int32_t j) {
  return visible(p, L.query(b, i), L.key(b, j));
}

// Random ragged batches, then every edge layout alone and all of them packed together.
std::vector<AnchorLayout> layouts_under_test(std::mt19937& rng, int random_count, int max_len) {
  std::vector<AnchorLayout> layouts;
  for (int k = 0; k < random_count; ++k)
    layouts.push_back(test::random_layout(rng, 1 + k % 5, max_len, 1.0 + k % 7));
  for (AnchorLayout& edge : test::edge_layouts()) layouts.push_back(std::move(edge));
  layouts.push_back(build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0}));
  return layouts;
}

std::int32_t longest(const AnchorLayout& L) {
  std::int32_t m = 0;
  for (std::int32_t b = 0; b < L.batch(); ++b) m = std::max(m, L.seq_len(b));
  return m;
}

// Layouts an export must refuse, each with the argument its message must name.
std::vector<std::pair<AnchorLayout, const char*>> broken_layouts() {
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0, 0, 0, 1, 0};
  const AnchorLayout good = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 4, 10});
  std::vector<std::pair<AnchorLayout, const char*>> broken;
  AnchorLayout L = good;
  L.cu_seqlens = {0, 6, 4, 10};  // non-monotone offsets
  broken.emplace_back(L, "layout.cu_seqlens[2]");
  L = good;
  L.cu_seqlens = {0, 4, 12};  // offsets past the token count
  broken.emplace_back(L, "layout.cu_seqlens[B]");
  L = good;
  L.cu_seqlens = {-1, 4, 10};  // negative offset
  broken.emplace_back(L, "layout.cu_seqlens[0]");
  L = good;
  L.pos.pop_back();  // mismatched lengths
  broken.emplace_back(L, "layout.pos.size()");
  L = good;
  L.seg_start.push_back(0);
  broken.emplace_back(L, "layout.seg_start.size()");
  L = good;
  L.seg_start[6] = 9;  // a segment start past its own row
  broken.emplace_back(L, "layout.seg_start[6]");
  return broken;
}

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("dense boolean masks equal the predicate, per sequence and packed") {
  std::mt19937 rng(101);
  const auto layouts = layouts_under_test(rng, 300, 40);
  for (const MaskPolicy& p : test::all_policies()) {
    for (const AnchorLayout& L : layouts) {
      const index_t total = L.total_tokens();
      std::vector<std::uint8_t> packed(std::size_t(total * total), kPoison);
      dense_mask_packed(L, p, make_view(packed.data(), total, total));
      for (std::int32_t b = 0; b < L.batch(); ++b) {
        const std::int32_t n = L.seq_len(b), base = L.cu_seqlens[b];
        std::vector<std::uint8_t> one(std::size_t(n) * std::size_t(n), kPoison);
        dense_mask(L, b, p, make_view(one.data(), n, n));
        std::int64_t wrong = 0;  // counted, then checked once: doctest asserts are slow per element
        for (std::int32_t i = 0; i < n; ++i)
          for (std::int32_t j = 0; j < n; ++j) {
            const std::uint8_t want = truth(L, p, b, i, j) ? 1 : 0;
            wrong += one[std::size_t(i) * n + j] != want;
            wrong += packed[std::size_t((base + i) * total + base + j)] != want;
          }
        REQUIRE(wrong == 0);
      }
      std::vector<std::int32_t> seq_of(static_cast<std::size_t>(total));
      for (std::int32_t b = 0; b < L.batch(); ++b)
        for (std::int32_t t = L.cu_seqlens[b]; t < L.cu_seqlens[b + 1]; ++t) seq_of[t] = b;
      std::int64_t cross_nonzero = 0;  // pairs of different sequences: written, and 0
      for (index_t s = 0; s < total; ++s)
        for (index_t t = 0; t < total; ++t)
          cross_nonzero += seq_of[s] != seq_of[t] && packed[std::size_t(s * total + t)] != 0;
      REQUIRE(cross_nonzero == 0);
      CHECK(dense_mask_packed(L, p) == packed);
    }
  }
}

TEST_CASE("dense mask honours strides of a caller's view") {
  // A (n, n) view into every other column of a wider buffer: skipped columns stay untouched.
  std::mt19937 rng(5);
  const AnchorLayout L = test::random_layout(rng, 1, 30, 4.0);
  const std::int32_t n = L.seq_len(0);
  std::vector<std::uint8_t> wide(std::size_t(n) * std::size_t(2 * n), kPoison);
  TensorView<std::uint8_t, 2> view;
  view.data = wide.data();
  view.shape[0] = view.shape[1] = n;
  view.stride[0] = 2 * n;
  view.stride[1] = 2;
  dense_mask(L, 0, MaskPolicy::anllm(), view);
  for (std::int32_t i = 0; i < n; ++i)
    for (std::int32_t j = 0; j < 2 * n; ++j) {
      const std::uint8_t got = wide[std::size_t(i) * 2 * n + j];
      if (j % 2) CHECK(got == kPoison);
      else CHECK(got == (truth(L, MaskPolicy::anllm(), 0, i, j / 2) ? 1 : 0));
    }
}

TEST_CASE_TEMPLATE("additive mask: 0 where visible, the masked value elsewhere and on padding",
                   T, float, half, bf16) {
  std::mt19937 rng(202);
  const auto layouts = layouts_under_test(rng, 100, 24);
  const T lowest = lowest_finite<T>();
  CHECK(std::isfinite(to_float(lowest)));
  CHECK(to_float(lowest) < -6.5e4f);
  const T poison = from_float<T>(std::nanf(""));
  for (const MaskPolicy& p : test::all_policies())
    for (const AnchorLayout& L : layouts)
      for (const PaddingSide side : {PaddingSide::right, PaddingSide::left})
        for (const float custom : {std::nanf(""), -1e4f, -INFINITY}) {
          const std::int32_t slab = longest(L) + (L.batch() % 2);  // sometimes wider than needed
          std::vector<T> out(std::size_t(L.batch()) * slab * slab, poison);
          AdditiveMaskOptions opts;
          opts.masked_value = custom;
          opts.padding = side;
          additive_mask(L, p, make_view(out.data(), L.batch(), 1, slab, slab), opts);
          const T masked = std::isnan(custom) ? lowest : from_float<T>(custom);
          const T zero = from_float<T>(0.0f);
          std::int64_t wrong = 0;
          for (std::int32_t b = 0; b < L.batch(); ++b) {
            const std::int32_t n = L.seq_len(b), first = side == PaddingSide::right ? 0 : slab - n;
            for (std::int32_t r = 0; r < slab; ++r)
              for (std::int32_t c = 0; c < slab; ++c) {
                const std::int32_t i = r - first, j = c - first;
                const bool real = i >= 0 && i < n && j >= 0 && j < n;
                const bool seen = real && truth(L, p, b, i, j);
                const T got = out[(std::size_t(b) * slab + r) * slab + c];
                wrong += !same_bits(got, seen ? zero : masked);
              }
          }
          REQUIRE(wrong == 0);
        }
  // The owning form: (B, 1, L, L) with L the longest sequence.
  const AnchorLayout L = layouts.front();
  const std::int32_t m = longest(L);
  std::vector<T> expect(std::size_t(L.batch()) * m * m, poison);
  additive_mask(L, MaskPolicy::anllm(), make_view(expect.data(), L.batch(), 1, m, m));
  const std::vector<T> got = additive_mask<T>(L, MaskPolicy::anllm());
  REQUIRE(got.size() == expect.size());
  for (std::size_t k = 0; k < got.size(); ++k) CHECK(same_bits(got[k], expect[k]));
}

TEST_CASE("dense exports reject bad input and write nothing") {
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0, 0, 0, 1, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 4, 10});
  std::vector<std::uint8_t> mask(100, kPoison);
  std::vector<float> additive(2 * 6 * 6, 7.0f);
  const auto untouched = [&] {
    for (std::uint8_t v : mask) REQUIRE(v == kPoison);
    for (float v : additive) REQUIRE(v == 7.0f);
  };
  auto packed = make_view(mask.data(), 10, 10);
  auto hf = make_view(additive.data(), 2, 1, 6, 6);

  for (const MaskPolicy& bad : {MaskPolicy::sliding_window(0), MaskPolicy::sepllm(1, -2)}) {
    test::check_throws_naming([&] { dense_mask_packed(L, bad, packed); }, "policy.window");
    test::check_throws_naming([&] { dense_mask(L, 0, bad, make_view(mask.data(), 4, 4)); }, "policy.window");
    test::check_throws_naming([&] { additive_mask(L, bad, hf); }, "policy.window");
  }
  MaskPolicy negative_sinks = MaskPolicy::streaming_llm(-1, 4);
  test::check_throws_naming([&] { dense_mask_packed(L, negative_sinks, packed); }, "policy.sinks");
  test::check_throws_naming([&] { dense_mask_packed(L, MaskPolicy::anllm(), make_view(mask.data(), 10, 9)); },
                            "out.shape");
  test::check_throws_naming([&] { dense_mask(L, 2, MaskPolicy::anllm(), make_view(mask.data(), 6, 6)); }, "b");
  test::check_throws_naming([&] { dense_mask(L, 1, MaskPolicy::anllm(), make_view(mask.data(), 4, 4)); },
                            "out.shape");
  test::check_throws_naming([&] { additive_mask(L, MaskPolicy::anllm(), make_view(additive.data(), 2, 1, 5, 5)); },
                            "out.shape");  // slab shorter than the longest sequence
  test::check_throws_naming([&] { additive_mask(L, MaskPolicy::anllm(), make_view(additive.data(), 1, 2, 6, 6)); },
                            "out.shape");
  for (const float bad_value : {0.0f, 3.0f, -1e-10f}) {  // -1e-10 rounds to -0 in fp16
    AdditiveMaskOptions opts;
    opts.masked_value = bad_value;
    if (bad_value == -1e-10f) {
      std::vector<half> h(2 * 6 * 6, from_float<half>(7.0f));
      test::check_throws_naming([&] { additive_mask(L, MaskPolicy::anllm(), make_view(h.data(), 2, 1, 6, 6), opts); },
                                "options.masked_value");
      for (half v : h) REQUIRE(to_float(v) == 7.0f);
    } else {
      test::check_throws_naming([&] { additive_mask(L, MaskPolicy::anllm(), hf, opts); }, "options.masked_value");
    }
  }
  for (const auto& [broken, argument] : broken_layouts()) {
    test::check_throws_naming([&] { dense_mask_packed(broken, MaskPolicy::anllm(), packed); }, argument);
    test::check_throws_naming([&] { dense_mask(broken, 0, MaskPolicy::anllm(), make_view(mask.data(), 4, 4)); },
                              argument);
    test::check_throws_naming([&] { additive_mask(broken, MaskPolicy::anllm(), hf); }, argument);
  }
  untouched();
}
