// ansan/reference_attention.hpp - the readable attention forward every fast path must equal.
//
// Dense and plain, written to be read top to bottom: for each query row and head, score every
// key of its sequence, mask with the SPEC predicate ansan::visible, softmax, weighted sum of V.
// Accumulates in `Acc` (double in tests). It takes the same AttentionArgs<T> as
// ansan::cpu::attention_forward and ansan::cuda::attention_forward, so it covers prefill,
// chunked prefill, decode, ragged batches, GQA/MQA, maybe_k_seq_start and strided views.
//
//   out[t][h] = sum_j p_j v_j,  p_j = exp(s_j - lse[h][t]),  s_j = softmax_scale * q[t][h].k_j
//   lse[h][t] = log(sum over visible j of exp(s_j))           (natural log)
//   a row that sees no key: out = 0, lse = -inf
//
// It is O(rows * keys * head_dim) and meant for tests and for reading, not for speed.
// T may also be float or double (tests keep a float64 copy of their inputs).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/dtype.hpp"
#include "ansan/policy.hpp"

namespace ansan {

namespace detail {
template <class Acc, class T>
Acc load_as(T x) {
  if constexpr (std::is_floating_point_v<T>) return Acc(x);
  else return Acc(to_float(x));
}
template <class T, class Acc>
T store_as(Acc x) {
  if constexpr (std::is_floating_point_v<T>) return T(x);
  else return from_float<T>(float(x));
}
}  // namespace detail

template <class Acc = double, class T>
void reference_attention(const AttentionArgs<T>& a) {
  validate_attention_shapes(a, "reference_attention");
  validate_attention_metadata(a, "reference_attention");
  const index_t group = a.heads_q() / a.heads_kv(), dim = a.head_dim();
  const Acc minus_inf = -std::numeric_limits<Acc>::infinity();
  std::vector<Acc> score;     // (keys of the sequence), -inf where masked
  std::vector<Acc> weighted;  // (head_dim)
  for (std::int32_t b = 0; b < a.batch; ++b) {
    const index_t k0 = a.k_row_begin(b), keys = a.k_len(b);
    score.resize(std::size_t(keys));
    for (index_t t = a.cu_seqlens_q[b]; t < a.cu_seqlens_q[b + 1]; ++t) {
      const QueryInfo query{a.q_pos[t], a.q_seg_start[t], a.q_is_anchor[t] != 0};
      for (index_t h = 0; h < a.heads_q(); ++h) {
        const index_t kv_head = h / group;
        Acc max_score = minus_inf;
        for (index_t j = 0; j < keys; ++j) {
          score[j] = minus_inf;
          if (!visible(a.policy, query, KeyInfo{a.k_pos[k0 + j], a.k_is_anchor[k0 + j] != 0}))
            continue;
          Acc dot = 0;
          for (index_t d = 0; d < dim; ++d)
            dot += detail::load_as<Acc>(a.q(t, h, d)) * detail::load_as<Acc>(a.k(k0 + j, kv_head, d));
          score[j] = Acc(a.softmax_scale) * dot;
          max_score = std::max(max_score, score[j]);
        }
        Acc sum = 0;
        weighted.assign(std::size_t(dim), Acc(0));
        for (index_t j = 0; j < keys; ++j) {
          if (score[j] == minus_inf) continue;
          const Acc p = std::exp(score[j] - max_score);  // minus the max: large logits cannot overflow
          sum += p;
          for (index_t d = 0; d < dim; ++d)
            weighted[d] += p * detail::load_as<Acc>(a.v(k0 + j, kv_head, d));
        }
        for (index_t d = 0; d < dim; ++d)
          a.out(t, h, d) = detail::store_as<T>(sum > 0 ? weighted[d] / sum : Acc(0));
        if (a.lse.data) a.lse(h, t) = float(sum > 0 ? max_score + std::log(sum) : minus_inf);
      }
    }
  }
}

}  // namespace ansan
