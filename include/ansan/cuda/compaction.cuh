// ansan/cuda/compaction.cuh - stable compaction of KV-cache rows on the GPU, CUB style.
//
// The device twins of ansan/compaction.hpp: the same KVRows / RaggedRows descriptions (now of
// device memory), the same results bit for bit. Like CUB's device algorithms they
//   - never allocate: call once with d_temp_storage == nullptr to get temp_storage_bytes, then
//     again with that much device memory (compact_kv_indices and keep_flags need none);
//   - are stream-ordered, never synchronise, and return the first failing cudaError_t;
//   - check on the host what the host can see (shapes, strides, null pointers) and throw
//     std::invalid_argument; device arrays (offsets, flags) are trusted. ansan::cuda::KVCache
//     validates its input on host copies before calling them.
//
//   d_keep          [0, 0, 1, 0, 1, 1 | 1, 0]          in_seqs.cu_seqlens = [0, 6, 8]
//   compact_kv(...)
//   d_cu_seqlens_out <-- [0, 3, 4]
//   out rows        <-- [r2, r4, r5 | r6]               (K, V, pos, is_anchor alike)
//
// How: CUB's DeviceSelect::Flagged turns the flags into the ascending list of kept tokens;
// a tiny kernel binary-searches that list for the new offsets; then a gather kernel copies each
// kept (row, head) with 16-byte loads and stores when head_dim * sizeof(T), the strides and the
// pointers allow it, 4-byte or element-wise ones otherwise. The number of kept rows stays on the
// device: the gather is launched for every input row and rows beyond the count return at once.
//
// In place: blocks of one kernel run in no fixed order, so a block could overwrite a row that
// another block has yet to read. Where every sequence keeps its own rows (maybe_seq_start, as in
// ansan::cuda::KVCache), rows only move down inside their sequence, so one block per
// (sequence, head) can walk them in order, reading a chunk before writing it, and skip the
// rows already in place (compact_in_sequences_kernel). A repacked batch moves rows across
// sequences, so there compact_kv_inplace runs in two phases through scratch rows carved from
// the temporary storage (room for every input row's K, V, position and flag): gather the kept
// rows into the scratch, then copy the scratch back; that temporary storage is about as large
// as the rows themselves.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ansan/compaction.hpp"
#include "ansan/config.hpp"
#include "ansan/cuda/detail/device_algorithms.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/layout_steps.hpp"  // sequence_of()
#include "ansan/cuda_check.hpp"
#include "ansan/error.hpp"
#include "ansan/policy.hpp"

