// ansan/cuda/layout.cuh - anchor layouts built on the GPU (SPEC.md section 1), CUB style.
//
// The device twins of ansan::build_layout / build_layout_from_flags /
// build_layout_from_positions (ansan/layout.hpp): same inputs, now in device memory, and the
// same sequence-local arrays, bit for bit. Like CUB's device algorithms they
//   - never allocate: call once with d_temp_storage == nullptr to get temp_storage_bytes,
//     then again with that much device memory;
//   - are stream-ordered, never synchronise, and return the first failing cudaError_t;
//   - trust their input: run the matching check_*() first (or use ansan::cuda::DeviceLayout,
//     ansan/cuda/device_layout.cuh, which checks, allocates and throws on bad input); token
//     counts are below 2^31, as the int32 offsets imply.
//
//   d_tokens      [84, 104, 46, 67, 46 | 97, 46, 98]     cu_seqlens = [0, 5, 8]
//   d_id_is_anchor[46] = 1                               (EP selector {'.'})
//   build_layout(...)
//   out.is_anchor <-- [0, 0, 1, 0, 1 | 0, 1, 0]
//   out.seg       <-- [0, 0, 0, 1, 1 | 0, 0, 1]
//   out.seg_start <-- [0, 0, 0, 3, 3 | 0, 0, 2]
//   out.cu_anchors <-- [0, 2, 3],  out.anchor_pos <-- [2, 4, 1]
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/device_algorithms.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/layout_kernels.cuh"
#include "ansan/cuda/detail/layout_steps.hpp"
#include "ansan/cuda_check.hpp"

