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
// another block has yet to read. compact_kv_inplace therefore runs in two phases through
// scratch rows carved from the temporary storage (room for every input row's K, V, position and
// flag): gather the kept rows into the scratch, then copy the scratch back. The scratch makes the
// temporary storage about as large as the rows themselves.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

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

// In-place compaction by flags, correct for every keep pattern (see ansan::compact_kv_inplace
// and the two phases above). d_cu_seqlens_out (B+1) may be seqs.cu_seqlens itself.
template <class T>
cudaError_t compact_kv_inplace(void* d_temp_storage, std::size_t& temp_storage_bytes,
                               const KVRows<T>& rows, const RaggedRows& seqs, std::int64_t total,
                               const std::uint8_t* d_keep, std::int32_t* d_cu_seqlens_out,
                               cudaStream_t stream = 0) {
  const char* fn = "cuda::compact_kv_inplace";
  ansan::detail::validate_kv_rows(rows, fn, "rows");
  detail::validate_device_ragged(seqs, total, fn, "seqs");
  const index_t heads = rows.k.shape[1], dim = rows.k.shape[2];
  const std::size_t kv_bytes = detail::align_up(std::size_t(total * heads * dim) * sizeof(T));
  const std::size_t meta_bytes = detail::align_up(std::size_t(total) * sizeof(std::int32_t));
  std::size_t cub_bytes = 0;
  ANSAN_CUDA_RETURN(detail::cub_select_bytes(total, cub_bytes, stream));
  const detail::TempLayout t = detail::temp_layout(total, seqs.batch, cub_bytes,
                                                   2 * kv_bytes + meta_bytes + std::size_t(total));
  if (d_temp_storage == nullptr) {
    temp_storage_bytes = t.total;
    return cudaSuccess;
  }
  detail::validate_flag_buffers(temp_storage_bytes, t.total, d_cu_seqlens_out, total, d_keep, fn);
  if (total == 0) return detail::zero_offsets(d_cu_seqlens_out, seqs.batch, stream);
  auto* d_temp = static_cast<unsigned char*>(d_temp_storage);
  auto* d_cu_out = reinterpret_cast<std::int32_t*>(d_temp + t.cu_out);
  const auto* d_num_kept = reinterpret_cast<const std::int32_t*>(d_temp + t.num_kept);
  ANSAN_CUDA_RETURN(
      detail::select_kept(t, d_temp, d_keep, total, seqs.cu_seqlens, seqs.batch, stream));
  // Scratch: the kept rows packed, NHD.
  unsigned char* d_scratch = d_temp + t.scratch;
  const KVRows<T> scratch{
      make_view(reinterpret_cast<T*>(d_scratch), total, heads, dim),
      make_view(reinterpret_cast<T*>(d_scratch + kv_bytes), total, heads, dim),
      rows.pos ? reinterpret_cast<std::int32_t*>(d_scratch + 2 * kv_bytes) : nullptr,
      rows.pos ? d_scratch + 2 * kv_bytes + meta_bytes : nullptr};
  const detail::GatherParams<T> to_scratch{
      rows,       scratch, seqs,
      d_cu_out,   nullptr, reinterpret_cast<const std::int32_t*>(d_temp + t.kept),
      d_num_kept, total,   detail::SourceIndex::kept_token};
  ANSAN_CUDA_RETURN(detail::launch_gather(to_scratch, stream));
  const detail::GatherParams<T> back{scratch,
                                     rows,
                                     RaggedRows{seqs.batch, d_cu_out, nullptr},
                                     d_cu_out,
                                     seqs.maybe_seq_start,
                                     nullptr,
                                     d_num_kept,
                                     total,
                                     detail::SourceIndex::identity};
  ANSAN_CUDA_RETURN(detail::launch_gather(back, stream));
  return cudaMemcpyAsync(d_cu_seqlens_out, d_cu_out,
                         (std::size_t(seqs.batch) + 1) * sizeof(std::int32_t),
                         cudaMemcpyDeviceToDevice, stream);
}

}  // namespace ansan::cuda
