// tests/support/attention_problems.hpp - attention test problems on the host: ragged prefill,
// chunked prefill and decode over a compacted cache with slack rows, their storage (NHD or
// head-major K/V, padded q rows), the float64 reference, and the element-wise comparison that
// every attention-kernel test uses (the GPU tests, and the emulated kernels on the CPU).
// Plain C++: compiles under g++ and nvcc.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/dtype.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "ansan/reference_attention.hpp"
#include "ansan/tensor.hpp"
#include "support/random_layouts.hpp"

namespace ansan::test {

struct AttentionShape {
  int heads_q = 4, heads_kv = 2, dim = 64;
  bool kv_head_major = false;  // K, V stored (heads, rows, dim), passed as a strided view
  int q_row_pad = 0;           // extra elements after each q head row (a strided q view)
  bool with_lse = true;
};

struct AttentionProblem {
  std::string what;
  MaskPolicy policy;
  AttentionShape shape;
  std::int32_t batch = 0;
  std::vector<std::int32_t> cu_q{0}, cu_k{0}, q_pos, q_seg_start, k_pos, k_start;
  std::vector<std::uint8_t> q_anchor, k_anchor;
  std::int32_t k_rows = 0;  // key rows allocated (>= cu_k.back() with slack)
  bool uses_k_start = false;
  std::int32_t total_q() const { return cu_q.back(); }
};

// Prefill: every sequence of the layout attends to itself.
inline AttentionProblem prefill_problem(const AnchorLayout& L, const MaskPolicy& p,
                                        const AttentionShape& s, std::string what) {
  AttentionProblem pr{std::move(what), p, s, L.batch()};
  pr.cu_q = pr.cu_k = L.cu_seqlens;
  pr.q_pos = pr.k_pos = L.pos;
  pr.q_seg_start = L.seg_start;
  pr.q_anchor = pr.k_anchor = L.is_anchor;
  pr.k_rows = std::int32_t(L.total_tokens());
  return pr;
}

// Chunked prefill: sequence b's queries are its tokens [start_b, n_b), its keys all n_b tokens.
inline AttentionProblem chunked_problem(std::mt19937& rng, const AnchorLayout& L,
                                        const MaskPolicy& p, const AttentionShape& s) {
  AttentionProblem pr{"chunked prefill", p, s, L.batch()};
  pr.cu_k = L.cu_seqlens;
  pr.k_pos = L.pos;
  pr.k_anchor = L.is_anchor;
  pr.k_rows = std::int32_t(L.total_tokens());
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    const std::int32_t n = L.seq_len(b);
    const std::int32_t start = std::uniform_int_distribution<std::int32_t>(0, n)(rng);
    for (std::int32_t i = start; i < n; ++i) {
      const std::size_t t = std::size_t(L.cu_seqlens[std::size_t(b)] + i);
      pr.q_pos.push_back(i), pr.q_seg_start.push_back(L.seg_start[t]),
          pr.q_anchor.push_back(L.is_anchor[t]);
    }
    pr.cu_q.push_back(pr.cu_q.back() + n - start);
  }
  return pr;
}

// Decode over a compacted cache: the last m_b tokens of each sequence query a cache reduced
// at position c_b (SPEC section 3: keys before c_b kept iff still_visible), then holding
// every token from c_b on; sequences start after random slack rows (maybe_k_seq_start).
inline AttentionProblem decode_problem(std::mt19937& rng, const AnchorLayout& L,
                                       const MaskPolicy& p, const AttentionShape& s, int max_rows) {
  AttentionProblem pr{"decode over a compacted cache", p, s, L.batch()};
  pr.uses_k_start = true;
  std::uniform_int_distribution<int> slack(0, 5);
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    const std::int32_t n = L.seq_len(b), base = L.cu_seqlens[std::size_t(b)];
    const std::int32_t m =
        std::min<std::int32_t>(n, std::uniform_int_distribution<int>(1, max_rows)(rng));
    const std::int32_t c = std::uniform_int_distribution<std::int32_t>(0, n - m)(rng);
    std::int32_t open_start = 0;  // one past the last anchor before c
    for (std::int32_t j = 0; j < c; ++j)
      if (L.is_anchor[std::size_t(base + j)]) open_start = j + 1;
    pr.k_rows += slack(rng);
    pr.k_start.push_back(pr.k_rows);
    std::int32_t keys = 0;
    for (std::int32_t j = 0; j < n; ++j) {
      const KeyInfo key{j, L.is_anchor[std::size_t(base + j)] != 0};
      if (j >= c || still_visible(p, key, c, open_start)) {
        pr.k_pos.resize(std::size_t(pr.k_rows + keys) + 1, -1);
        pr.k_anchor.resize(std::size_t(pr.k_rows + keys) + 1, 0);
        pr.k_pos[std::size_t(pr.k_rows + keys)] = j;
        pr.k_anchor[std::size_t(pr.k_rows + keys)] = L.is_anchor[std::size_t(base + j)];
        ++keys;
      }
    }
    pr.k_rows += keys;
    pr.cu_k.push_back(pr.cu_k.back() + keys);
    for (std::int32_t i = n - m; i < n; ++i) {
      pr.q_pos.push_back(i), pr.q_seg_start.push_back(L.seg_start[std::size_t(base + i)]);
      pr.q_anchor.push_back(L.is_anchor[std::size_t(base + i)]);
    }
    pr.cu_q.push_back(pr.cu_q.back() + m);
  }
  pr.k_rows += slack(rng);
  pr.k_pos.resize(std::size_t(pr.k_rows), -1);  // slack rows: metadata that must not reach a result
  pr.k_anchor.resize(std::size_t(pr.k_rows), 0);
  return pr;
}

