// tests/test_compaction_cuda.cu - the device KV compaction (ansan/cuda/compaction.cuh) against
// the host one (ansan/compaction.hpp), which test_compaction.cpp checks against a plain
// reference. Outputs start poisoned on both sides and are compared byte for byte, so a row the
// device wrote and the host did not (or the reverse) fails. Covers float and half, head_dim
// sizes taking the 16-byte, 4-byte and element-wise gathers, NHD and HND, ragged batches with
// empty sequences, packed and slack layouts, all-keep and none-keep, in place, keep_flags for
// every policy, and CUB's temp-storage protocol. Exits 77 (SKIP) without a device.
#include "support/gpu_main.hpp"

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "ansan/compaction.hpp"
#include "ansan/cuda/compaction.cuh"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/dtype.hpp"
#include "support/device_copies.hpp"
#include "support/random_layouts.hpp"
#include "support/row_checks.hpp"

using namespace ansan;
using ansan::cuda::detail::DeviceBuffer;
using ansan::test::check_same_rows, ansan::test::same_bytes, ansan::test::to_device,
    ansan::test::to_host;

namespace {

// Host rows of one buffer and their device twin.
template <class T>
struct Rows {
  KVStorage storage;
  index_t rows, heads, dim;
  std::vector<T> k, v;
  std::vector<std::int32_t> pos;
  std::vector<std::uint8_t> anchor;
  DeviceBuffer<T> d_k, d_v;
  DeviceBuffer<std::int32_t> d_pos;
  DeviceBuffer<std::uint8_t> d_anchor;

  void upload() {
    d_k = to_device(k), d_v = to_device(v), d_pos = to_device(pos), d_anchor = to_device(anchor);
  }
  void download() {
    k = to_host(d_k), v = to_host(d_v), pos = to_host(d_pos), anchor = to_host(d_anchor);
  }
  KVRows<T> host() {
    return {kv_view(k.data(), storage, rows, heads, dim),
            kv_view(v.data(), storage, rows, heads, dim), pos.data(), anchor.data()};
  }
  KVRows<T> device() const {
    return {kv_view(d_k.data(), storage, rows, heads, dim),
            kv_view(d_v.data(), storage, rows, heads, dim), d_pos.data(), d_anchor.data()};
  }
};

template <class T>
Rows<T> make_rows(std::mt19937& rng, KVStorage storage, index_t rows, index_t heads, index_t dim,
                  bool poisoned) {
  Rows<T> r{storage, rows, heads, dim, {}, {}, {}, {}, {}, {}, {}, {}};
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  r.k.resize(std::size_t(rows * heads * dim));
  r.v.resize(r.k.size());
  for (std::size_t i = 0; i < r.k.size(); ++i) {
    r.k[i] = from_float<T>(poisoned ? -999.f : value(rng));
    r.v[i] = from_float<T>(poisoned ? 999.f : value(rng));
  }
  for (index_t i = 0; i < rows; ++i) {
    r.pos.push_back(poisoned ? -77 : std::int32_t(rng() % 1000));
    r.anchor.push_back(poisoned ? 0xAB : std::uint8_t(rng() & 1));
  }
  r.upload();
  return r;
}

// A ragged batch: lengths, offsets, and (with slack) first rows with random gaps.
struct Batch {
  std::vector<std::int32_t> cu{0}, seq_start;
  index_t rows = 0;
  RaggedRows host() const {
    return {std::int32_t(cu.size()) - 1, cu.data(), seq_start.empty() ? nullptr : seq_start.data()};
  }
};
Batch make_batch(std::mt19937& rng, int batch, int max_len, bool slack) {
  Batch s;
  for (int b = 0; b < batch; ++b) {
    if (slack) s.rows += rng() % 3, s.seq_start.push_back(std::int32_t(s.rows));
    const auto n = std::int32_t(rng() % (max_len + 1));
    s.rows += n;
    s.cu.push_back(s.cu.back() + n);
  }
  s.rows += slack ? rng() % 3 : 0;
  return s;
}

std::vector<std::uint8_t> random_keep(std::mt19937& rng, std::int64_t n, double p) {
  std::bernoulli_distribution keep(p);
  std::vector<std::uint8_t> flags(static_cast<std::size_t>(n));
  for (auto& f : flags) f = keep(rng) ? std::uint8_t(1 + rng() % 200) : 0;
  return flags;
}

const KVStorage storages[] = {KVStorage::nhd, KVStorage::hnd};
const double keep_rates[] = {0.0, 0.05, 0.5, 1.0};
const index_t dims[] = {1, 2, 3, 8, 64, 128};

}  // namespace

