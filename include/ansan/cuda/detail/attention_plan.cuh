// ansan/cuda/detail/attention_plan.cuh - the small device passes that run before a prefill
// kernel: the query-tile table of a ragged batch, the retained-key list (SPEC section 4) and
// the keys each query row sees.
//
//   tile_prefix[b]       first query tile of sequence b; tile_prefix[B] = tiles in all
//   retained_prefix[t]   keys with is_retained() among key rows [0, t)
//   retained_rows[r]     key row of the r-th such key (row order = position order)
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
//
// Rows outside every sequence (a cache's slack) are flagged by the same test of their k_pos and
// k_is_anchor, whatever those hold: the kernels only take differences of retained_prefix within
// one sequence's rows, and read retained_rows from retained_prefix[k_begin(b)] on, so a slack
// row shifts a sequence's list without entering it.
//
// Three launches, so that a call's fixed cost is three kernel launches, not nine operations
// (CUB's scans are two kernels each and a host-side dispatch):
//   plan_counts_kernel    the retained keys in each chunk of key rows; its last block builds
//                         tile_prefix (a block-wide scan over the batch)
//   plan_retained_kernel  per chunk: the counts of the chunks before it, then a block-wide scan
//                         of its rows: retained_prefix and retained_rows
//   query_row_keys_kernel row_keys
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda_check.hpp"

namespace ansan::cuda::detail {

constexpr int kPlanThreads = 256;
constexpr int kPlanWarps = kPlanThreads / 32;
constexpr std::int32_t kPlanMaxChunks = 1024;

// Key rows per block of the retained passes: 8 a thread, doubled until there are at most
// kPlanMaxChunks chunks (each block of the second pass sums the counts of the chunks before it).
inline std::int32_t retained_chunk_rows(std::int32_t total_k) {
  std::int32_t rows = 8 * kPlanThreads;
  while ((total_k + rows - 1) / rows > kPlanMaxChunks) rows *= 2;
  return rows;
}

// The exclusive prefix sum of `x` over the block's threads in thread order; `total` gets the
// block's sum. Every thread calls it; `warp_sums` is __shared__ scratch. It holds one barrier,
// between the warps' writes and everyone's reads, and none after the reads: a caller that scans
// again right away passes the other half of a double buffer (the barrier of the scan between
// two uses of one half orders the first's reads before the second's writes).
using WarpSums = std::int32_t[kPlanWarps];
ANSAN_DEVICE std::int32_t block_exclusive_sum(std::int32_t x, WarpSums& warp_sums,
                                              std::int32_t& total) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  std::int32_t inclusive = x;  // Hillis-Steele within the warp
  for (int offset = 1; offset < 32; offset *= 2) {
    const std::int32_t below =
        __shfl_sync(0xffffffffu, inclusive, lane >= offset ? lane - offset : 0);
    if (lane >= offset) inclusive += below;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  std::int32_t before = 0;
  total = 0;
  for (int w = 0; w < kPlanWarps; ++w) {
    if (w < warp) before += warp_sums[w];
    total += warp_sums[w];
  }
  return before + inclusive - x;
}

// The sum of `x` over the block's threads, in every thread (block_exclusive_sum's rules).
ANSAN_DEVICE std::int32_t block_sum(std::int32_t x, WarpSums& warp_sums) {
  std::int32_t total;
  block_exclusive_sum(x, warp_sums, total);
  return total;
}

template <class T>
ANSAN_DEVICE bool retained_row(const AttentionParams<T>& p, std::int32_t t) {
  return is_retained(p.policy, p.key(t));
}

// Blocks 0 .. gridDim.x - 2: chunk_counts[c] = retained keys among rows [c chunk, (c+1) chunk).
// The last block: tile_prefix[b] = query tiles of sequences [0, b), for b in [0, batch].
template <class T>
__global__ void __launch_bounds__(kPlanThreads)
    plan_counts_kernel(const __grid_constant__ AttentionParams<T> p, std::int32_t tile_rows,
                       std::int32_t chunk, std::int32_t* chunk_counts, std::int32_t* tile_prefix) {
  __shared__ WarpSums warp_sums[2];  // block scans in turn (block_exclusive_sum)
  const int tid = int(threadIdx.x);
  if (blockIdx.x + 1 == gridDim.x) {
    std::int32_t carry = 0;
    int turn = 0;
    for (std::int32_t base = 0; base <= p.batch; base += kPlanThreads, turn ^= 1) {
      const std::int32_t b = base + tid;
      const std::int32_t tiles =
          b < p.batch ? tiles_of(p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b], tile_rows) : 0;
      std::int32_t total;
      const std::int32_t before = block_exclusive_sum(tiles, warp_sums[turn], total);
      if (b <= p.batch) tile_prefix[b] = carry + before;
      carry += total;
    }
    return;
  }
  const std::int32_t begin = std::int32_t(blockIdx.x) * chunk;
  const std::int32_t end = min(begin + chunk, p.total_k);
  std::int32_t count = 0;
  for (std::int32_t t = begin + tid; t < end; t += kPlanThreads) count += retained_row(p, t);
  const std::int32_t total = block_sum(count, warp_sums[0]);
  if (tid == 0) chunk_counts[blockIdx.x] = total;
}

