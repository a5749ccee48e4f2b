// ansan/compaction.hpp - stable compaction of KV-cache rows on the host (SPEC.md section 3).
//
// A cache reduction keeps some rows of each sequence and packs them, in their original order,
// at the front of the sequence's storage. Each row moves together with its position and anchor
// flag, so kept keys keep their original positions (they were rotated before being cached).
//
//   sequence rows  k0 k1 k2 k3 k4 k5     pos 0 1 2 3 4 5     is_anchor . . A . . .
//   keep            0  0  1  0  1  1     (AnLLM, open segment 3..5 after anchor 2)
//   compacted      k2 k4 k5              pos 2 4 5           is_anchor A . .
//
// Storage is described by a (rows, heads_kv, head_dim) TensorView whose strides say the layout
// (kv_view() builds both):
//   NHD, token-major  [rows][heads_kv][head_dim]   strides (H*D, D, 1)
//   HND, head-major   [heads_kv][rows][head_dim]   strides (D, rows*D, 1)
// A ragged batch (RaggedRows) gives each sequence's length by cu_seqlens (B+1); its rows start
// at maybe_seq_start[b] (a cache with spare room after each sequence) or, when that is null, at
// cu_seqlens[b] (packed). Per-token arrays that are not storage (keep flags) use the packed
// token order: token i of sequence b is entry cu_seqlens[b] + i.
//
// Entry points; each validates all of its arguments first and writes nothing on bad input:
//   keep_flags()          which keys some future query may still see (ansan::still_visible)
//   compact_kv()          out-of-place, by keep flags
//   compact_kv_indices()  out-of-place, by lists of kept sequence-local indices
//   compact_kv_inplace()  in place, by keep flags, for any keep pattern
// Rows move by memmove of a row's heads (or of runs of consecutive rows), scattered rows
// prefetched ahead, split over row chunks and heads on std::threads (at least 1 MiB each).
// The device versions are in ansan/cuda/compaction.cuh.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ansan/config.hpp"
#include "ansan/cpu/detail/parallel_for.hpp"
#include "ansan/detail/lower_bound.hpp"
#include "ansan/error.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "ansan/span.hpp"
#include "ansan/tensor.hpp"

namespace ansan {

enum class KVStorage : std::uint8_t {
  nhd,  // token-major [rows][heads_kv][head_dim]: a row's heads are contiguous
  hnd,  // head-major [heads_kv][rows][head_dim]: a head's rows are contiguous
};

inline const char* storage_name(KVStorage s) { return s == KVStorage::nhd ? "nhd" : "hnd"; }

// A (rows, heads, dim) view of a buffer of rows*heads*dim elements stored as `storage`.
template <class T>
TensorView<T, 3> kv_view(T* data, KVStorage storage, index_t rows, index_t heads, index_t dim) {
  TensorView<T, 3> v;
  v.data = data;
  v.shape[0] = rows, v.shape[1] = heads, v.shape[2] = dim;
  v.stride[2] = 1;
  if (storage == KVStorage::nhd)
    v.stride[0] = heads * dim, v.stride[1] = dim;
  else
    v.stride[0] = dim, v.stride[1] = rows * dim;
  return v;
}

// One buffer of KV rows and their metadata: row r of k, v, pos and is_anchor belong together.
// T is const for inputs. pos and is_anchor may both be null: then only K and V move.
template <class T>
struct KVRows {
  using pos_type = std::conditional_t<std::is_const_v<T>, const std::int32_t, std::int32_t>;
  using flag_type = std::conditional_t<std::is_const_v<T>, const std::uint8_t, std::uint8_t>;

  TensorView<T, 3> k;              // (rows, heads_kv, head_dim), innermost stride 1
  TensorView<T, 3> v;              // (rows, heads_kv, head_dim), innermost stride 1
  pos_type* pos = nullptr;         // (rows) sequence-local positions, or null
  flag_type* is_anchor = nullptr;  // (rows), or null

  ANSAN_HOST_DEVICE index_t rows() const { return k.shape[0]; }
  // Inputs are read-only: KVRows<float> passes where KVRows<const float> is expected.
  template <class U, class = std::enable_if_t<std::is_same_v<T, U>>>
  operator KVRows<const U>() const {
    return {k, v, pos, is_anchor};
  }
};

// Which rows of a KVRows buffer hold which sequence.
struct RaggedRows {
  std::int32_t batch = 0;
  const std::int32_t* cu_seqlens = nullptr;       // (B+1) packed offsets: lengths
  const std::int32_t* maybe_seq_start = nullptr;  // (B) first row of each sequence, or null

