// ansan/cuda/detail/attention_mma_sm90.cuh - prefill on Hopper's warpgroup MMA (sm_90a):
// the tile walk, masks and online softmax of attention_mma_sm80.cuh, with its products on
// wgmma, fp16/bf16 in, f32 accumulation, head_dim 64 or 128. It must equal the other kernels;
// tests compare all of them with the float64 reference.
//
// One thread block = one warpgroup (4 warps) = 64 query rows of one sequence and one query
// head, warp w owning rows 16w .. 16w+15 (in registers: the S tile, the O accumulator, P).
// Per key tile of 64 (the same TileWalk: retained and local keys packed end to end):
//   S = Q K^T      wgmma m64n64k16, Q and K both read from shared memory (K-major), Dim/16 steps
//   mask, online softmax   as in the mma.sync kernel (the S accumulator has its C layout)
//   O += P V       wgmma m64nDk16, P from registers (the S accumulator converted to the A
//                  fragment), V from shared memory (MN-major: its rows are the k dimension)
// What this saves over mma.sync: no ldmatrix (the tensor cores read K and V from shared memory
// themselves, where the mma.sync kernel's warps spent most of their stalls), and one
// instruction per 64 x 64 x 16 product instead of 32.
// Tiles are staged by cp.async into the 128-byte-swizzled layout of wgmma_layout.hpp; V of
// tile j loads while S of tile j is computed, K of tile j+1 while P V of tile j is, as in the
// mma.sync kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/attention_query_tile.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"
#include "ansan/cuda/detail/mma_sm90.cuh"
#include "ansan/cuda/detail/wgmma_layout.hpp"

