// The fused CPU forward (ansan::cpu::attention_forward) against the float64 reference
// (ansan::reference_attention) on fresh random inputs: every policy, GQA ratio, head dim,
// ragged batch and edge layout; bf16/half inputs; strided head-major views; chunked prefill
// and decode over a cache with spare rows; how a call splits into tiles; rows that see
// nothing; large logits; bad input.
// Outputs are poisoned with NaN before every run, so an unwritten element fails.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ansan/cpu/attention.hpp"
#include "ansan/cpu/detail/softmax_exp.hpp"
#include "ansan/reference_attention.hpp"
#include "support/random_layouts.hpp"

using namespace ansan;

namespace {

#ifdef NDEBUG
constexpr int kMaxLen = 200; // longest random sequence
#else
constexpr int kMaxLen = 32;  // Debug/ASan builds run Eigen unoptimised
#endif
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// Owned (tokens, heads, dim) storage, token-major (NHD) or head-major (HND) behind the view.
template <class T>
struct Tensor {
  index_t tokens = 0, heads = 0, dim = 0;
  bool head_major = false;
  std::vector<T> data;

  Tensor(index_t tokens_, index_t heads_, index_t dim_, bool head_major_)
      : tokens(tokens_), heads(heads_), dim(dim_), head_major(head_major_),
        data(std::size_t(tokens_ * heads_ * dim_)) {}
  TensorView<T, 3> view() {
    TensorView<T, 3> v = make_view(data.data(), tokens, heads, dim);
    if (head_major) v.stride[0] = dim, v.stride[1] = tokens * dim;
    return v;
  }
};

// The metadata AttentionArgs points at.
struct Batch {
  std::vector<std::int32_t> cu_q{0}, cu_k{0}, q_pos, q_seg_start, k_pos, k_start;
  std::vector<std::uint8_t> q_anchor, k_anchor;
  index_t q_rows() const { return index_t(q_pos.size()); }
  index_t k_rows() const { return index_t(k_pos.size()); }  // allocated, spare rows included
  // Appends a query row for token t of `layout` (cu_q is the caller's).
  void add_query(const AnchorLayout& layout, index_t t) {
    q_pos.push_back(layout.pos[t]);
    q_seg_start.push_back(layout.seg_start[t]);
    q_anchor.push_back(layout.is_anchor[t]);
  }
};

// Every sequence of the layout attends to itself.
Batch prefill_batch(const AnchorLayout& layout) {
  Batch b;
  b.cu_q = b.cu_k = layout.cu_seqlens;
  b.q_pos = b.k_pos = layout.pos;
  b.q_seg_start = layout.seg_start;
  b.q_anchor = b.k_anchor = layout.is_anchor;
  return b;
}

// The last rows_of(b) rows of every sequence b of the layout over all of its keys (decode for
// 1 row, a short chunk for more), called for b in order.
Batch last_rows_batch(const AnchorLayout& layout, const std::function<int(std::int32_t)>& rows_of) {
  Batch last = prefill_batch(layout);
  last.cu_q = {0}, last.q_pos.clear(), last.q_seg_start.clear(), last.q_anchor.clear();
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    for (std::int32_t i = std::max(0, layout.seq_len(b) - rows_of(b)); i < layout.seq_len(b); ++i)
      last.add_query(layout, layout.cu_seqlens[b] + i);
    last.cu_q.push_back(std::int32_t(last.q_pos.size()));
  }
  return last;
}
Batch last_rows_batch(const AnchorLayout& layout, int rows) {
  return last_rows_batch(layout, [rows](std::int32_t) { return rows; });
}

double as_double(double x) { return x; }
template <class T>
double as_double(T x) { return double(to_float(x)); }

// A random problem in T and the same values in float64 for the reference. Key rows outside
// every sequence (spare cache rows) hold NaN, so reading one poisons the result.
template <class T>
struct Problem {
  Batch batch;
  MaskPolicy policy;
  float scale;
  Tensor<T> q, k, v, out;
  Tensor<double> q64, k64, v64, out64;
  std::vector<float> lse, lse64;  // (heads_q, q rows)

  Problem(Batch batch_, MaskPolicy policy_, index_t heads_q, index_t heads_kv, index_t dim,
          std::mt19937& rng, bool head_major = false)
      : batch(std::move(batch_)), policy(policy_), scale(float(1 / std::sqrt(double(dim)))),
        q(batch.q_rows(), heads_q, dim, head_major), k(batch.k_rows(), heads_kv, dim, head_major),
        v(k), out(q), q64(batch.q_rows(), heads_q, dim, head_major),
        k64(batch.k_rows(), heads_kv, dim, head_major), v64(k64), out64(q64),
        lse(std::size_t(heads_q * batch.q_rows())), lse64(lse) {
    std::uniform_real_distribution<float> value(-1.f, 1.f);
    fill(q, q64, [&](index_t) { return value(rng); });
    const std::vector<bool> used = used_key_rows();
    const auto key_value = [&](index_t row) { return used[std::size_t(row)] ? value(rng) : float(kNaN); };
    fill(k, k64, key_value);
    fill(v, v64, key_value);
  }

