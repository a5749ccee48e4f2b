// tests/test_compaction.cpp - host KV compaction (ansan/compaction.hpp) against a plain
// reference: random keep flags and index lists, NHD and HND storage, ragged batches with empty
// sequences, packed and slack (maybe_seq_start) layouts, out-of-place and in place, 1-3
// threads; keep_flags() against the brute-force SPEC predicate over every short continuation;
// bad input throws before writing.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ansan/compaction.hpp"
#include "ansan/cuda/detail/layout_steps.hpp"  // sequence_of(), host and device
#include "ansan/dtype.hpp"
#include "support/random_layouts.hpp"
#include "support/row_checks.hpp"

using namespace ansan;
using ansan::test::same_bytes;

namespace {

constexpr float poison = std::numeric_limits<float>::quiet_NaN();
constexpr std::int32_t poison_pos = -77;
constexpr std::uint8_t poison_flag = 0xAB;

// A buffer of rows with random data; sequences packed or spread with random gaps.
struct RowBuffer {
  KVStorage storage;
  index_t rows, heads, dim;
  std::vector<float> k, v;              // (rows, heads, dim) in `storage` order
  std::vector<std::int32_t> pos;        // (rows)
  std::vector<std::uint8_t> anchor;     // (rows)
  std::vector<std::int32_t> cu;         // (B+1)
  std::vector<std::int32_t> seq_start;  // (B), empty when packed

