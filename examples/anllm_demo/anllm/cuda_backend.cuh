// anllm/cuda_backend.cuh - the GPU attention backend of the reference transformer (built only
// with CUDA; model.hpp describes the backend seam).
//
// Only attention and the KV cache are on the GPU: one ansan::cuda::KVCache<float> holds every
// layer's K/V in device memory, and attention runs on the SIMT kernel (the one that takes fp32)
// with temp storage kept across calls: this backend builds the metadata itself, so it skips the
// host-side validation (and per-call allocation) of ansan::cuda::attention.
// Every layer of a call sees the same metadata, so each path plans once and runs per layer:
//   masked  the whole text: the first layer uploads the text's metadata and plans
//           (ansan::cuda::attention_plan), the others only run on that plan (attention_run);
//   cached  a chunk: append_rows() adds its rows to the cache once and uploads its query
//           metadata; each layer writes its K/V, and the first layer plans over the cache.
// The two paths keep separate plans, so a text and a chunk may alternate. The model's matmuls,
// norms and RoPE stay on the CPU (model.hpp), so every layer call copies its rotated q, k, v to
// the device and the attention output back: a readable split, not a fast one.
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
    return "GPU (ansan::cuda attention_plan / attention_run, device KV cache; matmuls, norms "
           "and RoPE on the CPU)";
  }

  Cache make_cache(const ModelConfig& c, const ansan::MaskPolicy& policy,
                   std::int32_t initial_rows) const {
    return Cache(ansan::LayerCount{c.layers}, 1, c.kv_heads, c.head_dim, policy, initial_rows);
  }

  // The whole text under `policy`.
  // q, out: (tokens, heads*head_dim); k, v: (tokens, kv_heads*head_dim)
  void masked(const ModelConfig& c, const ansan::AnchorLayout& layout,
              const ansan::MaskPolicy& policy, const Matrix& q, const Matrix& k, const Matrix& v,
              Matrix& out) {
    const auto tokens = std::int32_t(q.rows());
    if (tokens == 0) return;  // nothing to attend
    upload(d_q_, q.data(), std::size_t(q.size()));
    upload(d_k_, k.data(), std::size_t(k.size()));
    upload(d_v_, v.data(), std::size_t(v.size()));
    reserve(d_out_, std::size_t(out.size()));
    // One metadata upload a text.
    std::vector<std::int32_t> meta =
        packed_metadata(layout.cu_seqlens, layout.pos, layout.seg_start);
    if (meta != text_meta_ || layout.is_anchor != text_anchor_) {  // a new text
      upload(d_text_meta_, meta.data(), meta.size());
      upload(d_text_anchor_, layout.is_anchor.data(), layout.is_anchor.size());
      text_meta_ = std::move(meta);
      text_anchor_ = layout.is_anchor;
      text_.plan = {};
    }
    const std::int32_t* d_cu = d_text_meta_.data();
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
    args.q_is_anchor = args.k_is_anchor = d_text_anchor_.data();
    if (text_.plan.mismatch(args)) plan(text_, args, 0);  // a new text, policy or shape
    ANSAN_CUDA_THROW(ansan::cuda::attention_run(text_.plan, args));
    download(out.data(), d_out_.data(), std::size_t(out.size()));
  }

  // The chunk's rows, for every layer of `cache`, and its query metadata on the device; the
  // chunk's plan is built by the first cached() call.
  void append_rows(Cache& cache, const ChunkQueries& chunk) {
    cache.append_rows(chunk.cu_new, chunk.pos, chunk.is_anchor);
    const std::vector<std::int32_t> meta =
        packed_metadata(chunk.cu_new, chunk.pos, chunk.seg_start);
    upload(d_chunk_meta_, meta.data(), meta.size());
    upload(d_chunk_anchor_, chunk.is_anchor.data(), chunk.is_anchor.size());
    chunk_.plan = {};  // the cache's rows changed under the same pointers
  }

  // Writes layer `layer`'s k, v of the chunk (after append_rows) to `cache` on the device,
  // then the chunk's queries attend to everything that layer has cached.
  void cached(Cache& cache, int layer, const ModelConfig& c,
              const ChunkQueries& /*chunk: on the device since append_rows()*/,
              const ansan::MaskPolicy& policy, const Matrix& q, const Matrix& k, const Matrix& v,
              Matrix& out) {
    const auto tokens = std::int32_t(q.rows());
    upload(d_k_, k.data(), std::size_t(k.size()));
    upload(d_v_, v.data(), std::size_t(v.size()));
    cache.write(layer, ansan::make_view<const float>(d_k_.data(), tokens, c.kv_heads, c.head_dim),
                ansan::make_view<const float>(d_v_.data(), tokens, c.kv_heads, c.head_dim));
    upload(d_q_, q.data(), std::size_t(q.size()));
    reserve(d_out_, std::size_t(out.size()));
    ansan::AttentionArgs<float> args;
    cache.bind_keys(args, layer);
    const std::int32_t* d_cu_new = d_chunk_meta_.data();
    bind_queries(args, c, d_q_.data(), d_out_.data(), tokens, d_cu_new, d_cu_new + 2,
                 d_cu_new + 2 + tokens, d_chunk_anchor_.data(), policy);
    if (chunk_.plan.mismatch(args)) plan(chunk_, args, cache.stream());  // the chunk's first layer
    ANSAN_CUDA_THROW(ansan::cuda::attention_run(chunk_.plan, args, cache.stream()));
    download(out.data(), d_out_.data(), std::size_t(out.size()));
  }

  std::int64_t reduce(Cache& cache) const { return cache.reduce(); }

 private:
  // cu (2), pos (tokens), seg_start (tokens) as one array, for one upload.
  static std::vector<std::int32_t> packed_metadata(const std::vector<std::int32_t>& cu,
                                                   const std::vector<std::int32_t>& pos,
                                                   const std::vector<std::int32_t>& seg_start) {
    std::vector<std::int32_t> meta(cu);
    meta.insert(meta.end(), pos.begin(), pos.end());
    meta.insert(meta.end(), seg_start.begin(), seg_start.end());
    return meta;
  }
  // A plan and the temp storage holding its tables, grown to the largest plan.
  struct Planned {
    ansan::cuda::AttentionPlan<float> plan;
    ansan::cuda::detail::DeviceBuffer<char> temp;
  };
  // Plans `args` into `into`; the runs on it are ordered before download() (the default
  // stream, which the cache uses too).
  void plan(Planned& into, const ansan::AttentionArgs<float>& args, cudaStream_t stream) {
    std::size_t bytes = 0;
    ANSAN_CUDA_THROW(ansan::cuda::attention_plan(nullptr, bytes, args, into.plan, stream));
    reserve(into.temp, bytes);
    bytes = into.temp.size();
    ANSAN_CUDA_THROW(ansan::cuda::attention_plan(into.temp.data(), bytes, args, into.plan, stream));
  }
  template <class E>
  static void reserve(ansan::cuda::detail::DeviceBuffer<E>& buffer, std::size_t count) {
    if (buffer.size() < count) buffer = ansan::cuda::detail::DeviceBuffer<E>(count + count / 2);
  }
  // Synchronous copies on the default stream, which the cache also uses: each layer's upload
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
  ansan::cuda::detail::DeviceBuffer<float> d_q_;        // (tokens, heads*head_dim)
  ansan::cuda::detail::DeviceBuffer<float> d_k_, d_v_;  // (tokens, kv_heads*head_dim)
  ansan::cuda::detail::DeviceBuffer<float> d_out_;      // (tokens, heads*head_dim)
  // masked(): the text's metadata (cu_seqlens (2), pos, seg_start; flags), its host copy (a new
  // text is one that differs) and the plan the text's layers share.
  ansan::cuda::detail::DeviceBuffer<std::int32_t> d_text_meta_;
  ansan::cuda::detail::DeviceBuffer<std::uint8_t> d_text_anchor_;
  std::vector<std::int32_t> text_meta_;
  std::vector<std::uint8_t> text_anchor_;
  Planned text_;
  // cached(): the chunk's query metadata (cu_new (2), pos, seg_start; flags) and the plan its
  // layers share, reset by append_rows().
  ansan::cuda::detail::DeviceBuffer<std::int32_t> d_chunk_meta_;
  ansan::cuda::detail::DeviceBuffer<std::uint8_t> d_chunk_anchor_;
  Planned chunk_;
};

}  // namespace anllm