  // Sets every element of (x, x64) to the same value, make(token) rounded to T.
  template <class Make>
  void fill(Tensor<T>& x, Tensor<double>& x64, const Make& make) {
    auto view = x.view();
    auto view64 = x64.view();
    for (index_t t = 0; t < x.tokens; ++t)
      for (index_t h = 0; h < x.heads; ++h)
        for (index_t d = 0; d < x.dim; ++d) {
          view(t, h, d) = from_float<T>(make(t));
          view64(t, h, d) = as_double(view(t, h, d));
        }
  }
  std::vector<bool> used_key_rows() const {
    std::vector<bool> used(std::size_t(batch.k_rows()), batch.k_start.empty());
    for (std::size_t b = 0; b + 1 < batch.cu_k.size() && !batch.k_start.empty(); ++b)
      for (std::int32_t j = 0; j < batch.cu_k[b + 1] - batch.cu_k[b]; ++j)
        used[std::size_t(batch.k_start[b] + j)] = true;
    return used;
  }

  template <class U>
  AttentionArgs<U> make_args(Tensor<U>& q_, Tensor<U>& k_, Tensor<U>& v_, Tensor<U>& out_,
                             std::vector<float>& lse_) {
    AttentionArgs<U> a;
    a.q = q_.view(), a.k = k_.view(), a.v = v_.view(), a.out = out_.view();
    a.lse = make_view(lse_.data(), q_.heads, q_.tokens);
    a.batch = std::int32_t(batch.cu_q.size()) - 1;
    a.cu_seqlens_q = batch.cu_q.data(), a.cu_seqlens_k = batch.cu_k.data();
    // validate_attention_shapes wants metadata pointers even for zero rows, which an empty
    // std::vector does not give: point those at a dummy.
    static const std::int32_t no_int = 0;
    static const std::uint8_t no_flag = 0;
    const auto ints = [](const std::vector<std::int32_t>& x) { return x.empty() ? &no_int : x.data(); };
    const auto flags = [](const std::vector<std::uint8_t>& x) { return x.empty() ? &no_flag : x.data(); };
    a.q_pos = ints(batch.q_pos), a.q_seg_start = ints(batch.q_seg_start);
    a.q_is_anchor = flags(batch.q_anchor);
    a.k_pos = ints(batch.k_pos), a.k_is_anchor = flags(batch.k_anchor);
    a.maybe_k_seq_start = batch.k_start.empty() ? nullptr : batch.k_start.data();
    a.policy = policy, a.softmax_scale = scale;
    return a;
  }
  AttentionArgs<T> args() { return make_args(q, k, v, out, lse); }
  AttentionArgs<double> args64() { return make_args(q64, k64, v64, out64, lse64); }

  void poison() {
    for (T& x : out.data) x = from_float<T>(float(kNaN));
    for (double& x : out64.data) x = kNaN;
    for (float& x : lse) x = float(kNaN);
    for (float& x : lse64) x = float(kNaN);
  }
  // Runs the fused path (poisoned first) and, once, the reference.
  void run(const cpu::AttentionOptions& options = {}) {
    poison();
    cpu::attention_forward(args(), options);
    reference_attention<double>(args64());
  }
};

// ||got - ref|| / ||ref|| over every element (0 when both are 0); NaN anywhere gives NaN.
double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    diff += (got[i] - ref[i]) * (got[i] - ref[i]), norm += ref[i] * ref[i];
  if (std::isnan(diff)) return kNaN;
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

template <class T>
std::vector<double> values(Tensor<T>& x) {
  std::vector<double> flat;
  auto view = x.view();
  for (index_t t = 0; t < x.tokens; ++t)
    for (index_t h = 0; h < x.heads; ++h)
      for (index_t d = 0; d < x.dim; ++d) flat.push_back(as_double(view(t, h, d)));
  return flat;
}

// lse: -inf exactly where the reference has -inf, relative error elsewhere.
double lse_error(const std::vector<float>& got, const std::vector<float>& ref) {
  std::vector<double> finite_got, finite_ref;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(ref[i]) && got[i] == ref[i]) continue;
    finite_got.push_back(got[i]);
    finite_ref.push_back(ref[i]);
  }
  return relative_error(finite_got, finite_ref);
}

template <class T>
void check_matches_reference(Problem<T>& p, double tolerance,
                             const cpu::AttentionOptions& options = {}) {
  p.run(options);
  const double out_error = relative_error(values(p.out), values(p.out64));
  const double lse_err = lse_error(p.lse, p.lse64);
  CHECK(out_error < tolerance);
  CHECK(lse_err < tolerance);
}

constexpr double kFloatTolerance = 1e-5, kBf16Tolerance = 1e-2;

}  // namespace

