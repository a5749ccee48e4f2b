// FlashInfer packed custom mask (flashinfer_mask.hpp): bytes and mask_indptr against a
// reference that does what segment_packbits(bitorder="little") does to the flattened bool
// mask, and every bit read back the way FlashInfer's kernel reads it, against
// ansan::visible; for every policy, random ragged batches and the edge layouts; caller
// buffers untouched on bad input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "ansan/flashinfer_mask.hpp"
#include "support/mask_checks.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

namespace {

constexpr std::uint8_t kPoison = 0xCD;

// numpy.packbits(segment, bitorder="little") per request, requests concatenated.
void reference(const AnchorLayout& L, const MaskPolicy& p, std::vector<std::uint8_t>& packed,
               std::vector<std::int32_t>& indptr) {
  indptr = {0};
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    const std::vector<std::uint8_t> flat = test::sequence_mask(L, p, b);  // (n * n) row-major
    for (std::size_t start = 0; start < flat.size(); start += 8) {
      std::uint8_t byte = 0;
      for (std::size_t bit = 0; bit < 8 && start + bit < flat.size(); ++bit)
        byte = std::uint8_t(byte | (flat[start + bit] ? 1u << bit : 0u));
      packed.push_back(byte);
    }
    indptr.push_back(std::int32_t(packed.size()));
  }
}

std::vector<AnchorLayout> layouts_under_test(std::mt19937& rng, int random_count) {
  std::vector<AnchorLayout> layouts;
  for (int k = 0; k < random_count; ++k)
    layouts.push_back(test::random_layout(rng, 1 + k % 6, 1 + k % 45, 1.0 + k % 8));
  for (AnchorLayout& edge : test::edge_layouts()) layouts.push_back(std::move(edge));
  return layouts;
}

}  // namespace

TEST_CASE("the worked example of the header") {
  const std::vector<std::uint8_t> flags{0, 1, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 3});
  const FlashInferMask m = flashinfer_packed_mask(L, MaskPolicy::anllm());
  CHECK(m.packed_mask == std::vector<std::uint8_t>{0b10011001, 0b00000001});
  CHECK(m.mask_indptr == std::vector<std::int32_t>{0, 2});
}

TEST_CASE("packed mask equals segment_packbits of the predicate, bit by bit") {
  std::mt19937 rng(404);
  const auto layouts = layouts_under_test(rng, 600);
  for (const MaskPolicy& p : test::all_policies())
    for (const AnchorLayout& L : layouts) {
      std::vector<std::uint8_t> want_bytes;
      std::vector<std::int32_t> want_indptr;
      reference(L, p, want_bytes, want_indptr);

      std::vector<std::uint8_t> bytes(want_bytes.size(), kPoison);
      std::vector<std::int32_t> indptr(want_indptr.size(), -7);
      flashinfer_packed_mask(L, p, bytes, indptr);
      REQUIRE(indptr == want_indptr);
      REQUIRE(bytes == want_bytes);
      CHECK(flashinfer_mask_indptr(L) == want_indptr);

      // Read back as FlashInfer's kernel does: bit (q * kv_len + k) of request b's bytes.
      std::int64_t wrong = 0;
      for (std::int32_t b = 0; b < L.batch(); ++b) {
        const std::uint8_t* request = bytes.data() + indptr[b];
        const std::int64_t n = L.seq_len(b);
        for (std::int32_t q = 0; q < n; ++q)
          for (std::int32_t k = 0; k < n; ++k) {
            const std::int64_t offset = q * n + k;
            const bool bit = (request[offset / 8] >> (offset % 8)) & 1;
            wrong += bit != visible(p, L.query(b, q), L.key(b, k));
          }
        const std::int64_t used = n * n;  // padding bits of the last byte are zero
        if (used % 8) CHECK((request[used / 8] >> (used % 8)) == 0);
      }
      REQUIRE(wrong == 0);

      const FlashInferMask m = flashinfer_packed_mask(L, p);
      CHECK(m.packed_mask == want_bytes);
      CHECK(m.mask_indptr == want_indptr);
      CHECK(m.qo_indptr == L.cu_seqlens);
      CHECK(m.kv_indptr == L.cu_seqlens);
    }
}

