// ansan/kv_cache.hpp - the anchor KV cache of a batch of B sequences, one layer or all of a
// model's layers, on the host.
//
// Anchor-based inference (SPEC.md section 3, the authors' Algorithm 1): prefill the prompt,
// reduce(), then decode token by token, calling reduce() after every generated anchor. A
// reduction drops exactly the keys no future query can see (ansan::still_visible), so the
// outputs equal those of the whole text under the mask of SPEC section 2.
//
//   before reduce   [T h e .  C a t .  S o]  pos 0..9, anchors at 3 and 7, open segment 8..
//   after (AnLLM)   [. . S o]                pos 3 7 8 9: closed anchors, then the open segment
//
// Storage: each sequence owns `capacity_per_seq()` rows (row_start[b] = b * capacity), so an
// append never repacks the batch; bind_keys() hands attention the rows through
// maybe_k_seq_start. A chunk that does not fit grows every sequence's capacity (at least
// doubling, data kept) unless set_growth(false), in which case append() throws.
// K and V are (rows, heads_kv, head_dim) in NHD or HND order (KVStorage).
//
// Layers: every layer of a model caches the same tokens, so a cache built with LayerCount{L}
// holds L layers' K and V over one set of rows, positions, flags and offsets. A step appends
// the rows once, then writes each layer's K and V as the forward pass computes them:
//
//   cache.append_rows(cu_new, pos, is_anchor);   // the step's rows, for every layer
//   for each layer l:  cache.write(l, k_l, v_l);  cache.bind_keys(args, l);  attention(args)
//   cache.reduce();                              // every layer, one keep rule
//
// bind_keys(args, l) differs between layers only in args.k and args.v, so whatever attention
// derives from the metadata (ansan::cuda::attention_plan) is built once per step, not per
// layer. A one-layer cache (the plain constructor) also takes append(k, v, ...), both at once.
//
// Kept keys keep their original positions and new rows bring their true positions. The
// authors' released code rotates new tokens at the compacted cache length instead; that is the
// caller's choice of RoPE position (seq_len(b) instead of next_pos(b)), not a cache mode: the
// cache uses positions only for order and the mask, and still takes true positions.
//
// Every member validates its arguments before changing anything: on bad input it throws
// std::invalid_argument and the cache is left as it was. That includes order: append_rows()
// and reduce() refuse while a layer of the last append_rows() is unwritten. ansan::cuda::KVCache
// (ansan/cuda/kv_cache.cuh) has the same members over device memory.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/compaction.hpp"
#include "ansan/error.hpp"
#include "ansan/policy.hpp"
#include "ansan/span.hpp"
#include "ansan/tensor.hpp"

namespace ansan {

// How many layers a KVCache holds: a type of its own so it cannot be mistaken for the batch or
// head counts beside it.
struct LayerCount {
  std::int32_t value = 1;
};

namespace detail {

// The bookkeeping both caches share: lengths, capacity, positions and anchor flags of every
// row (the storage itself on the host, a host mirror for the device cache), the validation of
// appends and the keep rule of reductions. Element storage is the derived class's.
class KVCacheBook {
 public:
  KVCacheBook(LayerCount layers, std::int32_t batch, std::int32_t heads_kv,
              std::int32_t head_dim, const MaskPolicy& policy,
              std::int32_t initial_capacity_per_seq, KVStorage storage, const char* fn)
      : layers_(layers.value),
        batch_(batch),
        heads_(heads_kv),
        dim_(head_dim),
        policy_(policy),
        storage_(storage) {
    require(layers.value >= 1, fn, "layers", layers.value, ">= 1");
    require(batch >= 0, fn, "batch", batch, ">= 0");
    require(heads_kv >= 1, fn, "heads_kv", heads_kv, ">= 1");
    require(head_dim >= 1, fn, "head_dim", head_dim, ">= 1");
    require(initial_capacity_per_seq >= 0, fn, "initial_capacity_per_seq", initial_capacity_per_seq,
            ">= 0");
    require(std::int64_t(batch) * initial_capacity_per_seq <= INT32_MAX, fn,
            "batch * initial_capacity_per_seq", std::int64_t(batch) * initial_capacity_per_seq,
            "<= 2^31 - 1 rows");
    validate_policy(policy, fn);
    const auto B = std::size_t(batch);
    len_.assign(B, 0), row_start_.assign(B, 0), cu_.assign(B + 1, 0);
    next_pos_.assign(B, 0), open_seg_start_.assign(B, 0), reduced_below_.assign(B, 0);
    chunk_cu_.assign(B + 1, 0), chunk_row_.assign(B, 0), unwritten_.assign(std::size_t(layers_), 0);
    commit_growth(initial_capacity_per_seq, std::vector<std::int32_t>(B * initial_capacity_per_seq),
                  std::vector<std::uint8_t>(B * initial_capacity_per_seq));
  }