TEST_CASE("the softmax exp is within a few ulp of std::exp on its domain [-87, 0]") {
  std::mt19937 rng(14);
  std::uniform_real_distribution<float> exponent(-87.f, 0.f);
  std::vector<float> x{0.f, -0.f, -87.f, -80.f, -1e-30f, -0.34657359f, -0.34657360f};
  for (int i = 0; i < 200000; ++i) x.push_back(exponent(rng));
  std::vector<float> y = x;
  cpu::detail::exp_nonpositive(y.data(), index_t(y.size()));
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    worst = std::max(worst, std::abs(double(y[i]) / std::exp(double(x[i])) - 1));
  CHECK(worst < 4e-7);
  CHECK(y[0] == 1.f);
  CHECK(std::isnormal(y[2]));
}

TEST_CASE("fused matches the reference for every policy on random ragged batches") {
  std::mt19937 rng(1);
  for (const MaskPolicy& policy : test::all_policies())
    for (double mean_segment : {1.0, 3.0, 8.0, 20.0}) {
      const std::string policy_label = policy_name(policy);
    CAPTURE(policy_label);
      CAPTURE(mean_segment);
      Problem<float> p(prefill_batch(test::random_layout(rng, 4, kMaxLen, mean_segment)), policy,
                       4, 2, 64, rng);
      check_matches_reference(p, kFloatTolerance);
    }
}

TEST_CASE("fused matches the reference for every GQA ratio, MQA and head dim") {
  std::mt19937 rng(2);
  const int head_pairs[][2] = {{2, 2}, {4, 2}, {8, 2}, {8, 1}, {3, 1}, {1, 1}};
  for (const auto& heads : head_pairs)
    for (index_t dim : {32, 64, 80, 96, 128, 256}) {
      CAPTURE(heads[0]);
      CAPTURE(heads[1]);
      CAPTURE(dim);
      const MaskPolicy policy = dim % 64 ? MaskPolicy::sepllm(2, 4) : MaskPolicy::anllm();
      Problem<float> p(prefill_batch(test::random_layout(rng, 2, kMaxLen, 6.0)), policy, heads[0],
                       heads[1], dim, rng);
      check_matches_reference(p, kFloatTolerance);
    }
}

TEST_CASE("fused matches the reference on the edge layouts, alone and as one ragged batch") {
  std::mt19937 rng(3);
  std::vector<std::uint8_t> all_flags;
  std::vector<std::int32_t> all_cu{0};
  for (const auto& flags : test::edge_flags()) {
    all_flags.insert(all_flags.end(), flags.begin(), flags.end());
    all_cu.push_back(all_cu.back() + std::int32_t(flags.size()));
  }
  for (const MaskPolicy& policy : test::all_policies()) {
    const std::string policy_label = policy_name(policy);
    CAPTURE(policy_label);
    for (const auto& flags : test::edge_flags()) {
      CAPTURE(flags.size());
      const std::vector<std::int32_t> cu{0, std::int32_t(flags.size())};
      Problem<float> p(prefill_batch(build_layout_from_flags(flags, cu)), policy, 2, 1, 32, rng);
      check_matches_reference(p, kFloatTolerance);
    }
    Problem<float> p(prefill_batch(build_layout_from_flags(all_flags, all_cu)), policy, 4, 2, 32,
                     rng);
    check_matches_reference(p, kFloatTolerance);
  }
}

TEST_CASE_TEMPLATE("16-bit inputs match the reference within bf16 rounding", T, bf16, half) {
  std::mt19937 rng(4);
  for (const MaskPolicy& policy : test::all_policies()) {
    const std::string policy_label = policy_name(policy);
    CAPTURE(policy_label);
    Problem<T> p(prefill_batch(test::random_layout(rng, 3, kMaxLen, 5.0)), policy, 4, 2, 64, rng);
    check_matches_reference(p, kBf16Tolerance);
  }
}

TEST_CASE("head-major (HND) strided views give the same result as token-major storage") {
  std::mt19937 rng(5);
  for (const MaskPolicy& policy : {MaskPolicy::anllm(), MaskPolicy::streaming_llm(1, 3)}) {
    const AnchorLayout layout = test::random_layout(rng, 3, kMaxLen, 4.0);
    Problem<float> p(prefill_batch(layout), policy, 4, 2, 48, rng, /*head_major=*/true);
    check_matches_reference(p, kFloatTolerance);
  }
}

TEST_CASE("thread counts and the dense-mask mode give the same result") {
  std::mt19937 rng(6);
  for (const MaskPolicy& policy : test::all_policies()) {
    const std::string policy_label = policy_name(policy);
    CAPTURE(policy_label);
    Problem<float> p(prefill_batch(test::random_layout(rng, 3, 3 * kMaxLen, 7.0)), policy, 4, 1,
                     32, rng);
    p.run({1});
    const std::vector<double> one_thread = values(p.out);
    const std::vector<float> one_thread_lse = p.lse;
    for (int threads : {2, 3, 0}) {
      CAPTURE(threads);
      p.run({threads});
      CHECK(values(p.out) == one_thread);  // tiles are independent: bitwise equal
      CHECK(p.lse == one_thread_lse);
    }
    check_matches_reference(p, kFloatTolerance, {0, cpu::TileSkipping::dense_mask});
  }
}