  ANSAN_HOST_DEVICE index_t row_begin(std::int32_t b) const {
    return maybe_seq_start ? maybe_seq_start[b] : cu_seqlens[b];
  }
  ANSAN_HOST_DEVICE std::int32_t len(std::int32_t b) const {
    return cu_seqlens[b + 1] - cu_seqlens[b];
  }
  ANSAN_HOST_DEVICE std::int64_t total() const { return cu_seqlens[batch]; }
};

namespace detail {

template <class T>
struct identity {
  using type = T;
};
template <class T>
using no_deduce = typename identity<T>::type;

// validate_cu_seqlens() with its messages built only when a scan finds a fault.
inline void validate_offsets(span<const std::int32_t> cu, std::int64_t total, const char* fn,
                             const char* prefix, const char* name) {
  bool ok = !cu.empty() && cu[0] == 0 && cu[cu.size() - 1] == total;
  for (std::size_t b = 1; ok && b < cu.size(); ++b) ok = cu[b] >= cu[b - 1];
  if (!ok) validate_cu_seqlens(cu, total, fn, concat(prefix, name).c_str());
}

// Shapes, strides and metadata pointers of a KVRows; `which` is "in" or "out".
template <class T>
void validate_kv_rows(const KVRows<T>& r, const char* fn, const char* which) {
  const std::string name(which);
  if (!(r.k.data || r.rows() == 0)) fail(fn, name + ".k.data", "null", "a buffer");
  if (!(r.v.data || r.rows() == 0)) fail(fn, name + ".v.data", "null", "a buffer");
  for (int d = 0; d < 3; ++d)
    if (r.v.shape[d] != r.k.shape[d])
      fail(fn, name + ".v.shape", shape_string(r.v), shape_string(r.k));
  if (r.k.shape[1] < 1 || r.k.shape[2] < 1)
    fail(fn, name + ".k.shape", shape_string(r.k), "(rows, heads_kv >= 1, head_dim >= 1)");
  if (r.k.stride[2] != 1 || r.v.stride[2] != 1)
    fail(fn, name + " innermost stride", concat(r.k.stride[2], "/", r.v.stride[2]),
         "1 (head_dim contiguous)");
  if ((r.pos == nullptr) != (r.is_anchor == nullptr))
    fail(fn, name + ".pos/is_anchor", "one null and one set", "both set or both null");
}

// Sequences [first[b], first[b] + rows[b]) must not share rows: each is written as a whole.
inline void validate_disjoint(const std::vector<index_t>& first, const std::vector<index_t>& rows,
                              const char* fn, const char* argument) {
  std::vector<std::pair<index_t, std::size_t>> order;  // (first row, sequence)
  for (std::size_t b = 0; b < first.size(); ++b)
    if (rows[b] > 0) order.emplace_back(first[b], b);
  std::sort(order.begin(), order.end());
  for (std::size_t j = 1; j < order.size(); ++j) {
    const std::size_t prev = order[j - 1].second, b = order[j].second;
    if (first[b] < first[prev] + rows[prev])
      fail(fn, concat(argument, "[", b, "]"), first[b],
           concat("no row of sequence ", prev, " (rows ", first[prev], "..",
                  first[prev] + rows[prev] - 1, "): sequences must not overlap"));
  }
}

// cu_seqlens monotone from 0, and every sequence's rows inside [0, rows).
inline void validate_ragged(const RaggedRows& s, index_t rows, const char* fn, const char* which) {
  if (s.batch < 0) fail(fn, concat(which, ".batch"), s.batch, ">= 0");
  if (!s.cu_seqlens) fail(fn, concat(which, ".cu_seqlens"), "null", "B+1 offsets");
  const span<const std::int32_t> cu(s.cu_seqlens, std::size_t(s.batch) + 1);
  validate_offsets(cu, cu[std::size_t(s.batch)], fn, which, ".cu_seqlens");
  for (std::int32_t b = 0; b < s.batch; ++b)
    if (s.row_begin(b) < 0 || s.row_begin(b) + s.len(b) > rows)
      fail(fn, concat(which, s.maybe_seq_start ? ".maybe_seq_start[" : ".cu_seqlens[", b, "]"),
           s.row_begin(b),
           concat("a first row in [0, ", rows - s.len(b), "] (sequence of ", s.len(b),
                  " rows in a buffer of ", rows, " rows)"));
}

// The rows to move: output row dst[i] gets input row src[i]; both ascending per sequence.
struct RowMoves {
  std::vector<index_t> src, dst;
  std::vector<std::int32_t> cu_out;  // (B+1) kept rows per sequence, as offsets
};

// Output row begins: maybe_out_seq_start, or packed by cu_out.
inline void fill_destinations(RowMoves& m, const std::int32_t* maybe_out_seq_start,
                              std::int32_t batch) {
  m.dst.resize(m.src.size());
  for (std::int32_t b = 0; b < batch; ++b) {
    const index_t first = maybe_out_seq_start ? maybe_out_seq_start[b] : m.cu_out[b];
    for (std::int32_t i = m.cu_out[b]; i < m.cu_out[b + 1]; ++i) m.dst[i] = first + i - m.cu_out[b];
  }
}

inline RowMoves moves_from_flags(const RaggedRows& in, span<const std::uint8_t> keep) {
  RowMoves m;
  m.cu_out.assign(std::size_t(in.batch) + 1, 0);
  for (std::int32_t b = 0; b < in.batch; ++b) {
    for (std::int32_t i = 0; i < in.len(b); ++i)
      if (keep[std::size_t(in.cu_seqlens[b] + i)]) m.src.push_back(in.row_begin(b) + i);
    m.cu_out[b + 1] = std::int32_t(m.src.size());
  }
  return m;
}

// Every output sequence fits in the output buffer, and no two share a row.
inline void validate_destinations(const std::vector<std::int32_t>& cu_out,
                                  const std::int32_t* maybe_out_seq_start, index_t out_rows,
                                  const char* fn) {
  const auto batch = std::size_t(cu_out.size() - 1);
  const char* argument = maybe_out_seq_start ? "maybe_out_seq_start" : "cu_seqlens_out (packed)";
  std::vector<index_t> first(batch), kept(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    kept[b] = cu_out[b + 1] - cu_out[b];
    first[b] = maybe_out_seq_start ? maybe_out_seq_start[b] : cu_out[b];
    if (first[b] < 0 || first[b] + kept[b] > out_rows)
      fail(fn, concat(argument, "[", b, "]"), first[b],
           concat("a first row in [0, ", out_rows - kept[b], "] for ", kept[b],
                  " kept rows (out has ", out_rows, " rows)"));
  }
  validate_disjoint(first, kept, fn, argument);
}

// Asks for the cache lines (up to 4 KiB) of a row that will be copied soon (no-op where
// unsupported).
inline void prefetch(const void* row, std::size_t bytes) {
#if defined(__GNUC__)
  const auto* p = static_cast<const char*>(row);
  for (std::size_t b = 0; b < bytes && b < 4096; b += 64) __builtin_prefetch(p + b);
#else
  (void)row, (void)bytes;
#endif
}

// Moves rows src[i] -> dst[i] of K, V and metadata. A "head block" is a range of heads that is
// contiguous within a row; when a block is a whole row and rows are contiguous, runs of
// consecutive rows move as one copy. In place (dst[i] <= src[i], ascending), each head block is
// one task walking rows upwards: a row is read before any later row's copy can overwrite it.
template <class T>
void move_rows(const KVRows<const T>& in, const KVRows<T>& out, const RowMoves& m, bool in_place,
               int num_threads) {
  const index_t moved = index_t(m.src.size());
  if (moved == 0) return;
  const index_t heads = in.k.shape[1], dim = in.k.shape[2];
  const bool heads_contiguous = heads == 1 || (in.k.stride[1] == dim && in.v.stride[1] == dim &&
                                               out.k.stride[1] == dim && out.v.stride[1] == dim);
  static const int hardware = int(std::max(1u, std::thread::hardware_concurrency()));  // reads /sys
  const index_t bytes_per_row = 2 * heads * dim * index_t(sizeof(T));
  // A thread costs tens of microseconds to start: give each at least 1 MiB to move.
  const int workers = int(std::min<index_t>(num_threads > 0 ? num_threads : hardware,
                                            std::max<index_t>(1, moved * bytes_per_row >> 20)));
  // Whole rows out of place; in place, split the heads between the workers.
  const index_t heads_per_block = !heads_contiguous ? 1
                                  : in_place        ? (heads + workers - 1) / workers
                                                    : heads;
  const index_t head_blocks = (heads + heads_per_block - 1) / heads_per_block;
  // Kept rows are scattered: keep ~16 KiB of later rows' loads in flight while copying.
  const index_t block_bytes = heads_per_block * dim * index_t(sizeof(T));
  const index_t prefetch_rows = std::clamp<index_t>(16384 / block_bytes, 2, 64);
  const index_t rows_per_chunk =
      in_place ? moved : std::max<index_t>(64, (index_t(1) << 18) / bytes_per_row);
  const index_t chunks = (moved + rows_per_chunk - 1) / rows_per_chunk;
  const auto tasks = std::int64_t(head_blocks * chunks);

  const auto move_block = [&](const TensorView<const T, 3>& from, const TensorView<T, 3>& to,
                              index_t h0, index_t h1, index_t i0, index_t i1) {
    const index_t block = (h1 - h0) * dim;
    const bool runs = from.stride[0] == block && to.stride[0] == block;
    for (index_t i = i0; i < i1;) {
      index_t n = 1;
      if (runs)
        while (i + n < i1 && m.src[i + n] == m.src[i] + n && m.dst[i + n] == m.dst[i] + n) ++n;
      if (i + prefetch_rows < i1)
        prefetch(&from(m.src[i + prefetch_rows], h0, 0), std::size_t(block) * sizeof(T));
      const T* s = &from(m.src[i], h0, 0);
      T* d = &to(m.dst[i], h0, 0);
      if (s != d) std::memmove(d, s, std::size_t(n * block) * sizeof(T));
      i += n;
    }
  };
  cpu::detail::parallel_for(
      tasks, int(std::min<std::int64_t>(workers, tasks)), [&](std::int64_t task, int) {
        const index_t hb = task % head_blocks, chunk = task / head_blocks;
        const index_t i0 = chunk * rows_per_chunk, i1 = std::min(moved, i0 + rows_per_chunk);
        const index_t h0 = hb * heads_per_block, h1 = std::min(heads, h0 + heads_per_block);
        move_block(in.k, out.k, h0, h1, i0, i1);
        move_block(in.v, out.v, h0, h1, i0, i1);
        if (hb == 0 && in.pos && out.pos)
          for (index_t i = i0; i < i1; ++i) {
            out.pos[m.dst[i]] = in.pos[m.src[i]];
            out.is_anchor[m.dst[i]] = in.is_anchor[m.src[i]];
          }
      });
}

// Index arithmetic of the device gather (ansan/cuda/compaction.cuh), here so that a plain C++
// compiler can test it. Output row i of sequence b has rank i - cu_out[b] in its sequence.
enum class SourceIndex : std::uint8_t {
  identity,    // it reads the row of the same rank (appending a chunk, copying scratch back)
  kept_local,  // src[i] is the sequence-local row it reads (compact_kv_indices)
  kept_token,  // src[i] is the packed token it reads, cu_seqlens[b] + local (a select's output)
};
struct RowPair {
  index_t src, dst;
};
ANSAN_HOST_DEVICE RowPair gather_rows_of(index_t i, std::int32_t b, const std::int32_t* cu_out,
                                         const RaggedRows& in_seqs,
                                         const std::int32_t* maybe_out_seq_start,
                                         const std::int32_t* src, SourceIndex source) {
  const index_t rank = i - cu_out[b];
  index_t local = rank;
  if (source == SourceIndex::kept_local) local = src[i];
  if (source == SourceIndex::kept_token) local = src[i] - in_seqs.cu_seqlens[b];
  return {in_seqs.row_begin(b) + local,
          (maybe_out_seq_start ? maybe_out_seq_start[b] : cu_out[b]) + rank};
}
// Entries of the ascending list kept[0, count) below `token`: the new offset of a sequence
// that starts at packed token `token`.
ANSAN_HOST_DEVICE std::int32_t count_below(const std::int32_t* kept, std::int32_t count,
                                           std::int32_t token) {
  return lower_bound_index(kept, 0, count, token);
}

template <class T>
void validate_compaction_pair(const KVRows<const T>& in, const KVRows<T>& out, const char* fn) {
  validate_kv_rows(in, fn, "in");
  validate_kv_rows(out, fn, "out");
  if (!(out.k.shape[1] == in.k.shape[1] && out.k.shape[2] == in.k.shape[2]))
    fail(fn, "out.k.shape", shape_string(out.k),
         concat("(rows, ", in.k.shape[1], ", ", in.k.shape[2], ") like in.k"));
  require(out.pos || !in.pos || out.rows() == 0, fn, "out.pos", "null",
          "an array, since in.pos is set (metadata moves with the rows)");
}

}  // namespace detail

// keep[cu_seqlens[b] + i] = may key i of sequence b still be seen by a query at next_pos[b] or
// later, in the open segment that starts at open_seg_start[b] (ansan::still_visible).
// pos and is_anchor are indexed by row (seqs.row_begin(b) + i); keep by packed token.
inline void keep_flags(const MaskPolicy& policy, span<const std::int32_t> pos,
                       span<const std::uint8_t> is_anchor, const RaggedRows& seqs,
                       span<const std::int32_t> next_pos, span<const std::int32_t> open_seg_start,
                       span<std::uint8_t> keep) {
  const char* fn = "keep_flags";
  validate_policy(policy, fn);
  if (is_anchor.size() != pos.size())
    fail(fn, "is_anchor.size()", is_anchor.size(), detail::concat("pos.size() = ", pos.size()));
  detail::validate_ragged(seqs, index_t(pos.size()), fn, "seqs");
  if (keep.size() != std::size_t(seqs.total()))
    fail(fn, "keep.size()", keep.size(),
         detail::concat("the token count cu_seqlens[B] = ", seqs.total()));
  if (!(next_pos.size() == std::size_t(seqs.batch) && open_seg_start.size() == next_pos.size()))
    fail(fn, "next_pos.size()/open_seg_start.size()",
         detail::concat(next_pos.size(), "/", open_seg_start.size()),
         detail::concat("batch = ", seqs.batch));
  for (std::int32_t b = 0; b < seqs.batch; ++b)
    if (open_seg_start[b] < 0 || open_seg_start[b] > next_pos[b])
      fail(fn, detail::concat("open_seg_start[", b, "]"), open_seg_start[b],
           detail::concat("a position in [0, next_pos[", b, "] = ", next_pos[b], "]"));
  for (std::int32_t b = 0; b < seqs.batch; ++b)
    for (std::int32_t i = 0; i < seqs.len(b); ++i) {
      const auto row = std::size_t(seqs.row_begin(b) + i);
      keep[std::size_t(seqs.cu_seqlens[b] + i)] = still_visible(
          policy, KeyInfo{pos[row], is_anchor[row] != 0}, next_pos[b], open_seg_start[b]);
    }
}

// The same for a whole-text layout: the future continues right after each sequence's end.
inline std::vector<std::uint8_t> keep_flags(const MaskPolicy& policy, const AnchorLayout& layout) {
  std::vector<std::int32_t> next_pos(std::size_t(layout.batch())), open(next_pos.size());
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    const std::int32_t anchors = layout.cu_anchors[b + 1] - layout.cu_anchors[b];
    next_pos[b] = layout.seq_len(b);
    open[b] = anchors ? layout.anchor_pos[std::size_t(layout.cu_anchors[b + 1] - 1)] + 1 : 0;
  }
  std::vector<std::uint8_t> keep(layout.is_anchor.size());
  keep_flags(policy, layout.pos, layout.is_anchor,
             RaggedRows{layout.batch(), layout.cu_seqlens.data(), nullptr}, next_pos, open, keep);
  return keep;
}