TEST_CASE_TEMPLATE("device compact_kv equals host compact_kv", T, float, half) {
  std::mt19937 rng(31);
  for (const KVStorage storage : storages)
    for (const double rate : keep_rates)
      for (const index_t dim : dims)
        for (int trial = 0; trial < 3; ++trial) {
          const bool slack = trial == 1;
          const Batch in_seqs = make_batch(rng, 1 + trial * 2, dim >= 64 ? 300 : 60, slack);
          Rows<T> in = make_rows<T>(rng, storage, in_seqs.rows, 1 + rng() % 4, dim, false);
          Rows<T> out = make_rows<T>(rng, storage, in_seqs.rows + 3, in.heads, dim, true);
          Rows<T> expect = make_rows<T>(rng, storage, in_seqs.rows + 3, in.heads, dim, true);
          const std::vector<std::uint8_t> keep = random_keep(rng, in_seqs.cu.back(), rate);
          const auto B = std::size_t(in_seqs.cu.size() - 1);
          std::vector<std::int32_t> cu_expect(B + 1);
          compact_kv<T>(in.host(), in_seqs.host(), keep, expect.host(), cu_expect, nullptr, 2);
          const auto d_cu_in = to_device(in_seqs.cu);
          const auto d_starts = to_device(in_seqs.seq_start);
          const auto d_keep = to_device(keep);
          DeviceBuffer<std::int32_t> d_cu_out(B + 1);
          const RaggedRows d_seqs{std::int32_t(B), d_cu_in.data(),
                                  slack ? d_starts.data() : nullptr};
          std::size_t bytes = 0;
          REQUIRE(ansan::cuda::compact_kv<T>(nullptr, bytes, in.device(), d_seqs, in_seqs.cu.back(),
                                             d_keep.data(), out.device(),
                                             d_cu_out.data()) == cudaSuccess);
          DeviceBuffer<unsigned char> temp(bytes);
          REQUIRE(ansan::cuda::compact_kv<T>(temp.data(), bytes, in.device(), d_seqs,
                                             in_seqs.cu.back(), d_keep.data(), out.device(),
                                             d_cu_out.data()) == cudaSuccess);
          out.download();
          CHECK(to_host(d_cu_out) == cu_expect);
          check_same_rows(out, expect);
        }
}

namespace {

// The rows that change place when `keep` compacts each sequence to the front of its own rows,
// as append_move_table takes them (a KV cache finds them without flags: plan_reduction).
struct MovingRows {
  detail::RowMoves moves;
  std::vector<std::int32_t> cu_moved{0};
};
MovingRows moving_rows(const RaggedRows& seqs, const std::vector<std::uint8_t>& keep) {
  detail::RowMoves all = detail::moves_from_flags(seqs, keep);
  detail::fill_destinations(all, seqs.maybe_seq_start, seqs.batch);
  MovingRows m;
  m.moves.cu_out = all.cu_out;
  for (std::int32_t b = 0; b < seqs.batch; ++b) {
    for (std::int32_t i = all.cu_out[b]; i < all.cu_out[b + 1]; ++i)
      if (all.src[std::size_t(i)] != all.dst[std::size_t(i)])
        m.moves.src.push_back(all.src[std::size_t(i)]),
            m.moves.dst.push_back(all.dst[std::size_t(i)]);
    m.cu_moved.push_back(std::int32_t(m.moves.src.size()));
  }
  return m;
}

// One in-place compaction on both sides, compared byte for byte: rows within their sequences
// (slack: maybe_seq_start set, compact_in_sequences_kernel) or the batch repacked (two phases).
// Within sequences, the same kernel runs again from the rows as they were, on the moves listed
// by the host as ansan::cuda::KVCache lists them (ListedMoves).
template <class T>
void compare_inplace(std::mt19937& rng, KVStorage storage, double rate, index_t dim, int batch,
                     bool slack) {
  const Batch seqs = make_batch(rng, batch, dim >= 64 ? 300 : 60, slack);
  Rows<T> rows = make_rows<T>(rng, storage, seqs.rows, 1 + rng() % 4, dim, false);
  Rows<T> expect{storage,  rows.rows,   rows.heads, dim, rows.k, rows.v,
                 rows.pos, rows.anchor, {},         {},  {},     {}};  // host copies only
  const std::vector<std::uint8_t> keep = random_keep(rng, seqs.cu.back(), rate);
  const auto B = std::size_t(seqs.cu.size() - 1);
  std::vector<std::int32_t> cu_expect(B + 1);
  compact_kv_inplace(expect.host(), seqs.host(), keep, cu_expect, 2);
  auto d_cu = to_device(seqs.cu);  // also the output: offsets may be rewritten in place
  const auto d_starts = to_device(seqs.seq_start);
  const auto d_keep = to_device(keep);
  const RaggedRows d_seqs{std::int32_t(B), d_cu.data(), slack ? d_starts.data() : nullptr};
  std::size_t bytes = 0;
  REQUIRE(ansan::cuda::compact_kv_inplace(nullptr, bytes, rows.device(), d_seqs, seqs.cu.back(),
                                          d_keep.data(), d_cu.data()) == cudaSuccess);
  DeviceBuffer<unsigned char> temp(bytes);
  REQUIRE(ansan::cuda::compact_kv_inplace(temp.data(), bytes, rows.device(), d_seqs,
                                          seqs.cu.back(), d_keep.data(),
                                          d_cu.data()) == cudaSuccess);
  const Rows<T> before{storage, rows.rows, rows.heads, dim, rows.k, rows.v, rows.pos, rows.anchor,
                       {},      {},        {},         {}};
  rows.download();
  CHECK(to_host(d_cu) == cu_expect);
  check_same_rows(rows, expect);
  if (!slack) return;
  rows.k = before.k, rows.v = before.v, rows.pos = before.pos, rows.anchor = before.anchor;
  rows.upload();
  namespace device = ansan::cuda::detail;
  std::vector<std::int32_t> table;
  const MovingRows m = moving_rows(seqs.host(), keep);
  const std::int32_t moving = device::append_move_table(m.moves, m.cu_moved.data(),
                                                        seqs.seq_start.data(), std::int32_t(B), table);
  table.push_back(0);  // never empty: a device buffer of the table
  const auto d_table = to_device(table);
  const device::InSequenceParams<T, device::ListedMoves> listed{
      rows.device(), 0, device::ListedMoves{d_table.data(), moving}, 0};
  REQUIRE(device::launch_in_sequences(listed, 1, 0) == cudaSuccess);
  rows.download();
  check_same_rows(rows, expect);
}

}  // namespace