TEST_CASE("chunked prefill over a cache with spare rows equals running at once") {
  // Each sequence is cut into chunks; chunk c runs its queries against the cache prefix that
  // ends with the chunk, stored at maybe_k_seq_start with NaN in the spare rows.
  std::mt19937 rng(7);
  for (const MaskPolicy& policy : test::all_policies()) {
    const std::string policy_label = policy_name(policy);
    CAPTURE(policy_label);
    const AnchorLayout layout = test::random_layout(rng, 3, 2 * kMaxLen, 5.0);
    Problem<float> whole(prefill_batch(layout), policy, 4, 2, 32, rng);
    whole.run();
    const index_t heads_q = 4, heads_kv = 2, dim = 32;

    // Cache: sequence b at rows [start_b, start_b + len_b), then 0-7 spare rows.
    Batch cache;
    std::vector<std::int32_t> start;
    for (std::int32_t b = 0; b < layout.batch(); ++b) {
      start.push_back(std::int32_t(cache.k_pos.size()));
      const std::int32_t spare = std::int32_t(rng() % 8);
      for (std::int32_t j = 0; j < layout.seq_len(b) + spare; ++j) {
        const bool used = j < layout.seq_len(b);
        cache.k_pos.push_back(used ? j : -1);
        cache.k_anchor.push_back(used ? layout.is_anchor[layout.cu_seqlens[b] + j] : 0);
      }
    }
    const int chunks = 3;
    std::vector<std::vector<std::int32_t>> cut(std::size_t(layout.batch()));  // chunk ends
    for (std::int32_t b = 0; b < layout.batch(); ++b) {
      std::uniform_int_distribution<std::int32_t> at(0, layout.seq_len(b));
      for (int c = 0; c + 1 < chunks; ++c) cut[b].push_back(at(rng));
      std::sort(cut[b].begin(), cut[b].end());
      cut[b].push_back(layout.seq_len(b));
    }
    std::vector<double> chunked(values(whole.out).size(), kNaN);
    std::vector<float> chunked_lse(whole.lse.size(), float(kNaN));
    for (int c = 0; c < chunks; ++c) {
      Batch step = cache;
      step.k_start = start;
      std::vector<index_t> rows;  // rows of the whole batch this chunk queries
      for (std::int32_t b = 0; b < layout.batch(); ++b) {
        const std::int32_t begin = c ? cut[b][c - 1] : 0, end = cut[b][c];
        for (std::int32_t i = begin; i < end; ++i) {
          rows.push_back(layout.cu_seqlens[b] + i);
          step.add_query(layout, rows.back());
        }
        step.cu_q.push_back(std::int32_t(rows.size()));
        step.cu_k.push_back(step.cu_k.back() + end);
      }
      Problem<float> p(step, policy, heads_q, heads_kv, dim, rng);
      // Same values as the whole run: copy in its queries and the keys up to the chunk's end.
      auto q = p.q.view(), k = p.k.view(), v = p.v.view();
      auto whole_q = whole.q.view(), whole_k = whole.k.view(), whole_v = whole.v.view();
      for (std::size_t r = 0; r < rows.size(); ++r)
        for (index_t h = 0; h < heads_q; ++h)
          for (index_t d = 0; d < dim; ++d) q(index_t(r), h, d) = whole_q(rows[r], h, d);
      for (std::int32_t b = 0; b < layout.batch(); ++b)
        for (std::int32_t j = 0; j < cut[b][c]; ++j)
          for (index_t h = 0; h < heads_kv; ++h)
            for (index_t d = 0; d < dim; ++d) {
              k(start[b] + j, h, d) = whole_k(layout.cu_seqlens[b] + j, h, d);
              v(start[b] + j, h, d) = whole_v(layout.cu_seqlens[b] + j, h, d);
            }
      p.poison();
      cpu::attention_forward(p.args());
      auto out = p.out.view();
      for (std::size_t r = 0; r < rows.size(); ++r)
        for (index_t h = 0; h < heads_q; ++h) {
          for (index_t d = 0; d < dim; ++d)
            chunked[std::size_t((rows[r] * heads_q + h) * dim + d)] = out(index_t(r), h, d);
          chunked_lse[std::size_t(h * whole.q.tokens + rows[r])] =
              p.lse[std::size_t(h * index_t(rows.size()) + index_t(r))];
        }
    }
    CHECK(relative_error(chunked, values(whole.out)) < kFloatTolerance);
    CHECK(lse_error(chunked_lse, whole.lse) < kFloatTolerance);
  }
}

