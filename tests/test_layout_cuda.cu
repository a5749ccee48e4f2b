// The CUDA layout builders (ansan/cuda/layout.cuh, ansan/cuda/device_layout.cuh) against the
// host builders (ansan/layout.hpp): identical arrays on random ragged batches of many sizes,
// the edge layouts, batches past 2^16 tokens, and the same exceptions for bad input.
// Needs a GPU; without one the binary reports SKIP (support/gpu_main.hpp).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ansan/cuda/device_layout.cuh"
#include "ansan/cuda/layout.cuh"
#include "ansan/layout.hpp"
#include "support/gpu_main.hpp"
#include "support/layout_checks.hpp"
#include "support/random_layouts.hpp"

// No `using namespace ansan;` in a .cu file: with ansan::cuda visible at global scope, the
// `cuda::` names in the stubs nvcc generates for CUB's kernels become ambiguous.
using ansan::AnchorLayout;
using ansan::AnchorSelector;
using ansan::build_layout;
using ansan::build_layout_from_flags;
using ansan::build_layout_from_positions;
using ansan::cuda::detail::DeviceBuffer;
namespace test = ansan::test;

namespace {

constexpr unsigned char poison_byte = 0xA5;  // int32 0xA5A5A5A5 < 0, uint8 0xA5 is no flag

template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size());
  if (!host.empty())
    ANSAN_CUDA_THROW(cudaMemcpy(d.data(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}

template <class T>
std::vector<T> to_host(const DeviceBuffer<T>& d) {
  std::vector<T> host(d.size());
  if (!host.empty())
    ANSAN_CUDA_THROW(cudaMemcpy(host.data(), d.data(), d.bytes(), cudaMemcpyDeviceToHost));
  return host;
}

template <class T>
DeviceBuffer<T> poisoned(std::size_t count) {
  DeviceBuffer<T> d(count);
  if (count > 0) ANSAN_CUDA_THROW(cudaMemset(d.data(), poison_byte, d.bytes()));
  return d;
}

void check_same(const AnchorLayout& got, const AnchorLayout& want) {
  REQUIRE(got.cu_seqlens == want.cu_seqlens);
  test::check_same_layout_arrays(got, want);
}

// Output arrays of the raw device API, poisoned, and read back into a host layout.
struct PoisonedOutputs {
  DeviceBuffer<std::int32_t> pos, seg, seg_start, cu_anchors, anchor_pos;
  DeviceBuffer<std::uint8_t> is_anchor;
  PoisonedOutputs(std::size_t tokens, std::size_t offsets)
      : pos(poisoned<std::int32_t>(tokens)),
        seg(poisoned<std::int32_t>(tokens)),
        seg_start(poisoned<std::int32_t>(tokens)),
        cu_anchors(poisoned<std::int32_t>(offsets)),
        anchor_pos(poisoned<std::int32_t>(tokens)),
        is_anchor(poisoned<std::uint8_t>(tokens)) {}
  ansan::cuda::LayoutBuffers buffers() {
    return {pos.data(),       is_anchor.data(),  seg.data(),
            seg_start.data(), cu_anchors.data(), anchor_pos.data()};
  }
  AnchorLayout read(const std::vector<std::int32_t>& cu_seqlens) const {
    AnchorLayout L;
    L.cu_seqlens = cu_seqlens;
    L.pos = to_host(pos);
    L.is_anchor = to_host(is_anchor);
    L.seg = to_host(seg);
    L.seg_start = to_host(seg_start);
    L.cu_anchors = to_host(cu_anchors);
    L.anchor_pos = to_host(anchor_pos);
    const auto used = std::size_t(L.cu_anchors.back());
    REQUIRE(used <= L.anchor_pos.size());
    for (std::size_t a = used; a < L.anchor_pos.size(); ++a)  // slots past the count untouched
      REQUIRE(L.anchor_pos[a] == std::int32_t(0xA5A5A5A5u));
    L.anchor_pos.resize(used);
    return L;
  }
};

// The raw device API with CUB's protocol on poisoned outputs: query the temporary storage,
// allocate it, run `build(temp, bytes, outputs)`, wait, and compare with `want`.
template <class Build>
void check_raw(const AnchorLayout& want, cudaStream_t stream, Build build) {
  PoisonedOutputs out(want.is_anchor.size(), want.cu_seqlens.size());
  std::size_t temp_bytes = 0;
  REQUIRE(build(nullptr, temp_bytes, out.buffers()) == cudaSuccess);
  DeviceBuffer<unsigned char> temp(temp_bytes > 0 ? temp_bytes : 1);
  REQUIRE(build(temp.data(), temp_bytes, out.buffers()) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  check_same(out.read(want.cu_seqlens), want);
}

// Token ids that select exactly want's anchors: anchors from {3, 5}, the rest from 0..8.
std::vector<std::int32_t> ids_for(const AnchorLayout& want, std::mt19937& rng) {
  const std::int32_t others[] = {0, 1, 2, 4, 6, 7, 8};
  std::vector<std::int32_t> tokens(want.is_anchor.size());
  for (std::size_t t = 0; t < tokens.size(); ++t)
    tokens[t] = want.is_anchor[t] ? (rng() % 2 ? 3 : 5) : others[rng() % 7];
  return tokens;
}

// Every device builder, raw API and DeviceLayout, against the host layout `want`.
void check_device_builders(const AnchorLayout& want, std::mt19937& rng, cudaStream_t stream) {
  const std::int64_t total = want.total_tokens();
  const std::int32_t batch = want.batch();
  const auto d_cu = to_device(want.cu_seqlens);
  const auto d_flags = to_device(want.is_anchor);
  const auto tokens = ids_for(want, rng);
  const auto d_tokens = to_device(tokens);
  const auto d_id_is_anchor = to_device(std::vector<std::uint8_t>{0, 0, 0, 1, 0, 1, 0, 0, 0});
  const auto d_anchor_pos = to_device(want.anchor_pos);
  const auto d_cu_anchors = to_device(want.cu_anchors);

  {  // DeviceLayout first: its fresh allocations then hold an earlier trial's data, not
     // this layout's (which the raw builds below leave in freed memory)
    const auto ep = ansan::cuda::DeviceLayout::from_tokens(
        d_tokens.data(), total, d_cu.data(), batch, AnchorSelector::endpoint({3, 5}), 9, stream);
    check_same(ep.to_host(stream), want);
    CHECK(ep.total_anchors() == std::int64_t(want.anchor_pos.size()));
    const auto flags =
        ansan::cuda::DeviceLayout::from_flags(d_flags.data(), total, d_cu.data(), batch, stream);
    check_same(flags.to_host(stream), want);
    const auto positions = ansan::cuda::DeviceLayout::from_positions(
        d_anchor_pos.data(), std::int64_t(want.anchor_pos.size()), d_cu_anchors.data(), d_cu.data(),
        batch, stream);
    check_same(positions.to_host(stream), want);
    check_same(ansan::cuda::DeviceLayout::upload(want, stream).to_host(stream), want);
  }
  using Outputs = ansan::cuda::LayoutBuffers;
  check_raw(want, stream, [&](void* temp, std::size_t& bytes, const Outputs& out) {
    return ansan::cuda::build_layout_from_flags(temp, bytes, d_flags.data(), total, d_cu.data(),
                                                batch, out, stream);
  });
  check_raw(want, stream, [&](void* temp, std::size_t& bytes, const Outputs& out) {
    return ansan::cuda::build_layout(temp, bytes, d_tokens.data(), total, d_id_is_anchor.data(), 9,
                                     d_cu.data(), batch, out, stream);
  });
  check_raw(want, stream, [&](void* temp, std::size_t& bytes, const Outputs& out) {
    return ansan::cuda::build_layout_from_positions(
        temp, bytes, d_anchor_pos.data(), std::int64_t(want.anchor_pos.size()), d_cu_anchors.data(),
        d_cu.data(), batch, total, out, stream);
  });
}

// Runs `f`, which must throw std::invalid_argument; returns the message after the function
// name ("<argument> is <seen>, expected <expected>").
template <class F>
std::string rejection(F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    const auto colon = what.find(": ");
    return colon == std::string::npos ? what : what.substr(colon + 2);
  }
  FAIL("no std::invalid_argument was thrown");
  return {};
}

}  // namespace

TEST_CASE("device layouts equal host layouts on random ragged batches") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  std::mt19937 rng(20240211);
  const int max_lens[] = {1, 3, 50, 1000, 5000};
  for (int trial = 0; trial < 60; ++trial) {
    const AnchorLayout want = test::random_layout(rng, 1 + int(rng() % 64), max_lens[trial % 5],
                                                  1.0 + double(rng() % 60));
    check_device_builders(want, rng, trial % 2 ? stream : nullptr);
  }
  REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);
}