TEST_CASE_TEMPLATE("device compact_kv_inplace equals host compact_kv_inplace", T, float, half) {
  std::mt19937 rng(32);
  for (const KVStorage storage : storages)
    for (const double rate : keep_rates)
      for (const index_t dim : dims)
        for (int trial = 0; trial < 3; ++trial)
          compare_inplace<T>(rng, storage, rate, dim, 1 + trial * 2, trial != 0);
}

// Small and deterministic, for compute-sanitizer (tests/gpu/check.sh): both in-place paths,
// both storages, with many chunks per sequence.
TEST_CASE("sanitizer: compaction in place") {
  std::mt19937 rng(36);
  for (const KVStorage storage : storages)
    for (const bool slack : {true, false}) compare_inplace<float>(rng, storage, 0.5, 128, 3, slack);
}

// ansan::cuda::KVCache moves its rows by a table made on the host (ListedMoves); every cache
// test runs it, this one pins its format: only sequences with rows to move, their moving ranks.
TEST_CASE("the cache's move table lists only the rows that change place") {
  const std::vector<std::int32_t> cu{0, 3, 7, 9}, seq_start{0, 10, 20};
  // sequence 0 keeps all; 1 drops its row 1 (ranks 1, 2 move up from rows 12, 13); 2 its last
  const std::vector<std::uint8_t> keep{1, 1, 1, 1, 0, 1, 1, 1, 0};
  const RaggedRows seqs{3, cu.data(), seq_start.data()};
  const MovingRows m = moving_rows(seqs, keep);
  std::vector<std::int32_t> table{7, 7};  // what comes before it stays
  CHECK(ansan::cuda::detail::append_move_table(m.moves, m.cu_moved.data(), seq_start.data(), 3,
                                               table) == 1);
  // row0, first and end rank, where its sources start (from the table's start); the sources
  CHECK(table == std::vector<std::int32_t>{7, 7, 10, 1, 3, 4, 12, 13});
  const MovingRows none = moving_rows(seqs, std::vector<std::uint8_t>(9, 1));
  std::vector<std::int32_t> empty;
  CHECK(ansan::cuda::detail::append_move_table(none.moves, none.cu_moved.data(), seq_start.data(),
                                               3, empty) == 0);
  CHECK(empty.empty());
}

