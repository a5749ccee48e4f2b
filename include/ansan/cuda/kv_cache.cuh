// ansan/cuda/kv_cache.cuh - the anchor KV cache on the GPU, one layer or all of a model's.
//
// Same members and semantics as ansan::KVCache (ansan/kv_cache.hpp; the shared bookkeeping and
// validation live in ansan::detail::KVCacheBook): K and V rows, positions and anchor flags live
// in device memory; each sequence owns capacity_per_seq() rows; reduce() drops what no future
// query can see (SPEC.md section 3), every layer in one compaction within the sequences.
// Layers share the rows' metadata, so bind_keys(args, l) gives every layer the same metadata
// pointers and one ansan::cuda::attention_plan serves all layers of a step.
//
// Stream operations: append() and append_rows() upload the chunk's metadata (one array), copy
// the new offsets on and launch one gather (K, V and metadata; metadata only); write() launches
// one gather (K and V); reduce() uploads the new offsets and the rows that change place (found
// on the host), launches one kernel that moves them in every layer (blocks only for the
// sequences that have rows to move), and copies the new offsets on.
//
// Where the arguments live: append() takes K and V as device views and the small per-row
// metadata (cu_new, pos, is_anchor) as host spans, so every check runs on the host before any
// device work and the cache keeps a host mirror of positions and flags. reduce() therefore
// decides what stays on the host (plan_reduction(), as the host cache does) and uploads the
// rows that move: no device select and no read-back. bind_keys() binds device pointers. Work
// is ordered on the stream given at construction. Only inspection copies (positions(), keys(),
// ...) synchronise it by design; the uploads come from pageable host memory, which the driver
// stages (and may wait for the stream to do so), and a buffer that grows is freed with
// cudaFree, which waits for the device.
//
// Bad input throws std::invalid_argument and leaves the cache unchanged; a failed CUDA call
// throws ansan::cuda_error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/compaction.hpp"
#include "ansan/cuda/compaction.cuh"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda_check.hpp"
#include "ansan/kv_cache.hpp"

namespace ansan::cuda {

template <class T>
class KVCache : public ansan::detail::KVCacheBook {
 public:
  // One layer.
  KVCache(std::int32_t batch, std::int32_t heads_kv, std::int32_t head_dim, MaskPolicy policy,
          std::int32_t initial_capacity_per_seq = 0, KVStorage storage = KVStorage::nhd,
          cudaStream_t stream = 0)
      : KVCache(LayerCount{1}, batch, heads_kv, head_dim, policy, initial_capacity_per_seq,
                storage, stream) {}
  // `layers` layers over the same rows.
  KVCache(LayerCount layers, std::int32_t batch, std::int32_t heads_kv, std::int32_t head_dim,
          MaskPolicy policy, std::int32_t initial_capacity_per_seq = 0,
          KVStorage storage = KVStorage::nhd, cudaStream_t stream = 0)
      : KVCacheBook(layers, batch, heads_kv, head_dim, policy, initial_capacity_per_seq, storage,
                    "cuda::KVCache"),
        stream_(stream),
        d_k_(layer_elements() * std::size_t(layers_)),
        d_v_(d_k_.size()),
        d_pos_(std::size_t(rows_allocated())),
        d_anchor_(d_pos_.size()),
        d_cu_(std::size_t(batch) + 1),
        d_row_start_(std::size_t(batch)) {
    upload(d_cu_.data(), cu_);
    upload(d_row_start_.data(), KVCacheBook::row_start_);
  }

  // One-layer caches: appends m_b rows to sequence b with their K and V. k, v: device
  // (sum m_b, heads_kv, head_dim) views, any strides with head_dim contiguous; cu_new (B+1),
  // pos and is_anchor (sum m_b): host memory.
  void append(TensorView<const T, 3> k, TensorView<const T, 3> v, span<const std::int32_t> cu_new,
              span<const std::int32_t> pos, span<const std::uint8_t> is_anchor) {
    const char* fn = "cuda::KVCache::append";
    only_layer(fn);
    check_kv(k, v, k.shape[0], fn, "any rows, the cache's heads and head_dim");
    const std::int32_t capacity = plan_rows(cu_new, pos, is_anchor, k.shape[0], fn);
    if (capacity != capacity_) grow(capacity);
    const KVRows<const T> staged = stage_rows(cu_new, pos, is_anchor);
    launch_chunk_gather(KVRows<const T>{k, v, staged.pos, staged.is_anchor}, 0);
    commit_rows(cu_new, pos, is_anchor);
    commit_write(0);
  }

