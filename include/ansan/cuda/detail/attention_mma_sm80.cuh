// ansan/cuda/detail/attention_mma_sm80.cuh - prefill on tensor cores (sm_80 and newer),
// FlashAttention-2 style: fp16/bf16 in, f32 accumulation, head_dim 64, 128 or 256.
// It must equal attention_simt.cuh (and reference_attention); tests compare all three.
//
// One thread block = 64 query rows of one sequence and one query head; warp w owns rows
// 16w .. 16w+15 and keeps them in registers: the S tile, the O accumulator and, at head_dim
// 64, the Q fragments (at 128 and 256 they are re-read from shared memory at every k-step:
// see TensorTraits).
// Key tiles of 64 come from the two parts of SPEC section 4, packed end to end (TileWalk), in
// one online softmax:
//   retained   entries of the sequence's retained list (rows gathered by index)
//   local      consecutive key rows of the band [min local_begin, max local_end)
// (the tile where the first ends holds the start of the second). For each tile:
//   S = Q K^T            mma.m16n8k16 over head_dim, K fragments by ldmatrix.x4
//   mask                 per warp: no row sees the tile -> skip it; otherwise each row sees
//                        one interval of the tile's walk indices in each part (TileWalk::seen:
//                        visible_retained / visible_local in index form, the whole tile when
//                        every row sees all of it), three compares per element and no branch
//                        (tests/test_attention_tiles.cpp replays this walk on the host)
//   online softmax       in base 2 (scores pre-multiplied by scale * log2 e)
//   O += P V             P re-used from the S accumulator as the A fragment (mma_layout.hpp),
//                        V fragments by ldmatrix.x4.trans
// Tiles are staged with cp.async into XOR-swizzled shared memory; V of tile j loads while S
// of tile j is computed, K of tile j+1 while P V of tile j is. The key rows of tile j+1 (the
// retained list is a gather) are read during S of tile j, one read per key.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/attention_query_tile.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"