  KVRows<float> view() {
    return {kv_view(k.data(), storage, rows, heads, dim),
            kv_view(v.data(), storage, rows, heads, dim), pos.data(), anchor.data()};
  }
  KVRows<const float> view() const {
    return {kv_view(k.data(), storage, rows, heads, dim),
            kv_view(v.data(), storage, rows, heads, dim), pos.data(), anchor.data()};
  }
  RaggedRows seqs() const {
    return {std::int32_t(cu.size()) - 1, cu.data(), seq_start.empty() ? nullptr : seq_start.data()};
  }
};

RowBuffer random_rows(std::mt19937& rng, const std::vector<std::int32_t>& lens, KVStorage storage,
                      index_t heads, index_t dim, bool slack) {
  RowBuffer r{storage, 0, heads, dim, {}, {}, {}, {}, {0}, {}};
  std::uniform_int_distribution<int> gap(0, 3);
  index_t row = 0;
  for (const std::int32_t n : lens) {
    if (slack) {
      row += gap(rng);
      r.seq_start.push_back(std::int32_t(row));
    }
    row += n;
    r.cu.push_back(r.cu.back() + n);
  }
  r.rows = row + (slack ? gap(rng) : 0);
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  r.k.resize(std::size_t(r.rows * heads * dim));
  r.v.resize(r.k.size());
  for (auto& x : r.k) x = value(rng);
  for (auto& x : r.v) x = value(rng);
  std::uniform_int_distribution<std::int32_t> p(0, 1000);
  for (index_t i = 0; i < r.rows; ++i)
    r.pos.push_back(p(rng)), r.anchor.push_back(std::uint8_t(p(rng) & 1));
  return r;
}

RowBuffer poisoned_like(const RowBuffer& in, index_t rows, KVStorage storage) {
  RowBuffer r{storage, rows, in.heads, in.dim, {}, {}, {}, {}, {}, {}};
  r.k.assign(std::size_t(rows * in.heads * in.dim), poison);
  r.v.assign(r.k.size(), poison);
  r.pos.assign(std::size_t(rows), poison_pos);
  r.anchor.assign(std::size_t(rows), poison_flag);
  return r;
}

// Reference: out row `first_out[b] + i` holds the i-th kept input row of sequence b; every other
// out row is untouched (still poison). `before` is the input as it was before the call.
void check_compacted(const RowBuffer& before, const std::vector<std::vector<std::int32_t>>& kept,
                     RowBuffer& out, const std::vector<index_t>& first_out) {
  std::vector<bool> written(std::size_t(out.rows), false);
  const auto in_view = before.view();
  const auto out_view = out.view();
  const RaggedRows seqs = before.seqs();
  for (std::size_t b = 0; b < kept.size(); ++b)
    for (std::size_t i = 0; i < kept[b].size(); ++i) {
      const index_t src = seqs.row_begin(std::int32_t(b)) + kept[b][i],
                    dst = first_out[b] + index_t(i);
      written[std::size_t(dst)] = true;
      CHECK(out.pos[dst] == before.pos[src]);
      CHECK(out.anchor[dst] == before.anchor[src]);
      for (index_t h = 0; h < before.heads; ++h)
        for (index_t d = 0; d < before.dim; ++d) {
          REQUIRE(out_view.k(dst, h, d) == in_view.k(src, h, d));
          REQUIRE(out_view.v(dst, h, d) == in_view.v(src, h, d));
        }
    }
  for (index_t row = 0; row < out.rows; ++row) {
    if (written[std::size_t(row)]) continue;
    CHECK(out.pos[row] == poison_pos);
    CHECK(out.anchor[row] == poison_flag);
    for (index_t h = 0; h < out.heads; ++h)
      for (index_t d = 0; d < out.dim; ++d) REQUIRE(std::isnan(out_view.k(row, h, d)));
  }
}

std::vector<std::int32_t> random_lengths(std::mt19937& rng, int batch, int max_len) {
  std::uniform_int_distribution<int> len(0, max_len);
  std::vector<std::int32_t> lens;
  for (int b = 0; b < batch; ++b) lens.push_back(len(rng));
  return lens;
}

// Keep flags with probability p (0 and 1 give none-keep and all-keep).
std::vector<std::uint8_t> random_keep(std::mt19937& rng, std::int64_t n, double p) {
  std::bernoulli_distribution keep(p);
  std::vector<std::uint8_t> flags(static_cast<std::size_t>(n));
  for (auto& f : flags) f = keep(rng) ? std::uint8_t(1 + rng() % 200) : 0;  // any non-zero keeps
  return flags;
}

std::vector<std::vector<std::int32_t>> kept_lists(const RowBuffer& in,
                                                  const std::vector<std::uint8_t>& keep) {
  std::vector<std::vector<std::int32_t>> kept(in.cu.size() - 1);
  for (std::size_t b = 0; b + 1 < in.cu.size(); ++b)
    for (std::int32_t i = 0; i < in.cu[b + 1] - in.cu[b]; ++i)
      if (keep[std::size_t(in.cu[b] + i)]) kept[b].push_back(i);
  return kept;
}

const KVStorage storages[] = {KVStorage::nhd, KVStorage::hnd};
const double keep_rates[] = {0.0, 0.05, 0.5, 1.0};

}  // namespace