TEST_CASE("decode over a compacted cache equals the prefill row (SPEC section 3)") {
  // For each sequence pick a position p; the cache holds the keys before p that a row at p can
  // still see (ansan::still_visible) plus p itself. Decoding p must give prefill's row p.
  std::mt19937 rng(8);
  for (const MaskPolicy& policy : test::all_policies()) {
    const std::string policy_label = policy_name(policy);
    CAPTURE(policy_label);
    const AnchorLayout layout = test::random_layout(rng, 4, 2 * kMaxLen, 4.0);
    Problem<float> whole(prefill_batch(layout), policy, 4, 2, 64, rng);
    whole.run();
    Batch step;
    std::vector<index_t> query_rows, key_rows;  // rows of the whole batch
    for (std::int32_t b = 0; b < layout.batch(); ++b) {
      if (layout.seq_len(b) == 0) {  // an empty sequence: no query, no key
        step.cu_q.push_back(step.cu_q.back());
        step.cu_k.push_back(step.cu_k.back());
        continue;
      }
      const std::int32_t p = std::int32_t(rng() % std::uint32_t(layout.seq_len(b)));
      const index_t t = layout.cu_seqlens[b] + p;
      query_rows.push_back(t);
      step.add_query(layout, t);
      for (std::int32_t j = 0; j <= p; ++j)
        if (j == p || still_visible(policy, layout.key(b, j), p, layout.seg_start[t])) {
          key_rows.push_back(layout.cu_seqlens[b] + j);
          step.k_pos.push_back(j);
          step.k_anchor.push_back(layout.is_anchor[layout.cu_seqlens[b] + j]);
        }
      step.cu_q.push_back(std::int32_t(query_rows.size()));
      step.cu_k.push_back(std::int32_t(key_rows.size()));
    }
    Problem<float> p(step, policy, 4, 2, 64, rng);
    auto q = p.q.view(), k = p.k.view(), v = p.v.view();
    auto wq = whole.q.view(), wk = whole.k.view(), wv = whole.v.view();
    for (std::size_t r = 0; r < query_rows.size(); ++r)
      for (index_t h = 0; h < 4; ++h)
        for (index_t d = 0; d < 64; ++d) q(index_t(r), h, d) = wq(query_rows[r], h, d);
    for (std::size_t r = 0; r < key_rows.size(); ++r)
      for (index_t h = 0; h < 2; ++h)
        for (index_t d = 0; d < 64; ++d)
          k(index_t(r), h, d) = wk(key_rows[r], h, d), v(index_t(r), h, d) = wv(key_rows[r], h, d);
    p.poison();
    cpu::attention_forward(p.args());
    std::vector<double> decoded, prefilled;
    auto out = p.out.view();
    auto whole_ref = whole.out64.view();
    for (std::size_t r = 0; r < query_rows.size(); ++r)
      for (index_t h = 0; h < 4; ++h)
        for (index_t d = 0; d < 64; ++d) {
          decoded.push_back(out(index_t(r), h, d));
          prefilled.push_back(whole_ref(query_rows[r], h, d));
        }
    CHECK(relative_error(decoded, prefilled) < kFloatTolerance);
  }
}

TEST_CASE("the last rows of long sequences match the reference for every GQA group") {
  // Decode (one row) and short chunks (2 or 5 rows) over every key of sequences of up to
  // 3 * kMaxLen tokens: a tile of at most 16 stacked rows (rows times the group) takes the
  // products without packing, a larger one Eigen's GEMM, and both parts span several key blocks.
  std::mt19937 rng(9);
  const int head_pairs[][2] = {{1, 1}, {2, 1}, {8, 2}, {8, 1}, {16, 1}};
  for (const auto& heads : head_pairs)
    for (const int rows : {1, 2, 5})
      for (const double mean_segment : {3.0, 40.0}) {  // long retained part, long local part
        CAPTURE(heads[0]);
        CAPTURE(heads[1]);
        CAPTURE(rows);
        CAPTURE(mean_segment);
        const Batch last =
            last_rows_batch(test::random_layout(rng, 3, 3 * kMaxLen, mean_segment), rows);
        const MaskPolicy policy = rows == 2 ? MaskPolicy::sepllm(2, 4) : MaskPolicy::anllm();
        Problem<float> p(last, policy, heads[0], heads[1], 64, rng);
        check_matches_reference(p, kFloatTolerance);
        if (rows == 1) {
          Problem<bf16> p16(last, policy, heads[0], heads[1], 64, rng);
          check_matches_reference(p16, kBf16Tolerance);
        }
      }
}