// Storage of one tensor and the view the kernels see, for T and for the float64 copy.
struct Storage {
  index_t elements;
  index_t shape[3], stride[3];
};
inline Storage q_storage(const AttentionProblem& pr) {
  const AttentionShape& s = pr.shape;
  const index_t row = s.dim + s.q_row_pad;
  return {index_t(pr.total_q()) * s.heads_q * row,
          {pr.total_q(), s.heads_q, s.dim},
          {s.heads_q * row, row, 1}};
}
inline Storage kv_storage(const AttentionProblem& pr) {
  const AttentionShape& s = pr.shape;
  const index_t elements = index_t(pr.k_rows) * s.heads_kv * s.dim;
  if (s.kv_head_major)
    return {elements, {pr.k_rows, s.heads_kv, s.dim}, {s.dim, index_t(pr.k_rows) * s.dim, 1}};
  return {elements, {pr.k_rows, s.heads_kv, s.dim}, {s.heads_kv * s.dim, s.dim, 1}};
}
template <class U>
TensorView<U, 3> view_of(U* data, const Storage& st) {
  TensorView<U, 3> v;
  v.data = data;
  for (int d = 0; d < 3; ++d) v.shape[d] = st.shape[d], v.stride[d] = st.stride[d];
  return v;
}

template <class U>
AttentionArgs<U> args_of(const AttentionProblem& pr, const U* q, const U* k, const U* v, U* out,
                         float* lse, const std::int32_t* cu_q, const std::int32_t* cu_k,
                         const std::int32_t* q_pos, const std::int32_t* q_seg,
                         const std::uint8_t* q_anchor, const std::int32_t* k_pos,
                         const std::uint8_t* k_anchor, const std::int32_t* k_start) {
  AttentionArgs<U> a;
  a.q = view_of(q, q_storage(pr));
  a.k = view_of(k, kv_storage(pr));
  a.v = view_of(v, kv_storage(pr));
  a.out = make_view(out, pr.total_q(), pr.shape.heads_q, pr.shape.dim);
  a.lse = make_view(lse, pr.shape.heads_q, pr.total_q());
  if (!lse) a.lse.data = nullptr;
  a.batch = pr.batch;
  a.cu_seqlens_q = cu_q, a.cu_seqlens_k = cu_k;
  a.q_pos = q_pos, a.q_seg_start = q_seg, a.q_is_anchor = q_anchor;
  a.k_pos = k_pos, a.k_is_anchor = k_anchor;
  a.maybe_k_seq_start = pr.uses_k_start ? k_start : nullptr;
  a.policy = pr.policy;
  a.softmax_scale = 1.f / std::sqrt(float(pr.shape.dim));
  return a;
}

struct Reference {          // what reference_attention<double> returns for a problem
  std::vector<double> out;  // (total_q, heads_q, dim)
  std::vector<float> lse;   // (heads_q, total_q)
};

