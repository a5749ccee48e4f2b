// FlexAttention BlockMask export (flex_block_mask.hpp): all four arrays against a reference
// that does what torch's create_block_mask does (dense mask from ansan::visible, padded with
// False to whole blocks, block sums, stable descending argsort), for every policy, both batch
// mappings, many block sizes, random ragged batches and the edge layouts; the .npy files it
// saves; and bad input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>

#include "ansan/flex_block_mask.hpp"
#include "support/mask_checks.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

namespace {

struct Reference {
  std::int32_t batch = 0, seq_len = 0, blocks = 0;
  std::vector<std::int32_t> kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices;
};

// Frame `f` of the batch mapping as a dense (seq_len, seq_len) mask, straight from visible().
std::vector<std::uint8_t> frame_mask(const AnchorLayout& L, const MaskPolicy& p, FlexBatching how,
                                     std::int32_t f, std::int32_t seq_len) {
  std::vector<std::uint8_t> dense(std::size_t(seq_len) * seq_len, 0);
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    if (how == FlexBatching::padded && b != f) continue;
    const std::int32_t base = how == FlexBatching::packed ? L.cu_seqlens[b] : 0;
    const std::int32_t n = L.seq_len(b);
    const std::vector<std::uint8_t> sequence = test::sequence_mask(L, p, b);  // (n, n)
    for (std::int32_t i = 0; i < n; ++i)
      std::copy_n(sequence.begin() + std::size_t(i) * n, n,
                  dense.begin() + std::size_t(base + i) * seq_len + base);
  }
  return dense;
}

void ordered(const std::vector<std::uint8_t>& flags, std::vector<std::int32_t>& num,
             std::vector<std::int32_t>& indices) {
  std::vector<std::int32_t> order(flags.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int32_t a, std::int32_t b) { return flags[a] > flags[b]; });
  num.push_back(std::int32_t(std::count(flags.begin(), flags.end(), 1)));
  indices.insert(indices.end(), order.begin(), order.end());
}

Reference reference(const AnchorLayout& L, const MaskPolicy& p, std::int32_t bs, FlexBatching how) {
  Reference r;
  r.batch = how == FlexBatching::packed ? 1 : L.batch();
  for (std::int32_t b = 0; b < L.batch(); ++b) r.seq_len = std::max(r.seq_len, L.seq_len(b));
  if (how == FlexBatching::packed) r.seq_len = std::int32_t(L.total_tokens());
  r.blocks = (r.seq_len + bs - 1) / bs;
  const std::int32_t padded = r.blocks * bs;
  for (std::int32_t f = 0; f < r.batch; ++f) {
    const auto dense = frame_mask(L, p, how, f, r.seq_len);
    for (std::int32_t qb = 0; qb < r.blocks; ++qb) {
      std::vector<std::uint8_t> partial(std::size_t(r.blocks)), full(std::size_t(r.blocks));
      for (std::int32_t kb = 0; kb < r.blocks; ++kb) {
        std::int64_t sum = 0;
        for (std::int32_t i = qb * bs; i < (qb + 1) * bs; ++i)
          for (std::int32_t j = kb * bs; j < (kb + 1) * bs; ++j)
            sum += i < r.seq_len && j < r.seq_len && i < padded && dense[std::size_t(i) * r.seq_len + j];
        full[kb] = sum == std::int64_t(bs) * bs;
        partial[kb] = sum > 0 && !full[kb];
      }
      ordered(partial, r.kv_num_blocks, r.kv_indices);
      ordered(full, r.full_kv_num_blocks, r.full_kv_indices);
    }
  }
  return r;
}

std::vector<AnchorLayout> layouts_under_test(std::mt19937& rng, int random_count) {
  std::vector<AnchorLayout> layouts;
  for (int k = 0; k < random_count; ++k)
    layouts.push_back(test::random_layout(rng, 1 + k % 4, 1 + k % 37, 1.0 + k % 9));
  for (AnchorLayout& edge : test::edge_layouts()) layouts.push_back(std::move(edge));
  // Long all-visible stretches (one segment, causal) so full blocks appear at larger sizes.
  layouts.push_back(build_layout_from_flags(std::vector<std::uint8_t>(70, 0), std::vector<std::int32_t>{0, 33, 70}));
  return layouts;
}

