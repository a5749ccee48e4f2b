// The CUDA layout builder's element-wise steps and checks (ansan/cuda/detail/layout_steps.hpp),
// run on the host: the kernels of ansan/cuda/layout.cuh call exactly these functions, with
// CUB's scans where this file uses std::exclusive_scan. So the builder's index arithmetic is
// tested against the host builders (ansan/layout.hpp) without a GPU.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "ansan/cuda/detail/layout_steps.hpp"
#include "ansan/layout.hpp"
#include "support/layout_checks.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;
using namespace ansan::cuda::detail;

namespace {

constexpr std::int32_t poison = -777;  // every output starts as this: an unwritten one shows

// The device pipeline of layout.cuh on the host: seed, two scans, offsets, finish.
template <class AnchorOf>
AnchorLayout run_steps(AnchorOf anchor_of, const std::vector<std::int32_t>& cu_seqlens,
                       std::int64_t total) {
  const auto batch = std::int32_t(cu_seqlens.size()) - 1;
  const auto n = std::size_t(total);
  AnchorLayout L;
  L.cu_seqlens = cu_seqlens;
  L.pos.assign(n, poison);
  L.is_anchor.assign(n, 0xAB);
  L.seg.assign(n, poison);
  L.seg_start.assign(n, poison);
  L.cu_anchors.assign(cu_seqlens.size(), poison);
  L.anchor_pos.assign(n, poison);  // room for every token, as on the device
  for (std::int64_t t = 0; t < total; ++t)
    seed_token(t, anchor_of(t), L.is_anchor.data(), L.seg.data(), L.seg_start.data());
  std::exclusive_scan(L.seg.begin(), L.seg.end(), L.seg.begin(), 0);
  std::exclusive_scan(L.seg_start.begin(), L.seg_start.end(), L.seg_start.begin(), 0,
                      [](std::int32_t a, std::int32_t b) { return std::max(a, b); });
  for (std::int32_t b = 0; b <= batch; ++b)
    sequence_anchor_offset(b, cu_seqlens.data(), total, L.seg.data(), L.is_anchor.data(),
                           L.cu_anchors.data());
  for (std::int64_t t = 0; t < total; ++t)
    finish_token(t, cu_seqlens.data(), batch, L.cu_anchors.data(), L.is_anchor.data(), L.pos.data(),
                 L.seg.data(), L.seg_start.data(), L.anchor_pos.data());
  // The slots past cu_anchors[B] are not part of the layout and must not have been written.
  const auto used = std::size_t(L.cu_anchors.back());
  REQUIRE(used <= n);
  for (std::size_t a = used; a < n; ++a) REQUIRE(L.anchor_pos[a] == poison);
  L.anchor_pos.resize(used);
  return L;
}

void check_same(const AnchorLayout& got, const AnchorLayout& want) {
  CHECK(got.cu_seqlens == want.cu_seqlens);
  test::check_same_layout_arrays(got, want);
}

// Every builder's step pipeline against the host builders, for one host layout.
void check_all_builders(const AnchorLayout& want, std::mt19937& rng) {
  const std::int64_t total = want.total_tokens();
  check_same(run_steps(AnchorByFlag{want.is_anchor.data()}, want.cu_seqlens, total), want);

  // Ids: anchors draw from {3, 5} (an EP set), the rest from the other ids of a vocab of 9.
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(total));
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    const std::int32_t others[] = {0, 1, 2, 4, 6, 7, 8};
    tokens[t] = want.is_anchor[t] ? (rng() % 2 ? 3 : 5) : others[rng() % 7];
  }
  const std::vector<std::uint8_t> id_is_anchor{0, 0, 0, 1, 0, 1, 0, 0, 0};
  check_same(run_steps(AnchorById{tokens.data(), id_is_anchor.data(), 9}, want.cu_seqlens, total),
             want);
  check_same(build_layout(tokens, want.cu_seqlens, AnchorSelector::endpoint({3, 5}), 9), want);

  std::vector<std::uint8_t> marks(std::size_t(total), 0);
  for (std::int64_t a = 0; a < std::int64_t(want.anchor_pos.size()); ++a)
    mark_anchor_position(a, want.anchor_pos.data(), want.cu_anchors.data(), want.cu_seqlens.data(),
                         want.batch(), marks.data());
  CHECK(marks == want.is_anchor);
}

AnchorLayout edge_batch() {
  std::vector<std::uint8_t> flags;
  std::vector<std::int32_t> cu{0};
  for (const auto& f : test::edge_flags()) {
    flags.insert(flags.end(), f.begin(), f.end());
    cu.push_back(std::int32_t(flags.size()));
  }
  return build_layout_from_flags(flags, cu);
}

