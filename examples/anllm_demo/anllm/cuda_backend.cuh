// anllm/cuda_backend.cuh - the GPU attention backend of the reference transformer (built only
// with CUDA; model.hpp describes the backend seam).
//
// Only attention and the KV caches are on the GPU: each layer's K/V cache is an
// ansan::cuda::KVCache<float> in device memory, and attention runs on the SIMT kernel (the one
// that takes fp32) with temp storage kept across calls: this backend builds the metadata
// itself, so it skips the host-side validation (and per-call allocation) of
// ansan::cuda::attention. The whole text's layers share its metadata: the first layer uploads
// it and plans (ansan::cuda::attention_plan), the others only run the kernel on that plan
// (attention_run). A chunk attends to each layer's own cache, whose metadata arrays differ
// from layer to layer, so each of those calls plans, then runs. The model's
// matmuls, norms and RoPE stay on the CPU (model.hpp), so every layer call copies its rotated
// q, k, v to the device and the attention output back: a readable split, not a fast one.
//
// Ran on an H100 (sm_90 build) in tests/gpu/check.sh.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ansan/cuda/attention.cuh"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda/kv_cache.cuh"
#include "ansan/cuda_check.hpp"
#include "model.hpp"

namespace anllm {

class CudaAttention {
 public:
  using Cache = ansan::cuda::KVCache<float>;

  static const char* name() {
    return "GPU (ansan::cuda attention_plan / attention_run, device KV caches; matmuls, norms "
           "and RoPE on the CPU)";
  }

  Cache make_cache(const ModelConfig& c, const ansan::MaskPolicy& policy,
                   std::int32_t initial_rows) const {
    return Cache(1, c.kv_heads, c.head_dim, policy, initial_rows);
  }

  // The whole text under `policy`. q, out: (tokens, heads*head_dim); k, v: (tokens, kv_heads*head_dim)
  void masked(const ModelConfig& c, const ansan::AnchorLayout& layout,
              const ansan::MaskPolicy& policy, const Matrix& q, const Matrix& k, const Matrix& v,
              Matrix& out) {
    const auto tokens = std::int32_t(q.rows());
    if (tokens == 0) return;  // nothing to attend
    upload(d_q_, q.data(), std::size_t(q.size()));
    upload(d_k_, k.data(), std::size_t(k.size()));
    upload(d_v_, v.data(), std::size_t(v.size()));
    reserve(d_out_, std::size_t(out.size()));
    // One metadata upload a text: cu_seqlens (2), pos (tokens), seg_start (tokens).
    std::vector<std::int32_t> meta(layout.cu_seqlens);
    meta.insert(meta.end(), layout.pos.begin(), layout.pos.end());
    meta.insert(meta.end(), layout.seg_start.begin(), layout.seg_start.end());
    if (meta != planned_meta_ || layout.is_anchor != planned_anchor_) {  // a new text
      upload(d_meta_, meta.data(), meta.size());
      upload(d_anchor_, layout.is_anchor.data(), layout.is_anchor.size());
      planned_meta_ = std::move(meta);
      planned_anchor_ = layout.is_anchor;
      plan_ = {};
    }
    const std::int32_t* d_cu = d_meta_.data();
    const std::int32_t* d_pos = d_cu + 2;
    auto args = ansan::prefill_args<float>(
        layout, ansan::make_view<const float>(d_q_.data(), tokens, c.heads, c.head_dim),
        ansan::make_view<const float>(d_k_.data(), tokens, c.kv_heads, c.head_dim),
        ansan::make_view<const float>(d_v_.data(), tokens, c.kv_heads, c.head_dim),
        ansan::make_view(d_out_.data(), tokens, c.heads, c.head_dim), {}, policy,
        1.f / std::sqrt(float(c.head_dim)));
    args.cu_seqlens_q = args.cu_seqlens_k = d_cu;
    args.q_pos = args.k_pos = d_pos;
    args.q_seg_start = d_pos + tokens;
    args.q_is_anchor = args.k_is_anchor = d_anchor_.data();
    if (plan_.mismatch(args)) plan(args, 0);  // a new text, policy or shape
    ANSAN_CUDA_THROW(ansan::cuda::attention_run(plan_, args));
    download(out.data(), d_out_.data(), std::size_t(out.size()));
  }

