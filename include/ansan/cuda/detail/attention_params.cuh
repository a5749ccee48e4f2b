// ansan/cuda/detail/attention_params.cuh - the one plain struct every attention kernel takes
// (passed __grid_constant__), built once from AttentionArgs<T> plus the temp-storage arrays,
// and the small device helpers the kernels share (metadata accessors, warp reductions).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "ansan/attention_args.hpp"
#include "ansan/config.hpp"
#include "ansan/cuda/detail/attention_tiles.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"  // exp2_approx
#include "ansan/dtype.hpp"
#include "ansan/policy.hpp"

namespace ansan::cuda::detail {

template <class T>
struct AttentionParams {
  const T* q;      // (total_q, heads_q, head_dim), strides q_stride_t / q_stride_h / 1
  const T* k;      // (total_k, heads_kv, head_dim)
  const T* v;      // (total_k, heads_kv, head_dim)
  T* out;          // (total_q, heads_q, head_dim)
  float* maybe_lse;  // (heads_q, total_q) with strides lse_stride_h / lse_stride_t, or null
  index_t q_stride_t, q_stride_h, k_stride_t, k_stride_h, v_stride_t, v_stride_h;
  index_t out_stride_t, out_stride_h, lse_stride_h, lse_stride_t;

  std::int32_t batch, heads_q, heads_kv, head_dim, total_q, total_k;
  const std::int32_t* cu_seqlens_q;       // (B+1)
  const std::int32_t* cu_seqlens_k;       // (B+1)
  const std::int32_t* q_pos;              // (total_q)
  const std::int32_t* q_seg_start;        // (total_q)
  const std::uint8_t* q_is_anchor;        // (total_q)
  const std::int32_t* k_pos;              // (total_k)
  const std::uint8_t* k_is_anchor;        // (total_k)
  const std::int32_t* maybe_k_seq_start;  // (B) or null
  MaskPolicy policy;
  float softmax_scale;

  // Temp storage (null where the path does not use it).
  const std::int32_t* tile_prefix;      // (B+1) query tiles per sequence, prefix-summed
  const std::int32_t* retained_prefix;  // (total_k+1) retained keys among rows [0, t)
  const std::int32_t* retained_rows;    // (total retained) key row of each retained key
  const RowKeys* row_keys;              // (total_q) the keys each query row sees (row_keys())
  float* partial_out;                   // (splits, total_q, heads_q, head_dim) decode partials;
                                        // null with one split (written straight to out)
  float* partial_lse;                   // (splits, heads_q, total_q)
  std::int32_t splits;                  // decode key splits per sequence

  ANSAN_DEVICE std::int32_t k_begin(std::int32_t b) const {
    return maybe_k_seq_start ? maybe_k_seq_start[b] : cu_seqlens_k[b];
  }
  ANSAN_DEVICE std::int32_t k_end(std::int32_t b) const {
    return k_begin(b) + cu_seqlens_k[b + 1] - cu_seqlens_k[b];
  }
  ANSAN_DEVICE QueryInfo query(std::int32_t t) const {
    return {q_pos[t], q_seg_start[t], q_is_anchor[t] != 0};
  }
  ANSAN_DEVICE KeyInfo key(std::int32_t row) const { return {k_pos[row], k_is_anchor[row] != 0}; }
  ANSAN_DEVICE const T* q_row(std::int32_t t, std::int32_t h) const {
    return q + t * q_stride_t + h * q_stride_h;
  }
  ANSAN_DEVICE const T* k_row(std::int32_t row, std::int32_t h) const {
    return k + row * k_stride_t + h * k_stride_h;
  }
  ANSAN_DEVICE const T* v_row(std::int32_t row, std::int32_t h) const {
    return v + row * v_stride_t + h * v_stride_h;
  }
  ANSAN_DEVICE T* out_row(std::int32_t t, std::int32_t h) const {
    return out + t * out_stride_t + h * out_stride_h;
  }
  ANSAN_DEVICE void store_lse(std::int32_t t, std::int32_t h, float value) const {
    if (maybe_lse) maybe_lse[h * lse_stride_h + t * lse_stride_t] = value;
  }
};

template <class T>
AttentionParams<T> make_params(const AttentionArgs<T>& a) {
  AttentionParams<T> p{};
  p.q = a.q.data, p.k = a.k.data, p.v = a.v.data, p.out = a.out.data, p.maybe_lse = a.lse.data;
  p.q_stride_t = a.q.stride[0], p.q_stride_h = a.q.stride[1];
  p.k_stride_t = a.k.stride[0], p.k_stride_h = a.k.stride[1];
  p.v_stride_t = a.v.stride[0], p.v_stride_h = a.v.stride[1];
  p.out_stride_t = a.out.stride[0], p.out_stride_h = a.out.stride[1];
  p.lse_stride_h = a.lse.stride[0], p.lse_stride_t = a.lse.stride[1];
  p.batch = a.batch;
  p.heads_q = std::int32_t(a.heads_q()), p.heads_kv = std::int32_t(a.heads_kv());
  p.head_dim = std::int32_t(a.head_dim());
  p.total_q = std::int32_t(a.total_q()), p.total_k = std::int32_t(a.total_k());
  p.cu_seqlens_q = a.cu_seqlens_q, p.cu_seqlens_k = a.cu_seqlens_k;
  p.q_pos = a.q_pos, p.q_seg_start = a.q_seg_start, p.q_is_anchor = a.q_is_anchor;
  p.k_pos = a.k_pos, p.k_is_anchor = a.k_is_anchor, p.maybe_k_seq_start = a.maybe_k_seq_start;
  p.policy = a.policy;
  p.softmax_scale = a.softmax_scale;
  p.splits = 1;
  return p;
}

constexpr float kMinusInf = -__builtin_huge_valf();

ANSAN_DEVICE float warp_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}
ANSAN_DEVICE float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// exp(x - max) that is 0, not NaN, when both are -inf (a row that has seen nothing yet).
ANSAN_DEVICE float exp_from(float x, float max) { return max == kMinusInf ? 0.f : expf(x - max); }

