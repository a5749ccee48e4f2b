// ansan/cuda/detail/attention_decode_mma.cuh - split-KV decode on tensor cores (sm_80 and
// newer): the grid, splits and partial results of attention_decode.cuh, with S = Q K^T and
// O += P V on mma.sync instead of fp32 FMAs. fp16/bf16, head_dim 64, 128 or 256.
//
// Why: on an H100 the FMA decode kernel read its cache at 46-55% of the copy rate, bound by its
// own instructions and block barriers, not by bytes in flight (docs/cuda_attention.md). Under
// GQA the (token, head) rows of one KV head share every key: one m16n8k16 covers 16 of them
// for 8 keys, and even with 4 of its 16 rows in use it replaces 16 warp-wide FMAs.
// Measured on an H100 (docs/benchmarks.md): 64-96% of the copy rate at batch 64, caches of
// 512-8192 entries, 1.6-1.8x the FMA kernel at head dims 64-256; what automatic picks for
// decode wherever the device gives a block its shared memory.
//
// Grid (splits, heads_kv, B), 4 warps. A pass takes 16 (token, head) rows of the sequence and
// KV head (Q in swizzled shared memory: one m16 tile). The warps share out the split's keys in
// 16-key tiles, warp w taking tiles w, w + 4, ..., each with its own two cp.async stages of K
// and V, its own online softmax and O accumulator (the prefill kernel's fragments), and no
// block barrier inside the walk. After it, the four (max, sum, O) are merged in shared memory,
// warp after warp so that the result does not depend on timing, into the split's normalised
// O and log-sum-exp (SplitKvBlock::store_out / store_lse: the answer itself with one split,
// else a partial that merge_splits_kernel combines as for the FMA kernel).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_decode.cuh"  // kDecodeKeys, launch_split_kv
#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"

namespace ansan::cuda::detail {

template <class T, int Dim>
struct DecodeMmaTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRows = 16;  // (token, head) rows per pass: one m16 tile
  static constexpr int kKeys = 16;  // keys per warp tile: one k-step of P V
  static constexpr int kStages = 2;
  static constexpr int kChunks = Dim / 8;   // 16-byte chunks per row
  static constexpr int kKSteps = Dim / 16;  // k-steps of S = Q K^T
  static constexpr int kDimTiles = Dim / 8;
  static constexpr bool kQInRegisters = Dim <= 128;  // at 256, O alone takes 128 registers
  static constexpr int kQFragments = kQInRegisters ? kKSteps : 1;
  static constexpr std::size_t kTileElements = std::size_t(kKeys) * Dim;  // one K or V tile
  static_assert(sizeof(T) == 2 && (Dim == 64 || Dim == 128 || Dim == 256),
                "fp16/bf16, head_dim 64, 128 or 256");
  static_assert(kDecodeKeys % (kWarps * kKeys) == 0, "a split is whole rounds of warp tiles");
  // Q and every warp's stages during the walk; the float O of the merge reuses them after it.
  static constexpr std::size_t smem_bytes() {
    const std::size_t walk =
        sizeof(T) * (std::size_t(kRows) * Dim + std::size_t(kWarps) * kStages * 2 * kTileElements);
    const std::size_t merge = sizeof(float) * std::size_t(kRows) * Dim;
    return walk > merge ? walk : merge;
  }
};