TEST_CASE("a decode tile spans as many KV heads as leave a tile for every thread") {
  std::mt19937 rng(16);
  // Sequences of the given lengths, a segment every 7 tokens.
  const auto layout_of = [](const std::vector<std::int32_t>& lengths) {
    std::vector<std::int32_t> cu{0};
    std::vector<std::uint8_t> flags;
    for (const std::int32_t n : lengths) {
      for (std::int32_t i = 0; i < n; ++i) flags.push_back(i % 7 == 6);
      cu.push_back(cu.back() + n);
    }
    return build_layout_from_flags(flags, cu);
  };
  using Spans = std::vector<index_t>;  // KV heads of each tile, in order
  const auto tile_spans = [&](const Batch& batch, index_t heads_q, index_t heads_kv,
                              const cpu::AttentionOptions& options) {
    Problem<float> p(batch, MaskPolicy::anllm(), heads_q, heads_kv, 8, rng);
    Spans kv_heads;
    for (const cpu::detail::Tile& tile : cpu::detail::plan_tiles(p.args(), options))
      kv_heads.push_back(tile.kv_heads);
    return kv_heads;
  };
  // The last `rows` rows of `batch` sequences of 50 tokens.
  const auto spans = [&](index_t heads_q, index_t heads_kv, int rows, std::int32_t batch,
                         int threads, cpu::TileSkipping skipping = cpu::TileSkipping::two_part) {
    const std::vector<std::int32_t> lengths(std::size_t(batch), 50);
    return tile_spans(last_rows_batch(layout_of(lengths), rows), heads_q, heads_kv,
                      {threads, skipping});
  };
  // 12 query heads over 6 KV heads: all six a tile, or the largest divisor that keeps the
  // threads busy.
  CHECK(spans(12, 6, 1, 1, 1) == Spans{6});
  CHECK(spans(12, 6, 1, 1, 2) == Spans{3, 3});
  CHECK(spans(12, 6, 1, 1, 3) == Spans{2, 2, 2});
  CHECK(spans(12, 6, 1, 1, 4) == Spans(6, 1));
  CHECK(spans(12, 6, 1, 4, 2) == Spans(4, 6));
  CHECK(spans(12, 6, 1, 4, 8) == Spans(8, 3));
  // Only while every product of the tile runs by row: at most 16 stacked rows a KV head.
  CHECK(spans(32, 2, 1, 2, 1) == Spans{2, 2});
  CHECK(spans(64, 2, 1, 2, 1) == Spans(4, 1));
  CHECK(spans(16, 2, 2, 2, 1) == Spans{2, 2});
  CHECK(spans(16, 2, 3, 2, 1) == Spans(4, 1));
  CHECK(spans(12, 6, 1, 1, 1, cpu::TileSkipping::dense_mask) == Spans(6, 1));
  // A prefill sequence (its keys converted once, two tiles a KV head) beside two decode rows.
  {
    const Batch mixed =
        last_rows_batch(layout_of({100, 40, 60}), [](std::int32_t b) { return b == 0 ? 100 : 1; });
    CHECK(tile_spans(mixed, 8, 4, {6}) == Spans{1, 1, 1, 1, 1, 1, 1, 1, 4, 4});  // 8 + 2 >= 6
  }

  // And the spanning tiles give the reference's rows, token- or head-major, float and bf16,
  // for every span the thread counts above lead to, and the same bits for each. Contexts of
  // fixed lengths, short ones included: a93b0cb broke the bits only below about 130 keys,
  // which one random length up to 3 * kMaxLen rarely drew.
  const index_t head_pairs[][2] = {{12, 6}, {32, 8}, {8, 8}};  // spans of 1-6, 1-8, 1-8 heads
  for (const auto& heads : head_pairs)
    for (const std::int32_t n : {5, 17, 40, 64, 130, 3 * kMaxLen})
      for (const index_t dim : {64, 80})
        for (const bool head_major : {false, true}) {
          CAPTURE(heads[0]);
          CAPTURE(heads[1]);
          CAPTURE(n);
          CAPTURE(dim);
          CAPTURE(head_major);
          const AnchorLayout layout = build_layout_from_flags(test::random_flags(rng, n, 5.0),
                                                              std::vector<std::int32_t>{0, n});
          const Batch last = last_rows_batch(layout, 1);
          Problem<float> p(last, MaskPolicy::anllm(), heads[0], heads[1], dim, rng, head_major);
          Problem<bf16> p16(last, MaskPolicy::sepllm(2, 4), heads[0], heads[1], dim, rng,
                            head_major);
          std::vector<double> one_thread, one_thread16;
          std::vector<float> one_thread_lse;
          for (const int threads : {1, 2, 3, 4, 8}) {
            CAPTURE(threads);
            check_matches_reference(p, kFloatTolerance, {threads});
            check_matches_reference(p16, kBf16Tolerance, {threads});
            if (threads == 1)
              one_thread = values(p.out), one_thread16 = values(p16.out), one_thread_lse = p.lse;
            CHECK(values(p.out) == one_thread);
            CHECK(values(p16.out) == one_thread16);
            CHECK(p.lse == one_thread_lse);
          }
        }
}

