// anllm/model.hpp - the forward pass of a small Llama-style AnLLM, one free function per layer.
//
//   ids -> embedding -> [ RMSNorm -> q,k,v -> RoPE -> attention -> o_proj -> +residual
//                         RMSNorm -> SwiGLU MLP -> +residual ] x layers -> RMSNorm -> head
//
// Attention goes through an attention backend; this file only decides which keys it gets.
// decoder_forward() is the one body every way of running a text shares:
//   forward_masked()      the whole text at once under a mask policy (SPEC section 2);
//   IncrementalDecoder    chunks of the text over a KV cache of all layers (SPEC section 3):
//                         with MaskPolicy::causal() and no reduction it is today's full cache;
//                         with MaskPolicy::anllm() and reduce() at anchors, AnLLM inference.
// Keys are rotated (RoPE) before they are cached and keep their true positions, so a key that
// survives a reduction is never touched again.
//
// The backend seam: a backend owns the cache type (one ansan KVCache holding every layer) and
// runs one layer's attention (masked, or writing the layer's keys to the cache then attending
// to it), the once-a-chunk append of the chunk's rows, and a cache reduction. CpuAttention
// (here) uses ansan::KVCache and ansan::cpu::attention_forward; CudaAttention (cuda_backend.cuh,
// built only with CUDA) keeps the cache on the GPU. Matmuls, norms and RoPE always run here on
// the CPU, whatever the backend.
//
// This is a readable reference, not a fast inference engine: batch 1, fp32, Eigen matmuls.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/cpu/attention.hpp"
#include "ansan/kv_cache.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "ansan/tensor.hpp"
#include "weights.hpp"

namespace anllm {

// out = x / sqrt(mean(x^2) + eps) * weight, row by row.
// x, out: (tokens, dim); weight: (dim)
inline void rmsnorm_forward(Matrix& out, const Matrix& x, const Vector& weight, float eps) {
  out.resize(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const float inv_rms = 1.f / std::sqrt(x.row(t).squaredNorm() / float(x.cols()) + eps);
    out.row(t) = (x.row(t) * inv_rms).cwiseProduct(weight.transpose());
  }
}

// Rotary position embedding, in place. Within each head, element d (< head_dim/2) and
// element d + head_dim/2 are rotated by the angle pos * theta^(-2d/head_dim) (Hugging Face
// Llama's "rotate half" pairing, so its checkpoints load unchanged).
// x: (tokens, heads*head_dim); pos: (tokens) true positions
inline void rope_forward(Matrix& x, const std::vector<std::int32_t>& pos, int heads, int head_dim,
                         float theta) {
  const int half = head_dim / 2;
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (int d = 0; d < half; ++d) {
      // Angles in double: at position 16k a float angle would already be off by ~1e-3 rad.
      const double angle =
          double(pos[std::size_t(t)]) * std::pow(double(theta), -2.0 * d / head_dim);
      const float c = float(std::cos(angle)), s = float(std::sin(angle));
      for (int h = 0; h < heads; ++h) {
        float& x1 = x(t, h * head_dim + d);
        float& x2 = x(t, h * head_dim + d + half);
        const float r1 = x1 * c - x2 * s, r2 = x2 * c + x1 * s;
        x1 = r1, x2 = r2;
      }
    }
}

// SwiGLU MLP: down( silu(gate(x)) * up(x) ).
// x: (tokens, dim) -> out: (tokens, dim); hidden: (tokens, ffn_dim)
inline void swiglu_forward(Matrix& out, const Matrix& x, const LayerWeights& L) {
  const Matrix gate = x * L.w_gate.transpose();  // (tokens, ffn_dim)
  const Matrix up = x * L.w_up.transpose();      // (tokens, ffn_dim)
  const Matrix hidden =
      (gate.array() / (1.f + (-gate.array()).exp())).cwiseProduct(up.array()).matrix();
  out.noalias() = hidden * L.w_down.transpose();
}

// The decoder body. `attend(layer, q, k, v, out)` computes one layer's attention from the
// rotated q: (tokens, heads*head_dim), k, v: (tokens, kv_heads*head_dim) into
// out: (tokens, heads*head_dim). Returns the logits: (tokens, vocab).
template <class Attend>
Matrix decoder_forward(const Weights& w, const std::vector<std::int32_t>& ids,
                       const std::vector<std::int32_t>& pos, Attend&& attend) {
  const ModelConfig& c = w.config;
  const auto tokens = Eigen::Index(ids.size());
  Matrix x(tokens, c.dim);  // (tokens, dim) the residual stream
  for (Eigen::Index t = 0; t < tokens; ++t) x.row(t) = w.embedding.row(ids[std::size_t(t)]);
  Matrix h, q, k, v, attn, mlp;
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& L = w.layers[std::size_t(l)];
    rmsnorm_forward(h, x, L.attn_norm, c.norm_eps);  // (tokens, dim)
    q.noalias() = h * L.wq.transpose();              // (tokens, heads*head_dim)
    k.noalias() = h * L.wk.transpose();              // (tokens, kv_heads*head_dim)
    v.noalias() = h * L.wv.transpose();              // (tokens, kv_heads*head_dim)
    rope_forward(q, pos, c.heads, c.head_dim, c.rope_theta);
    rope_forward(k, pos, c.kv_heads, c.head_dim, c.rope_theta);
    // (tokens, heads*head_dim), poisoned so a row attention fails to write shows up as NaN
    attn.setConstant(tokens, c.heads * c.head_dim, std::numeric_limits<float>::quiet_NaN());
    attend(l, q, k, v, attn);
    x.noalias() += attn * L.wo.transpose();
    rmsnorm_forward(h, x, L.mlp_norm, c.norm_eps);
    swiglu_forward(mlp, h, L);
    x += mlp;
  }
  rmsnorm_forward(h, x, w.final_norm, c.norm_eps);
  return h * w.output_head().transpose();  // (tokens, vocab)
}