TEST_CASE("compact_kv equals the reference on random flags, both storages, ragged batches") {
  std::mt19937 rng(11);
  for (const KVStorage storage : storages)
    for (const double rate : keep_rates)
      for (int trial = 0; trial < 30; ++trial) {
        const int batch = int(rng() % 5);
        const index_t heads = 1 + rng() % 4, dim = 1 + rng() % 9;
        const bool slack_in = trial % 2, slack_out = trial % 3 == 0;
        INFO(std::string(storage_name(storage)), " keep rate ", rate, " trial ", trial);
        RowBuffer in =
            random_rows(rng, random_lengths(rng, batch, 40), storage, heads, dim, slack_in);
        const RowBuffer before = in;
        const auto keep = random_keep(rng, in.cu.back(), rate);
        const auto kept = kept_lists(in, keep);
        // Output: packed, or each sequence at a random gap after the previous one.
        std::vector<std::int32_t> out_start;
        std::vector<index_t> first_out;
        index_t out_rows = 0;
        for (const auto& list : kept) {
          out_rows += slack_out ? index_t(rng() % 3) : 0;
          first_out.push_back(out_rows);
          out_start.push_back(std::int32_t(out_rows));
          out_rows += index_t(list.size());
        }
        out_rows += index_t(rng() % 3);
        const KVStorage out_storage = trial % 4 == 1 ? KVStorage::nhd : storage;
        RowBuffer out = poisoned_like(in, out_rows, out_storage);
        std::vector<std::int32_t> cu_out(std::size_t(batch) + 1, -1);
        compact_kv<float>(in.view(), in.seqs(), keep, out.view(), cu_out,
                          slack_out ? out_start.data() : nullptr, 1 + trial % 3);
        CHECK(in.k == before.k);
        std::int32_t expect = 0;
        for (int b = 0; b < batch; ++b) {
          CHECK(cu_out[b] == expect);
          expect += std::int32_t(kept[b].size());
        }
        CHECK(cu_out[batch] == expect);
        if (!slack_out) first_out.assign(first_out.size(), 0);
        for (int b = 0; b < batch && !slack_out; ++b) first_out[b] = cu_out[b];
        check_compacted(before, kept, out, first_out);
      }
}

// Large enough (> 1 MiB moved) that the work is split over several threads: row chunks out of
// place, head blocks in place.
TEST_CASE("compaction moves large blocks across many chunks and threads") {
  std::mt19937 rng(12);
  for (const KVStorage storage : storages)
    for (const double rate : {0.05, 0.5, 0.97}) {
      RowBuffer in = random_rows(rng, {3000, 0, 2500}, storage, 4, 64, false);
      const auto keep = random_keep(rng, in.cu.back(), rate);
      const auto kept = kept_lists(in, keep);
      RowBuffer out = poisoned_like(in, in.rows, storage);
      std::vector<std::int32_t> cu_out(4), cu_inplace(4);
      compact_kv<float>(in.view(), in.seqs(), keep, out.view(), cu_out, nullptr, 3);
      check_compacted(in, kept, out, {0, cu_out[1], cu_out[2]});
      compact_kv_inplace(in.view(), in.seqs(), keep, cu_inplace, 3);
      CHECK(cu_inplace == cu_out);
      const std::size_t kept_elements = std::size_t(cu_out[3]) * 4 * 64;
      if (storage == KVStorage::nhd) {  // the packed prefix of both buffers is the same
        CHECK(
            std::equal(in.k.begin(), in.k.begin() + std::ptrdiff_t(kept_elements), out.k.begin()));
        CHECK(
            std::equal(in.v.begin(), in.v.begin() + std::ptrdiff_t(kept_elements), out.v.begin()));
      } else {
        for (index_t h = 0; h < 4; ++h) {
          const auto first = std::ptrdiff_t(h * in.rows * 64),
                     kept_head = std::ptrdiff_t(cu_out[3] * 64);
          CHECK(std::equal(in.k.begin() + first, in.k.begin() + first + kept_head,
                           out.k.begin() + first));
          CHECK(std::equal(in.v.begin() + first, in.v.begin() + first + kept_head,
                           out.v.begin() + first));
        }
      }
      CHECK(std::equal(in.pos.begin(), in.pos.begin() + cu_out[3], out.pos.begin()));
    }
}

TEST_CASE("compact_kv_indices equals the reference for random index lists") {
  std::mt19937 rng(13);
  for (const KVStorage storage : storages)
    for (int trial = 0; trial < 60; ++trial) {
      const int batch = int(rng() % 5);
      RowBuffer in = random_rows(rng, random_lengths(rng, batch, 30), storage, 1 + rng() % 3,
                                 1 + rng() % 8, trial % 2);
      const auto keep = random_keep(rng, in.cu.back(), trial % 5 * 0.25);
      const auto kept = kept_lists(in, keep);
      std::vector<std::int32_t> index, cu_keep{0};
      for (const auto& list : kept) {
        index.insert(index.end(), list.begin(), list.end());
        cu_keep.push_back(std::int32_t(index.size()));
      }
      RowBuffer out = poisoned_like(in, index_t(index.size()) + 2, storage);
      compact_kv_indices<float>(in.view(), in.seqs(), index, cu_keep, out.view(), nullptr, 2);
      std::vector<index_t> first_out(cu_keep.begin(), cu_keep.end() - 1);
      check_compacted(in, kept, out, first_out);
    }
}