// The smallest fault key over all checks the device runs for the position builder.
std::uint64_t position_checks(const std::vector<std::int32_t>& anchor_pos,
                              const std::vector<std::int32_t>& cu_anchors,
                              const std::vector<std::int32_t>& cu_seqlens, std::int64_t total) {
  const auto batch = std::int32_t(cu_seqlens.size()) - 1;
  std::uint64_t first = no_fault;
  for (std::int32_t b = 0; b <= batch; ++b) {
    first = std::min(first,
                     offset_fault(b, cu_seqlens.data(), batch, total, LayoutFaultKind::cu_seqlens));
    first =
        std::min(first, offset_fault(b, cu_anchors.data(), batch, std::int64_t(anchor_pos.size()),
                                     LayoutFaultKind::cu_anchors));
  }
  if (first != no_fault) return first;  // the device skips positions behind bad offsets
  for (std::int64_t a = 0; a < std::int64_t(anchor_pos.size()); ++a)
    first = std::min(
        first, position_fault(a, anchor_pos.data(), cu_anchors.data(), cu_seqlens.data(), batch));
  return first;
}

bool host_rejects_positions(const std::vector<std::int32_t>& anchor_pos,
                            const std::vector<std::int32_t>& cu_anchors,
                            const std::vector<std::int32_t>& cu_seqlens) {
  try {
    build_layout_from_positions(anchor_pos, cu_anchors, cu_seqlens);
    return false;
  } catch (const std::invalid_argument&) {
    return true;
  }
}

}  // namespace

TEST_CASE("sequence_of finds the sequence of every token, skipping empty sequences") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const AnchorLayout L = test::random_layout(rng, 1 + trial % 23, trial % 5 == 0 ? 1 : 30, 4.0);
    for (std::int64_t t = 0; t < L.total_tokens(); ++t) {
      const std::int32_t b = sequence_of(L.cu_seqlens.data(), L.batch(), t);
      REQUIRE(b >= 0);
      REQUIRE(b < L.batch());
      CHECK(L.cu_seqlens[b] <= t);
      CHECK(t < L.cu_seqlens[b + 1]);
    }
  }
}

TEST_CASE("the worked example of layout_steps.hpp and layout.cuh") {
  //                              T   h   .   C   .  |  a   .   b
  const std::vector<std::int32_t> tokens{84, 104, 46, 67, 46, 97, 46, 98};
  const std::vector<std::int32_t> cu{0, 5, 8};
  std::vector<std::uint8_t> id_is_anchor(128, 0);
  id_is_anchor[46] = 1;
  const AnchorLayout L = run_steps(AnchorById{tokens.data(), id_is_anchor.data(), 128}, cu, 8);
  CHECK(L.seg == std::vector<std::int32_t>{0, 0, 0, 1, 1, 0, 0, 1});
  CHECK(L.seg_start == std::vector<std::int32_t>{0, 0, 0, 3, 3, 0, 0, 2});
  CHECK(L.cu_anchors == std::vector<std::int32_t>{0, 2, 3});
  CHECK(L.anchor_pos == std::vector<std::int32_t>{2, 4, 1});
}

TEST_CASE("the step pipeline equals the host builders on random ragged batches") {
  std::mt19937 rng(20240211);
  for (int trial = 0; trial < 400; ++trial) {
    const int batch = 1 + int(rng() % 40);
    const int max_len = trial % 4 == 0 ? 3 : 1 + int(rng() % 300);
    const double mean_segment = 1.0 + double(rng() % 60);
    check_all_builders(test::random_layout(rng, batch, max_len, mean_segment), rng);
  }
}

TEST_CASE("the step pipeline on the edge layouts, alone and packed in one batch") {
  std::mt19937 rng(5);
  for (const auto& f : test::edge_flags()) {
    const std::vector<std::int32_t> cu{0, std::int32_t(f.size())};
    check_all_builders(build_layout_from_flags(f, cu), rng);
  }
  check_all_builders(edge_batch(), rng);
  // A batch of empty sequences only, and one with no sequence at all.
  check_all_builders(
      build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0, 0, 0}),
      rng);
  check_all_builders(
      build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0}), rng);
}

TEST_CASE("the step pipeline past 2^16 tokens, with and without anchors") {
  std::mt19937 rng(99);
  check_all_builders(test::random_layout(rng, 3, 60000, 20.0), rng);
  const std::vector<std::uint8_t> none(70000, 0);
  check_all_builders(build_layout_from_flags(none, std::vector<std::int32_t>{0, 30000, 70000}),
                     rng);
}

