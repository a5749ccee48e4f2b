// ansan/attention_args.hpp - the one argument block every attention forward takes
// (CPU: ansan::cpu::attention_forward, CUDA: ansan::cuda::attention_forward).
//
// Queries and keys are ragged batches of B sequences. Query rows carry their sequence-local
// position, segment start and anchor flag; keys carry position and anchor flag. That covers
// the three ways attention is run:
//   prefill      queries = keys = whole sequences (prefill_args() fills the metadata);
//   chunked      queries at positions p..p+m-1 over a cache that already holds them;
//   decode       one query row per sequence over the (compacted) cache.
// Keys of a sequence must be sorted by position (a cache keeps them so).
//
// Key rows of sequence b are rows cu_seqlens_k[b] .. cu_seqlens_k[b+1]-1 of k, v, k_pos and
// k_is_anchor, unless maybe_k_seq_start is set: then they start at row maybe_k_seq_start[b]
// (a cache that keeps spare capacity after each sequence), and k.shape[0] is the rows
// allocated. Strides are honoured, so head-major (HND) storage is passed as a (tokens,
// heads, dim) view with strides (dim, tokens*dim, 1); only the innermost stride must be 1.
//
// Output O has the query's shape; lse[h][t] is the natural-log log-sum-exp of row t's
// scaled scores (softmax_scale * q.k), -inf for a row that sees no key (whose O is 0).
#pragma once

#include <cmath>
#include <cstdint>

#include "ansan/error.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "ansan/tensor.hpp"

namespace ansan {

template <class T>
struct AttentionArgs {
  TensorView<const T, 3> q;  // (total_q, heads_q, head_dim)
  TensorView<const T, 3> k;  // (total_k, heads_kv, head_dim)
  TensorView<const T, 3> v;  // (total_k, heads_kv, head_dim)
  TensorView<T, 3> out;      // (total_q, heads_q, head_dim)
  TensorView<float, 2> lse;  // (heads_q, total_q); data may be null when not wanted

  std::int32_t batch = 0;
  const std::int32_t* cu_seqlens_q = nullptr;  // (B+1)
  const std::int32_t* cu_seqlens_k = nullptr;  // (B+1)

  const std::int32_t* q_pos = nullptr;        // (total_q) sequence-local positions
  const std::int32_t* q_seg_start = nullptr;  // (total_q)
  const std::uint8_t* q_is_anchor = nullptr;  // (total_q)
  const std::int32_t* k_pos = nullptr;        // (total_k) ascending within each sequence
  const std::uint8_t* k_is_anchor = nullptr;  // (total_k)
  const std::int32_t* maybe_k_seq_start = nullptr;  // (B) first key row of each sequence, or null

  MaskPolicy policy = MaskPolicy::anllm();
  float softmax_scale = 0.f;  // usually 1/sqrt(head_dim)