  std::int32_t layers() const { return layers_; }
  std::int32_t batch() const { return batch_; }
  std::int32_t heads_kv() const { return heads_; }
  std::int32_t head_dim() const { return dim_; }
  const MaskPolicy& policy() const { return policy_; }
  KVStorage storage() const { return storage_; }
  std::int32_t capacity_per_seq() const { return capacity_; }
  index_t rows_allocated() const { return index_t(batch_) * capacity_; }
  void set_growth(bool grow) { growth_ = grow; }
  bool growth() const { return growth_; }

  std::int32_t seq_len(std::int32_t b) const { return len_[check_seq(b)]; }
  // One past the last appended position of sequence b (0 before any append).
  std::int32_t next_pos(std::int32_t b) const { return next_pos_[check_seq(b)]; }
  // First position of the open segment: one past the last appended anchor, or 0.
  std::int32_t open_seg_start(std::int32_t b) const { return open_seg_start_[check_seq(b)]; }
  std::int64_t entries() const { return cu_[std::size_t(batch_)]; }
  // Host offsets of the held rows (B+1), as attention's cu_seqlens_k.
  span<const std::int32_t> cu_seqlens() const { return cu_; }
  std::int64_t rows_appended() const { return appended_; }
  // Rows of the last append_rows() (or append()), which write() fills; 0 after a reduce().
  std::int64_t chunk_rows() const { return chunk_cu_[std::size_t(batch_)]; }
  // Has `layer` received write() for those rows?
  bool written(std::int32_t layer) const { return !unwritten_[check_layer(layer, "KVCache")]; }

 protected:
  std::size_t check_seq(std::int32_t b) const {
    if (b < 0 || b >= batch_)
      fail("KVCache", "sequence index b", b, concat("in [0, ", batch_, ")"));
    return std::size_t(b);
  }

  std::size_t check_layer(std::int32_t layer, const char* fn) const {
    if (layer < 0 || layer >= layers_) fail(fn, "layer", layer, concat("in [0, ", layers_, ")"));
    return std::size_t(layer);
  }
  // The layer of a call that names none: only a one-layer cache has an obvious one.
  std::int32_t only_layer(const char* fn) const {
    if (layers_ != 1)
      fail(fn, "layers()", layers_, "1 (a cache of several layers needs the layer named)");
    return 0;
  }
  // append_rows() and reduce() wait for every layer of the last append_rows().
  void check_written(const char* fn) const {
    for (std::int32_t l = 0; l < layers_; ++l)
      if (unwritten_[std::size_t(l)])
        fail(fn, concat("layer ", l), "not written",
             concat("write(", l, ", k, v) for the last append_rows()' ", chunk_rows(), " rows"));
  }