TEST_CASE("compact_kv_inplace is correct for any keep pattern, packed and with slack") {
  std::mt19937 rng(14);
  for (const KVStorage storage : storages)
    for (const double rate : keep_rates)
      for (int trial = 0; trial < 40; ++trial) {
        const int batch = int(rng() % 5);
        const bool slack = trial % 2;
        INFO(std::string(storage_name(storage)), " keep rate ", rate, " trial ", trial);
        const int max_len = trial < 4 ? 2000 : 40;
        RowBuffer rows = random_rows(rng, random_lengths(rng, batch, max_len), storage,
                                     1 + rng() % 4, 1 + rng() % 9, slack);
        const RowBuffer before = rows;
        const auto keep = random_keep(rng, rows.cu.back(), rate);
        const auto kept = kept_lists(rows, keep);
        // The reference: the same selection out of place from the untouched copy.
        RowBuffer expect = before;
        std::vector<std::int32_t> cu_out(std::size_t(batch) + 1, -1), cu_expect{0};
        for (const auto& list : kept)
          cu_expect.push_back(cu_expect.back() + std::int32_t(list.size()));
        compact_kv_inplace(rows.view(), rows.seqs(), keep, cu_out, 1 + trial % 3);
        CHECK(cu_out == cu_expect);
        const auto rv = rows.view();
        const auto bv = before.view();
        const RaggedRows seqs = before.seqs();
        for (int b = 0; b < batch; ++b) {
          const index_t first = slack ? seqs.row_begin(b) : cu_out[b];
          for (std::size_t i = 0; i < kept[b].size(); ++i) {
            const index_t src = seqs.row_begin(b) + kept[b][i], dst = first + index_t(i);
            REQUIRE(rows.pos[dst] == before.pos[src]);
            REQUIRE(rows.anchor[dst] == before.anchor[src]);
            for (index_t h = 0; h < rows.heads; ++h)
              for (index_t d = 0; d < rows.dim; ++d) {
                REQUIRE(rv.k(dst, h, d) == bv.k(src, h, d));
                REQUIRE(rv.v(dst, h, d) == bv.v(src, h, d));
              }
          }
        }
      }
}

TEST_CASE("cu_seqlens_out may be the input offsets themselves") {
  std::mt19937 rng(15);
  RowBuffer rows = random_rows(rng, {5, 0, 7}, KVStorage::hnd, 2, 4, false);
  const std::vector<std::uint8_t> keep{1, 0, 1, 0, 0, /**/ 0, 1, 1, 0, 0, 0, 1};
  const RowBuffer before = rows;
  compact_kv_inplace(rows.view(), rows.seqs(), keep, rows.cu, 2);
  CHECK(rows.cu == std::vector<std::int32_t>{0, 2, 2, 5});
  CHECK(std::vector<std::int32_t>(rows.pos.begin(), rows.pos.begin() + 5) ==
        std::vector<std::int32_t>{before.pos[0], before.pos[2], before.pos[6], before.pos[7],
                                  before.pos[11]});
}