  index_t heads_q() const { return q.shape[1]; }
  index_t heads_kv() const { return k.shape[1]; }
  index_t head_dim() const { return q.shape[2]; }
  index_t total_q() const { return q.shape[0]; }
  index_t total_k() const { return k.shape[0]; }  // key rows allocated
  // First key row of sequence b, and its number of keys.
  index_t k_row_begin(std::int32_t b) const {
    return maybe_k_seq_start ? maybe_k_seq_start[b] : cu_seqlens_k[b];
  }
  std::int32_t k_len(std::int32_t b) const { return cu_seqlens_k[b + 1] - cu_seqlens_k[b]; }
};

// Prefill: every sequence of `layout` attends to itself; metadata comes from the layout.
template <class T>
AttentionArgs<T> prefill_args(const AnchorLayout& layout, TensorView<const T, 3> q,
                              TensorView<const T, 3> k, TensorView<const T, 3> v,
                              TensorView<T, 3> out, TensorView<float, 2> lse,
                              const MaskPolicy& policy, float softmax_scale) {
  AttentionArgs<T> a;
  a.q = q, a.k = k, a.v = v, a.out = out, a.lse = lse;
  a.batch = layout.batch();
  a.cu_seqlens_q = a.cu_seqlens_k = layout.cu_seqlens.data();
  a.q_pos = a.k_pos = layout.pos.data();
  a.q_seg_start = layout.seg_start.data();
  a.q_is_anchor = a.k_is_anchor = layout.is_anchor.data();
  a.policy = policy;
  a.softmax_scale = softmax_scale;
  return a;
}

// Shape and scalar checks shared by every backend (pointer-space checks are the backend's).
// Throws std::invalid_argument naming the argument; touches no data.
template <class T>
void validate_attention_shapes(const AttentionArgs<T>& a, const char* fn) {
  validate_policy(a.policy, fn);
  require(a.batch >= 0, fn, "batch", a.batch, ">= 0");
  require(a.cu_seqlens_q && a.cu_seqlens_k, fn, "cu_seqlens_q/cu_seqlens_k", "null",
          "B+1 offsets");
  require(a.q.data || a.total_q() == 0, fn, "q.data", "null", "a buffer");
  require(a.heads_kv() >= 1, fn, "k.shape[1] (heads_kv)", a.heads_kv(), ">= 1");
  require(a.heads_q() % a.heads_kv() == 0, fn, "q.shape[1] (heads_q)", a.heads_q(),
          detail::concat("a multiple of heads_kv = ", a.heads_kv()));
  require(a.k.shape[2] == a.head_dim(), fn, "k.shape[2]", a.k.shape[2],
          detail::concat("head_dim = ", a.head_dim()));
  require(a.q.stride[2] == 1 && a.k.stride[2] == 1 && a.v.stride[2] == 1 && a.out.stride[2] == 1,
          fn, "innermost stride of q/k/v/out", "not 1", "1 (head_dim contiguous)");
  for (int d = 0; d < 3; ++d) {
    require(a.v.shape[d] == a.k.shape[d], fn, "v.shape", shape_string(a.v), shape_string(a.k));
    require(a.out.shape[d] == a.q.shape[d], fn, "out.shape", shape_string(a.out),
            shape_string(a.q));
  }
  if (a.lse.data)
    require(a.lse.shape[0] == a.heads_q() && a.lse.shape[1] == a.total_q(), fn, "lse.shape",
            shape_string(a.lse), detail::concat("(", a.heads_q(), ", ", a.total_q(), ")"));
  require(std::isfinite(a.softmax_scale) && a.softmax_scale > 0.f, fn, "softmax_scale",
          a.softmax_scale, "a finite value > 0");
  // An empty batch may come with null metadata (an empty std::vector's data()).
  require((a.q_pos && a.q_seg_start && a.q_is_anchor) || a.total_q() == 0, fn,
          "q_pos/q_seg_start/q_is_anchor", "null", "per-query metadata");
  require((a.k_pos && a.k_is_anchor) || a.total_k() == 0, fn, "k_pos/k_is_anchor", "null",
          "per-key metadata");
}

// Host-memory checks of the offsets and metadata (CPU path; the CUDA path runs them on
// host copies where the caller provides them).
template <class T>
void validate_attention_metadata(const AttentionArgs<T>& a, const char* fn) {
  const std::size_t offsets = std::size_t(a.batch) + 1;
  validate_cu_seqlens(span<const std::int32_t>(a.cu_seqlens_q, offsets), a.total_q(), fn,
                      "cu_seqlens_q");
  if (a.maybe_k_seq_start) {
    validate_cu_seqlens(span<const std::int32_t>(a.cu_seqlens_k, offsets),
                        a.cu_seqlens_k[a.batch], fn, "cu_seqlens_k");
    for (std::int32_t b = 0; b < a.batch; ++b)
      require(a.maybe_k_seq_start[b] >= 0 && a.maybe_k_seq_start[b] + a.k_len(b) <= a.total_k(),
              fn, detail::concat("maybe_k_seq_start[", b, "]").c_str(), a.maybe_k_seq_start[b],
              detail::concat("a row in [0, ", a.total_k() - a.k_len(b), "] (k has ", a.total_k(),
                             " rows)"));
  } else {
    validate_cu_seqlens(span<const std::int32_t>(a.cu_seqlens_k, offsets), a.total_k(), fn,
                        "cu_seqlens_k");
  }
  for (std::int32_t b = 0; b < a.batch; ++b) {
    const index_t first = a.k_row_begin(b), last = first + a.k_len(b);
    for (index_t t = first; t < last; ++t)
      if (a.k_pos[t] < 0 || (t != first && a.k_pos[t] <= a.k_pos[t - 1]))
        fail(fn, detail::concat("k_pos[", t, "]"), a.k_pos[t],
             "a position >= 0, strictly ascending within its sequence");
    for (std::int32_t t = a.cu_seqlens_q[b]; t < a.cu_seqlens_q[b + 1]; ++t)
      if (a.q_pos[t] < 0 || a.q_seg_start[t] < 0 || a.q_seg_start[t] > a.q_pos[t])
        fail(fn, detail::concat("q_pos/q_seg_start[", t, "]"),
             detail::concat(a.q_pos[t], "/", a.q_seg_start[t]), "0 <= seg_start <= pos");
  }
}

}  // namespace ansan