namespace ansan::cuda::detail {

template <class T, int Dim>
struct TensorTraits {
  static constexpr int kRows = kTensorTileShape.block_rows;  // query rows per thread block
  static constexpr int kKeys = kTensorTileShape.tile_keys;   // keys per tile
  static constexpr int kWarps = kRows / kTensorTileShape.warp_rows;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kChunks = Dim / 8;      // 16-byte chunks per row
  static constexpr int kKSteps = Dim / 16;     // k-steps of S = Q K^T
  static constexpr int kKeyTiles = kKeys / 8;  // n-tiles of S
  static constexpr int kDimTiles = Dim / 8;    // n-tiles of O
  // Q fragments stay in registers only at head_dim 64. At 128, re-reading them from shared
  // memory frees the registers that let three blocks share an SM (168 a thread, 96 bytes
  // spilled): on an H100 that was 12% faster at n = 16384, L = 20 and 8% on dense causal
  // (docs/benchmarks.md). At 256 the O accumulator alone takes 128 registers.
  static constexpr bool kQInRegisters = Dim <= 64;
  static constexpr int kMinBlocksPerSM = Dim == 128 ? 3 : 1;
  static constexpr int kQFragments = kQInRegisters ? kKSteps : 1;  // k-steps of Q held at once
  static_assert(sizeof(T) == 2, "fp16 / bf16 tiles");
  static_assert(Dim == 64 || Dim == 128 || Dim == 256, "head_dim 64, 128 or 256");
  static_assert(kRows == 16 * kWarps, "16 rows (one m16 tile) per warp");
  static_assert(kKeys % 16 == 0 && Dim % 16 == 0, "whole k-steps");
  static constexpr std::size_t smem_bytes() {
    return sizeof(T) * std::size_t(kRows + 2 * kKeys) * Dim;
  }
};

constexpr int kTensorRows = kTensorTileShape.block_rows;

template <class T, int Dim>
__global__ void __launch_bounds__(TensorTraits<T, Dim>::kThreads,
                                  TensorTraits<T, Dim>::kMinBlocksPerSM)
    attention_tensor_kernel(const __grid_constant__ AttentionParams<T> p) {
  using Tr = TensorTraits<T, Dim>;
  constexpr int kRows = Tr::kRows, kKeys = Tr::kKeys;
  T* sQ = dynamic_shared_memory<T>();  // (kRows, Dim) swizzled
  T* sK = sQ + kRows * Dim;            // (kKeys, Dim) swizzled
  T* sV = sK + kKeys * Dim;            // (kKeys, Dim) swizzled
  __shared__ RowKeys sRowKeys[kRows];
  __shared__ TileBounds sWarpBounds[Tr::kWarps][2];  // [warp][0 retained, 1 local]
  __shared__ TileBounds sBounds[2];                  // the whole block
  // [tile j % 2][K, V]: the element offset of the key row behind each slot of a tile
  __shared__ index_t sKeyOffsets[2][2][kKeys];

  const QueryTile q = locate_query_tile(p, blockIdx.x, kRows);
  if (q.tile < 0) return;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;

  load_query_rows<RowSwizzle<Dim>, kRows, Dim, Tr::kThreads>(p, q, sQ);
  bound_query_tile(p, q, sRowKeys, sWarpBounds, sBounds);
  const TileWalk walk{sBounds[0], sBounds[1], kKeys};
  const std::int32_t tiles = walk.count();
  const KeyTileLoader<T, RowSwizzle<Dim>, kKeys, Dim, Tr::kThreads> loader(p, q, walk, tid);
  if (tid < kKeys && tiles > 0) loader.store_offsets(sKeyOffsets[0], tid, loader.key_row(0, tid));
  __syncthreads();

  // This thread's two rows of every C fragment: 16w + lane/4 and 16w + lane/4 + 8; its columns
  // of an S tile: 8 nt + 2 (lane % 4) + {0, 1}.
  RowKeys my_rows[2];
  for (int r = 0; r < 2; ++r) my_rows[r] = sRowKeys[16 * warp + lane / 4 + 8 * r];
  const int my_col = mma_c_element(lane, 0).col;
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  // ldmatrix addresses: each lane's part once; k-steps and key pairs add constants.
  const SwizzledLane q_lane = swizzled_lane(ldmatrix_a_address(lane, 0), Dim);
  const SwizzledLane k_lane = swizzled_lane(ldmatrix_k_address(lane, 0, 0), Dim);
  const SwizzledLane v_lane = swizzled_lane(ldmatrix_v_address(lane, 0, 0), Dim);
  std::uint32_t q_frag[Tr::kQFragments][4];
  const auto load_q_fragment = [&](std::uint32_t(&frag)[4], int ks) {
    ldmatrix_x4(frag, sQ + q_lane.at(16 * warp, 16 * ks, Dim));
  };
  float acc_o[Tr::kDimTiles][4] = {};  // O: (16 rows, Dim) per warp, C layout
  float row_max[2] = {kMinusInf, kMinusInf}, row_sum[2] = {0.f, 0.f};  // base-2 domain

  if (tiles > 0) loader.load(sK, 0, 0, sKeyOffsets[0]);
  cp_async_commit();
  for (std::int32_t j = 0; j < tiles; ++j) {
    cp_async_wait_all();
    __syncthreads();  // K_j (and Q) landed; every warp is done with V_{j-1}
    if (Tr::kQInRegisters && j == 0)
      for (int ks = 0; ks < Tr::kKSteps; ++ks) load_q_fragment(q_frag[ks], ks);
    // The next tile's key rows: read now, stored after S, so the read's latency hides behind it.
    std::int32_t next_key_row = -1;
    if (tid < kKeys && j + 1 < tiles) next_key_row = loader.key_row(j + 1, tid);
    loader.load(sV, 1, j, sKeyOffsets[j % 2]);
    cp_async_commit();

    const TileMask mask = walk.classify(sWarpBounds[warp][0], sWarpBounds[warp][1], j);  // warp-uniform
    float s[Tr::kKeyTiles][4] = {};  // S: (16 rows, kKeys) per warp, C layout
    if (mask != TileMask::none) {
      for (int ks = 0; ks < Tr::kKSteps; ++ks) {  // S = Q K^T
        std::uint32_t(&qa)[4] = q_frag[Tr::kQInRegisters ? ks : 0];
        if (!Tr::kQInRegisters) load_q_fragment(qa, ks);
        for (int np = 0; np < Tr::kKeyTiles / 2; ++np) {
          std::uint32_t kb[4];
          ldmatrix_x4(kb, sK + k_lane.at(16 * np, 16 * ks, Dim));
          mma_m16n8k16<T>(s[2 * np], qa, kb[0], kb[1]);
          mma_m16n8k16<T>(s[2 * np + 1], qa, kb[2], kb[3]);
        }
      }
      float tile_max[2];
      mask_scores(s, mask, walk, j, my_rows, my_col, tile_max);
      online_softmax_step(s, tile_max, scale_log2, row_max, row_sum, acc_o);
    }
    if (tid < kKeys) loader.store_offsets(sKeyOffsets[(j + 1) % 2], tid, next_key_row);

    cp_async_wait_all();
    __syncthreads();  // V_j landed; every warp is done with K_j; the next key offsets are stored
    if (j + 1 < tiles) loader.load(sK, 0, j + 1, sKeyOffsets[(j + 1) % 2]);
    cp_async_commit();
    if (mask != TileMask::none)
      for (int kk = 0; kk < kKeys / 16; ++kk) {  // O += P V
        std::uint32_t a[4];
        p_fragment<T>(s, kk, a);
        for (int dp = 0; dp < Tr::kDimTiles / 2; ++dp) {
          std::uint32_t vb[4];
          ldmatrix_x4_trans(vb, sV + v_lane.at(16 * kk, 16 * dp, Dim));
          mma_m16n8k16<T>(acc_o[2 * dp], a, vb[0], vb[1]);
          mma_m16n8k16<T>(acc_o[2 * dp + 1], a, vb[2], vb[3]);
        }
      }
  }
  cp_async_wait_all();

  store_query_rows(p, q, 16 * warp, acc_o, row_max, row_sum);
}

template <class T, int Dim>
cudaError_t launch_attention_tensor(const AttentionParams<T>& p, cudaStream_t stream) {
  using Tr = TensorTraits<T, Dim>;
  static_assert(Tr::kRows == kTensorRows, "the query-tile table uses kTensorRows");
  const dim3 grid(unsigned((tiles_of(p.total_q, Tr::kRows) + p.batch) * p.heads_q));  // (tile, head)
  return launch_kernel(attention_tensor_kernel<T, Dim>, {grid, Tr::kThreads, Tr::smem_bytes()},
                       stream, p);
}

template <class T>
cudaError_t launch_attention_tensor(const AttentionParams<T>& p, cudaStream_t stream) {
  return for_head_dim(
      p, [&](auto dim) { return launch_attention_tensor<T, decltype(dim)::value>(p, stream); });
}

}  // namespace ansan::cuda::detail