namespace {

// One launch of the device gather (ansan/cuda/compaction.cuh), run on the host through the very
// index functions its kernel calls: every output row i < count, all heads, plus metadata.
void emulate_gather(const KVRows<const float>& in, const RaggedRows& in_seqs,
                    const std::vector<std::int32_t>& cu_out, const KVRows<float>& out,
                    const std::int32_t* maybe_out_seq_start, const std::int32_t* src,
                    detail::SourceIndex source, std::int32_t count) {
  for (std::int32_t i = 0; i < count; ++i) {
    const std::int32_t b = cuda::detail::sequence_of(cu_out.data(), in_seqs.batch, i);
    const detail::RowPair row =
        detail::gather_rows_of(i, b, cu_out.data(), in_seqs, maybe_out_seq_start, src, source);
    for (index_t h = 0; h < in.k.shape[1]; ++h)
      for (index_t d = 0; d < in.k.shape[2]; ++d) {
        out.k(row.dst, h, d) = in.k(row.src, h, d);
        out.v(row.dst, h, d) = in.v(row.src, h, d);
      }
    out.pos[row.dst] = in.pos[row.src];
    out.is_anchor[row.dst] = in.is_anchor[row.src];
  }
}

}  // namespace

// The GPU tests cannot run here; this runs the device algorithm's steps (select, offsets by
// count_below, gather by gather_rows_of, the two in-place phases) on the host instead.
TEST_CASE("the device compaction's index arithmetic, run on the host, equals the host one") {
  std::mt19937 rng(19);
  for (const KVStorage storage : storages)
    for (const double rate : keep_rates)
      for (int trial = 0; trial < 20; ++trial) {
        const int batch = 1 + int(rng() % 5);
        const bool slack = trial % 2;
        RowBuffer in = random_rows(rng, random_lengths(rng, batch, 30), storage, 1 + rng() % 3,
                                   1 + rng() % 6, slack);
        const auto keep = random_keep(rng, in.cu.back(), rate);
        // cub::DeviceSelect::Flagged over token indices, then kept_offsets_kernel.
        std::vector<std::int32_t> kept_tokens, cu_out;
        for (std::int32_t t = 0; t < in.cu.back(); ++t)
          if (keep[std::size_t(t)]) kept_tokens.push_back(t);
        const auto count = std::int32_t(kept_tokens.size());
        for (const std::int32_t first : in.cu)
          cu_out.push_back(detail::count_below(kept_tokens.data(), count, first));
        // Out of place (packed output) against compact_kv.
        RowBuffer expect = poisoned_like(in, in.rows, storage), out = expect;
        std::vector<std::int32_t> cu_expect(in.cu.size());
        compact_kv<float>(in.view(), in.seqs(), keep, expect.view(), cu_expect, nullptr, 1);
        CHECK(cu_out == cu_expect);
        emulate_gather(in.view(), in.seqs(), cu_out, out.view(), nullptr, kept_tokens.data(),
                       detail::SourceIndex::kept_token, count);
        CHECK(same_bytes(out.k, expect.k));
        CHECK(same_bytes(out.v, expect.v));
        CHECK(out.pos == expect.pos);
        // By index lists (sequence-local) against the same result.
        std::vector<std::int32_t> local(kept_tokens.size());
        for (std::int32_t i = 0; i < count; ++i)
          local[i] = kept_tokens[i] - in.cu[cuda::detail::sequence_of(cu_out.data(), batch, i)];
        RowBuffer by_index = poisoned_like(in, in.rows, storage);
        emulate_gather(in.view(), in.seqs(), cu_out, by_index.view(), nullptr, local.data(),
                       detail::SourceIndex::kept_local, count);
        CHECK(same_bytes(by_index.k, expect.k));
        // In place in two phases, through packed NHD scratch, against compact_kv_inplace.
        RowBuffer rows = in, scratch = poisoned_like(in, in.cu.back(), KVStorage::nhd);
        std::vector<std::int32_t> cu_inplace(in.cu.size());
        compact_kv_inplace(in.view(), in.seqs(), keep, cu_inplace, 1);
        CHECK(cu_inplace == cu_out);
        emulate_gather(rows.view(), rows.seqs(), cu_out, scratch.view(), nullptr,
                       kept_tokens.data(), detail::SourceIndex::kept_token, count);
        emulate_gather(scratch.view(), RaggedRows{batch, cu_out.data(), nullptr}, cu_out,
                       rows.view(), rows.seq_start.empty() ? nullptr : rows.seq_start.data(),
                       nullptr, detail::SourceIndex::identity, count);
        test::check_same_rows(rows, in);
      }
}

