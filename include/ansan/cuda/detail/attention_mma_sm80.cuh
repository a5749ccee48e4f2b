// ansan/cuda/detail/attention_mma_sm80.cuh - prefill on tensor cores (sm_80 and newer),
// FlashAttention-2 style: fp16/bf16 in, f32 accumulation, head_dim 64, 128 or 256.
// It must equal attention_simt.cuh (and reference_attention); tests compare all three.
//
// One thread block = 64 query rows of one sequence and one query head; warp w owns rows
// 16w .. 16w+15 and keeps them in registers: the S tile, the O accumulator and, at head_dim
// 64, the Q fragments (at 128 and 256 they are re-read from shared memory at every k-step:
// see TensorTraits).
// Key tiles of 64 come from the two parts of SPEC section 4, in one online softmax:
//   retained   64 entries of the sequence's retained list (rows gathered by index)
//   local      64 consecutive key rows of the band [min local_begin, max local_end)
// For each tile:
//   S = Q K^T            mma.m16n8k16 over head_dim, K fragments by ldmatrix.x4
//   mask                 per warp: no row sees the tile -> skip it; otherwise each row sees
//                        one interval of the tile's indices (seen_interval(): visible_retained /
//                        visible_local in index form, the whole tile when every row sees all
//                        of it), two compares per element and no branch
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

  // Heads vary fastest and tiles run last-first: late query tiles see the most retained keys,
  // so the heaviest blocks start first and the light ones fill the tail.
  const std::int32_t h = std::int32_t(blockIdx.x % unsigned(p.heads_q)), h_kv = h / (p.heads_q / p.heads_kv);
  const std::int32_t tile = p.tile_prefix[p.batch] - 1 - std::int32_t(blockIdx.x / unsigned(p.heads_q));
  if (tile < 0) return;  // the grid is an upper bound on the tiles
  const std::int32_t b = sequence_of_tile(p.tile_prefix, p.batch, tile);
  const std::int32_t q_begin = p.cu_seqlens_q[b] + (tile - p.tile_prefix[b]) * kRows;
  const std::int32_t rows = min(kRows, p.cu_seqlens_q[b + 1] - q_begin);
  const std::int32_t k_begin = p.k_begin(b);
  const std::int32_t retained_base = p.retained_prefix ? p.retained_prefix[k_begin] : 0;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;

  for (int i = tid; i < kRows * Tr::kChunks; i += Tr::kThreads) {
    const int r = i / Tr::kChunks, c = i % Tr::kChunks;
    const bool valid = r < rows;
    cp_async_16(sQ + swizzled_offset(r, 8 * c, Dim), valid ? p.q_row(q_begin + r, h) + 8 * c : p.q, valid);
  }
  cp_async_commit();
  if (tid < kRows)
    sRowKeys[tid] = tid < rows ? p.row_keys[q_begin + tid] : RowKeys{k_begin, k_begin, 0};
  __syncthreads();
  {  // bounds of each warp's 16 rows (lanes 16-31 repeat lanes 0-15), then of the block
    const int row = 16 * warp + lane % 16;
    const RowKeys rk = sRowKeys[row];
    const bool active = row < rows;
    const auto lo = [&](int x) { return __reduce_min_sync(0xffffffffu, active ? x : INT32_MAX); };
    const auto hi = [&](int x) { return __reduce_max_sync(0xffffffffu, active ? x : INT32_MIN); };
    const TileBounds retained{lo(0), hi(0), lo(rk.retained), hi(rk.retained)};
    const TileBounds local{lo(rk.local_begin), hi(rk.local_begin), lo(rk.local_end), hi(rk.local_end)};
    if (lane == 0) sWarpBounds[warp][0] = retained, sWarpBounds[warp][1] = local;
  }
  __syncthreads();
  if (tid < 2) {
    TileBounds all = TileBounds::empty();
    for (int w = 0; w < Tr::kWarps; ++w) all.merge(sWarpBounds[w][tid]);
    sBounds[tid] = all;
  }
  __syncthreads();
  const TileWalk walk{sBounds[0], sBounds[1], kKeys};
  const std::int32_t tiles = walk.count();
  const std::int32_t* retained_rows = p.retained_rows + retained_base;

  // Tile loads: thread `tid` copies 16-byte chunk `load_chunk` of key slots load_slot0,
  // load_slot0 + kLoadSlotStep, ... The offset of the row behind each slot comes from
  // sKeyOffsets, which threads 0..kKeys-1 fill one tile ahead: one global read and one 64-bit
  // multiply per slot, not one per chunk.
  constexpr int kLoadSlotStep = Tr::kThreads / Tr::kChunks, kLoadsPerThread = kKeys / kLoadSlotStep;
  static_assert(kKeys % kLoadSlotStep == 0 && Tr::kThreads >= kKeys, "whole load passes");
  const int load_slot0 = tid / Tr::kChunks, load_chunk = tid % Tr::kChunks;
  const T* const src[2] = {p.k + h_kv * p.k_stride_h + 8 * load_chunk,
                           p.v + h_kv * p.v_stride_h + 8 * load_chunk};
  const auto load_tile = [&](T* dst, int kv, std::int32_t j, const index_t(&offsets)[2][kKeys]) {
    const std::int32_t held = walk.slots_held(j);  // zeros past the end
    for (int i = 0; i < kLoadsPerThread; ++i) {
      const int slot = load_slot0 + i * kLoadSlotStep;
      cp_async_16(dst + swizzled_offset(slot, 8 * load_chunk, Dim), src[kv] + offsets[kv][slot],
                  slot < held);
    }
  };
  // Run by threads tid < kKeys, one per slot; a slot not held gets 0 (its copy reads nothing).
  const auto store_key_offsets = [&](index_t(&offsets)[2][kKeys], std::int32_t key_row) {
    offsets[0][tid] = key_row >= 0 ? key_row * p.k_stride_t : 0;
    offsets[1][tid] = key_row >= 0 ? key_row * p.v_stride_t : 0;
  };
  if (tid < kKeys && tiles > 0)
    store_key_offsets(sKeyOffsets[0], walk.key_row(0, walk.begin(0) + tid, retained_rows));
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

  if (tiles > 0) load_tile(sK, 0, 0, sKeyOffsets[0]);
  cp_async_commit();
  for (std::int32_t j = 0; j < tiles; ++j) {
    cp_async_wait_all();
    __syncthreads();  // K_j (and Q) landed; every warp is done with V_{j-1}
    if (Tr::kQInRegisters && j == 0)
      for (int ks = 0; ks < Tr::kKSteps; ++ks) load_q_fragment(q_frag[ks], ks);
    // The next tile's key rows: read now, stored after S, so the read's latency hides behind it.
    std::int32_t next_key_row = -1;
    if (tid < kKeys && j + 1 < tiles)
      next_key_row = walk.key_row(j + 1, walk.begin(j + 1) + tid, retained_rows);
    load_tile(sV, 1, j, sKeyOffsets[j % 2]);
    cp_async_commit();

    const int part = walk.part(j);
    const std::int32_t begin = walk.begin(j);
    const TileMask mask = classify_tile(sWarpBounds[warp][part], begin, begin + kKeys);  // warp-uniform
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
      // Mask (partial tiles only): each row sees one interval of the tile's indices; relative
      // to this lane's first column, element (nt, i) is at the compile-time offset 8 nt + i % 2.
      if (mask == TileMask::partial)
        for (int r = 0; r < 2; ++r) {
          const KeyInterval seen = seen_interval(mask, part, my_rows[r], begin, kKeys);
          const std::int32_t lo = seen.begin - (begin + my_col), hi = seen.end - (begin + my_col);
          for (int nt = 0; nt < Tr::kKeyTiles; ++nt)
            for (int i = 2 * r; i < 2 * r + 2; ++i) {
              const int offset = 8 * nt + i % 2;
              if (offset < lo || offset >= hi) s[nt][i] = kMinusInf;
            }
        }
      float tile_max[2] = {kMinusInf, kMinusInf};
      for (int nt = 0; nt < Tr::kKeyTiles; ++nt)
        for (int i = 0; i < 4; ++i) tile_max[i / 2] = fmaxf(tile_max[i / 2], s[nt][i]);
      online_softmax_step(s, tile_max, scale_log2, row_max, row_sum, acc_o);
    }
    if (tid < kKeys) store_key_offsets(sKeyOffsets[(j + 1) % 2], next_key_row);

    cp_async_wait_all();
    __syncthreads();  // V_j landed; every warp is done with K_j; the next key offsets are stored
    if (j + 1 < tiles) load_tile(sK, 0, j + 1, sKeyOffsets[(j + 1) % 2]);
    cp_async_commit();
    if (mask != TileMask::none)
      for (int kk = 0; kk < kKeys / 16; ++kk) {  // O += P V
        const std::uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                                    pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
        for (int dp = 0; dp < Tr::kDimTiles / 2; ++dp) {
          std::uint32_t vb[4];
          ldmatrix_x4_trans(vb, sV + v_lane.at(16 * kk, 16 * dp, Dim));
          mma_m16n8k16<T>(acc_o[2 * dp], a, vb[0], vb[1]);
          mma_m16n8k16<T>(acc_o[2 * dp + 1], a, vb[2], vb[3]);
        }
      }
  }
  cp_async_wait_all();

  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int row = 16 * warp + lane / 4 + 8 * r;
    if (row >= rows) continue;
    const std::int32_t t = q_begin + row;
    const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
    T* out = p.out_row(t, h);
    for (int dt = 0; dt < Tr::kDimTiles; ++dt) {
      const int col = 8 * dt + mma_c_element(lane, 2 * r).col;
      *reinterpret_cast<std::uint32_t*>(out + col) =
          pack2<T>(acc_o[dt][2 * r] * inv_sum, acc_o[dt][2 * r + 1] * inv_sum);
    }
    if (lane % 4 == 0)
      p.store_lse(t, h, sum > 0.f ? (row_max[r] + log2f(sum)) * 0.6931471805599453f : kMinusInf);
  }
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