// Out-of-place compaction by flags: the kept rows of sequence b, in order, go to out rows
// maybe_out_seq_start[b] + i (or cu_seqlens_out[b] + i, packed); cu_seqlens_out (B+1) gets the
// kept counts as offsets. keep: (cu_seqlens[B]) in packed token order. in and out must not
// overlap (use compact_kv_inplace for that).
template <class T>
void compact_kv(const KVRows<const detail::no_deduce<T>>& in, const RaggedRows& in_seqs,
                span<const std::uint8_t> keep, const KVRows<T>& out,
                span<std::int32_t> cu_seqlens_out,
                const std::int32_t* maybe_out_seq_start = nullptr, int num_threads = 0) {
  const char* fn = "compact_kv";
  detail::validate_compaction_pair(in, out, fn);
  detail::validate_ragged(in_seqs, in.rows(), fn, "in_seqs");
  if (keep.size() != std::size_t(in_seqs.total()))
    fail(fn, "keep.size()", keep.size(),
         detail::concat("the token count in_seqs.cu_seqlens[B] = ", in_seqs.total()));
  if (cu_seqlens_out.size() != std::size_t(in_seqs.batch) + 1)
    fail(fn, "cu_seqlens_out.size()", cu_seqlens_out.size(),
         detail::concat("B+1 = ", in_seqs.batch + 1));
  detail::RowMoves moves = detail::moves_from_flags(in_seqs, keep);
  detail::validate_destinations(moves.cu_out, maybe_out_seq_start, out.rows(), fn);
  detail::fill_destinations(moves, maybe_out_seq_start, in_seqs.batch);
  detail::move_rows(in, out, moves, false, num_threads);
  std::copy(moves.cu_out.begin(), moves.cu_out.end(), cu_seqlens_out.begin());
}

