// ansan/cuda/detail/attention_plan.cuh - the small device passes that run before a prefill
// kernel: the query-tile table of a ragged batch and the retained-key list (SPEC section 4).
//
//   tile_prefix[b]       first query tile of sequence b; tile_prefix[B] = tiles in all
//   retained_prefix[t]   retained keys among key rows [0, t), over every sequence
//   retained_rows[r]     key row of the r-th retained key (row order = position order)
//
// The retained keys are gathered as row indices rather than copies of K and V: the kernels
// load those rows directly (each a contiguous head_dim vector), so the gather costs 8 bytes
// per key instead of 4 * heads_kv * head_dim.
//
//   k_is_anchor      0 0 0 1 0 0 0 1 0 0          (AnLLM, one sequence)
//   retained_prefix  0 0 0 0 1 1 1 1 2 2 2
//   retained_rows    [3, 7]
#pragma once

#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>
#include <cub/device/device_scan.cuh>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda_check.hpp"

namespace ansan::cuda::detail {

constexpr int kPlanThreads = 256;

// tile_prefix[b] = sum over b' < b of ceil(query rows of b' / tile_rows); one block.
__global__ void __launch_bounds__(kPlanThreads)
    query_tile_prefix_kernel(const std::int32_t* cu_seqlens_q, std::int32_t batch,
                             std::int32_t tile_rows, std::int32_t* tile_prefix) {
  using BlockScan = cub::BlockScan<std::int32_t, kPlanThreads>;
  __shared__ typename BlockScan::TempStorage scan_storage;
  std::int32_t carry = 0;
  for (std::int32_t base = 0; base < batch; base += kPlanThreads) {
    const std::int32_t b = base + std::int32_t(threadIdx.x);
    const std::int32_t tiles = b < batch ? tiles_of(cu_seqlens_q[b + 1] - cu_seqlens_q[b], tile_rows) : 0;
    std::int32_t before = 0, chunk_total = 0;
    BlockScan(scan_storage).ExclusiveSum(tiles, before, chunk_total);
    if (b < batch) tile_prefix[b] = carry + before;
    carry += chunk_total;
    __syncthreads();  // scan_storage is reused by the next chunk
  }
  if (threadIdx.x == 0) tile_prefix[batch] = carry;
}

// flags[t] = 1 for the retained keys of every sequence; rows outside all sequences (cache
// slack) keep the 0 the caller cleared them to. blockIdx.y strides over the sequences.
template <class T>
__global__ void __launch_bounds__(kPlanThreads) mark_retained_kernel(const __grid_constant__ AttentionParams<T> p,
                                                                     std::int32_t* flags) {
  for (std::int32_t b = std::int32_t(blockIdx.y); b < p.batch; b += std::int32_t(gridDim.y)) {
    const std::int32_t begin = p.k_begin(b), end = p.k_end(b);
    for (std::int32_t t = begin + std::int32_t(blockIdx.x * blockDim.x + threadIdx.x); t < end;
         t += std::int32_t(gridDim.x * blockDim.x))
      flags[t] = is_retained(p.policy, p.key(t)) ? 1 : 0;
  }
}

template <class T>
__global__ void __launch_bounds__(kPlanThreads)
    scatter_retained_kernel(const __grid_constant__ AttentionParams<T> p, const std::int32_t* flags,
                            std::int32_t* retained_rows) {
  for (std::int32_t b = std::int32_t(blockIdx.y); b < p.batch; b += std::int32_t(gridDim.y)) {
    const std::int32_t begin = p.k_begin(b), end = p.k_end(b);
    for (std::int32_t t = begin + std::int32_t(blockIdx.x * blockDim.x + threadIdx.x); t < end;
         t += std::int32_t(gridDim.x * blockDim.x))
      if (flags[t]) retained_rows[p.retained_prefix[t]] = t;
  }
}

// Bump allocator over one temp-storage block, CUB style: with a null base it only adds up
// the sizes. Every array is 256-byte aligned, also when the caller's block is not.
class TempCarver {
 public:
  explicit TempCarver(void* base)
      : base_(base ? reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(base) + 255) / 256 * 256)
                   : nullptr) {}
  template <class U>
  U* take(std::size_t count) {
    const std::size_t offset = used_;
    used_ += (count * sizeof(U) + 255) / 256 * 256;
    return base_ ? reinterpret_cast<U*>(base_ + offset) : nullptr;
  }
  std::size_t bytes() const { return used_ + 255; }  // room to align the caller's block

 private:
  char* base_;
  std::size_t used_ = 0;
};