  // Appends m_b rows to sequence b for every layer (arguments as append()'s); their K and V
  // come from write(), one call per layer, before the next append_rows() or reduce().
  void append_rows(span<const std::int32_t> cu_new, span<const std::int32_t> pos,
                   span<const std::uint8_t> is_anchor) {
    const std::int32_t capacity =
        plan_rows(cu_new, pos, is_anchor, index_t(pos.size()), "cuda::KVCache::append_rows");
    if (capacity != capacity_) grow(capacity);
    const KVRows<const T> staged = stage_rows(cu_new, pos, is_anchor);
    // No heads: the gather moves only positions and flags.
    const auto no_heads = make_view<const T>(nullptr, index_t(pos.size()), 0, dim_);
    launch_chunk_gather(KVRows<const T>{no_heads, no_heads, staged.pos, staged.is_anchor}, 0);
    commit_rows(cu_new, pos, is_anchor);
  }

  // Layer `layer`'s K and V of the last append_rows()' rows: device (chunk_rows(), heads_kv,
  // head_dim) views, any strides with head_dim contiguous. Writing a layer again overwrites it.
  void write(std::int32_t layer, TensorView<const T, 3> k, TensorView<const T, 3> v) {
    const char* fn = "cuda::KVCache::write";
    check_layer(layer, fn);
    check_kv(k, v, chunk_rows(), fn, "the rows of the last append_rows()");
    launch_chunk_gather(KVRows<const T>{k, v}, layer);
    commit_write(layer);
  }

  // Drops every row no future query can see from every layer; returns the rows dropped.
  std::int64_t reduce() {
    check_written("cuda::KVCache::reduce");
    const std::int64_t total = entries();
    if (total == 0) return 0;
    // The host mirror knows which rows change place (plan_reduction), so the device gets one
    // upload, the new offsets and a table of those moves (none of the sequences whose rows
    // stay), and one launch moves them in every layer (positions and flags once).
    const Reduction r = plan_reduction();
    std::vector<std::int32_t> stage(r.moves.cu_out);
    const std::int32_t moving = detail::append_move_table(r.moves, r.cu_moved.data(),
                                                          row_start_.data(), batch_, stage);
    reserve(d_stage_i32_, stage.size());
    upload(d_stage_i32_.data(), stage);
    const detail::ListedMoves listed{d_stage_i32_.data() + batch_ + 1, moving};
    ANSAN_CUDA_THROW(detail::launch_in_sequences(
        detail::InSequenceParams<T, detail::ListedMoves>{layer_rows(0), index_t(layer_elements()),
                                                         listed, 0},
        layers_, stream_));
    publish_offsets(d_stage_i32_.data());
    commit_reduction(r);
    return total - entries();
  }

  // Fills the key side of attention with device pointers: k, v, cu_seqlens_k, k_pos,
  // k_is_anchor, maybe_k_seq_start. Valid until the next append that grows the cache; only k
  // and v depend on the layer. The one-argument form is for one-layer caches.
  template <class U>
  void bind_keys(AttentionArgs<U>& args) const {
    bind_keys(args, only_layer("cuda::KVCache::bind_keys"));
  }
  template <class U>
  void bind_keys(AttentionArgs<U>& args, std::int32_t layer) const {
    static_assert(std::is_same_v<U, T>, "attention must read the cache's element type");
    check_layer(layer, "cuda::KVCache::bind_keys");
    args.k = layer_view<const T>(d_k_.data(), layer);
    args.v = layer_view<const T>(d_v_.data(), layer);
    args.cu_seqlens_k = d_cu_.data();
    args.k_pos = d_pos_.data();
    args.k_is_anchor = d_anchor_.data();
    args.maybe_k_seq_start = d_row_start_.data();
  }

  // Bytes of K and V over all layers: held, ever appended, allocated.
  std::size_t bytes() const { return std::size_t(entries()) * row_bytes(); }
  std::size_t full_cache_bytes() const { return std::size_t(rows_appended()) * row_bytes(); }
  std::size_t allocated_bytes() const { return std::size_t(rows_allocated()) * row_bytes(); }
  cudaStream_t stream() const { return stream_; }

  // Host copies of sequence b's rows read back from the device (synchronises the stream).
  std::vector<std::int32_t> positions(std::int32_t b) const {
    return download(d_pos_.data() + row_start_host(b), std::size_t(seq_len(b)));
  }
  std::vector<std::uint8_t> anchor_flags(std::int32_t b) const {
    return download(d_anchor_.data() + row_start_host(b), std::size_t(seq_len(b)));
  }
  // (len, heads_kv, head_dim) of one layer whatever the storage order; the one-argument forms
  // are for one-layer caches.
  std::vector<T> keys(std::int32_t b) const { return keys(b, only_layer("cuda::KVCache::keys")); }
  std::vector<T> values(std::int32_t b) const {
    return values(b, only_layer("cuda::KVCache::values"));
  }
  std::vector<T> keys(std::int32_t b, std::int32_t layer) const {
    return download_rows(d_k_.data(), b, layer, "cuda::KVCache::keys");
  }
  std::vector<T> values(std::int32_t b, std::int32_t layer) const {
    return download_rows(d_v_.data(), b, layer, "cuda::KVCache::values");
  }