  // Checks one layer's K and V of `rows` rows (see KVCache::write).
  template <class T>
  void check_kv(const TensorView<const T, 3>& k, const TensorView<const T, 3>& v, index_t rows,
                const char* fn, const char* rows_are) const {
    if (!(k.shape[0] == rows && k.shape[1] == heads_ && k.shape[2] == dim_))
      fail(fn, "k.shape", shape_string(k),
           concat("(", rows, ", ", heads_, ", ", dim_, "): ", rows_are));
    for (int d = 0; d < 3; ++d)
      if (v.shape[d] != k.shape[d]) fail(fn, "v.shape", shape_string(v), shape_string(k));
    if (!(k.stride[2] == 1 && v.stride[2] == 1))
      fail(fn, "innermost stride of k/v", concat(k.stride[2], "/", v.stride[2]),
           "1 (head_dim contiguous)");
    require((k.data && v.data) || rows == 0, fn, "k.data/v.data", "null", "buffers");
  }

  // Checks a chunk's rows (see KVCache::append_rows) and returns the capacity per sequence it
  // needs: capacity_per_seq() when it fits. Throws if it does not fit and growth is off.
  std::int32_t plan_rows(span<const std::int32_t> cu_new, span<const std::int32_t> pos,
                         span<const std::uint8_t> is_anchor, index_t m, const char* fn) const {
    check_written(fn);
    if (cu_new.size() != std::size_t(batch_) + 1)
      fail(fn, "cu_new.size()", cu_new.size(), concat("B+1 = ", batch_ + 1));
    validate_offsets(cu_new, m, fn, "", "cu_new");
    if (pos.size() != std::size_t(m))
      fail(fn, "pos.size()", pos.size(), concat("the chunk's row count ", m));
    if (is_anchor.size() != std::size_t(m))
      fail(fn, "is_anchor.size()", is_anchor.size(), concat("the chunk's row count ", m));
    std::int64_t needed = capacity_;
    for (std::int32_t b = 0; b < batch_; ++b) {
      for (std::int32_t t = cu_new[b]; t < cu_new[b + 1]; ++t) {
        const std::int32_t lo = t > cu_new[b] ? pos[t - 1] + 1 : next_pos_[b];
        if (pos[t] < lo || pos[t] == INT32_MAX)
          fail(fn, concat("pos[", t, "]"), pos[t],
               concat(">= ", lo, " (sequence ", b, ": positions continue the cache and ascend)"));
      }
      const std::int64_t rows = std::int64_t(len_[b]) + cu_new[b + 1] - cu_new[b];
      if (rows > capacity_ && !growth_)
        fail(fn, concat("rows of sequence ", b), rows,
             concat("<= capacity_per_seq() = ", capacity_, " (growth is disabled)"));
      needed = std::max(needed, rows);
    }
    if (needed == capacity_) return capacity_;
    const std::int64_t grown = std::max<std::int64_t>({needed, 2 * std::int64_t(capacity_), 16});
    const std::int64_t limit = batch_ ? INT32_MAX / batch_ : INT32_MAX;
    if (needed > limit)
      fail(fn, "rows per sequence", needed, concat("<= ", limit, " (2^31 - 1 rows in all)"));
    return std::int32_t(std::min(grown, limit));
  }

  // Host metadata for `capacity` rows per sequence, holding the current rows.
  void grown_metadata(std::int32_t capacity, std::vector<std::int32_t>& pos,
                      std::vector<std::uint8_t>& is_anchor) const {
    pos.assign(std::size_t(batch_) * capacity, 0);
    is_anchor.assign(pos.size(), 0);
    for (std::int32_t b = 0; b < batch_; ++b) {
      // data() + offset, not &v[i]: the old vectors are empty before the first growth.
      std::copy_n(pos_.data() + row_start_[b], len_[b], pos.data() + std::size_t(b) * capacity);
      std::copy_n(anchor_.data() + row_start_[b], len_[b],
                  is_anchor.data() + std::size_t(b) * capacity);
    }
  }
  void commit_growth(std::int32_t capacity, std::vector<std::int32_t>&& pos,
                     std::vector<std::uint8_t>&& is_anchor) noexcept {
    capacity_ = capacity;
    pos_ = std::move(pos), anchor_ = std::move(is_anchor);
    for (std::int32_t b = 0; b < batch_; ++b) row_start_[b] = b * capacity;
  }