// Out-of-place compaction by index lists: sequence b keeps its rows keep_index[cu_keep[b]] ..
// keep_index[cu_keep[b+1]-1] (sequence-local, strictly increasing), which go to out rows
// maybe_out_seq_start[b] + i (or cu_keep[b] + i). The output lengths are cu_keep.
template <class T>
void compact_kv_indices(const KVRows<const detail::no_deduce<T>>& in, const RaggedRows& in_seqs,
                        span<const std::int32_t> keep_index, span<const std::int32_t> cu_keep,
                        const KVRows<T>& out, const std::int32_t* maybe_out_seq_start = nullptr,
                        int num_threads = 0) {
  const char* fn = "compact_kv_indices";
  detail::validate_compaction_pair(in, out, fn);
  detail::validate_ragged(in_seqs, in.rows(), fn, "in_seqs");
  if (cu_keep.size() != std::size_t(in_seqs.batch) + 1)
    fail(fn, "cu_keep.size()", cu_keep.size(), detail::concat("B+1 = ", in_seqs.batch + 1));
  detail::validate_offsets(cu_keep, std::int64_t(keep_index.size()), fn, "", "cu_keep");
  detail::RowMoves moves;
  moves.cu_out.assign(cu_keep.begin(), cu_keep.end());
  moves.src.resize(keep_index.size());
  for (std::int32_t b = 0; b < in_seqs.batch; ++b)
    for (std::int32_t j = cu_keep[b]; j < cu_keep[b + 1]; ++j) {
      const std::int32_t lo = j > cu_keep[b] ? keep_index[j - 1] + 1 : 0;
      if (keep_index[j] < lo || keep_index[j] >= in_seqs.len(b))
        fail(fn, detail::concat("keep_index[", j, "]"), keep_index[j],
             detail::concat("an index in [", lo, ", ", in_seqs.len(b), ") of sequence ", b,
                            " (strictly increasing)"));
      moves.src[j] = in_seqs.row_begin(b) + keep_index[j];
    }
  detail::validate_destinations(moves.cu_out, maybe_out_seq_start, out.rows(), fn);
  detail::fill_destinations(moves, maybe_out_seq_start, in_seqs.batch);
  detail::move_rows(in, out, moves, false, num_threads);
}