// reference_attention<double> on float64 copies of the inputs (q, k, v in storage order).
template <class T>
Reference reference_of(const AttentionProblem& pr, const std::vector<T>& q_in,
                       const std::vector<T>& k_in, const std::vector<T>& v_in) {
  const auto widen = [](const std::vector<T>& x) {
    std::vector<double> w(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) w[i] = double(to_float(x[i]));
    return w;
  };
  const std::vector<double> q = widen(q_in), k = widen(k_in), v = widen(v_in);
  Reference ref{std::vector<double>(std::size_t(pr.total_q()) * pr.shape.heads_q * pr.shape.dim),
                std::vector<float>(std::size_t(pr.total_q()) * pr.shape.heads_q)};
  const auto a =
      args_of<double>(pr, q.data(), k.data(), v.data(), ref.out.data(), ref.lse.data(),
                      pr.cu_q.data(), pr.cu_k.data(), pr.q_pos.data(), pr.q_seg_start.data(),
                      pr.q_anchor.data(), pr.k_pos.data(), pr.k_anchor.data(), pr.k_start.data());
  reference_attention<double>(a);
  return ref;
}

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

inline AttentionShape shape(int heads_q, int heads_kv, int dim) {
  AttentionShape s;
  s.heads_q = heads_q, s.heads_kv = heads_kv, s.dim = dim;
  return s;
}

// Rows that see nothing: queries at positions 10, 11 over a cache holding only positions 0..3
// under a window of 2, and a second sequence with an empty cache.
inline AttentionProblem no_visible_key_problem() {
  AttentionProblem pr{"no visible key", MaskPolicy::sliding_window(2), shape(4, 2, 64), 2};
  pr.cu_q = {0, 2, 3};
  pr.q_pos = {10, 11, 0}, pr.q_seg_start = {0, 0, 0}, pr.q_anchor = {0, 0, 0};
  pr.cu_k = {0, 4, 4};
  pr.k_pos = {0, 1, 2, 3}, pr.k_anchor = {1, 0, 1, 0};
  pr.k_rows = 4;
  return pr;
}

// Sequences that see nothing around one that sees keys: [the two rows above over 0..3, a
// 70-token prefill, one query over an empty cache]. The persistent kernel takes query tiles
// last first, so a block with several items meets an empty item first, then items with keys,
// then an empty one while the last of those is still to finish.
inline AttentionProblem keys_between_empty_problem(int heads_q, int heads_kv) {
  AttentionProblem pr{"keys between empty", MaskPolicy::sliding_window(2),
                      shape(heads_q, heads_kv, 64), 3};
  pr.cu_q = {0, 2, 72, 73};
  pr.cu_k = {0, 4, 74, 74};
  pr.q_pos = {10, 11}, pr.k_pos = {0, 1, 2, 3}, pr.k_anchor = {1, 0, 1, 0};
  for (std::int32_t t = 0; t < 70; ++t) {
    pr.q_pos.push_back(t), pr.k_pos.push_back(t);
    pr.k_anchor.push_back(0);
  }
  pr.q_pos.push_back(0);
  pr.q_seg_start.assign(pr.q_pos.size(), 0);
  pr.q_anchor.assign(pr.q_pos.size(), 0);
  pr.k_rows = 74;
  return pr;
}

inline AnchorLayout edge_batch() {  // every edge layout as one ragged batch
  std::vector<std::uint8_t> flags;
  std::vector<std::int32_t> cu{0};
  for (const auto& f : edge_flags()) {
    flags.insert(flags.end(), f.begin(), f.end());
    cu.push_back(cu.back() + std::int32_t(f.size()));
  }
  return build_layout_from_flags(flags, cu);
}

// Random inputs in [-1, 1), rounded to T.
template <class T>
std::vector<T> random_values(std::mt19937& rng, index_t n) {
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  std::vector<T> x(static_cast<std::size_t>(n));
  for (auto& e : x) e = from_float<T>(value(rng));
  return x;
}