  // Records a chunk's rows after each sequence's rows; no layer's K/V of them is written yet.
  void commit_rows(span<const std::int32_t> cu_new, span<const std::int32_t> pos,
                   span<const std::uint8_t> is_anchor) noexcept {
    std::copy(cu_new.begin(), cu_new.end(), chunk_cu_.begin());
    std::fill(unwritten_.begin(), unwritten_.end(), std::uint8_t(chunk_rows() > 0));
    for (std::int32_t b = 0; b < batch_; ++b) {
      chunk_row_[b] = row_start_[b] + len_[b];
      for (std::int32_t t = cu_new[b]; t < cu_new[b + 1]; ++t) {
        const std::size_t row = std::size_t(chunk_row_[b] + t - cu_new[b]);
        pos_[row] = pos[t];
        anchor_[row] = is_anchor[t] != 0;
        next_pos_[b] = pos[t] + 1;
        if (is_anchor[t]) open_seg_start_[b] = pos[t] + 1;
      }
      len_[b] += cu_new[b + 1] - cu_new[b];
      cu_[b + 1] = cu_[b] + len_[b];
    }
    appended_ += cu_new[std::size_t(batch_)];
  }

  // What a reduction drops and moves (SPEC section 3), found without visiting rows that cannot
  // change. A held row may still be seen iff its position is at or above the local lower
  // bound of the next row (a non-anchor at next_pos in the open segment: still_visible), or it
  // is retained. That bound only grows, and the last reduction left only retained rows below
  // its own bound, so only rows between the two bounds can drop; every row after the first
  // that drops moves down.
  struct Reduction {
    RowMoves moves;                      // the rows that change place; cu_out: offsets after
    std::vector<std::int32_t> cu_moved;  // (B+1) sequence b's moves: [cu_moved[b], cu_moved[b+1])
    std::vector<std::int32_t> bound;     // (B) each sequence's lower bound now
  };
  Reduction plan_reduction() const {
    Reduction r;
    r.moves.cu_out.assign(1, 0);
    r.cu_moved.assign(1, 0);
    for (std::int32_t b = 0; b < batch_; ++b) {
      const std::int32_t bound =
          local_lower_bound(policy_, QueryInfo{next_pos_[b], open_seg_start_[b], false});
      const std::int32_t* pos = pos_.data() + row_start_[b];
      const auto row_at = [&](std::int32_t p) {  // first row at position p or above
        return std::int32_t(std::lower_bound(pos, pos + len_[b], p) - pos);
      };
      // Rows [0, settled): retained, in place. [settled, band): kept iff still visible, which
      // there means retained. [band, len): kept, and moved down if anything before them dropped.
      const std::int32_t settled = row_at(reduced_below_[b]), band = row_at(bound);
      std::int32_t kept = settled;
      const auto keep = [&](std::int32_t i) {
        if (kept < i)
          r.moves.src.push_back(row_start_[b] + i), r.moves.dst.push_back(row_start_[b] + kept);
        ++kept;
      };
      for (std::int32_t i = settled; i < band; ++i)
        if (still_visible(policy_, KeyInfo{pos[i], anchor_[std::size_t(row_start_[b] + i)] != 0},
                          next_pos_[b], open_seg_start_[b]))
          keep(i);
      if (kept == band)
        kept = len_[b];
      else
        for (std::int32_t i = band; i < len_[b]; ++i) keep(i);
      r.moves.cu_out.push_back(r.moves.cu_out.back() + kept);
      r.cu_moved.push_back(std::int32_t(r.moves.src.size()));
      r.bound.push_back(bound);
    }
    return r;
  }
  void commit_write(std::int32_t layer) noexcept { unwritten_[std::size_t(layer)] = 0; }
  // The host metadata after a reduction (the device cache's mirror: it moves its rows itself).
  void commit_reduction(const Reduction& r) noexcept {
    for (std::size_t i = 0; i < r.moves.src.size(); ++i) {
      pos_[std::size_t(r.moves.dst[i])] = pos_[std::size_t(r.moves.src[i])];
      anchor_[std::size_t(r.moves.dst[i])] = anchor_[std::size_t(r.moves.src[i])];
    }
    reduced_below_ = r.bound;
    for (std::int32_t b = 0; b < batch_; ++b) len_[b] = r.moves.cu_out[b + 1] - r.moves.cu_out[b];
    cu_ = r.moves.cu_out;
    std::fill(chunk_cu_.begin(), chunk_cu_.end(), 0);
  }