TEST_CASE("save_flashinfer_mask writes the four arrays") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "ansan_test_flashinfer_mask";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 4, 4, 11});
  const FlashInferMask m = flashinfer_packed_mask(L, MaskPolicy::sepllm(1, 2));
  save_flashinfer_mask(m, dir.string());
  const auto file_bytes = [&](const char* name) {
    std::ifstream file(dir / name, std::ios::binary);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
  };
  const auto check_file = [&](const char* name, const char* descr, const std::string& shape,
                              const void* data, std::size_t size) {
    const std::string bytes = file_bytes(name);
    REQUIRE(bytes.size() >= 10);
    const std::size_t header = 10 + (std::uint8_t(bytes[8]) | (std::size_t(std::uint8_t(bytes[9])) << 8));
    CHECK(header % 64 == 0);
    CHECK(bytes.find(descr) < header);
    CHECK(bytes.find("'shape': " + shape) < header);
    REQUIRE(bytes.size() == header + size);
    CHECK(std::memcmp(bytes.data() + header, data, size) == 0);
  };
  const std::string packed_shape = "(" + std::to_string(m.packed_mask.size()) + ",)";
  check_file("packed_mask.npy", "'|u1'", packed_shape, m.packed_mask.data(), m.packed_mask.size());
  check_file("mask_indptr.npy", "'<i4'", "(4,)", m.mask_indptr.data(), 16);
  check_file("qo_indptr.npy", "'<i4'", "(4,)", m.qo_indptr.data(), 16);
  check_file("kv_indptr.npy", "'<i4'", "(4,)", m.kv_indptr.data(), 16);
  fs::remove_all(dir);
}

TEST_CASE("bad input: a clear exception and caller buffers untouched") {
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0, 0, 0, 1, 0};
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 4, 10});
  const std::vector<std::int32_t> indptr_want = flashinfer_mask_indptr(L);  // {0, 2, 7}
  std::vector<std::uint8_t> bytes(std::size_t(indptr_want.back()) + 3, kPoison);
  std::vector<std::int32_t> indptr(4, -7);
  const auto untouched = [&] {
    for (std::uint8_t v : bytes) REQUIRE(v == kPoison);
    for (std::int32_t v : indptr) REQUIRE(v == -7);
  };
  const span<std::uint8_t> exact(bytes.data(), std::size_t(indptr_want.back()));
  const span<std::int32_t> offsets(indptr.data(), 3);
  test::check_throws_naming([&] { flashinfer_packed_mask(L, MaskPolicy::anllm(), bytes, offsets); },
                            "packed_mask.size()");
  test::check_throws_naming([&] { flashinfer_packed_mask(L, MaskPolicy::anllm(), exact, indptr); },
                            "mask_indptr.size()");
  test::check_throws_naming([&] { flashinfer_packed_mask(L, MaskPolicy::sliding_window(0), exact, offsets); },
                            "policy.window");
  test::check_throws_naming([&] { flashinfer_packed_mask(L, MaskPolicy::sepllm(-1, 3), exact, offsets); },
                            "policy.sinks");
  AnchorLayout broken = L;
  broken.cu_seqlens = {0, 6, 4, 10};
  test::check_throws_naming([&] { flashinfer_packed_mask(broken, MaskPolicy::anllm(), exact, offsets); },
                            "layout.cu_seqlens[2]");
  broken = L;
  broken.cu_seqlens = {0, -2, 10};
  test::check_throws_naming([&] { flashinfer_packed_mask(broken, MaskPolicy::anllm(), exact, offsets); },
                            "layout.cu_seqlens[1]");
  broken = L;
  broken.pos.push_back(10);
  test::check_throws_naming([&] { flashinfer_packed_mask(broken, MaskPolicy::anllm(), exact, offsets); },
                            "layout.pos.size()");
  untouched();
}