TEST_CASE("device compact_kv_indices equals host compact_kv_indices") {
  std::mt19937 rng(33);
  for (const KVStorage storage : storages)
    for (const index_t dim : dims) {
      const Batch seqs = make_batch(rng, 4, 50, true);
      Rows<float> in = make_rows<float>(rng, storage, seqs.rows, 3, dim, false);
      Rows<float> out = make_rows<float>(rng, KVStorage::nhd, seqs.rows, 3, dim, true);
      Rows<float> expect = make_rows<float>(rng, KVStorage::nhd, seqs.rows, 3, dim, true);
      std::vector<std::int32_t> index, cu_keep{0};
      for (std::size_t b = 0; b + 1 < seqs.cu.size(); ++b) {
        for (std::int32_t i = 0; i < seqs.cu[b + 1] - seqs.cu[b]; ++i)
          if (rng() % 3 == 0) index.push_back(i);
        cu_keep.push_back(std::int32_t(index.size()));
      }
      compact_kv_indices<float>(in.host(), seqs.host(), index, cu_keep, expect.host());
      const auto d_cu = to_device(seqs.cu), d_starts = to_device(seqs.seq_start);
      const auto d_index = to_device(index), d_cu_keep = to_device(cu_keep);
      REQUIRE(ansan::cuda::compact_kv_indices<float>(
                  in.device(), RaggedRows{4, d_cu.data(), d_starts.data()}, d_index.data(),
                  d_cu_keep.data(), cu_keep.back(), out.device()) == cudaSuccess);
      out.download();
      CHECK(same_bytes(out.k, expect.k));
      CHECK(same_bytes(out.v, expect.v));
      CHECK(out.pos == expect.pos);
    }
}

TEST_CASE("device keep_flags equals host keep_flags for every policy") {
  std::mt19937 rng(34);
  for (const MaskPolicy& policy : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 5, 200, 5.0);
    const std::vector<std::uint8_t> expect = keep_flags(policy, L);
    std::vector<std::int32_t> next_pos, open;
    for (std::int32_t b = 0; b < L.batch(); ++b) {
      next_pos.push_back(L.seq_len(b));
      const std::int32_t anchors = L.cu_anchors[b + 1] - L.cu_anchors[b];
      open.push_back(anchors ? L.anchor_pos[std::size_t(L.cu_anchors[b + 1] - 1)] + 1 : 0);
    }
    const auto d_pos = to_device(L.pos), d_cu = to_device(L.cu_seqlens),
               d_next = to_device(next_pos), d_open = to_device(open);
    const auto d_anchor = to_device(L.is_anchor);
    DeviceBuffer<std::uint8_t> d_keep(expect.size());
    REQUIRE(ansan::cuda::keep_flags(policy, d_pos.data(), d_anchor.data(),
                                    RaggedRows{L.batch(), d_cu.data(), nullptr}, L.total_tokens(),
                                    d_next.data(), d_open.data(), d_keep.data()) == cudaSuccess);
    CHECK(to_host(d_keep) == expect);
  }
}

TEST_CASE("temp storage protocol: a null pointer asks for the size, too little throws") {
  std::mt19937 rng(35);
  const Batch seqs = make_batch(rng, 3, 40, false);
  Rows<float> rows = make_rows<float>(rng, KVStorage::nhd, seqs.rows, 2, 8, false);
  const std::vector<std::uint8_t> keep = random_keep(rng, seqs.cu.back(), 0.5);
  const auto d_cu = to_device(seqs.cu);
  const auto d_keep = to_device(keep);
  DeviceBuffer<std::int32_t> d_cu_out(4);
  const RaggedRows d_seqs{3, d_cu.data(), nullptr};
  std::size_t bytes = 0;
  REQUIRE(ansan::cuda::compact_kv_inplace(nullptr, bytes, rows.device(), d_seqs, seqs.cu.back(),
                                          d_keep.data(), d_cu_out.data()) == cudaSuccess);
  CHECK(bytes >=
        std::size_t(seqs.cu.back()) * 2 * 2 * 8 * sizeof(float));  // holds the scratch rows
  const auto before = rows.k;
  rows.download();
  CHECK(rows.k == before);  // the size query touched nothing
  DeviceBuffer<unsigned char> temp(bytes);
  std::size_t too_few = bytes - 1;
  CHECK_THROWS_WITH_AS(
      ansan::cuda::compact_kv_inplace(temp.data(), too_few, rows.device(), d_seqs, seqs.cu.back(),
                                      d_keep.data(), d_cu_out.data()),
      doctest::Contains("temp_storage_bytes"), std::invalid_argument);
  rows.download();
  CHECK(rows.k == before);
}