TEST_CASE("keep_flags keeps exactly the keys some future query can see (every policy)") {
  std::mt19937 rng(16);
  std::vector<std::vector<std::uint8_t>> texts = test::edge_flags();
  for (int i = 0; i < 40; ++i) texts.push_back(test::random_flags(rng, int(rng() % 24), 1 + i % 6));
  constexpr int continuation = 4;  // every anchor pattern of the next 4 tokens
  for (const MaskPolicy& policy : test::all_policies())
    for (const auto& text : texts) {
      const AnchorLayout layout =
          build_layout_from_flags(text, std::vector<std::int32_t>{0, std::int32_t(text.size())});
      const std::vector<std::uint8_t> keep = keep_flags(policy, layout);
      const auto n = std::int32_t(text.size());
      std::vector<bool> seen(text.size(), false);
      for (int pattern = 0; pattern < (1 << continuation); ++pattern) {
        std::vector<std::uint8_t> longer = text;
        for (int c = 0; c < continuation; ++c) longer.push_back((pattern >> c) & 1);
        const AnchorLayout future = build_layout_from_flags(
            longer, std::vector<std::int32_t>{0, std::int32_t(longer.size())});
        for (std::int32_t q = n; q < n + continuation; ++q)
          for (std::int32_t j = 0; j < n; ++j)
            if (visible(policy, future.query(0, q), future.key(0, j))) seen[std::size_t(j)] = true;
      }
      CAPTURE(policy_name(policy));
      for (std::int32_t j = 0; j < n; ++j)
        CHECK(bool(keep[std::size_t(j)]) == seen[std::size_t(j)]);
    }
}

TEST_CASE("keep_flags over a ragged batch equals per-sequence flags") {
  std::mt19937 rng(17);
  for (const MaskPolicy& policy : test::all_policies()) {
    const AnchorLayout layout = test::random_layout(rng, 6, 30, 4.0);
    const auto keep = keep_flags(policy, layout);
    for (std::int32_t b = 0; b < layout.batch(); ++b) {
      const std::vector<std::uint8_t> one(layout.is_anchor.begin() + layout.cu_seqlens[b],
                                          layout.is_anchor.begin() + layout.cu_seqlens[b + 1]);
      const auto alone = keep_flags(
          policy,
          build_layout_from_flags(one, std::vector<std::int32_t>{0, std::int32_t(one.size())}));
      CHECK(std::vector<std::uint8_t>(keep.begin() + layout.cu_seqlens[b],
                                      keep.begin() + layout.cu_seqlens[b + 1]) == alone);
    }
  }
}

TEST_CASE("compaction works for bf16 and half elements") {
  std::vector<bf16> k(6 * 2 * 8), v(k.size()), out_k(k.size(), from_float<bf16>(-9.f)),
      out_v(k.size());
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i] = from_float<bf16>(float(i)), v[i] = from_float<bf16>(-float(i));
  const std::vector<std::int32_t> cu{0, 6};
  const std::vector<std::uint8_t> keep{0, 1, 0, 0, 1, 1};
  std::vector<std::int32_t> cu_out(2);
  const KVRows<bf16> in{make_view(k.data(), 6, 2, 8), make_view(v.data(), 6, 2, 8), nullptr,
                        nullptr};
  const KVRows<bf16> out{make_view(out_k.data(), 6, 2, 8), make_view(out_v.data(), 6, 2, 8),
                         nullptr, nullptr};
  compact_kv<bf16>(in, RaggedRows{1, cu.data(), nullptr}, keep, out, cu_out);
  CHECK(cu_out[1] == 3);
  for (int i = 0; i < 3; ++i)
    for (int e = 0; e < 16; ++e)
      CHECK(to_float(out_k[std::size_t(i * 16 + e)]) ==
            float(std::vector<int>{1, 4, 5}[i] * 16 + e));
  CHECK(to_float(out_k[3 * 16]) == -9.f);
}