  std::int32_t layers_, batch_, heads_, dim_;
  MaskPolicy policy_;
  KVStorage storage_;
  bool growth_ = true;
  std::int32_t capacity_ = 0;
  std::vector<std::int32_t> len_;             // (B) rows held
  std::vector<std::int32_t> row_start_;       // (B) first row of each sequence: b * capacity
  std::vector<std::int32_t> cu_;              // (B+1) rows held, as offsets
  std::vector<std::int32_t> next_pos_;        // (B)
  std::vector<std::int32_t> open_seg_start_;  // (B)
  std::vector<std::int32_t> reduced_below_;   // (B) the last reduction's bound: only retained
                                              // rows lie below it
  std::vector<std::int32_t> pos_;             // (B * capacity) position of every row
  std::vector<std::uint8_t> anchor_;          // (B * capacity)
  std::int64_t appended_ = 0;                 // rows ever appended: what a full cache holds
  std::vector<std::int32_t> chunk_cu_;        // (B+1) the last append_rows()' cu_new
  std::vector<std::int32_t> chunk_row_;       // (B) the first row it added to each sequence
  std::vector<std::uint8_t> unwritten_;       // (layers) 1: write() of those rows still due
};

}  // namespace detail

template <class T>
class KVCache : public detail::KVCacheBook {
 public:
  // One layer.
  KVCache(std::int32_t batch, std::int32_t heads_kv, std::int32_t head_dim, MaskPolicy policy,
          std::int32_t initial_capacity_per_seq = 0, KVStorage storage = KVStorage::nhd)
      : KVCache(LayerCount{1}, batch, heads_kv, head_dim, policy, initial_capacity_per_seq,
                storage) {}
  // `layers` layers over the same rows.
  KVCache(LayerCount layers, std::int32_t batch, std::int32_t heads_kv, std::int32_t head_dim,
          MaskPolicy policy, std::int32_t initial_capacity_per_seq = 0,
          KVStorage storage = KVStorage::nhd)
      : KVCacheBook(layers, batch, heads_kv, head_dim, policy, initial_capacity_per_seq, storage,
                    "KVCache"),
        k_(layer_elements() * std::size_t(layers_)),
        v_(k_.size()) {}

  // One-layer caches: appends m_b rows to sequence b (rows already rotated) with their K and V.
  // k, v: (sum m_b, heads_kv, head_dim), any strides with head_dim contiguous; cu_new: (B+1);
  // pos: (sum m_b) true positions, above next_pos(b) - 1 and ascending; is_anchor: (sum m_b).
  void append(TensorView<const T, 3> k, TensorView<const T, 3> v, span<const std::int32_t> cu_new,
              span<const std::int32_t> pos, span<const std::uint8_t> is_anchor) {
    const char* fn = "KVCache::append";
    only_layer(fn);
    check_kv(k, v, k.shape[0], fn, "any rows, the cache's heads and head_dim");
    const std::int32_t capacity = plan_rows(cu_new, pos, is_anchor, k.shape[0], fn);
    if (capacity != capacity_) grow(capacity);
    commit_rows(cu_new, pos, is_anchor);
    copy_chunk(0, k, v);
  }