TEST_CASE("device layouts on the edge layouts, alone and packed in one batch") {
  std::mt19937 rng(5);
  std::vector<std::uint8_t> packed;
  std::vector<std::int32_t> cu{0};
  for (const auto& f : test::edge_flags()) {
    check_device_builders(
        build_layout_from_flags(f, std::vector<std::int32_t>{0, std::int32_t(f.size())}), rng,
        nullptr);
    packed.insert(packed.end(), f.begin(), f.end());
    cu.push_back(std::int32_t(packed.size()));
  }
  check_device_builders(build_layout_from_flags(packed, cu), rng, nullptr);
  check_device_builders(
      build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0, 0, 0}), rng,
      nullptr);
  check_device_builders(
      build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0}), rng,
      nullptr);
}

TEST_CASE("device layouts past 2^16 tokens, with anchors and with none") {
  std::mt19937 rng(99);
  check_device_builders(test::random_layout(rng, 4, 200000, 20.0), rng, nullptr);
  check_device_builders(test::random_layout(rng, 1, 1 << 20, 3.0), rng, nullptr);
  const std::vector<std::uint8_t> none(100000, 0);
  check_device_builders(build_layout_from_flags(none, std::vector<std::int32_t>{0, 40000, 100000}),
                        rng, nullptr);
}