namespace ansan::cuda {

// Where a device builder writes; every pointer is device memory, every field sequence-local.
struct LayoutBuffers {
  std::int32_t* pos = nullptr;         // (total_tokens)
  std::uint8_t* is_anchor = nullptr;   // (total_tokens)
  std::int32_t* seg = nullptr;         // (total_tokens)
  std::int32_t* seg_start = nullptr;   // (total_tokens)
  std::int32_t* cu_anchors = nullptr;  // (B+1)
  std::int32_t* anchor_pos = nullptr;  // (total_tokens): room for every token; the first
                                       // cu_anchors[B] entries are written
};

namespace detail {
// The part every builder shares once out.is_anchor, seg and seg_start hold the seeds
// (layout_steps.hpp): two scans, the offsets, the sequence-local finish.
inline cudaError_t scan_and_finish(void* d_temp_storage, std::size_t& temp_storage_bytes,
                                   const std::int32_t* d_cu_seqlens,  // (B+1)
                                   std::int32_t batch, std::int64_t total_tokens,
                                   const LayoutBuffers& out, cudaStream_t stream) {
  // Both scans run in place, one after the other, in the same temporary storage. Token
  // counts fit int32 (the offsets are int32), which gives CUB its 32-bit offset path.
  const auto items = static_cast<std::int32_t>(total_tokens);
  std::size_t sum_bytes = 0, max_bytes = 0;
  ANSAN_CUDA_RETURN(exclusive_sum(nullptr, sum_bytes, out.seg, out.seg, items, stream));
  ANSAN_CUDA_RETURN(exclusive_max(nullptr, max_bytes, out.seg_start, out.seg_start, std::int32_t(0),
                                  items, stream));
  if (d_temp_storage == nullptr) {
    temp_storage_bytes = sum_bytes > max_bytes ? sum_bytes : max_bytes;
    return cudaSuccess;
  }
  if (items > 0) {
    ANSAN_CUDA_RETURN(
        exclusive_sum(d_temp_storage, temp_storage_bytes, out.seg, out.seg, items, stream));
    ANSAN_CUDA_RETURN(exclusive_max(d_temp_storage, temp_storage_bytes, out.seg_start,
                                    out.seg_start, std::int32_t(0), items, stream));
  }
  ANSAN_CUDA_RETURN(launch_kernel(
      anchor_offsets_kernel<layout_block_threads>, layout_shape(std::int64_t(batch) + 1), stream,
      batch, d_cu_seqlens, total_tokens, out.seg, out.is_anchor, out.cu_anchors));
  if (total_tokens > 0)
    ANSAN_CUDA_RETURN(launch_kernel(finish_tokens_kernel<layout_block_threads>,
                                    layout_shape(total_tokens), stream, total_tokens, d_cu_seqlens,
                                    batch, out.cu_anchors, out.is_anchor, out.pos, out.seg,
                                    out.seg_start, out.anchor_pos));
  return cudaSuccess;
}

template <class AnchorOf>
cudaError_t build_from(void* d_temp_storage, std::size_t& temp_storage_bytes, AnchorOf anchor_of,
                       const std::int32_t* d_cu_seqlens, std::int32_t batch,
                       std::int64_t total_tokens, const LayoutBuffers& out, cudaStream_t stream) {
  if (d_temp_storage != nullptr && total_tokens > 0)
    ANSAN_CUDA_RETURN(launch_kernel(seed_tokens_kernel<layout_block_threads, AnchorOf>,
                                    layout_shape(total_tokens), stream, total_tokens, anchor_of,
                                    out.is_anchor, out.seg, out.seg_start));
  return scan_and_finish(d_temp_storage, temp_storage_bytes, d_cu_seqlens, batch, total_tokens, out,
                         stream);
}
}  // namespace detail

// EP / AC selection: token t is an anchor iff d_id_is_anchor[d_tokens[t]] != 0.
//   d_tokens        (total_tokens) ids in [0, vocab_size)
//   d_id_is_anchor  (vocab_size)   1 for the selector's ids, else 0
//   d_cu_seqlens    (B+1)          FlashAttention's varlen offsets
inline cudaError_t build_layout(void* d_temp_storage, std::size_t& temp_storage_bytes,
                                const std::int32_t* d_tokens, std::int64_t total_tokens,
                                const std::uint8_t* d_id_is_anchor, std::int32_t vocab_size,
                                const std::int32_t* d_cu_seqlens, std::int32_t batch,
                                const LayoutBuffers& out, cudaStream_t stream = nullptr) {
  return detail::build_from(d_temp_storage, temp_storage_bytes,
                            detail::AnchorById{d_tokens, d_id_is_anchor, vocab_size}, d_cu_seqlens,
                            batch, total_tokens, out, stream);
}

// Anchors given as a flag per token (any non-zero byte is an anchor).
//   d_flags       (total_tokens)
//   d_cu_seqlens  (B+1)
inline cudaError_t build_layout_from_flags(void* d_temp_storage, std::size_t& temp_storage_bytes,
                                           const std::uint8_t* d_flags, std::int64_t total_tokens,
                                           const std::int32_t* d_cu_seqlens, std::int32_t batch,
                                           const LayoutBuffers& out,
                                           cudaStream_t stream = nullptr) {
  return detail::build_from(d_temp_storage, temp_storage_bytes, detail::AnchorByFlag{d_flags},
                            d_cu_seqlens, batch, total_tokens, out, stream);
}

// Anchors given as sequence-local positions: sequence b's are
// d_anchor_pos[d_cu_anchors[b] .. d_cu_anchors[b+1]), strictly increasing, inside b.
//   d_anchor_pos  (total_anchors)
//   d_cu_anchors  (B+1)
//   d_cu_seqlens  (B+1), d_cu_seqlens[B] == total_tokens
// out.anchor_pos may not alias d_anchor_pos.
inline cudaError_t build_layout_from_positions(
    void* d_temp_storage, std::size_t& temp_storage_bytes, const std::int32_t* d_anchor_pos,
    std::int64_t total_anchors, const std::int32_t* d_cu_anchors, const std::int32_t* d_cu_seqlens,
    std::int32_t batch, std::int64_t total_tokens, const LayoutBuffers& out,
    cudaStream_t stream = nullptr) {
  if (d_temp_storage != nullptr && total_tokens > 0) {
    ANSAN_CUDA_RETURN(cudaMemsetAsync(out.is_anchor, 0, std::size_t(total_tokens), stream));
    if (total_anchors > 0)
      ANSAN_CUDA_RETURN(
          detail::launch_kernel(detail::mark_anchor_positions_kernel<detail::layout_block_threads>,
                                detail::layout_shape(total_anchors), stream, total_anchors,
                                d_anchor_pos, d_cu_anchors, d_cu_seqlens, batch, out.is_anchor));
  }
  // The marks become the flags; seeding reads and rewrites each token's own byte.
  return detail::build_from(d_temp_storage, temp_storage_bytes, detail::AnchorByFlag{out.is_anchor},
                            d_cu_seqlens, batch, total_tokens, out, stream);
}

// --- checks --------------------------------------------------------------------------------
// Each check_*() resets *d_fault and leaves there, in stream order, detail::no_fault or the
// key of the first fault (detail::fault_kind / fault_index decode it): the device-side half of
// the argument validation, for inputs the host cannot read without a copy.

namespace detail {
inline cudaError_t check_offsets(const std::int32_t* d_offsets, std::int32_t batch,
                                 std::int64_t total, LayoutFaultKind kind,
                                 unsigned long long* d_fault, cudaStream_t stream) {
  return launch_kernel(check_offsets_kernel<layout_block_threads>,
                       layout_shape(std::int64_t(batch) + 1), stream, batch, d_offsets, total, kind,
                       d_fault);
}
inline cudaError_t reset_fault(unsigned long long* d_fault, cudaStream_t stream) {
  return cudaMemsetAsync(d_fault, 0xFF, sizeof(*d_fault), stream);  // 0xFF.. is no_fault
}
}  // namespace detail

// cu_seqlens, then every token id in [0, vocab_size).
inline cudaError_t check_layout_tokens(const std::int32_t* d_tokens, std::int64_t total_tokens,
                                       std::int32_t vocab_size, const std::int32_t* d_cu_seqlens,
                                       std::int32_t batch, unsigned long long* d_fault,
                                       cudaStream_t stream = nullptr) {
  ANSAN_CUDA_RETURN(detail::reset_fault(d_fault, stream));
  ANSAN_CUDA_RETURN(detail::check_offsets(d_cu_seqlens, batch, total_tokens,
                                          detail::LayoutFaultKind::cu_seqlens, d_fault, stream));
  if (total_tokens == 0) return cudaSuccess;
  return detail::launch_kernel(detail::check_tokens_kernel<detail::layout_block_threads>,
                               detail::layout_shape(total_tokens), stream, total_tokens, d_tokens,
                               vocab_size, d_fault);
}

// cu_seqlens only: every flag byte is valid.
inline cudaError_t check_layout_flags(std::int64_t total_tokens, const std::int32_t* d_cu_seqlens,
                                      std::int32_t batch, unsigned long long* d_fault,
                                      cudaStream_t stream = nullptr) {
  ANSAN_CUDA_RETURN(detail::reset_fault(d_fault, stream));
  return detail::check_offsets(d_cu_seqlens, batch, total_tokens,
                               detail::LayoutFaultKind::cu_seqlens, d_fault, stream);
}

// cu_seqlens (ending at total_tokens), cu_anchors (ending at total_anchors), then each
// anchor position inside its sequence and strictly after the previous one.
inline cudaError_t check_layout_positions(const std::int32_t* d_anchor_pos,
                                          std::int64_t total_anchors,
                                          const std::int32_t* d_cu_anchors,
                                          const std::int32_t* d_cu_seqlens, std::int32_t batch,
                                          std::int64_t total_tokens, unsigned long long* d_fault,
                                          cudaStream_t stream = nullptr) {
  ANSAN_CUDA_RETURN(detail::reset_fault(d_fault, stream));
  ANSAN_CUDA_RETURN(detail::check_offsets(d_cu_seqlens, batch, total_tokens,
                                          detail::LayoutFaultKind::cu_seqlens, d_fault, stream));
  ANSAN_CUDA_RETURN(detail::check_offsets(d_cu_anchors, batch, total_anchors,
                                          detail::LayoutFaultKind::cu_anchors, d_fault, stream));
  if (total_anchors == 0) return cudaSuccess;
  return detail::launch_kernel(detail::check_positions_kernel<detail::layout_block_threads>,
                               detail::layout_shape(total_anchors), stream, total_anchors,
                               d_anchor_pos, d_cu_anchors, d_cu_seqlens, batch, d_fault);
}

}  // namespace ansan::cuda
