// The dense reference (ansan::reference_attention): against a brute-force long double
// softmax written independently, on exact small cases (equal scores give the mean of the
// visible values; a dominant key gives its value), on rows that see nothing, and on bad input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ansan/reference_attention.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A prefill problem over `layout` in double, with GQA (heads_q = 2 * heads_kv).
struct Prefill {
  AnchorLayout layout;
  index_t heads_q, heads_kv, dim;
  std::vector<double> q, k, v, out;  // (tokens, heads, dim)
  std::vector<float> lse;            // (heads_q, tokens)

  Prefill(AnchorLayout layout_, index_t heads_kv_, index_t dim_)
      : layout(std::move(layout_)), heads_q(2 * heads_kv_), heads_kv(heads_kv_), dim(dim_),
        q(std::size_t(tokens() * heads_q * dim), 0.0), k(std::size_t(tokens() * heads_kv * dim), 0.0),
        v(k), out(q.size(), kNaN), lse(std::size_t(heads_q * tokens()), float(kNaN)) {}
  index_t tokens() const { return layout.total_tokens(); }
  AttentionArgs<double> args(const MaskPolicy& policy, float scale) {
    return prefill_args<double>(
        layout, make_view<const double>(q.data(), tokens(), heads_q, dim),
        make_view<const double>(k.data(), tokens(), heads_kv, dim),
        make_view<const double>(v.data(), tokens(), heads_kv, dim),
        make_view(out.data(), tokens(), heads_q, dim), make_view(lse.data(), heads_q, tokens()),
        policy, scale);
  }
};

// Brute force: softmax over all visible keys in long double, summed without a running max.
long double naive_output(const Prefill& p, const MaskPolicy& policy, double scale, std::int32_t b,
                         std::int32_t i, index_t h, index_t d, long double* lse) {
  const index_t kv = h / (p.heads_q / p.heads_kv), t = p.layout.cu_seqlens[b] + i;
  long double total = 0, weighted = 0;
  for (std::int32_t j = 0; j < p.layout.seq_len(b); ++j) {
    if (!visible(policy, p.layout.query(b, i), p.layout.key(b, j))) continue;
    const index_t s = p.layout.cu_seqlens[b] + j;
    long double dot = 0;
    for (index_t e = 0; e < p.dim; ++e)
      dot += (long double)p.q[std::size_t((t * p.heads_q + h) * p.dim + e)] *
             p.k[std::size_t((s * p.heads_kv + kv) * p.dim + e)];
    const long double w = std::exp((long double)scale * dot);
    total += w;
    weighted += w * p.v[std::size_t((s * p.heads_kv + kv) * p.dim + d)];
  }
  *lse = std::log(total);
  return weighted / total;
}

}  // namespace

TEST_CASE("reference equals a brute-force long double softmax, every policy") {
  std::mt19937 rng(21);
  std::uniform_real_distribution<double> value(-1, 1);
  for (const MaskPolicy& policy : test::all_policies()) {
    const std::string policy_label = policy_name(policy);
    CAPTURE(policy_label);
    Prefill p(test::random_layout(rng, 3, 40, 4.0), 2, 16);
    for (auto* x : {&p.q, &p.k, &p.v})
      for (double& e : *x) e = value(rng);
    const double scale = 0.25;
    reference_attention<double>(p.args(policy, float(scale)));
    double worst = 0, worst_lse = 0;
    for (std::int32_t b = 0; b < p.layout.batch(); ++b)
      for (std::int32_t i = 0; i < p.layout.seq_len(b); ++i)
        for (index_t h = 0; h < p.heads_q; ++h) {
          const index_t t = p.layout.cu_seqlens[b] + i;
          long double lse = 0;
          for (index_t d = 0; d < p.dim; ++d) {
            const long double want = naive_output(p, policy, scale, b, i, h, d, &lse);
            const double got = p.out[std::size_t((t * p.heads_q + h) * p.dim + d)];
            worst = std::max(worst, double(std::abs(got - want)));
          }
          worst_lse = std::max(worst_lse, double(std::abs(p.lse[std::size_t(h * p.tokens() + t)] - lse)));
        }
    CHECK(worst < 1e-12);
    CHECK(worst_lse < 1e-6);  // lse is stored as float
  }
}