// One online-softmax step over a warp's S tile held as mma C fragments (mma_layout.hpp): this
// lane holds rows lane/4 and lane/4 + 8, each row's scores spread over a quad of lanes. `s`: raw
// scores Q K^T, -inf where not seen; `tile_max`: this lane's maximum of each row of s. Scores
// enter base 2 as s * scale_log2 (softmax_scale * log2 e, > 0, so the maximum of s is that of
// the scaled scores) in the same FFMA as the subtraction of the maximum. Turns `s` into
// 2^(s scale_log2 - max), adds them to this lane's part of `row_sum` (quads add up at the end),
// moves `row_max` (base-2 domain) to the new row maximum, and returns in `rescale` the factor
// each row's O accumulator takes to follow it (rescale_accumulator; a kernel whose O is still
// being written by an MMA applies it after that MMA's wait).
template <int KeyTiles>
ANSAN_DEVICE void online_softmax_scores(float (&s)[KeyTiles][4], float (&tile_max)[2],
                                        float scale_log2, float (&row_max)[2], float (&row_sum)[2],
                                        float (&rescale)[2]) {
  for (int r = 0; r < 2; ++r) {
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
    const float new_max = fmaxf(row_max[r], tile_max[r] * scale_log2);
    const float reference = new_max == kMinusInf ? 0.f : new_max;  // no NaN from -inf - -inf
    rescale[r] = exp2_approx(row_max[r] - reference);
    float sum = 0.f;
    for (int nt = 0; nt < KeyTiles; ++nt)
      for (int i = 2 * r; i < 2 * r + 2; ++i) {
        s[nt][i] = exp2_approx(fmaf(s[nt][i], scale_log2, -reference));
        sum += s[nt][i];
      }
    row_sum[r] = row_sum[r] * rescale[r] + sum;
    row_max[r] = new_max;
  }
}

// O *= rescale row by row, skipped unless some row of the warp has a new maximum (otherwise
// every factor is 2^0 = 1: the usual case once a row has seen its largest scores).
template <int DimTiles>
ANSAN_DEVICE void rescale_accumulator(float (&acc_o)[DimTiles][4], const float (&rescale)[2]) {
  if (__any_sync(0xffffffffu, rescale[0] != 1.f || rescale[1] != 1.f))
    for (int dt = 0; dt < DimTiles; ++dt)
      for (int i = 0; i < 4; ++i) acc_o[dt][i] *= rescale[i / 2];
}

template <int KeyTiles, int DimTiles>
ANSAN_DEVICE void online_softmax_step(float (&s)[KeyTiles][4], float (&tile_max)[2],
                                      float scale_log2, float (&row_max)[2], float (&row_sum)[2],
                                      float (&acc_o)[DimTiles][4]) {
  float rescale[2];
  online_softmax_scores(s, tile_max, scale_log2, row_max, row_sum, rescale);
  rescale_accumulator(acc_o, rescale);
}

// The vector kernels' one run-time-to-template step: `launch(std::integral_constant<int, D>{})`
// for head_dim D in {64, 128, 256} (the dispatcher checks which), fp16/bf16 only.
template <class T, class Launch>
cudaError_t for_head_dim(const AttentionParams<T>& p, Launch&& launch) {
  if constexpr (sizeof(T) != 2) {
    return cudaErrorInvalidValue;  // float never reaches a vector kernel
  } else {
    if (p.head_dim == 64) return launch(std::integral_constant<int, 64>{});
    if (p.head_dim == 128) return launch(std::integral_constant<int, 128>{});
    return launch(std::integral_constant<int, 256>{});
  }
}

}  // namespace ansan::cuda::detail
