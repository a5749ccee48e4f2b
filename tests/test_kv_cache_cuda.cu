// tests/test_kv_cache_cuda.cu - the device anchor KV cache (ansan/cuda/kv_cache.cuh) in lockstep
// with the host one (ansan/kv_cache.hpp, which test_kv_cache.cpp checks against the SPEC
// predicate): the same random appends and reductions under every policy, both storages, float
// and half, growth from zero capacity, one layer and several; after every step both hold the
// same rows, bit for bit. Bad input and calls out of order leave the device cache unchanged.
// Decode over the reduced device cache equals a whole-text float64 reference, with
// ansan::cuda::attention on one layer and with one plan per step run on every layer of a
// layered cache. Exits 77 (SKIP) without a device.
#include "support/gpu_main.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ansan/cuda/attention.cuh"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda/kv_cache.cuh"
#include "ansan/dtype.hpp"
#include "ansan/kv_cache.hpp"
#include "ansan/reference_attention.hpp"
#include "support/attention_device_problem.hpp"
#include "support/device_copies.hpp"
#include "support/random_layouts.hpp"
#include "support/random_values.hpp"
#include "support/row_checks.hpp"

// No `using namespace ansan`: its `cuda` would make nvcc's generated ::cuda references ambiguous.
using ansan::AnchorLayout, ansan::AttentionArgs, ansan::KVCache, ansan::KVStorage,
    ansan::LayerCount, ansan::MaskPolicy;
using ansan::policy_name, ansan::prefill_args, ansan::reference_attention, ansan::storage_name;
using ansan::TensorView, ansan::from_float, ansan::half, ansan::index_t, ansan::make_view;
using ansan::cuda::detail::DeviceBuffer;
using ansan::test::same_bytes, ansan::test::to_device, ansan::test::to_host;
namespace test = ansan::test;

namespace {

template <class T>
void check_same(const KVCache<T>& host, const ansan::cuda::KVCache<T>& device) {
  REQUIRE(device.entries() == host.entries());
  CHECK(device.bytes() == host.bytes());
  CHECK(device.full_cache_bytes() == host.full_cache_bytes());
  CHECK(device.capacity_per_seq() == host.capacity_per_seq());
  CHECK(device.chunk_rows() == host.chunk_rows());
  for (std::int32_t b = 0; b < host.batch(); ++b) {
    CHECK(device.positions(b) == host.positions(b));
    CHECK(device.anchor_flags(b) == host.anchor_flags(b));
    for (std::int32_t l = 0; l < host.layers(); ++l) {
      CHECK(same_bytes(device.keys(b, l), host.keys(b, l)));
      CHECK(same_bytes(device.values(b, l), host.values(b, l)));
    }
    CHECK(device.next_pos(b) == host.next_pos(b));
    CHECK(device.open_seg_start(b) == host.open_seg_start(b));
  }
  // What attention reads: the offsets bound on the device, as on the host.
  AttentionArgs<T> host_args, device_args;
  host.bind_keys(host_args, 0);
  device.bind_keys(device_args, 0);
  const auto offsets = std::size_t(host.batch()) + 1;
  CHECK(to_host(device_args.cu_seqlens_k, offsets) ==
        std::vector<std::int32_t>(host_args.cu_seqlens_k, host_args.cu_seqlens_k + offsets));
}

// Appends the same random chunk to both caches; K and V are strided (a padded row) on purpose.
// One-layer caches take append(); layered ones append_rows() and one write() per layer.
template <class T>
bool append_both(std::mt19937& rng, KVCache<T>& host, ansan::cuda::KVCache<T>& device,
                 const std::vector<std::vector<std::uint8_t>>& text,
                 std::vector<std::int32_t>& fed) {
  const test::CacheChunk chunk = test::next_chunk(rng, text, fed, 4);
  const std::vector<std::int32_t>& cu = chunk.cu;
  const std::vector<std::int32_t>& pos = chunk.pos;
  const std::vector<std::uint8_t>& anchor = chunk.is_anchor;
  const index_t rows = index_t(pos.size()), heads = host.heads_kv(), dim = host.head_dim();
  const index_t row_pitch = heads * dim + 8;  // padding between rows
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  const bool layered = host.layers() > 1;
  if (layered) {
    host.append_rows(cu, pos, anchor);
    device.append_rows(cu, pos, anchor);
  }
  for (std::int32_t l = host.layers() - 1; l >= 0; --l) {  // layers in any order
    std::vector<T> k(std::size_t(rows * row_pitch)), v(k.size());
    for (std::size_t i = 0; i < k.size(); ++i)
      k[i] = from_float<T>(value(rng)), v[i] = from_float<T>(value(rng));
    const auto strided = [&](const T* data) {
      TensorView<const T, 3> view = make_view(data, rows, heads, dim);
      view.stride[0] = row_pitch;
      return view;
    };
    const DeviceBuffer<T> d_k = to_device(k), d_v = to_device(v);
    if (layered) {
      host.write(l, strided(k.data()), strided(v.data()));
      device.write(l, strided(d_k.data()), strided(d_v.data()));
    } else {
      host.append(strided(k.data()), strided(v.data()), cu, pos, anchor);
      device.append(strided(d_k.data()), strided(d_v.data()), cu, pos, anchor);
    }
    ANSAN_CUDA_THROW(cudaStreamSynchronize(device.stream()));  // d_k, d_v are freed here
  }
  return chunk.any_anchor;
}

}  // namespace