TEST_CASE("equal scores give the mean of the visible values and lse = log(count)") {
  // q = 0 makes every score 0: out = mean of v over visible keys. v[j] = position j.
  for (const MaskPolicy& policy : test::all_policies())
    for (const auto& flags : test::edge_flags()) {
      // An empty layout has null metadata pointers, which validate_attention_shapes rejects;
      // the fused-path tests run the empty sequence inside a ragged batch instead.
      if (flags.empty()) continue;
      const std::string policy_label = policy_name(policy);
      CAPTURE(policy_label);
      CAPTURE(flags.size());
      Prefill p(build_layout_from_flags(flags, std::vector<std::int32_t>{0, std::int32_t(flags.size())}), 1, 4);
      for (std::size_t j = 0; j < p.v.size(); ++j) p.v[j] = double(j / 4);  // one kv head, dim 4
      reference_attention<double>(p.args(policy, 1.f));
      for (std::int32_t i = 0; i < p.layout.seq_len(0); ++i) {
        double count = 0, position_sum = 0;
        for (std::int32_t j = 0; j <= i; ++j)
          if (visible(policy, p.layout.query(0, i), p.layout.key(0, j))) ++count, position_sum += j;
        for (index_t h = 0; h < p.heads_q; ++h) {
          for (index_t d = 0; d < 4; ++d)
            CHECK(p.out[std::size_t((i * p.heads_q + h) * 4 + d)] ==
                  doctest::Approx(position_sum / count).epsilon(1e-14));
          CHECK(p.lse[std::size_t(h * p.tokens() + i)] == doctest::Approx(std::log(count)));
        }
      }
    }
}

TEST_CASE("a dominant key gives its value, with logits far beyond exp's range") {
  // Row i scores key i at 1e4 above all others (q.k = 1e4 * [j == i]): out = v[i], lse = 1e4.
  const std::vector<std::uint8_t> flags{0, 1, 0, 0, 1, 0};
  Prefill p(build_layout_from_flags(flags, std::vector<std::int32_t>{0, 6}), 1, 8);
  for (index_t t = 0; t < 6; ++t) {
    for (index_t h = 0; h < 2; ++h) p.q[std::size_t((t * 2 + h) * 8 + t)] = 1e4;
    p.k[std::size_t(t * 8 + t)] = 1.0;
    for (index_t d = 0; d < 8; ++d) p.v[std::size_t(t * 8 + d)] = double(10 * t + d);
  }
  reference_attention<double>(p.args(MaskPolicy::anllm(), 1.f));
  for (index_t t = 0; t < 6; ++t)
    for (index_t h = 0; h < 2; ++h) {
      for (index_t d = 0; d < 8; ++d) CHECK(p.out[std::size_t((t * 2 + h) * 8 + d)] == double(10 * t + d));
      CHECK(p.lse[std::size_t(h * 6 + t)] == 1e4f);
    }
}

TEST_CASE("a row that sees no key gives O = 0 and lse = -inf, never NaN") {
  // Decode over a cache holding only key 3 (an anchor): an anchor query at 10 sees nothing.
  std::vector<double> q(2 * 4, 1.0), k(4, 1.0), v(4, 2.0), out(q.size(), kNaN);
  std::vector<float> lse(2, float(kNaN));
  const std::int32_t cu_q[] = {0, 1}, cu_k[] = {0, 1}, q_pos[] = {10}, q_seg[] = {8}, k_pos[] = {3};
  const std::uint8_t q_anchor[] = {1}, k_anchor[] = {1};
  AttentionArgs<double> a;
  a.q = make_view<const double>(q.data(), 1, 2, 4);
  a.k = make_view<const double>(k.data(), 1, 1, 4);
  a.v = make_view<const double>(v.data(), 1, 1, 4);
  a.out = make_view(out.data(), 1, 2, 4);
  a.lse = make_view(lse.data(), 2, 1);
  a.batch = 1, a.cu_seqlens_q = cu_q, a.cu_seqlens_k = cu_k;
  a.q_pos = q_pos, a.q_seg_start = q_seg, a.q_is_anchor = q_anchor;
  a.k_pos = k_pos, a.k_is_anchor = k_anchor;
  a.softmax_scale = 1.f;
  reference_attention<double>(a);
  for (double x : out) CHECK(x == 0.0);
  for (float x : lse) CHECK(x == -std::numeric_limits<float>::infinity());
  a.policy = MaskPolicy::anllm_legacy();  // the older variant lets the anchor see key 3
  reference_attention<double>(a);
  for (double x : out) CHECK(x == 2.0);
  for (float x : lse) CHECK(x == 4.f);
}

TEST_CASE("the reference validates its input, naming the argument") {
  Prefill p(build_layout_from_flags(std::vector<std::uint8_t>{0, 1, 0}, std::vector<std::int32_t>{0, 3}), 1, 4);
  AttentionArgs<double> a = p.args(MaskPolicy::anllm(), 0.f);
  CHECK_THROWS_WITH_AS(reference_attention<double>(a),
                       doctest::Contains("ansan::reference_attention: softmax_scale is 0"),
                       std::invalid_argument);
  for (double x : p.out) CHECK(std::isnan(x));
}