template <class T, int Dim>
__global__ void __launch_bounds__(DecodeMmaTraits<T, Dim>::kThreads)
    attention_decode_mma_kernel(const __grid_constant__ AttentionParams<T> p) {
  using Tr = DecodeMmaTraits<T, Dim>;
  constexpr int kRows = Tr::kRows, kKeys = Tr::kKeys, kWarps = Tr::kWarps;
  T* sQ = dynamic_shared_memory<T>();          // (kRows, Dim) swizzled
  float* sO = dynamic_shared_memory<float>();  // (kRows, Dim), the merge (over sQ and tiles)
  __shared__ QueryInfo sQuery[kRows];
  __shared__ float sMax[kWarps][kRows], sSum[kWarps][kRows];  // per warp, base-2 domain
  __shared__ float sInvSum[kRows], sLse[kRows];               // the merged rows

  const SplitKvBlock blk = split_kv_block(p);
  const std::int32_t h_kv = blk.h_kv, k_begin = blk.k_begin;
  const SplitRange range = blk.range;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const std::int32_t tiles = (range.end - range.begin + kKeys - 1) / kKeys;
  const std::int32_t my_tiles = tiles > warp ? (tiles - warp + kWarps - 1) / kWarps : 0;
  T* const my_stages = sQ + kRows * Dim + std::size_t(warp) * Tr::kStages * 2 * Tr::kTileElements;
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;

  // K and V of this warp's i-th tile (the split's tile warp + 4 i) into stage i % 2, one
  // commit group; keys past the split's end are zero-filled.
  const auto load_tile = [&](std::int32_t i) {
    const std::int32_t key0 = range.begin + (warp + kWarps * i) * kKeys;
    T* k_tile = my_stages + (i % Tr::kStages) * 2 * Tr::kTileElements;
    T* v_tile = k_tile + Tr::kTileElements;
    for (int j = lane; j < kKeys * Tr::kChunks; j += 32) {
      const int c = j / Tr::kChunks, chunk = j % Tr::kChunks;
      const bool valid = key0 + c < range.end;
      const std::int32_t row = k_begin + key0 + c;
      cp_async_16(k_tile + swizzled_offset(c, 8 * chunk, Dim),
                  valid ? p.k_row(row, h_kv) + 8 * chunk : p.k, valid);
      cp_async_16(v_tile + swizzled_offset(c, 8 * chunk, Dim),
                  valid ? p.v_row(row, h_kv) + 8 * chunk : p.v, valid);
    }
    cp_async_commit();
  };

  for (std::int32_t row0 = 0; row0 < blk.rows_total; row0 += kRows) {
    const int rows = min(kRows, blk.rows_total - row0);
    const auto token_of = [&](int r) { return blk.token_of(row0 + r); };  // of pass row r
    const auto head_of = [&](int r) { return blk.head_of(row0 + r); };
    for (int i = tid; i < kRows * Tr::kChunks; i += Tr::kThreads) {
      const int r = i / Tr::kChunks, c = i % Tr::kChunks;
      const bool valid = r < rows;
      cp_async_16(sQ + swizzled_offset(r, 8 * c, Dim),
                  valid ? p.q_row(token_of(r), head_of(r)) + 8 * c : p.q, valid);
    }
    cp_async_commit();
    if (tid < rows) sQuery[tid] = p.query(token_of(tid));
    if (my_tiles > 0)
      load_tile(0);
    else
      cp_async_commit();       // an empty group keeps the count below uniform
    cp_async_wait_group<1>();  // Q has landed (tile 0 may still be in flight)
    __syncthreads();           // everyone's Q chunks and sQuery

    std::uint32_t q_frag[Tr::kQFragments][4];
    const auto load_q_fragment = [&](std::uint32_t(&frag)[4], int ks) {
      const RowCol at = ldmatrix_a_address(lane, ks);
      ldmatrix_x4(frag, sQ + swizzled_offset(at.row, at.col, Dim));
    };
    if (Tr::kQInRegisters)
      for (int ks = 0; ks < Tr::kKSteps; ++ks) load_q_fragment(q_frag[ks], ks);
    // This lane's two rows of every C fragment: lane/4 and lane/4 + 8.
    bool my_row_valid[2];
    QueryInfo my_query[2];
    for (int r = 0; r < 2; ++r) {
      const int row = lane / 4 + 8 * r;
      my_row_valid[r] = row < rows;
      if (my_row_valid[r]) my_query[r] = sQuery[row];
    }
    float acc_o[Tr::kDimTiles][4] = {};
    float row_max[2] = {kMinusInf, kMinusInf}, row_sum[2] = {0.f, 0.f};

    for (std::int32_t i = 0; i < my_tiles; ++i) {
      if (i + 1 < my_tiles)
        load_tile(i + 1);
      else
        cp_async_commit();
      // This lane's key columns 8 nt + 2 (lane % 4) + e, read while tile i lands.
      const std::int32_t key0 = range.begin + (warp + kWarps * i) * kKeys;
      bool key_valid[2][2];
      KeyInfo keys[2][2];
      for (int nt = 0; nt < 2; ++nt)
        for (int e = 0; e < 2; ++e) {
          const std::int32_t c = key0 + 8 * nt + 2 * (lane % 4) + e;
          key_valid[nt][e] = c < range.end;
          if (key_valid[nt][e]) keys[nt][e] = p.key(k_begin + c);
        }
      cp_async_wait_group<1>();
      __syncwarp();  // every lane's copies of tile i have landed
      const T* k_tile = my_stages + (i % Tr::kStages) * 2 * Tr::kTileElements;
      const T* v_tile = k_tile + Tr::kTileElements;

      float s[2][4] = {};  // S: (16 rows, 16 keys), two C fragments
      for (int ks = 0; ks < Tr::kKSteps; ++ks) {
        std::uint32_t(&qa)[4] = q_frag[Tr::kQInRegisters ? ks : 0];
        if (!Tr::kQInRegisters) load_q_fragment(qa, ks);
        const RowCol at = ldmatrix_k_address(lane, 0, ks);
        std::uint32_t kb[4];
        ldmatrix_x4(kb, k_tile + swizzled_offset(at.row, at.col, Dim));
        mma_m16n8k16<T>(s[0], qa, kb[0], kb[1]);
        mma_m16n8k16<T>(s[1], qa, kb[2], kb[3]);
      }
      float tile_max[2] = {kMinusInf, kMinusInf};
      for (int nt = 0; nt < 2; ++nt)
        for (int e4 = 0; e4 < 4; ++e4) {
          const int r = e4 / 2, e = e4 % 2;  // mma_c_element: rows lane/4 (+8), cols 2 (lane%4) + e
          const bool seen =
              my_row_valid[r] && key_valid[nt][e] && visible(p.policy, my_query[r], keys[nt][e]);
          s[nt][e4] = seen ? s[nt][e4] : kMinusInf;
          tile_max[r] = fmaxf(tile_max[r], s[nt][e4]);
        }
      online_softmax_step(s, tile_max, scale_log2, row_max, row_sum, acc_o);
      std::uint32_t a[4];
      p_fragment<T>(s, 0, a);
      for (int dp = 0; dp < Tr::kDimTiles / 2; ++dp) {  // O += P V, one k-step of 16 keys
        const RowCol at = ldmatrix_v_address(lane, 0, dp);
        std::uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_tile + swizzled_offset(at.row, at.col, Dim));
        mma_m16n8k16<T>(acc_o[2 * dp], a, vb[0], vb[1]);
        mma_m16n8k16<T>(acc_o[2 * dp + 1], a, vb[2], vb[3]);
      }
      __syncwarp();  // every lane is done with this stage before it is loaded again
    }
    cp_async_wait_all();  // only empty groups can remain

    // Merge the four warps: per row, max m = max_w m_w, sum = sum_w sum_w 2^(m_w - m),
    // O = sum_w O_w 2^(m_w - m), then normalise.
    for (int r = 0; r < 2; ++r) {
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
      if (lane % 4 == 0)
        sMax[warp][lane / 4 + 8 * r] = row_max[r], sSum[warp][lane / 4 + 8 * r] = row_sum[r];
    }
    __syncthreads();  // every warp is done with sQ and its stages: sO may overwrite them
    // The row's merged max, or 0 where no warp saw a key (no NaN from -inf - -inf); where the
    // sum is positive it is the max itself.
    const auto merged_reference = [&](int row) {
      float m = kMinusInf;
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, sMax[w][row]);
      return m == kMinusInf ? 0.f : m;
    };
    if (tid < kRows) {
      const float reference = merged_reference(tid);
      float sum = 0.f;
      for (int w = 0; w < kWarps; ++w) sum += sSum[w][tid] * exp2f(sMax[w][tid] - reference);
      sInvSum[tid] = sum > 0.f ? 1.f / sum : 0.f;
      sLse[tid] = sum > 0.f ? (reference + log2f(sum)) * 0.6931471805599453f : kMinusInf;
    }
    float weight[2];
    for (int r = 0; r < 2; ++r) weight[r] = exp2f(row_max[r] - merged_reference(lane / 4 + 8 * r));
    for (int w = 0; w < kWarps; ++w) {  // warp order: the sums do not depend on timing
      if (warp == w)
        for (int dt = 0; dt < Tr::kDimTiles; ++dt)
          for (int e4 = 0; e4 < 4; ++e4) {
            const RowCol at = mma_c_element(lane, e4);
            float& o = sO[at.row * Dim + 8 * dt + at.col];
            const float add = acc_o[dt][e4] * weight[e4 / 2];
            o = w == 0 ? add : o + add;
          }
      __syncthreads();
    }
    for (int i = tid; i < rows * Dim; i += Tr::kThreads) {
      const int r = i / Dim, d = i % Dim;
      blk.store_out(p, token_of(r), head_of(r), d, sO[i] * sInvSum[r]);
    }
    if (tid < rows) blk.store_lse(p, token_of(tid), head_of(tid), sLse[tid]);
    __syncthreads();  // the next pass loads Q over sO
  }
}

template <class T>
cudaError_t launch_attention_decode_mma(const AttentionParams<T>& p, cudaStream_t stream) {
  return for_head_dim(p, [&](auto dim) {
    constexpr int kDim = decltype(dim)::value;
    return launch_split_kv<DecodeMmaTraits<T, kDim>>(attention_decode_mma_kernel<T, kDim>, p,
                                                     stream);
  });
}

}  // namespace ansan::cuda::detail