TEST_CASE("a tile plan covers every query row of every KV head once") {
  // Random batches that mix prefill, short chunks, decode rows and empty sequences, under
  // random GQA shapes, thread counts and both skipping modes.
  std::mt19937 rng(17);
  const int row_choices[] = {0, 1, 1, 2, 3, 5, 17, 70, 1000};  // 1000: the whole sequence
  int spanning_draws = 0;
  for (int draw = 0; draw < 300; ++draw) {
    const AnchorLayout layout =
        test::random_layout(rng, 1 + int(rng() % 5), 3 * kMaxLen, 1.0 + double(rng() % 20));
    const Batch batch = last_rows_batch(
        layout, [&](std::int32_t) { return row_choices[rng() % std::size(row_choices)]; });
    const index_t heads_kv = std::vector<index_t>{1, 2, 3, 4, 5, 6, 8, 10}[rng() % 8];
    const index_t group = index_t(1) << (rng() % 5);
    const int threads = 1 + int(rng() % 9);
    const auto skipping = rng() % 4 ? cpu::TileSkipping::two_part : cpu::TileSkipping::dense_mask;
    CAPTURE(draw);
    CAPTURE(heads_kv);
    CAPTURE(group);
    CAPTURE(threads);
    Problem<float> p(batch, MaskPolicy::anllm(), heads_kv * group, heads_kv, 8, rng);
    const auto tiles = cpu::detail::plan_tiles(p.args(), {threads, skipping});

    std::vector<int> covered(std::size_t(heads_kv * batch.q_rows()), 0);  // (KV head, row)
    index_t span = 0;  // of the tiles that cover several KV heads: one for the whole call
    for (const cpu::detail::Tile& tile : tiles) {
      const index_t first = batch.cu_q[tile.batch], rows_b = batch.cu_q[tile.batch + 1] - first;
      REQUIRE(tile.rows >= 1);
      REQUIRE(tile.rows <= cpu::detail::kQueryRows);
      REQUIRE((tile.first_row - first) % cpu::detail::kQueryRows == 0);
      REQUIRE(tile.first_row + tile.rows <= first + rows_b);
      REQUIRE(tile.kv_heads >= 1);
      REQUIRE(heads_kv % tile.kv_heads == 0);
      REQUIRE(tile.kv_head % tile.kv_heads == 0);
      REQUIRE(tile.kv_head + tile.kv_heads <= heads_kv);
      if (tile.kv_heads > 1) {  // only where every product runs by row, and not for dense_mask
        CHECK(skipping == cpu::TileSkipping::two_part);
        CHECK(rows_b * group <= cpu::detail::kFewRows);
        CHECK(tiles.size() >= std::size_t(threads));  // a tile for every thread
        CHECK((span == 0 || span == tile.kv_heads));
        span = tile.kv_heads;
      }
      for (index_t h = tile.kv_head; h < tile.kv_head + tile.kv_heads; ++h)
        for (index_t t = tile.first_row; t < tile.first_row + tile.rows; ++t)
          ++covered[std::size_t(h * batch.q_rows() + t)];
    }
    CHECK(std::count(covered.begin(), covered.end(), 1) == std::int64_t(covered.size()));
    spanning_draws += span > 1;
  }
  CHECK(spanning_draws > 50);  // the draws reach the spanning tiles often enough to test them
}

TEST_CASE("rows that see no key give O = 0 and lse = -inf") {
  // AnLLM over a cache that lost keys: an anchor query at 10 (segment 8..10) sees only its own
  // segment, which is not cached; a non-anchor query at 9 sees the retained anchor 3; the
  // second sequence has no key at all.
  std::mt19937 rng(9);
  Batch cache;
  cache.cu_q = {0, 2, 3};
  cache.q_pos = {10, 9, 0};
  cache.q_seg_start = {8, 8, 0};
  cache.q_anchor = {1, 0, 0};
  cache.cu_k = {0, 2, 2};
  cache.k_pos = {3, 5};
  cache.k_anchor = {1, 0};
  Problem<float> p(cache, MaskPolicy::anllm(), 4, 2, 32, rng);
  check_matches_reference(p, kFloatTolerance);
  auto out = p.out.view();
  for (index_t h = 0; h < 4; ++h) {
    for (index_t d = 0; d < 32; ++d) {
      CHECK(out(0, h, d) == 0.f);
      CHECK(out(2, h, d) == 0.f);
      CHECK(std::isfinite(out(1, h, d)));
    }
    CHECK(p.lse[std::size_t(h * 3 + 0)] == kMinusInf);
    CHECK(p.lse[std::size_t(h * 3 + 2)] == kMinusInf);
    CHECK(std::isfinite(p.lse[std::size_t(h * 3 + 1)]));
  }
}

TEST_CASE("large logits (scale * q.k ~ 1e4) stay finite and match the reference") {
  // Small integers and a power-of-two scale make every score exact in float, so the only
  // difference to the reference is the exponential, and the tolerance stays 1e-5.
  std::mt19937 rng(10);
  for (const MaskPolicy& policy : {MaskPolicy::anllm(), MaskPolicy::causal()}) {
    Problem<float> p(prefill_batch(test::random_layout(rng, 2, kMaxLen, 6.0)), policy, 2, 1, 64,
                     rng);
    std::uniform_int_distribution<int> small(-4, 4);
    for (auto* x : {&p.q, &p.k, &p.v})
      for (float& e : x->data) e = float(small(rng));
    p.q64.data.assign(p.q.data.begin(), p.q.data.end());
    p.k64.data.assign(p.k.data.begin(), p.k.data.end());
    p.v64.data.assign(p.v.data.begin(), p.v.data.end());
    p.scale = 128.f;
    check_matches_reference(p, kFloatTolerance);
    double largest = 0;
    for (float x : p.lse64) largest = std::max(largest, double(std::abs(x)));
    CHECK(largest > 5e3);  // the test does reach large logits
  }
}

