// ansan/cuda/detail/layout_kernels.cuh - the kernels of the CUDA layout builder and checks.
//
// Each kernel is one thread per element calling one step of layout_steps.hpp; the scans
// between them are CUB's (ansan/cuda/layout.cuh). Kernels are templates (on the block size)
// so that a header can define them in every translation unit, as CUB's are.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ansan/config.hpp"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/layout_steps.hpp"

namespace ansan::cuda::detail {

constexpr int layout_block_threads = 256;

// One thread per element.
inline LaunchShape layout_shape(std::int64_t count) {
  return {dim3(unsigned((count + layout_block_threads - 1) / layout_block_threads)),
          dim3(layout_block_threads), 0};
}

template <int BlockThreads, class AnchorOf>
__global__ void __launch_bounds__(BlockThreads)
    seed_tokens_kernel(std::int64_t total_tokens, AnchorOf anchor_of,
                       std::uint8_t* g_is_anchor,    // (total_tokens)
                       std::int32_t* g_seg,          // (total_tokens)
                       std::int32_t* g_seg_start) {  // (total_tokens)
  const std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < total_tokens) seed_token(t, anchor_of(t), g_is_anchor, g_seg, g_seg_start);
}

template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    mark_anchor_positions_kernel(std::int64_t total_anchors,
                                 const std::int32_t* g_anchor_pos,  // (A)
                                 const std::int32_t* g_cu_anchors,  // (B+1)
                                 const std::int32_t* g_cu_seqlens,  // (B+1)
                                 std::int32_t batch,
                                 std::uint8_t* g_is_anchor) {  // (tokens)
  const std::int64_t a = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a < total_anchors)
    mark_anchor_position(a, g_anchor_pos, g_cu_anchors, g_cu_seqlens, batch, g_is_anchor);
}

template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    anchor_offsets_kernel(std::int32_t batch,
                          const std::int32_t* g_cu_seqlens,  // (B+1)
                          std::int64_t total_tokens,
                          const std::int32_t* g_anchors_before,  // (tokens)
                          const std::uint8_t* g_is_anchor,       // (tokens)
                          std::int32_t* g_cu_anchors) {          // (B+1)
  const std::int64_t b = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b <= batch)
    sequence_anchor_offset(std::int32_t(b), g_cu_seqlens, total_tokens, g_anchors_before,
                           g_is_anchor, g_cu_anchors);
}

template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    finish_tokens_kernel(std::int64_t total_tokens,
                         const std::int32_t* g_cu_seqlens,  // (B+1)
                         std::int32_t batch,
                         const std::int32_t* g_cu_anchors,  // (B+1)
                         const std::uint8_t* g_is_anchor,   // (tokens)
                         std::int32_t* g_pos,               // (tokens)
                         std::int32_t* g_seg,               // (tokens)
                         std::int32_t* g_seg_start,         // (tokens)
                         std::int32_t* g_anchor_pos) {      // (tokens)
  const std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < total_tokens)
    finish_token(t, g_cu_seqlens, batch, g_cu_anchors, g_is_anchor, g_pos, g_seg, g_seg_start,
                 g_anchor_pos);
}

// --- checks: every thread that finds a fault offers its key; the smallest stays ----------

ANSAN_DEVICE void report_fault(unsigned long long* g_fault, std::uint64_t key) {
  if (key != no_fault) atomicMin(g_fault, static_cast<unsigned long long>(key));
}

template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    check_offsets_kernel(std::int32_t batch,
                         const std::int32_t* g_offsets,  // (B+1)
                         std::int64_t total, LayoutFaultKind kind, unsigned long long* g_fault) {
  const std::int64_t b = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b <= batch)
    report_fault(g_fault, offset_fault(std::int32_t(b), g_offsets, batch, total, kind));
}

template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    check_tokens_kernel(std::int64_t total_tokens,
                        const std::int32_t* g_tokens,  // (total_tokens)
                        std::int32_t vocab_size, unsigned long long* g_fault) {
  const std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < total_tokens) report_fault(g_fault, token_fault(t, g_tokens, vocab_size));
}

// Runs after the offset checks in stream order and does nothing if they found a fault, since
// position_fault() indexes through the offsets.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    check_positions_kernel(std::int64_t total_anchors,
                           const std::int32_t* g_anchor_pos,  // (A)
                           const std::int32_t* g_cu_anchors,  // (B+1)
                           const std::int32_t* g_cu_seqlens,  // (B+1)
                           std::int32_t batch, unsigned long long* g_fault) {
  const std::int64_t a = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a < total_anchors && *g_fault == no_fault)
    report_fault(g_fault, position_fault(a, g_anchor_pos, g_cu_anchors, g_cu_seqlens, batch));
}

}  // namespace ansan::cuda::detail