// A minimal .npy reader: checks the header and returns (descr, shape text, data bytes).
struct Npy {
  std::string descr, shape;
  std::string data;
};
Npy read_npy(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buffer;
  buffer << file.rdbuf();
  const std::string bytes = buffer.str();
  REQUIRE(bytes.size() >= 10);
  REQUIRE(bytes.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)) == 0);
  const std::size_t header_len = std::uint8_t(bytes[8]) | (std::size_t(std::uint8_t(bytes[9])) << 8);
  REQUIRE((10 + header_len) % 64 == 0);
  const std::string header = bytes.substr(10, header_len);
  REQUIRE(header.back() == '\n');
  CHECK(header.find("'fortran_order': False") != std::string::npos);
  Npy npy;
  const auto field = [&](const std::string& key, char open, char close) {
    const std::size_t at = header.find(key);
    REQUIRE(at != std::string::npos);
    const std::size_t from = header.find(open, at + key.size());
    return header.substr(from, header.find(close, from + 1) - from + 1);
  };
  npy.descr = field("'descr':", '\'', '\'');
  npy.shape = field("'shape':", '(', ')');
  npy.data = bytes.substr(10 + header_len);
  return npy;
}

template <class T>
void check_npy(const std::string& path, const char* descr, const std::string& shape,
               const std::vector<T>& values) {
  const Npy npy = read_npy(path);
  CHECK(npy.descr == descr);
  CHECK(npy.shape == shape);
  REQUIRE(npy.data.size() == values.size() * sizeof(T));
  CHECK(std::memcmp(npy.data.data(), values.data(), npy.data.size()) == 0);
}

}  // namespace

TEST_CASE("BlockMask arrays equal create_block_mask's, for every policy and block size") {
  std::mt19937 rng(303);
  const auto layouts = layouts_under_test(rng, 250);
  std::int64_t full_seen = 0, partial_seen = 0;
  for (const MaskPolicy& p : test::all_policies())
    for (const AnchorLayout& L : layouts)
      for (const FlexBatching how : {FlexBatching::packed, FlexBatching::padded})
        for (const std::int32_t bs : {1, 2, 3, 4, 8, 16}) {
          const FlexBlockMask m = flex_block_mask(L, p, bs, how);
          const Reference r = reference(L, p, bs, how);
          REQUIRE(m.batch == r.batch);
          REQUIRE(m.heads == 1);
          REQUIRE(m.seq_len == r.seq_len);
          REQUIRE(m.num_q_blocks == r.blocks);
          REQUIRE(m.num_kv_blocks == r.blocks);
          REQUIRE(m.block_size == bs);
          REQUIRE(m.kv_num_blocks == r.kv_num_blocks);
          REQUIRE(m.kv_indices == r.kv_indices);
          REQUIRE(m.full_kv_num_blocks == r.full_kv_num_blocks);
          REQUIRE(m.full_kv_indices == r.full_kv_indices);
          for (std::size_t row = 0; row < m.kv_num_blocks.size(); ++row)
            REQUIRE(m.kv_num_blocks[row] + m.full_kv_num_blocks[row] <= m.num_kv_blocks);
          for (std::int32_t v : m.full_kv_num_blocks) full_seen += v;
          for (std::int32_t v : m.kv_num_blocks) partial_seen += v;
        }
  CHECK(full_seen > 0);  // the sweep exercised both kinds of block
  CHECK(partial_seen > 0);
}

TEST_CASE("FlexAttention's block sizes 64 and 128 on sequences of hundreds of tokens") {
  std::mt19937 rng(606);
  for (int trial = 0; trial < 6; ++trial) {
    const AnchorLayout L = test::random_layout(rng, 1 + trial % 3, 400, 5.0 + 10.0 * trial);
    for (const MaskPolicy& p : test::all_policies())
      for (const FlexBatching how : {FlexBatching::packed, FlexBatching::padded})
        for (const std::int32_t bs : {64, 128}) {
          const FlexBlockMask m = flex_block_mask(L, p, bs, how);
          const Reference r = reference(L, p, bs, how);
          REQUIRE(m.kv_num_blocks == r.kv_num_blocks);
          REQUIRE(m.kv_indices == r.kv_indices);
          REQUIRE(m.full_kv_num_blocks == r.full_kv_num_blocks);
          REQUIRE(m.full_kv_indices == r.full_kv_indices);
        }
  }
}

TEST_CASE("block size at the int32 limit: one partial block per non-empty frame") {
  std::mt19937 rng(31);
  for (int trial = 0; trial < 20; ++trial) {
    const AnchorLayout L = test::random_layout(rng, 1 + trial % 4, 20, 3.0);
    for (const FlexBatching how : {FlexBatching::packed, FlexBatching::padded}) {
      const FlexBlockMask m = flex_block_mask(L, MaskPolicy::anllm(), std::numeric_limits<std::int32_t>::max(), how);
      REQUIRE(m.num_q_blocks == (m.seq_len > 0 ? 1 : 0));
      for (std::int32_t f = 0; f < m.batch && m.seq_len > 0; ++f) {
        const bool any = how == FlexBatching::packed ? L.total_tokens() > 0 : L.seq_len(f) > 0;
        CHECK(m.kv_num_blocks[f] == (any ? 1 : 0));  // a row sees itself, so non-empty means seen
        CHECK(m.full_kv_num_blocks[f] == 0);         // the block reaches past the end
        CHECK(m.kv_indices[f] == 0);
      }
    }
  }
}