TEST_CASE("a batch with no sequences, and one with keys but no query rows, run without error") {
  std::mt19937 rng(11);
  Batch empty;
  Problem<float> none(empty, MaskPolicy::anllm(), 2, 1, 32, rng);
  CHECK_NOTHROW(cpu::attention_forward(none.args()));
  Batch keys_only;
  keys_only.cu_q = {0, 0};
  keys_only.cu_k = {0, 3};
  keys_only.k_pos = {0, 1, 2};
  keys_only.k_anchor = {0, 1, 0};
  Problem<float> p(keys_only, MaskPolicy::anllm(), 2, 1, 32, rng);
  CHECK_NOTHROW(cpu::attention_forward(p.args()));
}

TEST_CASE("lse is optional: a null lse.data leaves the output unchanged") {
  std::mt19937 rng(13);
  Problem<float> p(prefill_batch(test::random_layout(rng, 3, kMaxLen, 5.0)), MaskPolicy::anllm(),
                   4, 2, 32, rng);
  p.run();
  const std::vector<double> with_lse = values(p.out);
  p.poison();
  AttentionArgs<float> a = p.args();
  a.lse.data = nullptr;
  cpu::attention_forward(a);
  CHECK(values(p.out) == with_lse);
  for (float x : p.lse) CHECK(std::isnan(x));  // untouched
}

TEST_CASE("bad input is reported, naming the argument, before any output is written") {
  std::mt19937 rng(12);
  const AnchorLayout layout = build_layout_from_flags(
      std::vector<std::uint8_t>{0, 0, 1, 0, 0, 0, 1, 0, 0}, std::vector<std::int32_t>{0, 5, 9});
  const auto expect_error = [&](const char* name, const std::function<void(AttentionArgs<float>&,
                                                                           cpu::AttentionOptions&)>& spoil) {
    CAPTURE(name);
    Problem<float> p(prefill_batch(layout), MaskPolicy::anllm(), 4, 2, 16, rng);
    p.poison();
    AttentionArgs<float> a = p.args();
    cpu::AttentionOptions options;
    spoil(a, options);
    std::string message;
    try {
      cpu::attention_forward(a, options);
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    CHECK(message.rfind("ansan::cpu::attention_forward: ", 0) == 0);
    CHECK(message.find(name) != std::string::npos);
    for (float x : p.out.data) CHECK(std::isnan(x));
    for (float x : p.lse) CHECK(std::isnan(x));
  };
  using Args = AttentionArgs<float>;
  using Options = cpu::AttentionOptions;
  expect_error("batch", [](Args& a, Options&) { a.batch = -1; });
  expect_error("q.shape[1] (heads_q)", [](Args& a, Options&) { a.q.shape[1] = 3, a.out.shape[1] = 3; });
  expect_error("k.shape[2]", [](Args& a, Options&) { a.k.shape[2] = 8; });
  expect_error("v.shape", [](Args& a, Options&) { a.v.shape[1] = 1; });
  expect_error("out.shape", [](Args& a, Options&) { a.out.shape[2] = 8; });
  expect_error("lse.shape", [](Args& a, Options&) { a.lse.shape[0] = 2; });
  expect_error("innermost stride", [](Args& a, Options&) { a.k.stride[2] = 2; });
  expect_error("softmax_scale", [](Args& a, Options&) { a.softmax_scale = 0.f; });
  expect_error("policy.window", [](Args& a, Options&) { a.policy = MaskPolicy::sliding_window(0); });
  expect_error("q_pos/q_seg_start/q_is_anchor", [](Args& a, Options&) { a.q_seg_start = nullptr; });
  expect_error("k_pos/k_is_anchor", [](Args& a, Options&) { a.k_is_anchor = nullptr; });
  expect_error("k.data/v.data", [](Args& a, Options&) { a.v.data = nullptr; });
  expect_error("out.data", [](Args& a, Options&) { a.out.data = nullptr; });
  expect_error("num_threads", [](Args&, Options& o) { o.num_threads = -1; });
  expect_error("cu_seqlens_q[B]", [](Args& a, Options&) { a.q.shape[0] -= 1, a.out.shape[0] -= 1, a.lse.shape[1] -= 1; });

  // Metadata errors need their own arrays.
  std::vector<std::int32_t> bad_pos = layout.pos, bad_seg = layout.seg_start, start{0, 0};
  const std::size_t t = 6;  // second sequence, not its first row
  expect_error("k_pos[", [&](Args& a, Options&) {
    bad_pos = layout.pos;
    bad_pos[t] = bad_pos[t - 1];
    a.k_pos = bad_pos.data();
  });
  expect_error("q_pos/q_seg_start[", [&](Args& a, Options&) {
    bad_seg = layout.seg_start;
    bad_seg[t] = layout.pos[t] + 1;
    a.q_seg_start = bad_seg.data();
  });
  expect_error("maybe_k_seq_start[", [&](Args& a, Options&) {
    start = {0, std::int32_t(a.total_k())};  // the second sequence would run past the end
    a.maybe_k_seq_start = start.data();
  });
}
