// tests/test_kv_cache_cuda.cu - the device anchor KV cache (ansan/cuda/kv_cache.cuh) in lockstep
// with the host one (ansan/kv_cache.hpp, which test_kv_cache.cpp checks against the SPEC
// predicate): the same random appends and reductions under every policy, both storages, float
// and half, growth from zero capacity; after every step both hold the same rows, bit for bit.
// Bad input leaves the device cache unchanged. Decode over the reduced device cache with
// ansan::cuda::attention equals a whole-text float64 reference. Exits 77 (SKIP) without a device.
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
#include "support/device_copies.hpp"
#include "support/random_layouts.hpp"
#include "support/random_values.hpp"
#include "support/row_checks.hpp"

// No `using namespace ansan`: its `cuda` would make nvcc's generated ::cuda references ambiguous.
using ansan::AnchorLayout, ansan::AttentionArgs, ansan::KVCache, ansan::KVStorage,
    ansan::MaskPolicy;
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
  for (std::int32_t b = 0; b < host.batch(); ++b) {
    CHECK(device.positions(b) == host.positions(b));
    CHECK(device.anchor_flags(b) == host.anchor_flags(b));
    CHECK(same_bytes(device.keys(b), host.keys(b)));
    CHECK(same_bytes(device.values(b), host.values(b)));
    CHECK(device.next_pos(b) == host.next_pos(b));
    CHECK(device.open_seg_start(b) == host.open_seg_start(b));
  }
}

// Appends the same random chunk to both caches; K and V are strided (a padded row) on purpose.
template <class T>
bool append_both(std::mt19937& rng, KVCache<T>& host, ansan::cuda::KVCache<T>& device,
                 const std::vector<std::vector<std::uint8_t>>& text,
                 std::vector<std::int32_t>& fed) {
  std::vector<std::int32_t> cu{0}, pos;
  std::vector<std::uint8_t> anchor;
  bool any_anchor = false;
  for (std::size_t b = 0; b < text.size(); ++b) {
    const auto left = std::int32_t(text[b].size()) - fed[b];
    const std::int32_t m = std::min<std::int32_t>(left, std::int32_t(rng() % 4));
    for (std::int32_t i = 0; i < m; ++i) {
      pos.push_back(fed[b] + i);
      anchor.push_back(text[b][std::size_t(fed[b] + i)]);
      any_anchor |= anchor.back() != 0;
    }
    fed[b] += m;
    cu.push_back(std::int32_t(pos.size()));
  }
  const index_t rows = index_t(pos.size()), heads = host.heads_kv(), dim = host.head_dim();
  const index_t row_pitch = heads * dim + 8;  // padding between rows
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  std::vector<T> k(std::size_t(rows * row_pitch)), v(k.size());
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i] = from_float<T>(value(rng)), v[i] = from_float<T>(value(rng));
  const auto strided = [&](const T* data) {
    TensorView<const T, 3> view = make_view(data, rows, heads, dim);
    view.stride[0] = row_pitch;
    return view;
  };
  const DeviceBuffer<T> d_k = to_device(k), d_v = to_device(v);
  host.append(strided(k.data()), strided(v.data()), cu, pos, anchor);
  device.append(strided(d_k.data()), strided(d_v.data()), cu, pos, anchor);
  ANSAN_CUDA_THROW(cudaStreamSynchronize(device.stream()));  // d_k, d_v are freed on return
  return any_anchor;
}

}  // namespace

