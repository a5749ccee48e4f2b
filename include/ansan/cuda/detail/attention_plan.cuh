// ansan/cuda/detail/attention_plan.cuh - the small device passes that run before a prefill
// kernel: the query-tile table of a ragged batch, the retained-key list (SPEC section 4) and
// the keys each query row sees.
//
//   tile_prefix[b]       first query tile of sequence b; tile_prefix[B] = tiles in all
//   retained_prefix[t]   retained keys among key rows [0, t), over every sequence
//   retained_rows[r]     key row of the r-th retained key (row order = position order)
//   row_keys[t]          query row t's local band and retained count (row_keys()): two binary
//                        searches over k_pos, done once per row here rather than once per
//                        (row, query head) in the kernels' prologue, where their dependent
//                        loads stall every block before its first tile
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

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/device_algorithms.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda_check.hpp"

namespace ansan::cuda::detail {

constexpr int kPlanThreads = 256;

// query_tiles[b] = ceil(query rows of b / tile_rows), query_tiles[B] = 0: scanned in place,
// this becomes tile_prefix.
__global__ void __launch_bounds__(kPlanThreads)
    query_tiles_kernel(const std::int32_t* cu_seqlens_q, std::int32_t batch, std::int32_t tile_rows,
                       std::int32_t* query_tiles) {
  const std::int32_t b = std::int32_t(blockIdx.x * blockDim.x + threadIdx.x);
  if (b <= batch)
    query_tiles[b] = b < batch ? tiles_of(cu_seqlens_q[b + 1] - cu_seqlens_q[b], tile_rows) : 0;
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
    query_row_keys_kernel(const __grid_constant__ AttentionParams<T> p, RowKeys* row_keys_out) {
  for (std::int32_t b = std::int32_t(blockIdx.y); b < p.batch; b += std::int32_t(gridDim.y)) {
    const std::int32_t k_begin = p.k_begin(b), k_end = p.k_end(b);
    for (std::int32_t t = p.cu_seqlens_q[b] + std::int32_t(blockIdx.x * blockDim.x + threadIdx.x);
         t < p.cu_seqlens_q[b + 1]; t += std::int32_t(gridDim.x * blockDim.x))
      row_keys_out[t] = row_keys(p.policy, p.query(t), p.k_pos, p.retained_prefix, k_begin, k_end);
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

// The per-sequence row passes: about total/B rows per sequence, 256 per thread block.
inline LaunchShape per_sequence_shape(std::int32_t rows, std::int32_t batch) {
  const std::int32_t per_sequence = (rows + batch - 1) / (batch > 0 ? batch : 1);
  std::int32_t blocks = (per_sequence + kPlanThreads - 1) / kPlanThreads;
  blocks = blocks < 1 ? 1 : (blocks > 1024 ? 1024 : blocks);
  return {dim3(unsigned(blocks), unsigned(batch < 65535 ? batch : 65535)), dim3(kPlanThreads), 0};
}

// Carves the plan arrays out of temp storage (null base: sizes only) and, with a real base,
// fills them. Sets p.tile_prefix, p.retained_prefix, p.retained_rows, p.row_keys.
template <class T>
cudaError_t build_plan(TempCarver& temp, AttentionParams<T>& p, std::int32_t tile_rows,
                       cudaStream_t stream) {
  std::int32_t* tile_prefix = temp.take<std::int32_t>(std::size_t(p.batch) + 1);
  RowKeys* row_keys = temp.take<RowKeys>(std::size_t(p.total_q));
  const bool retains = p.policy.has_retained() && p.total_k > 0;
  std::int32_t* flags = nullptr;
  std::int32_t* retained_prefix = nullptr;
  std::int32_t* retained_rows = nullptr;
  // The extra 0 flag makes retained_prefix[total_k] the total.
  const int retained_items = p.total_k + 1;
  // One scan temp block serves both scans; they run one after the other on the stream.
  std::size_t scan_bytes = 0, retained_scan_bytes = 0;
  ANSAN_CUDA_RETURN(
      exclusive_sum<std::int32_t>(nullptr, scan_bytes, nullptr, nullptr, p.batch + 1, stream));
  if (retains) {
    flags = temp.take<std::int32_t>(std::size_t(retained_items));
    retained_prefix = temp.take<std::int32_t>(std::size_t(retained_items));
    retained_rows = temp.take<std::int32_t>(std::size_t(p.total_k));
    ANSAN_CUDA_RETURN(exclusive_sum<std::int32_t>(nullptr, retained_scan_bytes, nullptr, nullptr,
                                                  retained_items, stream));
    scan_bytes = scan_bytes > retained_scan_bytes ? scan_bytes : retained_scan_bytes;
  }
  void* scan_temp = temp.take<char>(scan_bytes);
  if (!tile_prefix) return cudaSuccess;  // size query

  ANSAN_CUDA_RETURN(launch_kernel(
      query_tiles_kernel, {dim3(unsigned(p.batch / kPlanThreads + 1)), dim3(kPlanThreads), 0},
      stream, p.cu_seqlens_q, p.batch, tile_rows, tile_prefix));
  ANSAN_CUDA_RETURN(
      exclusive_sum(scan_temp, scan_bytes, tile_prefix, tile_prefix, p.batch + 1, stream));
  p.tile_prefix = tile_prefix;
  if (retains) {
    const LaunchShape rows = per_sequence_shape(p.total_k, p.batch);
    ANSAN_CUDA_RETURN(
        cudaMemsetAsync(flags, 0, sizeof(std::int32_t) * std::size_t(retained_items), stream));
    ANSAN_CUDA_RETURN(launch_kernel(mark_retained_kernel<T>, rows, stream, p, flags));
    ANSAN_CUDA_RETURN(
        exclusive_sum(scan_temp, scan_bytes, flags, retained_prefix, retained_items, stream));
    p.retained_prefix = retained_prefix;
    ANSAN_CUDA_RETURN(
        launch_kernel(scatter_retained_kernel<T>, rows, stream, p, flags, retained_rows));
    p.retained_rows = retained_rows;
  }
  ANSAN_CUDA_RETURN(launch_kernel(query_row_keys_kernel<T>, per_sequence_shape(p.total_q, p.batch),
                                  stream, p, row_keys));
  p.row_keys = row_keys;
  return cudaSuccess;
}

}  // namespace ansan::cuda::detail