// Grid of the per-sequence row passes: about total/B rows per sequence, 256 per thread block.
inline dim3 per_sequence_grid(std::int32_t rows, std::int32_t batch) {
  const std::int32_t per_sequence = (rows + batch - 1) / (batch > 0 ? batch : 1);
  std::int32_t blocks = (per_sequence + kPlanThreads - 1) / kPlanThreads;
  blocks = blocks < 1 ? 1 : (blocks > 1024 ? 1024 : blocks);
  return dim3(unsigned(blocks), unsigned(batch < 65535 ? batch : 65535));
}

// Carves the plan arrays out of temp storage (null base: sizes only) and, with a real base,
// fills them. Sets p.tile_prefix, p.retained_prefix, p.retained_rows.
template <class T>
cudaError_t build_plan(TempCarver& temp, AttentionParams<T>& p, std::int32_t tile_rows,
                       cudaStream_t stream) {
  std::int32_t* tile_prefix = temp.take<std::int32_t>(std::size_t(p.batch) + 1);
  const bool retains = p.policy.has_retained() && p.total_k > 0;
  std::int32_t* flags = nullptr;
  std::int32_t* retained_prefix = nullptr;
  std::int32_t* retained_rows = nullptr;
  void* scan_temp = nullptr;
  std::size_t scan_bytes = 0;
  const int scan_items = p.total_k + 1;  // the extra 0 flag makes retained_prefix[total_k] the total
  if (retains) {
    flags = temp.take<std::int32_t>(std::size_t(scan_items));
    retained_prefix = temp.take<std::int32_t>(std::size_t(scan_items));
    retained_rows = temp.take<std::int32_t>(std::size_t(p.total_k));
    ANSAN_CUDA_RETURN(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, flags, retained_prefix,
                                                    scan_items, stream));
    scan_temp = temp.take<char>(scan_bytes);
  }
  if (!tile_prefix) return cudaSuccess;  // size query

  p.tile_prefix = tile_prefix;
  query_tile_prefix_kernel<<<1, kPlanThreads, 0, stream>>>(p.cu_seqlens_q, p.batch, tile_rows,
                                                          tile_prefix);
  ANSAN_CUDA_RETURN(cudaGetLastError());
  if (!retains) return cudaSuccess;
  const dim3 grid = per_sequence_grid(p.total_k, p.batch);
  ANSAN_CUDA_RETURN(cudaMemsetAsync(flags, 0, sizeof(std::int32_t) * std::size_t(scan_items), stream));
  mark_retained_kernel<T><<<grid, kPlanThreads, 0, stream>>>(p, flags);
  ANSAN_CUDA_RETURN(cudaGetLastError());
  ANSAN_CUDA_RETURN(cub::DeviceScan::ExclusiveSum(scan_temp, scan_bytes, flags, retained_prefix,
                                                  scan_items, stream));
  p.retained_prefix = retained_prefix;
  scatter_retained_kernel<T><<<grid, kPlanThreads, 0, stream>>>(p, flags, retained_rows);
  ANSAN_CUDA_RETURN(cudaGetLastError());
  p.retained_rows = retained_rows;
  return cudaSuccess;
}

}  // namespace ansan::cuda::detail