  // Appends the chunk's k, v to `cache` on the device, then its queries attend to everything
  // cached; the chunk's metadata stays on the host for the cache and is uploaded for attention.
  void cached(Cache& cache, const ModelConfig& c, const ChunkQueries& chunk,
              const ansan::MaskPolicy& policy, const Matrix& q, const Matrix& k, const Matrix& v,
              Matrix& out) {
    const auto tokens = std::int32_t(q.rows());
    upload(d_k_, k.data(), std::size_t(k.size()));
    upload(d_v_, v.data(), std::size_t(v.size()));
    cache.append(ansan::make_view<const float>(d_k_.data(), tokens, c.kv_heads, c.head_dim),
                 ansan::make_view<const float>(d_v_.data(), tokens, c.kv_heads, c.head_dim),
                 chunk.cu_new, chunk.pos, chunk.is_anchor);
    upload(d_q_, q.data(), std::size_t(q.size()));
    reserve(d_out_, std::size_t(out.size()));
    std::vector<std::int32_t> meta(chunk.cu_new);  // cu_new (2), pos (tokens), seg_start (tokens)
    meta.insert(meta.end(), chunk.pos.begin(), chunk.pos.end());
    meta.insert(meta.end(), chunk.seg_start.begin(), chunk.seg_start.end());
    upload(d_meta_, meta.data(), meta.size());
    upload(d_anchor_, chunk.is_anchor.data(), chunk.is_anchor.size());
    planned_meta_.clear();  // d_meta_ and d_anchor_ no longer hold the text's
    planned_anchor_.clear();
    ansan::AttentionArgs<float> args;
    cache.bind_keys(args);
    bind_queries(args, c, d_q_.data(), d_out_.data(), tokens, d_meta_.data(), d_meta_.data() + 2,
                 d_meta_.data() + 2 + tokens, d_anchor_.data(), policy);
    plan(args, cache.stream());
    ANSAN_CUDA_THROW(ansan::cuda::attention_run(plan_, args, cache.stream()));
    download(out.data(), d_out_.data(), std::size_t(out.size()));
  }

  std::int64_t reduce(Cache& cache) const { return cache.reduce(); }

 private:
  // plan_ for `args`, temp storage grown to the largest plan; the runs on it are ordered
  // before download() (the default stream, which the caches use too).
  void plan(const ansan::AttentionArgs<float>& args, cudaStream_t stream) {
    std::size_t bytes = 0;
    ANSAN_CUDA_THROW(ansan::cuda::attention_plan(nullptr, bytes, args, plan_, stream));
    reserve(d_temp_, bytes);
    bytes = d_temp_.size();
    ANSAN_CUDA_THROW(ansan::cuda::attention_plan(d_temp_.data(), bytes, args, plan_, stream));
  }
  template <class E>
  static void reserve(ansan::cuda::detail::DeviceBuffer<E>& buffer, std::size_t count) {
    if (buffer.size() < count) buffer = ansan::cuda::detail::DeviceBuffer<E>(count + count / 2);
  }
  // Synchronous copies on the default stream, which the caches also use: each layer's upload
  // is ordered after the previous layer's work that read the same scratch buffer.
  template <class E>
  static void upload(ansan::cuda::detail::DeviceBuffer<E>& buffer, const E* host,
                     std::size_t count) {
    reserve(buffer, count);
    if (count > 0)
      ANSAN_CUDA_THROW(cudaMemcpy(buffer.data(), host, count * sizeof(E), cudaMemcpyHostToDevice));
  }
  template <class E>
  static void download(E* host, const E* device, std::size_t count) {
    if (count > 0)
      ANSAN_CUDA_THROW(cudaMemcpy(host, device, count * sizeof(E), cudaMemcpyDeviceToHost));
  }

  // Per-call scratch, reused across layers and calls; grows to the largest chunk seen.
  ansan::cuda::detail::DeviceBuffer<float> d_q_;             // (tokens, heads*head_dim)
  ansan::cuda::detail::DeviceBuffer<float> d_k_, d_v_;       // (tokens, kv_heads*head_dim)
  ansan::cuda::detail::DeviceBuffer<float> d_out_;           // (tokens, heads*head_dim)
  ansan::cuda::detail::DeviceBuffer<std::int32_t> d_meta_;   // (2 + 2*tokens)
  ansan::cuda::detail::DeviceBuffer<std::uint8_t> d_anchor_; // (tokens)
  ansan::cuda::detail::DeviceBuffer<char> d_temp_;           // attention's temp storage
  // The latest call's plan (its tables in d_temp_), and the host copy of the text's metadata
  // while d_meta_ and d_anchor_ hold it: the next layers of that text reuse the plan.
  ansan::cuda::AttentionPlan<float> plan_;
  std::vector<std::int32_t> planned_meta_;
  std::vector<std::uint8_t> planned_anchor_;
};

}  // namespace anllm