TEST_CASE("bad input: the host builder's message, thrown before anything is built") {
  const std::vector<std::int32_t> tokens{1, 46, 2, 300, 46, -4};
  const auto d_tokens = to_device(tokens);
  const auto selector = AnchorSelector::endpoint({46});
  const auto device_tokens = [&](const std::vector<std::int32_t>& cu, std::int32_t vocab) {
    return rejection([&] {
      const auto d_cu = to_device(cu);
      ansan::cuda::DeviceLayout::from_tokens(d_tokens.data(), std::int64_t(tokens.size()),
                                             d_cu.data(), std::int32_t(cu.size()) - 1, selector,
                                             vocab);
    });
  };
  const auto host_tokens = [&](const std::vector<std::int32_t>& cu, std::int32_t vocab) {
    return rejection([&] { build_layout(tokens, cu, selector, vocab); });
  };

  SUBCASE("token ids out of range: the first one is named") {
    CHECK(device_tokens({0, 6}, 256) == host_tokens({0, 6}, 256));
    CHECK(device_tokens({0, 6}, 256).find("tokens[3] is 300") == 0);
    const std::vector<std::int32_t> just_negative{1, 46, 2, 3, 46, -4};
    const auto d_negative = to_device(just_negative);
    const auto d_cu = to_device(std::vector<std::int32_t>{0, 6});
    CHECK(rejection([&] {
            ansan::cuda::DeviceLayout::from_tokens(d_negative.data(), 6, d_cu.data(), 1, selector,
                                                   256);
          }).find("tokens[5] is -4") == 0);
  }
  SUBCASE("cu_seqlens: not starting at 0, decreasing, not ending at the token count") {
    for (const auto& cu : std::vector<std::vector<std::int32_t>>{
             {1, 6}, {0, 4, 2, 6}, {0, 3, 5}, {0, 3, 7}, {0, -1, 6}})
      CHECK(device_tokens(cu, 512) == host_tokens(cu, 512));
  }
  SUBCASE("vocab_size and selector ids") {
    CHECK(device_tokens({0, 6}, 0) == host_tokens({0, 6}, 0));
    CHECK(device_tokens({0, 6}, 40) == host_tokens({0, 6}, 40));  // selector id 46 >= 40
  }
  SUBCASE("flags: cu_seqlens") {
    const auto d_flags = to_device(std::vector<std::uint8_t>{0, 1, 0, 0});
    const auto d_cu = to_device(std::vector<std::int32_t>{0, 3, 2});
    const auto device = rejection(
        [&] { ansan::cuda::DeviceLayout::from_flags(d_flags.data(), 4, d_cu.data(), 2); });
    const auto host = rejection([&] {
      build_layout_from_flags(std::vector<std::uint8_t>{0, 1, 0, 0},
                              std::vector<std::int32_t>{0, 3, 2});
    });
    CHECK(device == host);
  }
  SUBCASE("positions: outside the sequence, not increasing, bad cu_anchors") {
    struct Case {
      std::vector<std::int32_t> anchor_pos, cu_anchors, cu_seqlens;
    };
    const Case cases[] = {{{1, 3}, {0, 1, 2}, {0, 3, 6}},     // 3 is past sequence 1's end
                          {{1, 2, 2}, {0, 1, 3}, {0, 3, 6}},  // not strictly increasing
                          {{1, -1}, {0, 1, 2}, {0, 3, 6}},    // negative
                          {{1}, {0, 1, 2}, {0, 3, 6}},        // cu_anchors[B] != anchor count
                          {{1, 2}, {0, 2, 1}, {0, 3, 6}},     // cu_anchors decreasing
                          {{1, 2}, {0, 1, 2}, {0, 4, 3}}};    // cu_seqlens decreasing
    for (const Case& c : cases) {
      const auto d_pos = to_device(c.anchor_pos);
      const auto d_cu_anchors = to_device(c.cu_anchors);
      const auto d_cu = to_device(c.cu_seqlens);
      const auto device = rejection([&] {
        ansan::cuda::DeviceLayout::from_positions(d_pos.data(), std::int64_t(c.anchor_pos.size()),
                                                  d_cu_anchors.data(), d_cu.data(), 2);
      });
      const auto host =
          rejection([&] { build_layout_from_positions(c.anchor_pos, c.cu_anchors, c.cu_seqlens); });
      CHECK(device == host);
    }
  }
  SUBCASE("a pageable host pointer where device memory is expected") {
    const std::vector<std::int32_t> cu{0, 6};
    const auto d_cu = to_device(cu);
    CHECK(rejection([&] {
            ansan::cuda::DeviceLayout::from_tokens(tokens.data(), 6, d_cu.data(), 1, selector, 512);
          }).find("d_tokens is a pageable host pointer") == 0);
    const auto d_flags = to_device(std::vector<std::uint8_t>(6, 0));
    CHECK(rejection([&] {
            ansan::cuda::DeviceLayout::from_flags(d_flags.data(), 6, cu.data(), 1);
          }).find("d_cu_seqlens is a pageable host pointer") == 0);
  }
  SUBCASE("sizes") {
    const auto d_cu = to_device(std::vector<std::int32_t>{0, 6});
    CHECK(rejection([&] {
            ansan::cuda::DeviceLayout::from_tokens(d_tokens.data(), -1, d_cu.data(), 1, selector,
                                                   512);
          }).find("total_tokens is -1") == 0);
    CHECK(rejection([&] {
            ansan::cuda::DeviceLayout::from_tokens(d_tokens.data(), 6, d_cu.data(), -1, selector,
                                                   512);
          }).find("batch is -1") == 0);
  }
}

TEST_CASE("the raw device checks report the first fault, whatever the thread order") {
  // Two bad ids: the device keeps the smaller index whatever the thread order.
  const std::vector<std::int32_t> tokens(70000, 7);
  std::vector<std::int32_t> bad = tokens;
  bad[65537] = 9;
  bad[69999] = -1;
  const auto d_tokens = to_device(bad);
  const auto d_cu = to_device(std::vector<std::int32_t>{0, 65536, 70000});
  DeviceBuffer<unsigned long long> fault(1);
  REQUIRE(ansan::cuda::check_layout_tokens(d_tokens.data(), 70000, 9, d_cu.data(), 2,
                                           fault.data()) == cudaSuccess);
  const std::uint64_t key = to_host(fault)[0];
  CHECK(ansan::cuda::detail::fault_kind(key) == ansan::cuda::detail::LayoutFaultKind::token_id);
  CHECK(ansan::cuda::detail::fault_index(key) == 65537);

  const auto d_good = to_device(tokens);
  REQUIRE(ansan::cuda::check_layout_tokens(d_good.data(), 70000, 9, d_cu.data(), 2, fault.data()) ==
          cudaSuccess);
  CHECK(to_host(fault)[0] == ansan::cuda::detail::no_fault);
}