// (tokens, heads*head_dim) matrix as the (tokens, heads, head_dim) view attention takes.
inline ansan::TensorView<const float, 3> heads_view(const Matrix& m, int heads, int head_dim) {
  return ansan::make_view(m.data(), m.rows(), heads, head_dim);
}
inline ansan::TensorView<float, 3> heads_view(Matrix& m, int heads, int head_dim) {
  return ansan::make_view(m.data(), m.rows(), heads, head_dim);
}

// One chunk's query metadata for a cached attention call (batch 1), in host memory.
struct ChunkQueries {
  const std::vector<std::int32_t>& cu_new;     // (2): {0, tokens}
  const std::vector<std::int32_t>& pos;        // (tokens) true positions
  const std::vector<std::int32_t>& seg_start;  // (tokens) first position of each row's segment
  const std::vector<std::uint8_t>& is_anchor;  // (tokens)
};

// Fills the query side of `args` (the key side comes from a cache's bind_keys). The pointers
// are host or device pointers, as the backend's attention needs.
inline void bind_queries(ansan::AttentionArgs<float>& args, const ModelConfig& c,
                         const float* q, float* out, std::int32_t tokens,
                         const std::int32_t* cu_new, const std::int32_t* pos,
                         const std::int32_t* seg_start, const std::uint8_t* is_anchor,
                         const ansan::MaskPolicy& policy) {
  args.q = ansan::make_view(q, tokens, c.heads, c.head_dim);  // (tokens, heads, head_dim)
  args.out = ansan::make_view(out, tokens, c.heads, c.head_dim);
  args.batch = 1;
  args.cu_seqlens_q = cu_new;
  args.q_pos = pos;
  args.q_seg_start = seg_start;
  args.q_is_anchor = is_anchor;
  args.policy = policy;
  args.softmax_scale = 1.f / std::sqrt(float(c.head_dim));
}

// The CPU attention backend: a host cache, ansan::cpu::attention_forward.
struct CpuAttention {
  using Cache = ansan::KVCache<float>;
  // attention_forward's num_threads for chunks of several tokens; one-token steps always run
  // on the calling thread, since a decode step is a few microseconds of attention and handing
  // it to other threads costs more than it saves. Measured 2026-11-27 on the 2-core dev VM
  // with the persistent worker pool (default anllm_demo run, decode tokens/s, full / anchor
  // cache): one thread 5333-5444 / 23561-24566, all threads 2333-3272 / 9579-11311.
  int threads = 0;