namespace ansan::cuda {

namespace detail {

using ansan::detail::SourceIndex;

template <class T>
struct GatherParams {
  KVRows<const T> in;                       // device rows read
  KVRows<T> out;                            // device rows written
  RaggedRows in_seqs;                       // device offsets of the input
  const std::int32_t* cu_out;               // (B+1) output rank offsets
  const std::int32_t* maybe_out_seq_start;  // (B) first output row per sequence, or null: cu_out
  const std::int32_t* src;                  // (output rows) source indices, unless identity
  const std::int32_t* maybe_num_out;        // device count of output rows, or null: rows_bound
  index_t rows_bound;                       // output rows launched for
  SourceIndex source;
};

// One output row per blockDim.x threads (threadIdx.y picks the row); each thread copies Vec-sized
// pieces of the row's heads. Vec is uint4 (16 bytes), unsigned (4 bytes) or T itself.
template <class Vec, class T>
__global__ void gather_rows_kernel(const GatherParams<T> p) {
  const index_t dim = p.in.k.shape[2], heads = p.in.k.shape[1];
  const index_t vec_per_head = dim * index_t(sizeof(T)) / index_t(sizeof(Vec));
  const index_t vec_per_row = heads * vec_per_head;
  const index_t rows = p.maybe_num_out ? index_t(*p.maybe_num_out) : p.rows_bound;
  const std::int32_t batch = p.in_seqs.batch;
  for (index_t i = index_t(blockIdx.x) * blockDim.y + threadIdx.y; i < rows;
       i += index_t(gridDim.x) * blockDim.y) {
    const std::int32_t b = sequence_of(p.cu_out, batch, i);
    const ansan::detail::RowPair row = ansan::detail::gather_rows_of(
        i, b, p.cu_out, p.in_seqs, p.maybe_out_seq_start, p.src, p.source);
    const index_t src_row = row.src, dst_row = row.dst;
    for (index_t w = threadIdx.x; w < vec_per_row; w += blockDim.x) {
      const index_t h = w / vec_per_head, piece = w % vec_per_head;
      const Vec* g_k_src = reinterpret_cast<const Vec*>(&p.in.k(src_row, h, 0));
      const Vec* g_v_src = reinterpret_cast<const Vec*>(&p.in.v(src_row, h, 0));
      reinterpret_cast<Vec*>(&p.out.k(dst_row, h, 0))[piece] = g_k_src[piece];
      reinterpret_cast<Vec*>(&p.out.v(dst_row, h, 0))[piece] = g_v_src[piece];
    }
    if (threadIdx.x == 0 && p.in.pos && p.out.pos) {
      p.out.pos[dst_row] = p.in.pos[src_row];
      p.out.is_anchor[dst_row] = p.in.is_anchor[src_row];
    }
  }
}

// cu_out[b] = number of kept tokens before cu_seqlens[b] (lower bound in the ascending list).
__global__ void kept_offsets_kernel(const std::int32_t* d_kept, const std::int32_t* d_num_kept,
                                    const std::int32_t* d_cu_seqlens, std::int32_t batch,
                                    std::int32_t* d_cu_out) {
  const std::int32_t b = std::int32_t(blockIdx.x * blockDim.x + threadIdx.x);
  if (b > batch) return;
  d_cu_out[b] = ansan::detail::count_below(d_kept, *d_num_kept, d_cu_seqlens[b]);
}

__global__ void keep_flags_kernel(const MaskPolicy policy, const std::int32_t* d_pos,
                                  const std::uint8_t* d_is_anchor, const RaggedRows seqs,
                                  std::int64_t total, const std::int32_t* d_next_pos,
                                  const std::int32_t* d_open_seg_start, std::uint8_t* d_keep) {
  for (index_t t = index_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += index_t(gridDim.x) * blockDim.x) {
    const std::int32_t b = sequence_of(seqs.cu_seqlens, seqs.batch, t);
    const index_t row = seqs.row_begin(b) + t - seqs.cu_seqlens[b];
    d_keep[t] = still_visible(policy, KeyInfo{d_pos[row], d_is_anchor[row] != 0}, d_next_pos[b],
                              d_open_seg_start[b]);
  }
}

// In place within each sequence's own rows (RaggedRows::maybe_seq_start set): the kept row of
// rank r in sequence b moves to seq_start[b] + r, so rows stay in their sequence and only move
// down. One block per (sequence, head, layer) walks the sequence's kept rows in rank order, a
// chunk at a time, reading all of a chunk (into shared memory) before writing any of it: a
// chunk's destinations may be some of its own sources, but lie below every later chunk's
// sources, so no row is overwritten before it is read, and blocks never share a byte. Ranks
// before the first dropped row are already in place and skipped, so a reduction that drops a
// closed segment near the end moves only the rows after it.
//
// Where one sequence's rows go: ranks [first, end) move to rows row0 + first .. row0 + end - 1,
// rank r's source is row source_base + sources[r - first]; ranks below first stay.
struct SequenceMoves {
  index_t row0, source_base;
  std::int32_t first, end;
  const std::int32_t* sources;
  ANSAN_DEVICE index_t source(std::int32_t r) const { return source_base + sources[r - first]; }
};

// The moves as compact_kv_inplace finds them on the device: select_kept's ascending kept tokens
// and offsets, for every sequence. Rank r's source is token kept[cu_out[b] + r] >= r; the gap
// never shrinks with r, so the first rank that moves is found by bisection.
struct SelectedMoves {
  RaggedRows seqs;            // device offsets and first rows
  const std::int32_t* kept;   // ascending kept packed tokens
  const std::int32_t* cu_out; // (B+1) sequence b's kept tokens: kept[cu_out[b] .. cu_out[b+1])
  std::int32_t sequences() const { return seqs.batch; }
  ANSAN_DEVICE SequenceMoves operator()(std::int32_t b) const {
    const std::int32_t* ranked = kept + cu_out[b];
    const std::int32_t count = cu_out[b + 1] - cu_out[b], token0 = seqs.cu_seqlens[b];
    std::int32_t lo = 0, hi = count;
    while (lo < hi) {
      const std::int32_t mid = (lo + hi) / 2;
      if (ranked[mid] - token0 > mid)
        hi = mid;
      else
        lo = mid + 1;
    }
    const index_t row0 = seqs.row_begin(b);
    return {row0, row0 - token0, lo, count, ranked + lo};
  }
};

// The moves as ansan::cuda::KVCache finds them on the host, from its mirror: only the sequences
// with rows to move, each four ints of `table` (row0, first, end, where in `table` its source
// rows start), then the source rows.
struct ListedMoves {
  const std::int32_t* table;  // device
  std::int32_t moving;        // sequences listed
  std::int32_t sequences() const { return moving; }
  ANSAN_DEVICE SequenceMoves operator()(std::int32_t j) const {
    const std::int32_t* entry = table + 4 * j;
    return {entry[0], 0, entry[1], entry[2], table + entry[3]};
  }
};
// ListedMoves' table from the rows that change place (ansan/compaction.hpp's RowMoves, here
// only those: sequence b's in moves.src / dst [cu_moved[b], cu_moved[b+1]), ascending, after
// them none in place; moves.cu_out: the offsets after). Appends it to `table`; returns the
// sequences listed.
inline std::int32_t append_move_table(const ansan::detail::RowMoves& moves,
                                      const std::int32_t* cu_moved, const std::int32_t* seq_start,
                                      std::int32_t batch, std::vector<std::int32_t>& table) {
  std::int32_t moving = 0;
  for (std::int32_t b = 0; b < batch; ++b) moving += cu_moved[b + 1] > cu_moved[b];
  std::int32_t sources = 4 * moving;  // where the next sequence's sources start in the table
  for (std::int32_t b = 0; b < batch; ++b) {
    if (cu_moved[b + 1] == cu_moved[b]) continue;
    const auto first = std::int32_t(moves.dst[std::size_t(cu_moved[b])] - seq_start[b]);
    table.insert(table.end(),
                 {seq_start[b], first, moves.cu_out[b + 1] - moves.cu_out[b], sources});
    sources += cu_moved[b + 1] - cu_moved[b];
  }
  for (std::int32_t b = 0; b < batch; ++b)
    for (std::int32_t i = cu_moved[b]; i < cu_moved[b + 1]; ++i)
      table.push_back(std::int32_t(moves.src[std::size_t(i)]));
  return moving;
}

template <class T, class Moves>
struct InSequenceParams {
  KVRows<T> rows;             // layer 0; positions and flags move with layer 0's head-0 blocks
  index_t layer_stride;       // elements from one layer's K (and V) to the next's
  Moves moves;                // SelectedMoves or ListedMoves
  std::int32_t chunk_rows;    // rows per chunk, <= kInSequenceChunk
};
constexpr std::int32_t kInSequenceChunk = 256;
constexpr std::size_t kInSequenceSliceBytes = 16 * 1024;  // K and V of a chunk's head slices

template <class Vec, class T, class Moves>
__global__ void compact_in_sequences_kernel(const InSequenceParams<T, Moves> p) {
  const SequenceMoves m = p.moves(std::int32_t(blockIdx.x));
  const index_t head = blockIdx.y, layer = blockIdx.z;
  const index_t vec_per_slice = p.rows.k.shape[2] * index_t(sizeof(T)) / index_t(sizeof(Vec));
  const index_t layer_offset = layer * p.layer_stride;
  const bool metadata = p.rows.pos && head == 0 && layer == 0;
  auto* s_pos = dynamic_shared_memory<std::int32_t>();
  auto* s_flag = reinterpret_cast<std::uint8_t*>(s_pos + kInSequenceChunk);
  auto* s_k = reinterpret_cast<Vec*>(s_flag + kInSequenceChunk);
  Vec* s_v = s_k + p.chunk_rows * vec_per_slice;
  for (std::int32_t r0 = m.first; r0 < m.end; r0 += p.chunk_rows) {
    const std::int32_t rows = m.end - r0 < p.chunk_rows ? m.end - r0 : p.chunk_rows;
    for (index_t w = threadIdx.x; w < rows * vec_per_slice; w += blockDim.x) {
      const index_t src = m.source(r0 + std::int32_t(w / vec_per_slice));
      const index_t piece = w % vec_per_slice;
      s_k[w] = reinterpret_cast<const Vec*>(&p.rows.k(src, head, 0) + layer_offset)[piece];
      s_v[w] = reinterpret_cast<const Vec*>(&p.rows.v(src, head, 0) + layer_offset)[piece];
    }
    for (std::int32_t i = std::int32_t(threadIdx.x); metadata && i < rows; i += blockDim.x) {
      const index_t src = m.source(r0 + i);
      s_pos[i] = p.rows.pos[src];
      s_flag[i] = p.rows.is_anchor[src];
    }
    __syncthreads();  // the chunk read before any of it is written
    for (index_t w = threadIdx.x; w < rows * vec_per_slice; w += blockDim.x) {
      const index_t dst = m.row0 + r0 + w / vec_per_slice, piece = w % vec_per_slice;
      reinterpret_cast<Vec*>(&p.rows.k(dst, head, 0) + layer_offset)[piece] = s_k[w];
      reinterpret_cast<Vec*>(&p.rows.v(dst, head, 0) + layer_offset)[piece] = s_v[w];
    }
    for (std::int32_t i = std::int32_t(threadIdx.x); metadata && i < rows; i += blockDim.x) {
      p.rows.pos[m.row0 + r0 + i] = s_pos[i];
      p.rows.is_anchor[m.row0 + r0 + i] = s_flag[i];
    }
    // No barrier here: a thread reuses only its own shared slots, and the next chunk reads
    // rows above every row this one writes.
  }
}

template <class Vec, class T>
bool vectorisable(const KVRows<const T>& in, const KVRows<T>& out) {
  const auto fits = [](const auto& view) {
    const index_t bytes_per_head = view.shape[2] * index_t(sizeof(T));
    return bytes_per_head % index_t(sizeof(Vec)) == 0 &&
           reinterpret_cast<std::uintptr_t>(view.data) % sizeof(Vec) == 0 &&
           view.stride[0] * index_t(sizeof(T)) % index_t(sizeof(Vec)) == 0 &&
           view.stride[1] * index_t(sizeof(T)) % index_t(sizeof(Vec)) == 0;
  };
  return fits(in.k) && fits(in.v) && fits(out.k) && fits(out.v);
}

template <class Vec, class T>
cudaError_t launch_gather_as(const GatherParams<T>& p, cudaStream_t stream) {
  const index_t vec_per_row =
      p.in.k.shape[1] * p.in.k.shape[2] * index_t(sizeof(T)) / index_t(sizeof(Vec));
  const unsigned row_threads = vec_per_row >= 128 ? 128 : vec_per_row > 32 ? 64 : 32;
  const dim3 block(row_threads, 256 / row_threads);
  const index_t blocks = (p.rows_bound + block.y - 1) / block.y;
  const unsigned grid = unsigned(blocks < 65536 ? blocks : 65536);  // grid-stride beyond
  return launch_kernel(gather_rows_kernel<Vec, T>, {dim3(grid), block, 0}, stream, p);
}

// Gathers with the widest access every view allows.
template <class T>
cudaError_t launch_gather(const GatherParams<T>& p, cudaStream_t stream) {
  if (p.rows_bound == 0) return cudaSuccess;
  if (vectorisable<uint4>(p.in, p.out)) return launch_gather_as<uint4>(p, stream);
  if (vectorisable<unsigned>(p.in, p.out)) return launch_gather_as<unsigned>(p, stream);
  return launch_gather_as<T>(p, stream);
}

template <class Vec, class T, class Moves>
cudaError_t launch_in_sequences_as(const InSequenceParams<T, Moves>& p, std::int32_t layers,
                                   cudaStream_t stream) {
  const index_t heads = p.rows.k.shape[1];
  const std::size_t slice_bytes = std::size_t(p.rows.k.shape[2]) * sizeof(T);
  InSequenceParams<T, Moves> q = p;
  q.chunk_rows = std::int32_t(std::min<std::size_t>(
      kInSequenceChunk, std::max<std::size_t>(1, kInSequenceSliceBytes / (2 * slice_bytes))));
  const std::size_t smem = kInSequenceChunk * (sizeof(std::int32_t) + 1) +
                           2 * std::size_t(q.chunk_rows) * slice_bytes;
  return launch_kernel(compact_in_sequences_kernel<Vec, T, Moves>,
                       {dim3(unsigned(p.moves.sequences()), unsigned(heads > 0 ? heads : 1),
                             unsigned(layers)),
                        dim3(128), smem},
                       stream, q);
}

// Moves every layer's kept rows within their sequences, as p.moves says; the widest access the
// rows allow.
template <class T, class Moves>
cudaError_t launch_in_sequences(const InSequenceParams<T, Moves>& p, std::int32_t layers,
                                cudaStream_t stream) {
  if (p.moves.sequences() == 0 || layers == 0) return cudaSuccess;
  const KVRows<const T> in = p.rows;
  if (vectorisable<uint4>(in, p.rows) && p.layer_stride * index_t(sizeof(T)) % 16 == 0)
    return launch_in_sequences_as<uint4>(p, layers, stream);
  if (vectorisable<unsigned>(in, p.rows) && p.layer_stride * index_t(sizeof(T)) % 4 == 0)
    return launch_in_sequences_as<unsigned>(p, layers, stream);
  return launch_in_sequences_as<T>(p, layers, stream);
}

// The temporary storage of the flags path, carved in 256-byte aligned pieces.
struct TempLayout {
  std::size_t kept = 0, num_kept = 0, cu_out = 0, cub = 0, scratch = 0, total = 0;
  std::size_t cub_bytes = 0, scratch_bytes = 0;
};
inline std::size_t align_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
inline TempLayout temp_layout(std::int64_t total_in, std::int32_t batch, std::size_t cub_bytes,
                              std::size_t scratch_bytes) {
  TempLayout t;
  t.kept = 0;
  t.num_kept = t.kept + align_up(std::size_t(total_in) * sizeof(std::int32_t));
  t.cu_out = t.num_kept + align_up(sizeof(std::int32_t));
  t.cub = t.cu_out + align_up((std::size_t(batch) + 1) * sizeof(std::int32_t));
  t.scratch = t.cub + align_up(cub_bytes);
  t.total = t.scratch + scratch_bytes;
  t.cub_bytes = cub_bytes, t.scratch_bytes = scratch_bytes;
  return t;
}

// Phase one of both flag entry points: kept token list, its count and the new offsets.
inline cudaError_t select_kept(const TempLayout& t, unsigned char* d_temp,
                               const std::uint8_t* d_keep, std::int64_t total_in,
                               const std::int32_t* d_cu_seqlens, std::int32_t batch,
                               cudaStream_t stream) {
  auto* d_kept = reinterpret_cast<std::int32_t*>(d_temp + t.kept);
  auto* d_num_kept = reinterpret_cast<std::int32_t*>(d_temp + t.num_kept);
  std::size_t cub_bytes = t.cub_bytes;
  ANSAN_CUDA_RETURN(select_flagged_indices(d_temp + t.cub, cub_bytes, d_keep, d_kept, d_num_kept,
                                           total_in, stream));
  return launch_kernel(kept_offsets_kernel, {dim3(unsigned(batch / 128 + 1)), dim3(128), 0}, stream,
                       d_kept, d_num_kept, d_cu_seqlens, batch,
                       reinterpret_cast<std::int32_t*>(d_temp + t.cu_out));
}

inline cudaError_t cub_select_bytes(std::int64_t total_in, std::size_t& bytes,
                                    cudaStream_t stream) {
  return select_flagged_indices(nullptr, bytes, nullptr, nullptr, nullptr, total_in, stream);
}

inline void validate_device_ragged(const RaggedRows& s, std::int64_t total, const char* fn,
                                   const char* which) {
  if (s.batch < 0) fail(fn, ansan::detail::concat(which, ".batch"), s.batch, ">= 0");
  if (!s.cu_seqlens)
    fail(fn, ansan::detail::concat(which, ".cu_seqlens"), "null", "B+1 device offsets");
  if (total < 0 || total > INT32_MAX) fail(fn, "token count", total, "in [0, 2^31)");
}

// Host checks of both flag entry points once the caller passes temporary storage.
inline void validate_flag_buffers(std::size_t temp_storage_bytes, std::size_t needed_bytes,
                                  const std::int32_t* d_cu_seqlens_out, std::int64_t total,
                                  const std::uint8_t* d_keep, const char* fn) {
  require(temp_storage_bytes >= needed_bytes, fn, "temp_storage_bytes", temp_storage_bytes,
          ansan::detail::concat(">= ", needed_bytes, " (query it with d_temp_storage = nullptr)"));
  require(d_cu_seqlens_out != nullptr, fn, "d_cu_seqlens_out", "null", "B+1 device offsets");
  require(total == 0 || d_keep != nullptr, fn, "d_keep", "null", "device flags");
}

// The whole output for no input tokens: all B+1 offsets 0.
inline cudaError_t zero_offsets(std::int32_t* d_cu_seqlens_out, std::int32_t batch,
                                cudaStream_t stream) {
  return cudaMemsetAsync(d_cu_seqlens_out, 0, (std::size_t(batch) + 1) * sizeof(std::int32_t),
                         stream);
}

}  // namespace detail

// d_keep[t] = still_visible(...) for every packed token t < total (see ansan::keep_flags);
// d_pos and d_is_anchor are indexed by row, d_next_pos and d_open_seg_start by sequence.
inline cudaError_t keep_flags(const MaskPolicy& policy, const std::int32_t* d_pos,
                              const std::uint8_t* d_is_anchor, const RaggedRows& seqs,
                              std::int64_t total, const std::int32_t* d_next_pos,
                              const std::int32_t* d_open_seg_start, std::uint8_t* d_keep,
                              cudaStream_t stream = 0) {
  const char* fn = "cuda::keep_flags";
  validate_policy(policy, fn);
  detail::validate_device_ragged(seqs, total, fn, "seqs");
  if (total == 0) return cudaSuccess;
  require(d_pos && d_is_anchor && d_next_pos && d_open_seg_start && d_keep, fn,
          "d_pos/d_is_anchor/d_next_pos/d_open_seg_start/d_keep", "null", "device arrays");
  const index_t blocks = (total + 255) / 256;
  return detail::launch_kernel(
      detail::keep_flags_kernel, {dim3(unsigned(blocks < 65536 ? blocks : 65536)), dim3(256), 0},
      stream, policy, d_pos, d_is_anchor, seqs, total, d_next_pos, d_open_seg_start, d_keep);
}

// Out-of-place compaction by flags (see ansan::compact_kv). total_in = in_seqs.cu_seqlens[B], the
// length of d_keep. Writes d_cu_seqlens_out (B+1) and the kept rows of `out`.
template <class T>
cudaError_t compact_kv(void* d_temp_storage, std::size_t& temp_storage_bytes,
                       const KVRows<const ansan::detail::no_deduce<T>>& in,
                       const RaggedRows& in_seqs, std::int64_t total_in, const std::uint8_t* d_keep,
                       const KVRows<T>& out, std::int32_t* d_cu_seqlens_out,
                       const std::int32_t* d_maybe_out_seq_start = nullptr,
                       cudaStream_t stream = 0) {
  const char* fn = "cuda::compact_kv";
  ansan::detail::validate_compaction_pair(in, out, fn);
  detail::validate_device_ragged(in_seqs, total_in, fn, "in_seqs");
  std::size_t cub_bytes = 0;
  ANSAN_CUDA_RETURN(detail::cub_select_bytes(total_in, cub_bytes, stream));
  const detail::TempLayout t = detail::temp_layout(total_in, in_seqs.batch, cub_bytes, 0);
  if (d_temp_storage == nullptr) {
    temp_storage_bytes = t.total;
    return cudaSuccess;
  }
  detail::validate_flag_buffers(temp_storage_bytes, t.total, d_cu_seqlens_out, total_in, d_keep,
                                fn);
  if (total_in == 0) return detail::zero_offsets(d_cu_seqlens_out, in_seqs.batch, stream);
  auto* d_temp = static_cast<unsigned char*>(d_temp_storage);
  const auto* d_cu_out = reinterpret_cast<const std::int32_t*>(d_temp + t.cu_out);
  ANSAN_CUDA_RETURN(
      detail::select_kept(t, d_temp, d_keep, total_in, in_seqs.cu_seqlens, in_seqs.batch, stream));
  const detail::GatherParams<T> p{in,
                                  out,
                                  in_seqs,
                                  d_cu_out,
                                  d_maybe_out_seq_start,
                                  reinterpret_cast<const std::int32_t*>(d_temp + t.kept),
                                  reinterpret_cast<const std::int32_t*>(d_temp + t.num_kept),
                                  total_in,
                                  detail::SourceIndex::kept_token};
  ANSAN_CUDA_RETURN(detail::launch_gather(p, stream));
  return cudaMemcpyAsync(d_cu_seqlens_out, d_cu_out,
                         (std::size_t(in_seqs.batch) + 1) * sizeof(std::int32_t),
                         cudaMemcpyDeviceToDevice, stream);
}

// Out-of-place compaction by index lists (see ansan::compact_kv_indices): d_keep_index
// (total_kept) sequence-local and ascending per sequence, d_cu_keep (B+1) its offsets, which are
// also the output lengths. Needs no temporary storage.
template <class T>
cudaError_t compact_kv_indices(const KVRows<const ansan::detail::no_deduce<T>>& in,
                               const RaggedRows& in_seqs, const std::int32_t* d_keep_index,
                               const std::int32_t* d_cu_keep, std::int64_t total_kept,
                               const KVRows<T>& out,
                               const std::int32_t* d_maybe_out_seq_start = nullptr,
                               cudaStream_t stream = 0) {
  const char* fn = "cuda::compact_kv_indices";
  ansan::detail::validate_compaction_pair(in, out, fn);
  detail::validate_device_ragged(in_seqs, total_kept, fn, "in_seqs");
  require(d_cu_keep != nullptr, fn, "d_cu_keep", "null", "B+1 device offsets");
  require(total_kept == 0 || d_keep_index != nullptr, fn, "d_keep_index", "null", "device indices");
  const detail::GatherParams<T> p{in,
                                  out,
                                  in_seqs,
                                  d_cu_keep,
                                  d_maybe_out_seq_start,
                                  d_keep_index,
                                  nullptr,
                                  total_kept,
                                  detail::SourceIndex::kept_local};
  return detail::launch_gather(p, stream);
}

// In-place compaction by flags, correct for every keep pattern (see ansan::compact_kv_inplace).
// d_cu_seqlens_out (B+1) may be seqs.cu_seqlens itself. With seqs.maybe_seq_start, rows stay in
// their sequence: one launch moves only the rows that change place (compact_in_sequences_kernel)
// and the temporary storage holds just the kept list. Without it the batch is repacked through
// scratch rows (the two phases above).
template <class T>
cudaError_t compact_kv_inplace(void* d_temp_storage, std::size_t& temp_storage_bytes,
                               const KVRows<T>& rows, const RaggedRows& seqs, std::int64_t total,
                               const std::uint8_t* d_keep, std::int32_t* d_cu_seqlens_out,
                               cudaStream_t stream = 0) {
  const char* fn = "cuda::compact_kv_inplace";
  ansan::detail::validate_kv_rows(rows, fn, "rows");
  detail::validate_device_ragged(seqs, total, fn, "seqs");
  const bool within_sequences = seqs.maybe_seq_start != nullptr;
  const index_t heads = rows.k.shape[1], dim = rows.k.shape[2];
  const std::size_t kv_bytes = detail::align_up(std::size_t(total * heads * dim) * sizeof(T));
  const std::size_t meta_bytes = detail::align_up(std::size_t(total) * sizeof(std::int32_t));
  std::size_t cub_bytes = 0;
  ANSAN_CUDA_RETURN(detail::cub_select_bytes(total, cub_bytes, stream));
  const detail::TempLayout t = detail::temp_layout(
      total, seqs.batch, cub_bytes,
      within_sequences ? 0 : 2 * kv_bytes + meta_bytes + std::size_t(total));
  if (d_temp_storage == nullptr) {
    temp_storage_bytes = t.total;
    return cudaSuccess;
  }
  detail::validate_flag_buffers(temp_storage_bytes, t.total, d_cu_seqlens_out, total, d_keep, fn);
  if (total == 0) return detail::zero_offsets(d_cu_seqlens_out, seqs.batch, stream);
  auto* d_temp = static_cast<unsigned char*>(d_temp_storage);
  auto* d_cu_out = reinterpret_cast<std::int32_t*>(d_temp + t.cu_out);
  const auto* d_kept = reinterpret_cast<const std::int32_t*>(d_temp + t.kept);
  const auto* d_num_kept = reinterpret_cast<const std::int32_t*>(d_temp + t.num_kept);
  ANSAN_CUDA_RETURN(
      detail::select_kept(t, d_temp, d_keep, total, seqs.cu_seqlens, seqs.batch, stream));
  if (within_sequences) {
    const detail::SelectedMoves moves{seqs, d_kept, d_cu_out};
    ANSAN_CUDA_RETURN(detail::launch_in_sequences(
        detail::InSequenceParams<T, detail::SelectedMoves>{rows, 0, moves, 0}, 1, stream));
  } else {
    // Scratch: the kept rows packed, NHD.
    unsigned char* d_scratch = d_temp + t.scratch;
    const KVRows<T> scratch{
        make_view(reinterpret_cast<T*>(d_scratch), total, heads, dim),
        make_view(reinterpret_cast<T*>(d_scratch + kv_bytes), total, heads, dim),
        rows.pos ? reinterpret_cast<std::int32_t*>(d_scratch + 2 * kv_bytes) : nullptr,
        rows.pos ? d_scratch + 2 * kv_bytes + meta_bytes : nullptr};
    const detail::GatherParams<T> to_scratch{rows,     scratch, seqs,       d_cu_out,
                                             nullptr,  d_kept,  d_num_kept, total,
                                             detail::SourceIndex::kept_token};
    ANSAN_CUDA_RETURN(detail::launch_gather(to_scratch, stream));
    const detail::GatherParams<T> back{scratch,
                                       rows,
                                       RaggedRows{seqs.batch, d_cu_out, nullptr},
                                       d_cu_out,
                                       nullptr,  // repacked: output rows follow cu_out
                                       nullptr,
                                       d_num_kept,
                                       total,
                                       detail::SourceIndex::identity};
    ANSAN_CUDA_RETURN(detail::launch_gather(back, stream));
  }
  return cudaMemcpyAsync(d_cu_seqlens_out, d_cu_out,
                         (std::size_t(seqs.batch) + 1) * sizeof(std::int32_t),
                         cudaMemcpyDeviceToDevice, stream);
}

}  // namespace ansan::cuda