  // Appends m_b rows to sequence b for every layer (arguments as append()'s); their K and V
  // come from write(), one call per layer, before the next append_rows() or reduce().
  void append_rows(span<const std::int32_t> cu_new, span<const std::int32_t> pos,
                   span<const std::uint8_t> is_anchor) {
    const std::int32_t capacity =
        plan_rows(cu_new, pos, is_anchor, index_t(pos.size()), "KVCache::append_rows");
    if (capacity != capacity_) grow(capacity);
    commit_rows(cu_new, pos, is_anchor);
  }

  // Layer `layer`'s K and V of the last append_rows()' rows: (chunk_rows(), heads_kv, head_dim),
  // any strides with head_dim contiguous. Writing a layer again overwrites it.
  void write(std::int32_t layer, TensorView<const T, 3> k, TensorView<const T, 3> v) {
    const char* fn = "KVCache::write";
    check_layer(layer, fn);
    check_kv(k, v, chunk_rows(), fn, "the rows of the last append_rows()");
    copy_chunk(layer, k, v);
  }

  // Drops every row no future query can see from every layer; returns the rows dropped.
  std::int64_t reduce(int num_threads = 0) {
    check_written("KVCache::reduce");
    const Reduction r = plan_reduction();
    // Each layer's K and V move as the reduction says; positions and flags move once.
    for (std::int32_t l = 0; l < layers_; ++l) {
      const KVRows<T> rows{layer_view(k_, l), layer_view(v_, l)};
      detail::move_rows(KVRows<const T>(rows), rows, r.moves, true, num_threads);
    }
    const std::int64_t dropped = entries() - r.moves.cu_out.back();
    commit_reduction(r);
    return dropped;
  }

  // Fills the key side of attention: k, v, cu_seqlens_k, k_pos, k_is_anchor, maybe_k_seq_start.
  // The pointers stay valid until the next append that grows the cache; only k and v depend
  // on the layer. The one-argument form is for one-layer caches.
  template <class U>
  void bind_keys(AttentionArgs<U>& args) const {
    bind_keys(args, only_layer("KVCache::bind_keys"));
  }
  template <class U>
  void bind_keys(AttentionArgs<U>& args, std::int32_t layer) const {
    static_assert(std::is_same_v<U, T>, "attention must read the cache's element type");
    check_layer(layer, "KVCache::bind_keys");
    args.k = layer_view(k_, layer);
    args.v = layer_view(v_, layer);
    args.cu_seqlens_k = cu_.data();
    args.k_pos = pos_.data();
    args.k_is_anchor = anchor_.data();
    args.maybe_k_seq_start = row_start_.data();
  }

  // Bytes of K and V over all layers: held, ever appended, allocated.
  std::size_t bytes() const { return std::size_t(entries()) * row_bytes(); }
  std::size_t full_cache_bytes() const { return std::size_t(rows_appended()) * row_bytes(); }
  std::size_t allocated_bytes() const { return std::size_t(rows_allocated()) * row_bytes(); }

  // Copies of sequence b's rows, for tests and inspection.
  std::vector<std::int32_t> positions(std::int32_t b) const {
    const auto first = pos_.begin() + row_start_[check_seq(b)];
    return {first, first + len_[b]};
  }
  std::vector<std::uint8_t> anchor_flags(std::int32_t b) const {
    const auto first = anchor_.begin() + row_start_[check_seq(b)];
    return {first, first + len_[b]};
  }
  // (len, heads, dim) of one layer; the one-argument forms are for one-layer caches.
  std::vector<T> keys(std::int32_t b) const { return keys(b, only_layer("KVCache::keys")); }
  std::vector<T> values(std::int32_t b) const { return values(b, only_layer("KVCache::values")); }
  std::vector<T> keys(std::int32_t b, std::int32_t layer) const {
    return copy_rows(k_, b, layer, "KVCache::keys");
  }
  std::vector<T> values(std::int32_t b, std::int32_t layer) const {
    return copy_rows(v_, b, layer, "KVCache::values");
  }