TEST_CASE_TEMPLATE("the device cache equals the host cache step by step", T, float, half) {
  std::mt19937 rng(41);
  for (const MaskPolicy& policy : test::all_policies())
    for (const KVStorage storage : {KVStorage::nhd, KVStorage::hnd})
      for (int trial = 0; trial < 3; ++trial) {
        std::vector<std::vector<std::uint8_t>> text =
            trial == 0 ? test::edge_flags() : std::vector<std::vector<std::uint8_t>>{};
        for (int b = 0; trial > 0 && b < 3; ++b)
          text.push_back(test::random_flags(rng, int(rng() % 60), 1.0 + rng() % 6));
        const auto B = std::int32_t(text.size());
        const std::int32_t heads = 1 + std::int32_t(rng() % 3),
                           dim = trial == 2 ? 64 : 1 + std::int32_t(rng() % 9);
        INFO(std::string(policy_name(policy)), " ", std::string(storage_name(storage)), " trial ",
             trial);
        KVCache<T> host(B, heads, dim, policy, 0, storage);
        ansan::cuda::KVCache<T> device(B, heads, dim, policy, 0, storage);
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

TEST_CASE("decode over the reduced device cache equals the whole-text reference") {
  std::mt19937 rng(42);
  const index_t heads_q = 4, heads_kv = 2, dim = 64;
  for (const MaskPolicy& policy : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 3, 40, 5.0);
    const auto B = L.batch();
    const auto n = std::size_t(L.total_tokens());
    std::vector<float> q(n * heads_q * dim), k(n * heads_kv * dim), v(k.size());
    test::fill_standard_normal(rng, {&q, &k, &v});
    const float scale = 1.f / std::sqrt(float(dim));
    std::vector<float> full(q.size());
    reference_attention<double>(prefill_args<float>(
        L, make_view<const float>(q.data(), index_t(n), heads_q, dim),
        make_view<const float>(k.data(), index_t(n), heads_kv, dim),
        make_view<const float>(v.data(), index_t(n), heads_kv, dim),
        make_view(full.data(), index_t(n), heads_q, dim), TensorView<float, 2>{}, policy, scale));
    INFO(std::string(policy_name(policy)));
    ansan::cuda::KVCache<float> cache(B, std::int32_t(heads_kv), std::int32_t(dim), policy, 0,
                                      KVStorage::hnd);
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
      std::vector<float> sq, sk, sv;
      std::vector<std::int32_t> pos, seg_start;
      std::vector<std::uint8_t> anchor;
      bool any_anchor = false;
      for (const std::int32_t t : rows) {
        sq.insert(sq.end(), &q[std::size_t(t * heads_q * dim)],
                  &q[std::size_t((t + 1) * heads_q * dim)]);
        sk.insert(sk.end(), &k[std::size_t(t * heads_kv * dim)],
                  &k[std::size_t((t + 1) * heads_kv * dim)]);
        sv.insert(sv.end(), &v[std::size_t(t * heads_kv * dim)],
                  &v[std::size_t((t + 1) * heads_kv * dim)]);
        pos.push_back(L.pos[t]), seg_start.push_back(L.seg_start[t]),
            anchor.push_back(L.is_anchor[t]);
        any_anchor |= L.is_anchor[t] != 0;
      }
      const auto d_q = to_device(sq), d_k = to_device(sk), d_v = to_device(sv);
      const auto d_cu = to_device(cu), d_pos = to_device(pos), d_seg = to_device(seg_start);
      const auto d_anchor = to_device(anchor);
      DeviceBuffer<float> d_out(sq.size());
      cache.append(make_view<const float>(d_k.data(), m, heads_kv, dim),
                   make_view<const float>(d_v.data(), m, heads_kv, dim), cu, pos, anchor);
      AttentionArgs<float> a;
      a.q = make_view<const float>(d_q.data(), m, heads_q, dim);
      a.out = make_view(d_out.data(), m, heads_q, dim);
      a.batch = B, a.cu_seqlens_q = d_cu.data();
      a.q_pos = d_pos.data(), a.q_seg_start = d_seg.data(), a.q_is_anchor = d_anchor.data();
      a.policy = policy, a.softmax_scale = scale;
      cache.bind_keys(a);
      ansan::cuda::attention(a, cache.stream());
      const std::vector<float> out = to_host(d_out.data(), sq.size());
      for (index_t r = 0; r < m; ++r)
        for (index_t e = 0; e < heads_q * dim; ++e)
          REQUIRE(out[std::size_t(r * heads_q * dim + e)] ==
                  doctest::Approx(full[std::size_t(rows[std::size_t(r)] * heads_q * dim + e)])
                      .epsilon(1e-4));
      if (any_anchor) cache.reduce();
    }
  }
}
