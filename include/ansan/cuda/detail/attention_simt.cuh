// ansan/cuda/detail/attention_simt.cuh - the readable GPU attention: fp32 FMA, shared-memory
// tiles, any head_dim up to 256, float / fp16 / bf16. It is the GPU reference the tensor-core
// and decode kernels are compared with, and the fallback for shapes they do not take
// (odd head dims, unaligned views).
//
// One thread block = 16 query rows of one sequence and one query head. It walks the two key
// parts of SPEC section 4 with one online softmax, packed end to end (TileWalk):
//   retained   the sequence's retained-key list, indices [0, max retained)
//   local      key rows [min local_begin, max local_end)
// so one tile may hold the end of the first and the start of the second. Tiles no row sees
// are skipped, fully visible ones take no per-element check, and the rest ask the predicate
// halves visible_retained / visible_local (by the key's part) per (row, key) in registers.
//
// Work split: warp w owns rows w, w+4, w+8, w+12. For scores, lane c takes key c of the
// 32-key tile; for the output, lane l owns dims l, l+32, ... (P is broadcast by shuffles).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"

namespace ansan::cuda::detail {

template <int MaxDim>
struct SimtTraits {
  static constexpr int kRows = 16;  // query rows per thread block
  static constexpr int kKeys = 32;  // keys per tile: one per lane
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRowsPerWarp = kRows / kWarps;
  static constexpr int kDimsPerLane = MaxDim / 32;
  static constexpr int kKeyStride = MaxDim + 1;  // lane c reads sK row c: the pad spreads banks
  static_assert(MaxDim % 32 == 0 && MaxDim <= 256, "head dims up to 256, in steps of 32");
  static_assert(kRows % kWarps == 0, "whole rows per warp");
  static constexpr std::size_t smem_bytes() {
    return sizeof(float) * (std::size_t(kRows) * MaxDim + std::size_t(kKeys) * kKeyStride +
                            std::size_t(kKeys) * MaxDim);
  }
};

template <class T, int MaxDim>
__global__ void __launch_bounds__(SimtTraits<MaxDim>::kThreads)
    attention_simt_kernel(const __grid_constant__ AttentionParams<T> p) {
  using Tr = SimtTraits<MaxDim>;
  constexpr int kRows = Tr::kRows, kKeys = Tr::kKeys;
  float* sQ = dynamic_shared_memory<float>();  // (kRows, MaxDim)
  float* sK = sQ + kRows * MaxDim;             // (kKeys, kKeyStride)
  float* sV = sK + kKeys * Tr::kKeyStride;     // (kKeys, MaxDim)
  __shared__ QueryInfo sQuery[kRows];
  __shared__ RowKeys sRowKeys[kRows];
  __shared__ KeyInfo sKey[kKeys];
  __shared__ std::int32_t sKeyRow[kKeys];     // key row of each tile column, -1 past the end
  __shared__ TileBounds sBounds[2];           // [0] retained-list indices, [1] local key rows

  const std::int32_t tile = std::int32_t(blockIdx.x);
  if (tile >= p.tile_prefix[p.batch]) return;  // the grid is an upper bound on the tiles
  const std::int32_t b = sequence_of_tile(p.tile_prefix, p.batch, tile);
  const std::int32_t q_begin = p.cu_seqlens_q[b] + (tile - p.tile_prefix[b]) * kRows;
  const std::int32_t rows = min(kRows, p.cu_seqlens_q[b + 1] - q_begin);
  const std::int32_t h = std::int32_t(blockIdx.y), h_kv = h / (p.heads_q / p.heads_kv);
  const std::int32_t k_begin = p.k_begin(b);
  const std::int32_t retained_base = p.retained_prefix ? p.retained_prefix[k_begin] : 0;
  const int dim = p.head_dim, warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;

  for (int i = int(threadIdx.x); i < kRows * MaxDim; i += Tr::kThreads) {
    const int r = i / MaxDim, d = i % MaxDim;
    sQ[i] = (r < rows && d < dim) ? to_float(p.q_row(q_begin + r, h)[d]) : 0.f;
  }
  if (int(threadIdx.x) < rows) {
    const QueryInfo q = p.query(q_begin + int(threadIdx.x));
    sQuery[threadIdx.x] = q;
    sRowKeys[threadIdx.x] = p.row_keys[q_begin + int(threadIdx.x)];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    TileBounds retained = TileBounds::empty(), local = TileBounds::empty();
    for (int r = 0; r < rows; ++r) {
      retained.add(0, sRowKeys[r].retained);
      local.add(sRowKeys[r].local_begin, sRowKeys[r].local_end);
    }
    sBounds[0] = retained, sBounds[1] = local;
  }
  __syncthreads();

  float o[Tr::kRowsPerWarp][Tr::kDimsPerLane] = {};  // unnormalised output rows
  float row_max[Tr::kRowsPerWarp], row_sum[Tr::kRowsPerWarp];
  for (int i = 0; i < Tr::kRowsPerWarp; ++i) row_max[i] = kMinusInf, row_sum[i] = 0.f;

  const TileWalk walk{sBounds[0], sBounds[1], kKeys};
  for (std::int32_t tile_index = 0; tile_index < walk.count(); ++tile_index) {
    const std::int32_t begin = walk.begin(tile_index);
    const TileMask mask = walk.classify(walk.retained, walk.local, tile_index);
    if (mask == TileMask::none) continue;  // uniform across the block
    if (int(threadIdx.x) < kKeys) {
      const std::int32_t index = begin + std::int32_t(threadIdx.x);
      const std::int32_t row = walk.key_row(index, p.retained_rows + retained_base);
      sKeyRow[threadIdx.x] = row;
      if (row >= 0) sKey[threadIdx.x] = p.key(row);
    }
    __syncthreads();
    for (int i = int(threadIdx.x); i < kKeys * MaxDim; i += Tr::kThreads) {
      const int c = i / MaxDim, d = i % MaxDim;
      const std::int32_t row = sKeyRow[c];
      const bool load = row >= 0 && d < dim;
      sK[c * Tr::kKeyStride + d] = load ? to_float(p.k_row(row, h_kv)[d]) : 0.f;
      sV[c * MaxDim + d] = load ? to_float(p.v_row(row, h_kv)[d]) : 0.f;
    }
    __syncthreads();

#pragma unroll
    for (int i = 0; i < Tr::kRowsPerWarp; ++i) {
      const int r = warp + i * Tr::kWarps;  // warp-uniform
      if (r >= rows) continue;
      bool seen = sKeyRow[lane] >= 0;
      if (seen && mask == TileMask::partial)
        seen = walk.in_retained(begin + lane) ? visible_retained(p.policy, sQuery[r], sKey[lane])
                                              : visible_local(p.policy, sQuery[r], sKey[lane]);
      float score = kMinusInf;  // S = scale * Q K^T, lane = key
      if (seen) {
        float dot = 0.f;
        for (int d = 0; d < dim; ++d) dot += sQ[r * MaxDim + d] * sK[lane * Tr::kKeyStride + d];
        score = dot * p.softmax_scale;
      }
      const float new_max = fmaxf(row_max[i], warp_max(score));
      const float rescale = exp_from(row_max[i], new_max);
      const float prob = exp_from(score, new_max);
      row_sum[i] = row_sum[i] * rescale + warp_sum(prob);
      row_max[i] = new_max;
      for (int j = 0; j < Tr::kDimsPerLane; ++j) o[i][j] *= rescale;
      for (int c = 0; c < kKeys; ++c) {  // O += P V, P of key c broadcast from lane c
        const float pc = __shfl_sync(0xffffffffu, prob, c);
        for (int j = 0; j < Tr::kDimsPerLane; ++j) o[i][j] += pc * sV[c * MaxDim + lane + 32 * j];
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < Tr::kRowsPerWarp; ++i) {
    const int r = warp + i * Tr::kWarps;
    if (r >= rows) continue;
    const std::int32_t t = q_begin + r;
    const float inv_sum = row_sum[i] > 0.f ? 1.f / row_sum[i] : 0.f;
    T* out = p.out_row(t, h);
    for (int j = 0; j < Tr::kDimsPerLane; ++j)
      if (lane + 32 * j < dim) out[lane + 32 * j] = from_float<T>(o[i][j] * inv_sum);
    if (lane == 0) p.store_lse(t, h, row_sum[i] > 0.f ? row_max[i] + logf(row_sum[i]) : kMinusInf);
  }
}

// Rows per thread block, for the query-tile table this kernel needs.
constexpr int kSimtRows = SimtTraits<64>::kRows;

template <class T, int MaxDim>
cudaError_t launch_attention_simt(const AttentionParams<T>& p, cudaStream_t stream) {
  using Tr = SimtTraits<MaxDim>;
  const dim3 grid(unsigned(tiles_of(p.total_q, Tr::kRows) + p.batch), unsigned(p.heads_q));
  return launch_kernel(attention_simt_kernel<T, MaxDim>, {grid, Tr::kThreads, Tr::smem_bytes()},
                       stream, p);
}

// Runtime head dim -> the smallest MaxDim bucket that holds it.
template <class T>
cudaError_t launch_attention_simt(const AttentionParams<T>& p, cudaStream_t stream) {
  if (p.head_dim <= 64) return launch_attention_simt<T, 64>(p, stream);
  if (p.head_dim <= 128) return launch_attention_simt<T, 128>(p, stream);
  return launch_attention_simt<T, 256>(p, stream);
}

}  // namespace ansan::cuda::detail