TEST_CASE("bad input throws a message naming the argument and writes nothing") {
  std::mt19937 rng(18);
  RowBuffer in = random_rows(rng, {4, 3}, KVStorage::nhd, 2, 4, false);
  RowBuffer out = poisoned_like(in, 7, KVStorage::nhd);
  std::vector<std::uint8_t> keep(7, 1);
  std::vector<std::int32_t> cu_out(3, -5);
  const auto expect_throw = [&](const std::string& argument, auto&& call) {
    const RowBuffer out_before = out;
    const RowBuffer in_before = in;
    try {
      call();
      FAIL("no exception for bad ", argument);
    } catch (const std::invalid_argument& e) {
      CAPTURE(e.what());
      CHECK(std::string(e.what()).find(argument) != std::string::npos);
    }
    CHECK(out.pos == out_before.pos);
    CHECK(out.anchor == out_before.anchor);
    CHECK(in.k == in_before.k);
    for (std::size_t i = 0; i < out.k.size(); ++i) REQUIRE(std::isnan(out.k[i]));
    CHECK(cu_out == std::vector<std::int32_t>(3, -5));
  };
  SUBCASE("flags length mismatch") {
    keep.pop_back();
    expect_throw("keep.size()",
                 [&] { compact_kv<float>(in.view(), in.seqs(), keep, out.view(), cu_out); });
    expect_throw("keep.size()", [&] { compact_kv_inplace(in.view(), in.seqs(), keep, cu_out); });
  }
  SUBCASE("offsets not monotone") {
    in.cu = {0, 5, 4};
    keep.resize(4);
    expect_throw("cu_seqlens[2]",
                 [&] { compact_kv<float>(in.view(), in.seqs(), keep, out.view(), cu_out); });
    expect_throw("cu_seqlens[2]", [&] { compact_kv_inplace(in.view(), in.seqs(), keep, cu_out); });
  }
  SUBCASE("output too small") {
    out = poisoned_like(in, 6, KVStorage::nhd);
    expect_throw("cu_seqlens_out (packed)[1]",
                 [&] { compact_kv<float>(in.view(), in.seqs(), keep, out.view(), cu_out); });
  }
  SUBCASE("overlapping output sequences") {
    const std::vector<std::int32_t> starts{0, 2};
    expect_throw("maybe_out_seq_start[1]", [&] {
      compact_kv<float>(in.view(), in.seqs(), keep, out.view(), cu_out, starts.data());
    });
  }
  SUBCASE("sequence outside the buffer") {
    in.seq_start = {0, 5};
    expect_throw("in_seqs.maybe_seq_start[1]",
                 [&] { compact_kv<float>(in.view(), in.seqs(), keep, out.view(), cu_out); });
  }
  SUBCASE("index list not increasing") {
    const std::vector<std::int32_t> index{0, 2, 2, 1}, cu_keep{0, 3, 4};
    expect_throw("keep_index[2]", [&] {
      compact_kv_indices<float>(in.view(), in.seqs(), index, cu_keep, out.view());
    });
  }
  SUBCASE("head count mismatch") {
    RowBuffer other = poisoned_like(in, 7, KVStorage::nhd);
    auto view = other.view();
    view.k.shape[1] = view.v.shape[1] = 1;
    expect_throw("out.k.shape",
                 [&] { compact_kv<float>(in.view(), in.seqs(), keep, view, cu_out); });
  }
  SUBCASE("positions without flags") {
    auto view = out.view();
    view.is_anchor = nullptr;
    expect_throw("out.pos/is_anchor",
                 [&] { compact_kv<float>(in.view(), in.seqs(), keep, view, cu_out); });
  }
}