TEST_CASE("save_flex_block_mask writes loadable .npy arrays and the mask_mod inputs") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "ansan_test_flex_block_mask";
  fs::remove_all(dir);
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 4, 4, 11});
  for (const FlexBatching how : {FlexBatching::packed, FlexBatching::padded}) {
    const FlexBlockMask m = flex_block_mask(L, MaskPolicy::anllm(), 2, how);
    save_flex_block_mask(m, L, dir.string());
    const std::string rows = "(" + std::to_string(m.batch) + ", 1, " + std::to_string(m.num_q_blocks) + ")";
    const std::string blocks = "(" + std::to_string(m.batch) + ", 1, " + std::to_string(m.num_q_blocks) +
                               ", " + std::to_string(m.num_kv_blocks) + ")";
    const std::string tokens = "(" + std::to_string(m.batch) + ", " + std::to_string(m.seq_len) + ")";
    check_npy(dir / "kv_num_blocks.npy", "'<i4'", rows, m.kv_num_blocks);
    check_npy(dir / "kv_indices.npy", "'<i4'", blocks, m.kv_indices);
    check_npy(dir / "full_kv_num_blocks.npy", "'<i4'", rows, m.full_kv_num_blocks);
    check_npy(dir / "full_kv_indices.npy", "'<i4'", blocks, m.full_kv_indices);
    // Per-token inputs of the mask_mod, in the frame's coordinates.
    std::vector<std::int32_t> doc, pos, seg_start;
    std::vector<std::uint8_t> is_anchor;
    if (how == FlexBatching::packed) {
      doc = {0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2};
      pos = {0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6};
      seg_start = {0, 0, 2, 2, 0, 1, 1, 1, 4, 4, 4};
      is_anchor = flags;
    } else {  // 3 frames of 7 positions; sequence 1 is empty
      doc = {0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 2, 2, 2, 2, 2, 2};
      pos = {0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6};
      seg_start = {0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 4, 4, 4};
      is_anchor = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0};
    }
    check_npy(dir / "doc.npy", "'<i4'", tokens, doc);
    check_npy(dir / "pos.npy", "'<i4'", tokens, pos);
    check_npy(dir / "seg_start.npy", "'<i4'", tokens, seg_start);
    check_npy(dir / "is_anchor.npy", "'|b1'", tokens, is_anchor);
    std::ifstream meta(dir / "meta.json");
    std::stringstream text;
    text << meta.rdbuf();
    CHECK(text.str().find("\"block_size\": 2") != std::string::npos);
    CHECK(text.str().find(how == FlexBatching::packed ? "\"packed\"" : "\"padded\"") != std::string::npos);
    CHECK(text.str().find("\"retained_rows\": \"non_anchor\"") != std::string::npos);
  }
  // A mask saved with a layout it was not built from is refused.
  const AnchorLayout other = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 11});
  test::check_throws_naming([&] { save_flex_block_mask(flex_block_mask(L, MaskPolicy::anllm(), 2, FlexBatching::padded), other, dir.string()); },
                            "layout");
  fs::remove_all(dir);
}

TEST_CASE("flex_block_mask rejects bad input") {
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0, 0, 0, 1, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 4, 10});
  for (const std::int32_t bs : {0, -1, -128})
    test::check_throws_naming([&] { flex_block_mask(L, MaskPolicy::anllm(), bs); }, "block_size");
  test::check_throws_naming([&] { flex_block_mask(L, MaskPolicy::sliding_window(0), 4); }, "policy.window");
  test::check_throws_naming([&] { flex_block_mask(L, MaskPolicy::anllm(), 4, FlexBatching(7)); }, "batching");
  AnchorLayout broken = L;
  broken.cu_seqlens = {0, 6, 4, 10};
  test::check_throws_naming([&] { flex_block_mask(broken, MaskPolicy::anllm(), 4); }, "layout.cu_seqlens[2]");
  broken = L;
  broken.seg_start.pop_back();
  test::check_throws_naming([&] { flex_block_mask(broken, MaskPolicy::anllm(), 4); }, "layout.seg_start.size()");
}