namespace ansan::cuda::detail {

template <class T, int Dim>
struct WarpgroupTraits {
  static constexpr int kRows = kTensorTileShape.block_rows;  // query rows per block (the plan's)
  static constexpr int kKeys = kTensorTileShape.tile_keys;   // keys per tile
  static constexpr int kThreads = 128;                       // one warpgroup
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kChunks = Dim / 8;      // 16-byte chunks per row
  static constexpr int kKSteps = Dim / 16;     // k-steps of S = Q K^T
  static constexpr int kKeyTiles = kKeys / 8;  // n-tiles of S
  static constexpr int kDimTiles = Dim / 8;    // n-tiles of O
  static constexpr int kPSteps = kKeys / 16;   // k-steps of O += P V
  static constexpr int kMinBlocksPerSM = 3;    // at most 170 registers: 12 warps an SM
  static_assert(sizeof(T) == 2, "fp16 / bf16 tiles");
  static_assert(Dim == 64 || Dim == 128,
                "head_dim 64 or 128 (256 needs 128 accumulators a thread)");
  static_assert(kRows == 16 * kWarps && kKeys == 64, "a warpgroup's 64 rows, m64n64 S tiles");
  static constexpr std::size_t tile_bytes(int rows) { return sizeof(T) * std::size_t(rows) * Dim; }
  // Q, K and V tiles, each a whole number of 1024-byte swizzle atoms, and the slack that lets
  // the kernel start them on a 1024-byte boundary.
  static constexpr std::size_t smem_bytes() {
    return kSwizzleAtom + tile_bytes(kRows) + 2 * tile_bytes(kKeys);
  }
  static_assert(tile_bytes(kRows) % kSwizzleAtom == 0 && tile_bytes(kKeys) % kSwizzleAtom == 0,
                "tiles keep the next one aligned");
};

template <class T, int Dim>
__global__ void __launch_bounds__(WarpgroupTraits<T, Dim>::kThreads,
                                  WarpgroupTraits<T, Dim>::kMinBlocksPerSM)
    attention_tensor_sm90_kernel(const __grid_constant__ AttentionParams<T> p) {
#if ANSAN_SM90A_PASS
  using Tr = WarpgroupTraits<T, Dim>;
  constexpr int kRows = Tr::kRows, kKeys = Tr::kKeys;
  unsigned char* const smem = dynamic_shared_memory<unsigned char>();
  T* sQ = reinterpret_cast<T*>(smem +
                               (kSwizzleAtom - shared_address(smem) % kSwizzleAtom) % kSwizzleAtom);
  T* sK = sQ + kRows * Dim;  // each tile: sw128_offset() layout
  T* sV = sK + kKeys * Dim;
  __shared__ RowKeys sRowKeys[kRows];
  __shared__ TileBounds sWarpBounds[Tr::kWarps][2];  // [warp][0 retained, 1 local]
  __shared__ TileBounds sBounds[2];                  // the whole block
  // [tile j % 2][K, V]: the element offset of the key row behind each slot of a tile
  __shared__ index_t sKeyOffsets[2][2][kKeys];

  const QueryTile q = locate_query_tile(p, blockIdx.x, kRows);
  if (q.tile < 0) return;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;

  load_query_rows<ColumnBlockSwizzle, kRows, Dim, Tr::kThreads>(p, q, sQ);
  bound_query_tile(p, q, sRowKeys, sWarpBounds, sBounds);
  const TileWalk walk{sBounds[0], sBounds[1], kKeys};
  const std::int32_t tiles = walk.count();
  const KeyTileLoader<T, ColumnBlockSwizzle, kKeys, Dim, Tr::kThreads> loader(p, q, walk, tid);
  if (tid < kKeys && tiles > 0) loader.store_offsets(sKeyOffsets[0], tid, loader.key_row(0, tid));
  __syncthreads();

  RowKeys my_rows[2];  // this thread's two rows of every accumulator fragment
  for (int r = 0; r < 2; ++r) my_rows[r] = sRowKeys[16 * warp + lane / 4 + 8 * r];
  const int my_col = mma_c_element(lane, 0).col;
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  const std::uint64_t q_desc = k_major_descriptor(shared_address(sQ));
  const std::uint64_t k_desc = k_major_descriptor(shared_address(sK));
  const std::uint64_t v_desc = mn_major_descriptor(shared_address(sV), kKeys);
  float acc_o[Tr::kDimTiles][4] = {};  // O: (16 rows, Dim) per warp, C layout
  float row_max[2] = {kMinusInf, kMinusInf}, row_sum[2] = {0.f, 0.f};  // base-2 domain

  if (tiles > 0) loader.load(sK, 0, 0, sKeyOffsets[0]);
  cp_async_commit();
  for (std::int32_t j = 0; j < tiles; ++j) {
    cp_async_wait_all();
    fence_proxy_async();             // this thread's copies, visible to the tensor cores' reads
    __syncthreads();                 // K_j (and Q) landed; every warp is done with V_{j-1}
    std::int32_t next_key_row = -1;  // read now, stored after S: its latency hides behind S
    if (tid < kKeys && j + 1 < tiles) next_key_row = loader.key_row(j + 1, tid);
    loader.load(sV, 1, j, sKeyOffsets[j % 2]);
    cp_async_commit();

    float s[Tr::kKeyTiles][4];  // S: (16 rows, kKeys) per warp, C layout
    wgmma_fence();
    for (int ks = 0; ks < Tr::kKSteps; ++ks)
      wgmma_m64n64k16_ss<T>(s, advance_descriptor(q_desc, k_major_step_bytes(ks, kRows)),
                            advance_descriptor(k_desc, k_major_step_bytes(ks, kKeys)), ks > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(s);

    // The warpgroup computed S for every warp; a warp none of whose rows sees the tile adds
    // P = 0 (it must still take part in the warpgroup's P V).
    const TileMask mask = walk.classify(sWarpBounds[warp][0], sWarpBounds[warp][1], j);  // warp-uniform
    if (mask == TileMask::none) {
      for (int nt = 0; nt < Tr::kKeyTiles; ++nt)
        for (int i = 0; i < 4; ++i) s[nt][i] = 0.f;
    } else {
      float tile_max[2];
      mask_scores(s, mask, walk, j, my_rows, my_col, tile_max);
      online_softmax_step(s, tile_max, scale_log2, row_max, row_sum, acc_o);
    }
    if (tid < kKeys) loader.store_offsets(sKeyOffsets[(j + 1) % 2], tid, next_key_row);

    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();  // V_j landed; every warp is done with K_j; the next key offsets are stored
    if (j + 1 < tiles) loader.load(sK, 0, j + 1, sKeyOffsets[(j + 1) % 2]);
    cp_async_commit();

    std::uint32_t p_frag[Tr::kPSteps][4];  // P as A fragments: keys 16 kk .. 16 kk + 15
    for (int kk = 0; kk < Tr::kPSteps; ++kk) p_fragment<T>(s, kk, p_frag[kk]);
    wgmma_fence();
    for (int kk = 0; kk < Tr::kPSteps; ++kk)
      wgmma_m64nNk16_rs<T, Dim>(acc_o, p_frag[kk],
                                advance_descriptor(v_desc, mn_major_step_bytes(kk)), true);
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(acc_o);
    fence_registers(p_frag);
  }
  cp_async_wait_all();

  store_query_rows(p, q, 16 * warp, acc_o, row_max, row_sum);
#endif  // ANSAN_SM90A_PASS
}

template <class T, int Dim>
cudaError_t launch_attention_tensor_sm90(const AttentionParams<T>& p, cudaStream_t stream) {
  using Tr = WarpgroupTraits<T, Dim>;
  const dim3 grid(
      unsigned((tiles_of(p.total_q, Tr::kRows) + p.batch) * p.heads_q));  // (tile, head)
  return launch_kernel(attention_tensor_sm90_kernel<T, Dim>, {grid, Tr::kThreads, Tr::smem_bytes()},
                       stream, p);
}

template <class T>
cudaError_t launch_attention_tensor_sm90(const AttentionParams<T>& p, cudaStream_t stream) {
  return for_hopper_head_dim<T>(p.head_dim, [&](auto dim) {
    return launch_attention_tensor_sm90<T, decltype(dim)::value>(p, stream);
  });
}

// Whether this program holds the kernel's sm_90a code for the current device (and can run it
// there): a pass without sm_90a's instructions compiles an empty body, which declares none of
// the kernel's static shared tables. Asks the runtime about the function; launches nothing.
template <class T>
bool tensor_sm90_compiled() {
#if defined(ANSAN_KERNEL_EMULATION)
  return true;
#else
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, attention_tensor_sm90_kernel<T, 128>) != cudaSuccess) {
    (void)cudaGetLastError();  // no image for this device: not an error of the caller's
    return false;
  }
  return attributes.sharedSizeBytes > 0;
#endif
}

}  // namespace ansan::cuda::detail