TEST_CASE("fault keys order by check kind, then by index") {
  const auto k = fault_key(LayoutFaultKind::anchor_pos, 123456);
  CHECK(fault_kind(k) == LayoutFaultKind::anchor_pos);
  CHECK(fault_index(k) == 123456);
  CHECK(fault_key(LayoutFaultKind::cu_seqlens, 2000000000) <
        fault_key(LayoutFaultKind::cu_anchors, 0));
  CHECK(fault_key(LayoutFaultKind::token_id, 4) < fault_key(LayoutFaultKind::token_id, 5));
  CHECK(fault_key(LayoutFaultKind::anchor_pos, 2147483647) < no_fault);
}

TEST_CASE("offset checks find the first bad offset, as validate_cu_seqlens does") {
  const auto first_fault = [](const std::vector<std::int32_t>& cu, std::int64_t total) {
    std::uint64_t first = no_fault;
    for (std::int32_t b = 0; b < std::int32_t(cu.size()); ++b)
      first = std::min(first, offset_fault(b, cu.data(), std::int32_t(cu.size()) - 1, total,
                                           LayoutFaultKind::cu_seqlens));
    return first;
  };
  CHECK(first_fault({0, 3, 3, 7}, 7) == no_fault);
  CHECK(first_fault({0}, 0) == no_fault);
  CHECK(first_fault({1, 3, 7}, 7) == fault_key(LayoutFaultKind::cu_seqlens, 0));
  CHECK(first_fault({0, 4, 3, 7}, 7) == fault_key(LayoutFaultKind::cu_seqlens, 2));
  CHECK(first_fault({0, 3, 7}, 8) == fault_key(LayoutFaultKind::cu_seqlens, 2));
  CHECK(first_fault({0, -1, 7}, 7) == fault_key(LayoutFaultKind::cu_seqlens, 1));

  // On random corruptions the device check fires exactly when the host validator throws.
  std::mt19937 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const AnchorLayout L = test::random_layout(rng, 1 + trial % 9, 12, 3.0);
    auto cu = L.cu_seqlens;
    cu[rng() % cu.size()] += int(rng() % 7) - 3;
    bool host_throws = false;
    try {
      validate_cu_seqlens(cu, L.total_tokens(), "test");
    } catch (const std::invalid_argument&) {
      host_throws = true;
    }
    CHECK((first_fault(cu, L.total_tokens()) != no_fault) == host_throws);
  }
}

TEST_CASE("token checks flag every id below 0 or at least vocab_size") {
  const std::vector<std::int32_t> tokens{0, 8, 9, -1, 4};
  const std::uint64_t expected[] = {no_fault, no_fault, fault_key(LayoutFaultKind::token_id, 2),
                                    fault_key(LayoutFaultKind::token_id, 3), no_fault};
  for (std::int64_t t = 0; t < 5; ++t) CHECK(token_fault(t, tokens.data(), 9) == expected[t]);
}

TEST_CASE("position checks fire exactly when build_layout_from_positions throws") {
  // A fixed case: sequence 1's anchors are not increasing.
  CHECK(position_checks({1, 2, 2}, {0, 1, 3}, {0, 3, 6}, 6) ==
        fault_key(LayoutFaultKind::anchor_pos, 2));
  CHECK(position_checks({1, 3}, {0, 1, 2}, {0, 3, 6}, 6) ==
        fault_key(LayoutFaultKind::anchor_pos, 1));  // position 3 is past sequence 1's end
  CHECK(position_checks({1}, {0, 1, 2}, {0, 3, 6}, 6) ==
        fault_key(LayoutFaultKind::cu_anchors, 2));  // cu_anchors[B] != anchor count

  std::mt19937 rng(13);
  int faults = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const AnchorLayout L = test::random_layout(rng, 1 + trial % 6, 15, 3.0);
    auto anchor_pos = L.anchor_pos;
    auto cu_anchors = L.cu_anchors;
    auto cu_seqlens = L.cu_seqlens;
    switch (trial % 3) {
      case 0:
        if (!anchor_pos.empty()) anchor_pos[rng() % anchor_pos.size()] += int(rng() % 9) - 4;
        break;
      case 1:
        cu_anchors[rng() % cu_anchors.size()] += int(rng() % 5) - 2;
        break;
      default:
        cu_seqlens[rng() % cu_seqlens.size()] += int(rng() % 5) - 2;
        break;
    }
    const bool device_fault =
        position_checks(anchor_pos, cu_anchors, cu_seqlens, cu_seqlens.back()) != no_fault;
    faults += device_fault;
    CHECK(device_fault == host_rejects_positions(anchor_pos, cu_anchors, cu_seqlens));
  }
  CHECK(faults > 300);  // the corruptions did produce bad input
}