// In-place compaction by flags, correct for every keep pattern: each sequence's kept rows move
// to the front of its own rows (seqs.maybe_seq_start set) or the batch is repacked
// (cu_seqlens_out[b] + i). Either way a row only moves to a lower or equal index, so one upward
// pass per head never overwrites a row it has yet to read. cu_seqlens_out (B+1) may be
// seqs.cu_seqlens itself.
template <class T>
void compact_kv_inplace(const KVRows<T>& rows, const RaggedRows& seqs,
                        span<const std::uint8_t> keep, span<std::int32_t> cu_seqlens_out,
                        int num_threads = 0) {
  const char* fn = "compact_kv_inplace";
  detail::validate_kv_rows(rows, fn, "rows");
  detail::validate_ragged(seqs, rows.rows(), fn, "seqs");
  if (keep.size() != std::size_t(seqs.total()))
    fail(fn, "keep.size()", keep.size(),
         detail::concat("the token count seqs.cu_seqlens[B] = ", seqs.total()));
  if (cu_seqlens_out.size() != std::size_t(seqs.batch) + 1)
    fail(fn, "cu_seqlens_out.size()", cu_seqlens_out.size(),
         detail::concat("B+1 = ", seqs.batch + 1));
  if (seqs.maybe_seq_start) {
    std::vector<index_t> first(std::size_t(seqs.batch)), len(first.size());
    for (std::int32_t b = 0; b < seqs.batch; ++b)
      first[b] = seqs.row_begin(b), len[b] = seqs.len(b);
    detail::validate_disjoint(first, len, fn, "seqs.maybe_seq_start");
  }
  detail::RowMoves moves = detail::moves_from_flags(seqs, keep);
  detail::fill_destinations(moves, seqs.maybe_seq_start, seqs.batch);
  detail::move_rows(KVRows<const T>(rows), rows, moves, true, num_threads);
  std::copy(moves.cu_out.begin(), moves.cu_out.end(), cu_seqlens_out.begin());
}

}  // namespace ansan