 private:
  std::size_t row_bytes() const {
    return 2 * std::size_t(layers_) * std::size_t(heads_) * std::size_t(dim_) * sizeof(T);
  }
  std::size_t layer_elements() const { return std::size_t(rows_allocated()) * heads_ * dim_; }
  // Layer l of `store`, (layers, rows_allocated, heads, dim) with each layer in storage_ order.
  template <class Store>
  auto layer_view(Store& store, std::int32_t layer) const {
    return kv_view(store.data() + std::size_t(layer) * layer_elements(), storage_,
                   rows_allocated(), heads_, dim_);
  }
  // Row `from_row` of `from` to row `to_row` of `to`: one copy when both keep a row's heads
  // together (NHD), one per head otherwise.
  static void copy_row(const TensorView<const T, 3>& from, index_t from_row,
                       const TensorView<T, 3>& to, index_t to_row) {
    const index_t heads = from.shape[1], dim = from.shape[2];
    const bool together = heads == 1 || (from.stride[1] == dim && to.stride[1] == dim);
    for (index_t h = 0; h < heads; h += together ? heads : 1)
      std::memcpy(&to(to_row, h, 0), &from(from_row, h, 0),
                  std::size_t((together ? heads : 1) * dim) * sizeof(T));
  }
  // The chunk's K and V into their rows of `layer`.
  void copy_chunk(std::int32_t layer, const TensorView<const T, 3>& k,
                  const TensorView<const T, 3>& v) {
    const auto keys = layer_view(k_, layer), values = layer_view(v_, layer);
    for (std::int32_t b = 0; b < batch_; ++b)
      for (std::int32_t t = chunk_cu_[b]; t < chunk_cu_[b + 1]; ++t) {
        const index_t row = chunk_row_[b] + t - chunk_cu_[b];
        copy_row(k, t, keys, row);
        copy_row(v, t, values, row);
      }
    commit_write(layer);
  }
  std::vector<T> copy_rows(const std::vector<T>& store, std::int32_t b, std::int32_t layer,
                           const char* fn) const {
    const auto from = layer_view(store, std::int32_t(check_layer(layer, fn)));
    const std::int32_t n = len_[check_seq(b)];
    std::vector<T> rows(std::size_t(n) * heads_ * dim_);
    const auto to = make_view(rows.data(), n, heads_, dim_);
    for (std::int32_t i = 0; i < n; ++i) copy_row(from, row_start_[b] + i, to, i);
    return rows;
  }
  // Re-lays every sequence out with `capacity` rows; all allocation happens before any commit.
  void grow(std::int32_t capacity) {
    const index_t rows = index_t(batch_) * capacity;
    const std::size_t per_layer = std::size_t(rows) * heads_ * dim_;
    std::vector<T> k(per_layer * std::size_t(layers_)), v(k.size());
    std::vector<std::int32_t> pos;
    std::vector<std::uint8_t> is_anchor;
    grown_metadata(capacity, pos, is_anchor);
    for (std::int32_t l = 0; l < layers_; ++l) {
      const auto from_k = layer_view(k_, l), from_v = layer_view(v_, l);
      const auto to_k = kv_view(k.data() + l * per_layer, storage_, rows, heads_, dim_);
      const auto to_v = kv_view(v.data() + l * per_layer, storage_, rows, heads_, dim_);
      for (std::int32_t b = 0; b < batch_; ++b)
        for (std::int32_t i = 0; i < len_[b]; ++i) {
          const index_t to_row = index_t(b) * capacity + i, from_row = row_start_[b] + i;
          copy_row(from_k, from_row, to_k, to_row);
          copy_row(from_v, from_row, to_v, to_row);
        }
    }
    k_ = std::move(k), v_ = std::move(v);
    commit_growth(capacity, std::move(pos), std::move(is_anchor));
  }

  std::vector<T> k_;  // (layers, rows_allocated, heads_kv, head_dim), each layer in storage_ order
  std::vector<T> v_;  // (layers, rows_allocated, heads_kv, head_dim), each layer in storage_ order
};

}  // namespace ansan