  static const char* name() { return "CPU (ansan::cpu::attention_forward, host KV cache)"; }

  Cache make_cache(const ModelConfig& c, const ansan::MaskPolicy& policy,
                   std::int32_t initial_rows) const {
    return Cache(ansan::LayerCount{c.layers}, 1, c.kv_heads, c.head_dim, policy, initial_rows);
  }

  // The whole text under `policy`.
  // q, out: (tokens, heads*head_dim); k, v: (tokens, kv_heads*head_dim)
  void masked(const ModelConfig& c, const ansan::AnchorLayout& layout,
              const ansan::MaskPolicy& policy, const Matrix& q, const Matrix& k, const Matrix& v,
              Matrix& out) {
    const auto args = ansan::prefill_args<float>(
        layout, heads_view(q, c.heads, c.head_dim), heads_view(k, c.kv_heads, c.head_dim),
        heads_view(v, c.kv_heads, c.head_dim), heads_view(out, c.heads, c.head_dim), {}, policy,
        1.f / std::sqrt(float(c.head_dim)));
    ansan::cpu::attention_forward(args, threads);
  }

  // The chunk's rows, for every layer; each layer's keys and values come with cached().
  void append_rows(Cache& cache, const ChunkQueries& chunk) const {
    cache.append_rows(chunk.cu_new, chunk.pos, chunk.is_anchor);
  }

  // Writes layer `layer`'s k, v of the chunk to `cache`, then the chunk's queries attend to
  // everything that layer has cached.
  void cached(Cache& cache, int layer, const ModelConfig& c, const ChunkQueries& chunk,
              const ansan::MaskPolicy& policy, const Matrix& q, const Matrix& k, const Matrix& v,
              Matrix& out) {
    cache.write(layer, heads_view(k, c.kv_heads, c.head_dim),
                heads_view(v, c.kv_heads, c.head_dim));
    ansan::AttentionArgs<float> args;
    cache.bind_keys(args, layer);
    const auto tokens = std::int32_t(q.rows());
    bind_queries(args, c, q.data(), out.data(), tokens, chunk.cu_new.data(), chunk.pos.data(),
                 chunk.seg_start.data(), chunk.is_anchor.data(), policy);
    ansan::cpu::attention_forward(args, tokens == 1 ? 1 : threads);
  }

  // One thread: a batch-1 compaction moves a few thousand rows at most.
  std::int64_t reduce(Cache& cache) const { return cache.reduce(1); }
};

// The whole text at once: every layer attends under `policy` over the text's own keys
// (MaskPolicy::anllm() is SPEC section 2's mask) through `backend`. layout: one sequence, the
// text's anchors. ids: (tokens) -> logits: (tokens, vocab)
template <class Backend>
Matrix forward_masked(const Weights& w, const std::vector<std::int32_t>& ids,
                      const ansan::AnchorLayout& layout, const ansan::MaskPolicy& policy,
                      Backend& backend) {
  const ModelConfig& c = w.config;
  require(layout.batch() == 1 && layout.total_tokens() == std::int64_t(ids.size()),
          "forward_masked", "layout",
          ansan::detail::concat(layout.batch(), " sequences of ", layout.total_tokens(), " tokens"),
          ansan::detail::concat("1 sequence of ", ids.size(), " tokens"));
  for (std::size_t i = 0; i < ids.size(); ++i)
    require(ids[i] >= 0 && ids[i] < c.vocab, "forward_masked",
            ansan::detail::concat("ids[", i, "]").c_str(), ids[i],
            ansan::detail::concat("a token id in [0, ", c.vocab, ")"));
  const auto attend = [&](int, const Matrix& q, const Matrix& k, const Matrix& v, Matrix& out) {
    backend.masked(c, layout, policy, q, k, v, out);
  };
  return decoder_forward(w, ids, layout.pos, attend);
}