 private:
  std::size_t row_bytes() const {
    return 2 * std::size_t(layers_) * std::size_t(heads_) * std::size_t(dim_) * sizeof(T);
  }
  std::size_t layer_elements() const { return std::size_t(rows_allocated()) * heads_ * dim_; }
  std::int32_t row_start_host(std::int32_t b) const { return row_start_[check_seq(b)]; }
  // Layer l of a (layers, rows_allocated, heads, dim) store, each layer in storage_ order.
  template <class E>
  TensorView<E, 3> layer_view(E* data, std::int32_t layer) const {
    return kv_view(data + std::size_t(layer) * layer_elements(), storage_, rows_allocated(),
                   heads_, dim_);
  }
  // Layer l's rows with the positions and flags all layers share.
  KVRows<T> layer_rows(std::int32_t layer) const {
    return {layer_view(d_k_.data(), layer), layer_view(d_v_.data(), layer), d_pos_.data(),
            d_anchor_.data()};
  }

  // Uploads what a chunk's gathers read until the next chunk, as one array: cu_new (B+1), each
  // sequence's first free row (B), the offsets with the chunk (B+1, copied on into d_cu_),
  // positions (m), then the flags (m bytes in the last words). Returns where the positions and
  // flags are. An empty chunk changes nothing on the device.
  KVRows<const T> stage_rows(span<const std::int32_t> cu_new, span<const std::int32_t> pos,
                             span<const std::uint8_t> is_anchor) {
    if (pos.empty()) return {};
    std::vector<std::int32_t> stage(cu_new.begin(), cu_new.end());
    for (std::int32_t b = 0; b < batch_; ++b) stage.push_back(row_start_host(b) + len_[b]);
    const std::size_t offsets = stage.size();
    for (std::int32_t b = 0; b <= batch_; ++b) stage.push_back(cu_[b] + cu_new[b]);
    const std::size_t positions = stage.size();
    stage.insert(stage.end(), pos.begin(), pos.end());
    const std::size_t flags = stage.size();
    stage.resize(flags + (is_anchor.size() + 3) / 4, 0);
    auto* flag_bytes = reinterpret_cast<std::uint8_t*>(stage.data() + flags);
    for (std::size_t t = 0; t < is_anchor.size(); ++t) flag_bytes[t] = is_anchor[t] != 0;
    reserve(d_stage_i32_, stage.size());
    upload(d_stage_i32_.data(), stage);
    publish_offsets(d_stage_i32_.data() + offsets);
    return {{},
            {},
            d_stage_i32_.data() + positions,
            reinterpret_cast<const std::uint8_t*>(d_stage_i32_.data() + flags)};
  }
  // The offsets attention reads (d_cu_, which bind_keys hands out) from staged device ones.
  void publish_offsets(const std::int32_t* d_offsets) {
    ANSAN_CUDA_THROW(cudaMemcpyAsync(d_cu_.data(), d_offsets,
                                     (std::size_t(batch_) + 1) * sizeof(std::int32_t),
                                     cudaMemcpyDeviceToDevice, stream_));
  }
  // Copies the staged chunk's rows into `layer` after each sequence's rows as they stood when
  // the chunk was staged: K and V, and positions and flags where `chunk` has them.
  void launch_chunk_gather(const KVRows<const T>& chunk, std::int32_t layer) {
    const index_t m = chunk.k.shape[0];
    if (m == 0) return;
    const std::int32_t* d_cu_new = d_stage_i32_.data();
    const std::int32_t* d_first_free = d_cu_new + batch_ + 1;
    const detail::GatherParams<T> p{chunk,
                                    layer_rows(layer),
                                    RaggedRows{batch_, d_cu_new, nullptr},
                                    d_cu_new,
                                    d_first_free,
                                    nullptr,
                                    nullptr,
                                    m,
                                    detail::SourceIndex::identity};
    ANSAN_CUDA_THROW(detail::launch_gather(p, stream_));
  }