TEST_CASE_TEMPLATE("the device cache equals the host cache step by step", T, float, half) {
  std::mt19937 rng(41);
  for (const MaskPolicy& policy : test::all_policies())
    for (const KVStorage storage : {KVStorage::nhd, KVStorage::hnd})
      for (int trial = 0; trial < 4; ++trial) {
        std::vector<std::vector<std::uint8_t>> text =
            trial == 0 ? test::edge_flags() : std::vector<std::vector<std::uint8_t>>{};
        for (int b = 0; trial > 0 && b < 3; ++b)
          text.push_back(test::random_flags(rng, int(rng() % 60), 1.0 + rng() % 6));
        const auto B = std::int32_t(text.size());
        const std::int32_t heads = 1 + std::int32_t(rng() % 3),
                           dim = trial >= 2 ? 64 : 1 + std::int32_t(rng() % 9);
        const LayerCount layers{trial == 1 ? 3 : trial == 2 ? 2 : 1};
        INFO(std::string(policy_name(policy)), " ", std::string(storage_name(storage)), " trial ",
             trial);
        KVCache<T> host(layers, B, heads, dim, policy, 0, storage);
        ansan::cuda::KVCache<T> device(layers, B, heads, dim, policy, 0, storage);
        std::vector<std::int32_t> fed(text.size(), 0);
        for (bool more = true; more;) {
          const bool anchor = append_both(rng, host, device, text, fed);
          check_same(host, device);
          if (anchor || rng() % 4 == 0) {
            CHECK(device.reduce() == host.reduce());
            check_same(host, device);
          }
          more = false;
          for (std::size_t b = 0; b < text.size(); ++b)
            more |= fed[b] < std::int32_t(text[b].size());
        }
      }
}

TEST_CASE("bad input leaves the device cache unchanged") {
  ansan::cuda::KVCache<float> cache(2, 2, 4, MaskPolicy::anllm(), 2);
  KVCache<float> twin(2, 2, 4, MaskPolicy::anllm(), 2);
  std::vector<float> k(3 * 8, 1.f);
  const auto d_k = to_device(k);
  const std::vector<std::int32_t> cu{0, 2, 3}, pos{0, 1, 0};
  const std::vector<std::uint8_t> anchor{0, 1, 0};
  cache.append(make_view<const float>(d_k.data(), 3, 2, 4),
               make_view<const float>(d_k.data(), 3, 2, 4), cu, pos, anchor);
  twin.append(make_view<const float>(k.data(), 3, 2, 4), make_view<const float>(k.data(), 3, 2, 4),
              cu, pos, anchor);
  cache.set_growth(false);
  const std::vector<std::int32_t> cu_big{0, 1, 2}, pos_big{2, 1};
  const std::vector<std::uint8_t> anchor_bad{0, 0, 0};
  // Sequence 0 would need 3 rows of a capacity of 2.
  CHECK_THROWS_WITH_AS(cache.append(make_view<const float>(d_k.data(), 2, 2, 4),
                                    make_view<const float>(d_k.data(), 2, 2, 4), cu_big, pos_big,
                                    std::vector<std::uint8_t>{0, 0}),
                       doctest::Contains("rows of sequence 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cache.append(make_view<const float>(d_k.data(), 2, 2, 4),
                   make_view<const float>(d_k.data(), 2, 2, 4), cu_big, pos_big, anchor_bad),
      doctest::Contains("is_anchor.size()"), std::invalid_argument);
  check_same(twin, cache);
}