// forward_masked on the CPU backend with attention_threads threads.
inline Matrix forward_masked(const Weights& w, const std::vector<std::int32_t>& ids,
                             const ansan::AnchorLayout& layout, const ansan::MaskPolicy& policy,
                             int attention_threads = 0) {
  CpuAttention cpu{attention_threads};
  return forward_masked(w, ids, layout, policy, cpu);
}

// Runs a text chunk by chunk over one Backend::Cache of every layer (batch 1). Each feed()
// appends the chunk's rows to the cache once, then each layer writes its rotated keys and
// values and lets the chunk's queries attend to everything cached; reduce() drops what no later
// query can see (SPEC section 3), from every layer at once.
template <class Backend>
class BasicIncrementalDecoder {
 public:
  using Cache = typename Backend::Cache;

  BasicIncrementalDecoder(const Weights& w, const ansan::MaskPolicy& policy, Backend backend)
      : w_(&w),
        policy_(policy),
        backend_(std::move(backend)),
        // Room for a few segments up front; an append that does not fit grows the cache.
        cache_(backend_.make_cache(w.config, policy, 256)) {}
  // The CPU backend with attention_threads threads for chunks of several tokens.
  BasicIncrementalDecoder(const Weights& w, const ansan::MaskPolicy& policy,
                          int attention_threads = 0)
      : BasicIncrementalDecoder(w, policy, Backend{attention_threads}) {}

  // The next tokens of the text and their anchor flags -> their logits: (tokens, vocab).
  Matrix feed(const std::vector<std::int32_t>& ids, const std::vector<std::uint8_t>& is_anchor) {
    require(is_anchor.size() == ids.size(), "IncrementalDecoder::feed", "is_anchor.size()",
            is_anchor.size(), ids.size());
    const ModelConfig& c = w_->config;
    for (std::size_t i = 0; i < ids.size(); ++i)
      require(ids[i] >= 0 && ids[i] < c.vocab, "IncrementalDecoder::feed",
              ansan::detail::concat("ids[", i, "]").c_str(), ids[i],
              ansan::detail::concat("a token id in [0, ", c.vocab, ")"));
    const auto tokens = std::int32_t(ids.size());
    if (tokens == 0) return Matrix(0, c.vocab);  // nothing to append or attend
    // Query metadata: true positions after the cached ones; each row's segment starts one
    // past the last anchor before it (in the cache or earlier in this chunk).
    std::vector<std::int32_t> pos(ids.size()), seg_start(ids.size());
    std::int32_t next = cache_.next_pos(0), start = cache_.open_seg_start(0);
    for (std::int32_t i = 0; i < tokens; ++i) {
      pos[std::size_t(i)] = next + i;
      seg_start[std::size_t(i)] = start;
      if (is_anchor[std::size_t(i)]) start = next + i + 1;
    }
    const std::vector<std::int32_t> cu_new{0, tokens};
    const ChunkQueries chunk{cu_new, pos, seg_start, is_anchor};
    backend_.append_rows(cache_, chunk);
    const auto attend = [&](int l, const Matrix& q, const Matrix& k, const Matrix& v, Matrix& out) {
      backend_.cached(cache_, l, c, chunk, policy_, q, k, v, out);
    };
    return decoder_forward(*w_, ids, pos, attend);
  }

  // Reduces the cache, every layer; returns the rows dropped (from each layer).
  std::int64_t reduce() { return backend_.reduce(cache_); }

  const ansan::MaskPolicy& policy() const { return policy_; }
  const Cache& cache() const { return cache_; }
  // Totals over all layers: a row held in L layers counts L entries.
  std::int64_t entries() const { return cache_.entries() * cache_.layers(); }
  std::int64_t bytes() const { return std::int64_t(cache_.bytes()); }
  std::int64_t full_cache_bytes() const { return std::int64_t(cache_.full_cache_bytes()); }
  std::int32_t next_pos() const { return cache_.next_pos(0); }

 private:
  const Weights* w_;
  ansan::MaskPolicy policy_;
  Backend backend_;
  Cache cache_;  // every layer
};

// The decoder on the CPU backend (a host cache, ansan::cpu::attention_forward).
using IncrementalDecoder = BasicIncrementalDecoder<CpuAttention>;

}  // namespace anllm