  template <class E>
  void upload(E* d_dst, const std::vector<E>& host) const {
    if (!host.empty())
      ANSAN_CUDA_THROW(cudaMemcpyAsync(d_dst, host.data(), host.size() * sizeof(E),
                                       cudaMemcpyHostToDevice, stream_));
  }
  template <class E>
  std::vector<E> download(const E* d_src, std::size_t count) const {
    std::vector<E> host(count);
    if (count > 0) {
      ANSAN_CUDA_THROW(
          cudaMemcpyAsync(host.data(), d_src, count * sizeof(E), cudaMemcpyDeviceToHost, stream_));
      ANSAN_CUDA_THROW(cudaStreamSynchronize(stream_));
    }
    return host;
  }
  // Sequence b's rows of one layer as (len, heads, dim): one strided 2D copy per head.
  std::vector<T> download_rows(const T* d_store, std::int32_t b, std::int32_t layer,
                               const char* fn) const {
    const auto view = layer_view(d_store, std::int32_t(check_layer(layer, fn)));
    const std::int32_t n = seq_len(b);
    std::vector<T> host(std::size_t(n) * heads_ * dim_);
    for (index_t h = 0; h < heads_ && n > 0; ++h)
      ANSAN_CUDA_THROW(cudaMemcpy2DAsync(
          host.data() + h * dim_, std::size_t(heads_) * dim_ * sizeof(T),
          &view(row_start_host(b), h, 0), std::size_t(view.stride[0]) * sizeof(T),
          std::size_t(dim_) * sizeof(T), std::size_t(n), cudaMemcpyDeviceToHost, stream_));
    ANSAN_CUDA_THROW(cudaStreamSynchronize(stream_));
    return host;
  }
  template <class E>
  void reserve(detail::DeviceBuffer<E>& buffer, std::size_t count) {
    if (buffer.size() < count) buffer = detail::DeviceBuffer<E>(count + count / 2);
  }

  // Re-lays every sequence out with `capacity` rows. Each (layer, sequence[, head]) block of the
  // old capacity moves with one strided 2D copy; nothing is committed before every call
  // succeeded.
  void grow(std::int32_t capacity) {
    const index_t rows = index_t(batch_) * capacity;
    detail::DeviceBuffer<T> k{std::size_t(rows) * heads_ * dim_ * std::size_t(layers_)},
        v{k.size()};
    detail::DeviceBuffer<std::int32_t> pos{std::size_t(rows)};
    detail::DeviceBuffer<std::uint8_t> anchor{std::size_t(rows)};
    std::vector<std::int32_t> host_pos;
    std::vector<std::uint8_t> host_anchor;
    grown_metadata(capacity, host_pos, host_anchor);
    if (capacity_ > 0) {
      // NHD: one block of capacity*H*D per (layer, sequence); HND: one of capacity*D per
      // (layer, head, sequence). Layers follow one another, so the pitch is uniform.
      const bool nhd = storage_ == KVStorage::nhd;
      const std::size_t block = std::size_t(nhd ? heads_ : 1) * dim_ * sizeof(T);
      const std::size_t blocks = std::size_t(layers_) * batch_ * (nhd ? 1 : heads_);
      for (auto [to, from] :
           {std::pair<T*, const T*>{k.data(), d_k_.data()}, {v.data(), d_v_.data()}})
        ANSAN_CUDA_THROW(cudaMemcpy2DAsync(to, capacity * block, from, capacity_ * block,
                                           capacity_ * block, blocks, cudaMemcpyDeviceToDevice,
                                           stream_));
    }
    upload(pos.data(), host_pos);
    upload(anchor.data(), host_anchor);
    std::vector<std::int32_t> starts(static_cast<std::size_t>(batch_));
    for (std::int32_t b = 0; b < batch_; ++b) starts[b] = b * capacity;
    upload(d_row_start_.data(), starts);
    d_k_ = std::move(k), d_v_ = std::move(v), d_pos_ = std::move(pos),
    d_anchor_ = std::move(anchor);
    commit_growth(capacity, std::move(host_pos), std::move(host_anchor));
  }

  cudaStream_t stream_;
  detail::DeviceBuffer<T> d_k_;  // (layers, rows_allocated, heads_kv, head_dim), storage_ order
  detail::DeviceBuffer<T> d_v_;  // (layers, rows_allocated, heads_kv, head_dim), storage_ order
  detail::DeviceBuffer<std::int32_t> d_pos_;        // (rows_allocated)
  detail::DeviceBuffer<std::uint8_t> d_anchor_;     // (rows_allocated)
  detail::DeviceBuffer<std::int32_t> d_cu_;         // (B+1) rows held, as offsets
  detail::DeviceBuffer<std::int32_t> d_row_start_;  // (B)
  detail::DeviceBuffer<std::int32_t> d_stage_i32_;  // stage_rows()' chunk; reduce's offsets and
                                                    // move table
};

}  // namespace ansan::cuda