TEST_CASE("a layered device cache refuses calls out of order and changes nothing") {
  ansan::cuda::KVCache<float> cache(LayerCount{2}, 2, 2, 4, MaskPolicy::anllm(), 1);
  KVCache<float> twin(LayerCount{2}, 2, 2, 4, MaskPolicy::anllm(), 1);
  std::vector<float> k(3 * 8);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = float(i);
  const auto d_k = to_device(k);
  const auto device_rows = make_view<const float>(d_k.data(), 3, 2, 4);
  const auto host_rows = make_view<const float>(k.data(), 3, 2, 4);
  const std::vector<std::int32_t> cu{0, 2, 3}, pos{0, 1, 0}, later{2, 3, 1};
  const std::vector<std::uint8_t> anchor{0, 1, 0};
  cache.append_rows(cu, pos, anchor);
  twin.append_rows(cu, pos, anchor);
  cache.write(1, device_rows, device_rows);
  twin.write(1, host_rows, host_rows);
  CHECK_THROWS_WITH_AS(cache.reduce(), doctest::Contains("layer 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cache.append_rows(cu, later, anchor), doctest::Contains("layer 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cache.write(0, make_view<const float>(d_k.data(), 2, 2, 4), device_rows),
                       doctest::Contains("k.shape"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cache.write(2, device_rows, device_rows), doctest::Contains("layer"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cache.keys(0), doctest::Contains("layers()"), std::invalid_argument);
  AttentionArgs<float> args;
  CHECK_THROWS_WITH_AS(cache.bind_keys(args), doctest::Contains("layers()"),
                       std::invalid_argument);
  cache.write(0, device_rows, device_rows);
  twin.write(0, host_rows, host_rows);
  check_same(twin, cache);
  cache.append_rows(cu, later, anchor);
  twin.append_rows(cu, later, anchor);
  for (std::int32_t l = 0; l < 2; ++l) {
    cache.write(l, device_rows, device_rows);
    twin.write(l, host_rows, host_rows);
  }
  CHECK(cache.reduce() == twin.reduce());
  check_same(twin, cache);
}

// One layer: append() and ansan::cuda::attention. Two layers with their own K and V: one
// append_rows() per step, a write() per layer, and one PlannedAttention per step (built on
// layer 0's binding) run on every layer: the layers' bindings share the plan's metadata.
TEST_CASE("decode over the reduced device cache equals the whole-text reference") {
  std::mt19937 rng(42);
  const index_t heads_q = 4, heads_kv = 2, dim = 64;
  for (const std::int32_t layers : {1, 2})
    for (const MaskPolicy& policy : test::all_policies()) {
      const AnchorLayout L = test::random_layout(rng, 3, 40, 5.0);
      const auto B = L.batch();
      const auto n = std::size_t(L.total_tokens());
      std::vector<float> q(n * heads_q * dim);
      std::vector<std::vector<float>> k(std::size_t(layers),
                                        std::vector<float>(n * heads_kv * dim)),
          v(k), full(k.size(), std::vector<float>(q.size()));
      test::fill_standard_normal(rng, {&q});
      const float scale = 1.f / std::sqrt(float(dim));
      for (std::size_t l = 0; l < k.size(); ++l) {
        test::fill_standard_normal(rng, {&k[l], &v[l]});
        reference_attention<double>(prefill_args<float>(
            L, make_view<const float>(q.data(), index_t(n), heads_q, dim),
            make_view<const float>(k[l].data(), index_t(n), heads_kv, dim),
            make_view<const float>(v[l].data(), index_t(n), heads_kv, dim),
            make_view(full[l].data(), index_t(n), heads_q, dim), TensorView<float, 2>{}, policy,
            scale));
      }
      INFO(std::string(policy_name(policy)), " layers ", layers);
      ansan::cuda::KVCache<float> cache(LayerCount{layers}, B, std::int32_t(heads_kv),
                                        std::int32_t(dim), policy, 0, KVStorage::hnd);
      std::vector<std::int32_t> fed(std::size_t(B), 0);
      for (bool more = true; more;) {  // one token per unfinished sequence per step
        std::vector<std::int32_t> cu{0}, rows;
        for (std::int32_t b = 0; b < B; ++b) {
          if (fed[b] < L.seq_len(b)) rows.push_back(L.cu_seqlens[b] + fed[b]++);
          cu.push_back(std::int32_t(rows.size()));
        }
        more = !rows.empty();
        if (!more) break;
        const auto m = index_t(rows.size());
        // The step's rows of `from`: (m, heads, dim).
        const auto step_rows = [&](const std::vector<float>& from, index_t heads) {
          std::vector<float> picked;
          for (const std::int32_t t : rows)
            picked.insert(picked.end(), &from[std::size_t(t * heads * dim)],
                          &from[std::size_t((t + 1) * heads * dim)]);
          return picked;
        };
        std::vector<std::int32_t> pos, seg_start;
        std::vector<std::uint8_t> anchor;
        bool any_anchor = false;
        for (const std::int32_t t : rows) {
          pos.push_back(L.pos[t]), seg_start.push_back(L.seg_start[t]),
              anchor.push_back(L.is_anchor[t]);
          any_anchor |= L.is_anchor[t] != 0;
        }
        const auto d_q = to_device(step_rows(q, heads_q));
        const auto d_cu = to_device(cu), d_pos = to_device(pos), d_seg = to_device(seg_start);
        const auto d_anchor = to_device(anchor);
        DeviceBuffer<float> d_out(std::size_t(m * heads_q * dim));
        std::vector<DeviceBuffer<float>> d_k, d_v;
        for (std::size_t l = 0; l < k.size(); ++l) {
          d_k.push_back(to_device(step_rows(k[l], heads_kv)));
          d_v.push_back(to_device(step_rows(v[l], heads_kv)));
        }
        const auto step_kv = [&](const DeviceBuffer<float>& d) {
          return make_view<const float>(d.data(), m, heads_kv, dim);
        };
        AttentionArgs<float> a;
        a.q = make_view<const float>(d_q.data(), m, heads_q, dim);
        a.out = make_view(d_out.data(), m, heads_q, dim);
        a.batch = B, a.cu_seqlens_q = d_cu.data();
        a.q_pos = d_pos.data(), a.q_seg_start = d_seg.data(), a.q_is_anchor = d_anchor.data();
        a.policy = policy, a.softmax_scale = scale;
        const auto check_layer = [&](std::size_t l) {
          const std::vector<float> out = to_host(d_out.data(), std::size_t(m * heads_q * dim));
          for (index_t r = 0; r < m; ++r)
            for (index_t e = 0; e < heads_q * dim; ++e)
              REQUIRE(out[std::size_t(r * heads_q * dim + e)] ==
                      doctest::Approx(
                          full[l][std::size_t(rows[std::size_t(r)] * heads_q * dim + e)])
                          .epsilon(1e-4));
        };
        if (layers == 1) {
          cache.append(step_kv(d_k[0]), step_kv(d_v[0]), cu, pos, anchor);
          test::poison(d_out);
          cache.bind_keys(a);
          ansan::cuda::attention(a, cache.stream());
          check_layer(0);
        } else {
          cache.append_rows(cu, pos, anchor);
          for (std::int32_t l = 0; l < layers; ++l)
            cache.write(l, step_kv(d_k[std::size_t(l)]), step_kv(d_v[std::size_t(l)]));
          cache.bind_keys(a, 0);
          const ansan::cuda::PlannedAttention<float> attend(a, cache.stream());
          for (std::int32_t l = 0; l < layers; ++l) {
            test::poison(d_out);
            cache.bind_keys(a, l);
            CHECK(attend.plan().mismatch(a) == nullptr);
            attend(a, cache.stream());
            check_layer(std::size_t(l));
          }
        }
        if (any_anchor) cache.reduce();
      }
    }
}