// The worst element of a kernel's output against the reference: relative to the row's largest
// |reference| (at least 1e-3) for O, to max(1, |lse|) for lse; NaN and unwritten count as infinite.
struct Comparison {
  double worst = 0.0;
  std::string where = "none";
};
template <class T>
Comparison compare(const AttentionProblem& pr, const Reference& ref, const std::vector<T>& out,
                   const std::vector<float>& lse) {
  const int H = pr.shape.heads_q, D = pr.shape.dim;
  Comparison c;
  std::int32_t seq = 0;
  for (std::int32_t t = 0; t < pr.total_q(); ++t) {
    while (pr.cu_q[std::size_t(seq) + 1] <= t) ++seq;
    for (int h = 0; h < H; ++h) {
      const std::size_t row = (std::size_t(t) * H + h) * D;
      double row_scale = 1e-3;
      for (int d = 0; d < D; ++d) row_scale = std::max(row_scale, std::abs(ref.out[row + d]));
      for (int d = 0; d < D; ++d) {
        const double got = double(to_float(out[row + d])), want = ref.out[row + d];
        // A NaN the reference computed (from a NaN input it sees) must be NaN here too.
        const double err = std::isnan(want)     ? (std::isnan(got) ? 0.0 : INFINITY)
                           : std::isfinite(got) ? std::abs(got - want) / row_scale
                                                : INFINITY;
        if (err > c.worst || !(err == err)) {
          c.worst = err;
          std::ostringstream os;
          os << "out(t=" << t << ", h=" << h << ", d=" << d << ") in sequence " << seq << " (pos "
             << pr.q_pos[std::size_t(t)] << "): got " << got << ", want " << want;
          c.where = os.str();
        }
      }
      if (!pr.shape.with_lse) continue;
      const float want = ref.lse[std::size_t(h) * pr.total_q() + t],
                  got = lse[std::size_t(h) * pr.total_q() + t];
      const double err = std::isinf(want)
                             ? (got == want ? 0.0 : INFINITY)
                             : (std::isfinite(got) ? std::abs(double(got) - want) /
                                                         std::max(1.0, std::abs(double(want)))
                                                   : INFINITY);
      if (err > c.worst) {
        c.worst = err;
        std::ostringstream os;
        os << "lse(h=" << h << ", t=" << t << ") in sequence " << seq << ": got " << got
           << ", want " << want;
        c.where = os.str();
      }
    }
  }
  return c;
}

// One line naming a problem, for failure messages.
inline std::string describe(const AttentionProblem& pr) {
  std::ostringstream os;
  os << "policy " << policy_name(pr.policy) << ", " << pr.what << ": B=" << pr.batch
     << " total_q=" << pr.total_q() << " key rows=" << pr.k_rows << " heads " << pr.shape.heads_q
     << "/" << pr.shape.heads_kv << " D=" << pr.shape.dim << (pr.shape.kv_head_major ? " HND" : "")
     << (pr.shape.q_row_pad ? " padded-q" : "");
  return os.str();
}

// A random problem for the soak tests: policy, head dim (64, 128, 256 or any other up to 256),
// MHA/GQA/MQA, NHD or head-major K/V, padded q rows (some not 16-byte aligned), with or without
// lse, and prefill, chunked prefill or decode over a compacted cache of 1-4 sequences.
inline AttentionProblem random_problem(std::mt19937& rng) {
  const std::vector<MaskPolicy> policies = all_policies();
  const MaskPolicy& p = policies[rng() % policies.size()];
  const int dims[] = {64, 128, 256, 1 + int(rng() % 256)};
  const int pads[] = {0, 0, 8, 3};
  AttentionShape s;
  s.heads_kv = 1 + int(rng() % 3);
  s.heads_q = s.heads_kv * (1 + int(rng() % 4));
  s.dim = dims[rng() % 4];
  s.kv_head_major = rng() % 4 == 0;
  s.q_row_pad = pads[rng() % 4];
  s.with_lse = rng() % 4 != 0;
  const int batch = 1 + int(rng() % 4), max_len = 20 + int(rng() % 300);
  const double mean_segment = 1.5 + double(rng() % 400) / 10.0;
  const AnchorLayout L = random_layout(rng, batch, max_len, mean_segment);
  switch (rng() % 3) {
    case 0:
      return prefill_problem(L, p, s, "random prefill");
    case 1:
      return chunked_problem(rng, L, p, s);
    default:
      return decode_problem(rng, L, p, s, 1 + int(rng() % 4));
  }
}

// Runs one_problem(seed) for seeds 1, 2, ...: `problems` of them by default, as many as fit in
// ANSAN_SOAK_SECONDS seconds when that is set, or only seed ANSAN_SOAK_SEED (to replay a
// failure). Returns how many ran.
template <class F>
int soak(int problems, F&& one_problem) {
  const char* seconds_env = std::getenv("ANSAN_SOAK_SECONDS");
  const char* seed_env = std::getenv("ANSAN_SOAK_SEED");
  const double seconds = seconds_env ? std::atof(seconds_env) : 0.0;
  const auto started = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  std::uint32_t seed = seed_env ? std::uint32_t(std::strtoul(seed_env, nullptr, 10)) : 1;
  int ran = 0;
  for (;; ++seed, ++ran) {
    if (seed_env ? ran == 1 : (seconds > 0 ? elapsed() > seconds : ran == problems)) break;
    one_problem(seed);
  }
  return ran;
}

}  // namespace ansan::test