// Block c: retained_prefix over rows [c chunk, (c+1) chunk) and the retained_rows entries of
// its retained keys; the last block also writes retained_prefix[total_k]. Thread i takes
// chunk / kPlanThreads consecutive rows, so a block-wide scan of the threads' counts orders
// them.
template <class T>
__global__ void __launch_bounds__(kPlanThreads)
    plan_retained_kernel(const __grid_constant__ AttentionParams<T> p, std::int32_t chunk,
                         const std::int32_t* chunk_counts, std::int32_t* retained_prefix,
                         std::int32_t* retained_rows) {
  __shared__ WarpSums warp_sums[2];  // the two block scans, one half each
  const int tid = int(threadIdx.x);
  std::int32_t earlier = 0;  // retained keys in the chunks before this one
  for (std::int32_t c = tid; c < std::int32_t(blockIdx.x); c += kPlanThreads)
    earlier += chunk_counts[c];
  earlier = block_sum(earlier, warp_sums[0]);

  const std::int32_t per_thread = chunk / kPlanThreads;
  const std::int32_t begin = min(std::int32_t(blockIdx.x) * chunk + tid * per_thread, p.total_k);
  const std::int32_t end = min(begin + per_thread, p.total_k);
  std::int32_t count = 0;
  for (std::int32_t t = begin; t < end; ++t) count += retained_row(p, t);
  std::int32_t block_total;
  std::int32_t next = earlier + block_exclusive_sum(count, warp_sums[1], block_total);
  for (std::int32_t t = begin; t < end; ++t) {
    retained_prefix[t] = next;
    if (retained_row(p, t)) retained_rows[next++] = t;
  }
  if (blockIdx.x + 1 == gridDim.x && tid == 0) retained_prefix[p.total_k] = earlier + block_total;
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

// The row-keys pass: about total_q / B rows per sequence, 256 per thread block.
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
  const std::int32_t chunk = retained_chunk_rows(p.total_k);
  const std::int32_t chunks = retains ? (p.total_k + chunk - 1) / chunk : 0;
  std::int32_t* chunk_counts = temp.take<std::int32_t>(std::size_t(chunks));
  std::int32_t* retained_prefix =
      retains ? temp.take<std::int32_t>(std::size_t(p.total_k) + 1) : nullptr;
  std::int32_t* retained_rows = retains ? temp.take<std::int32_t>(std::size_t(p.total_k)) : nullptr;
  if (!tile_prefix) return cudaSuccess;  // size query

  ANSAN_CUDA_RETURN(launch_kernel(plan_counts_kernel<T>,
                                  {dim3(unsigned(chunks + 1)), dim3(kPlanThreads), 0}, stream, p,
                                  tile_rows, chunk, chunk_counts, tile_prefix));
  p.tile_prefix = tile_prefix;
  if (retains) {
    ANSAN_CUDA_RETURN(launch_kernel(plan_retained_kernel<T>,
                                    {dim3(unsigned(chunks)), dim3(kPlanThreads), 0}, stream, p,
                                    chunk, chunk_counts, retained_prefix, retained_rows));
    p.retained_prefix = retained_prefix;
    p.retained_rows = retained_rows;
  }
  ANSAN_CUDA_RETURN(launch_kernel(query_row_keys_kernel<T>, per_sequence_shape(p.total_q, p.batch),
                                  stream, p, row_keys));
  p.row_keys = row_keys;
  return cudaSuccess;
}

}  // namespace ansan::cuda::detail
