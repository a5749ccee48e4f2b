// ansan/cuda/detail/attention_decode.cuh - split-KV decode (flash-decoding) for one or a few
// query rows per sequence over a (compacted) KV cache.
//
// After a reduction (SPEC section 3) the cache holds only keys a future row can see, so decode
// walks the cache rows directly: no retained list, the predicate ansan::visible masks the few
// keys a row cannot see (an anchor row under AnLLM, keys beyond a window). Equals
// reference_attention; over an uncompacted cache it is correct but visits every key.
//
// Grid (splits, heads_kv, B). A thread block takes one KV head of one sequence and one split of
// its key rows, and every query row of that sequence times the query heads sharing the KV head
// (GQA: K and V are read once for the whole group), 8 (token, head) rows per pass:
//   K, V tile          (64 keys, cp.async into shared memory; V lands during S and softmax)
//   S = scale * Q K^T  (thread = key, 16-byte vector reads from shared)
//   online softmax per row (one warp per row)
//   O += P V           (thread = 16 bytes of head dims for 1-2 rows)
// Each split writes its normalised partial O and log-sum-exp; merge_splits_kernel combines
// them: lse = log(sum_s exp(lse_s)), O = sum_s exp(lse_s - lse) O_s.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mma_sm80.cuh"  // cp.async
#include "ansan/cuda_check.hpp"

namespace ansan::cuda::detail {

// Keys per decode tile: the unit splits are cut in (decode_splits, split_range).
constexpr int kDecodeKeys = 64;

template <class T, int Dim>
struct DecodeTraits {
  static constexpr int kThreads = 128;
  static constexpr int kKeys = kDecodeKeys;
  static constexpr int kRows = 8;   // (token, head) rows per pass
  static constexpr int kVec = 16 / int(sizeof(T));              // elements per 16-byte load
  static constexpr int kKeyStride = Dim + kVec;                  // pad: 8 lanes hit 8 bank groups
  static constexpr int kThreadsPerRow = Dim / kVec;              // output phase
  static constexpr int kRowGroups = kThreads / kThreadsPerRow;
  static constexpr int kRowsPerThread = (kRows + kRowGroups - 1) / kRowGroups;
  static constexpr int kScoreRowsPerThread = kRows * kKeys / kThreads;
  static_assert(Dim % kVec == 0 && kThreads % kThreadsPerRow == 0, "head_dim in 16-byte chunks");
  static_assert(kThreads == 2 * kKeys && kRows == 8, "score phase: thread = key, 4 rows each");
  static_assert(sizeof(T) == 2 && (Dim == 64 || Dim == 128 || Dim == 256),
                "fp16/bf16, head_dim 64, 128 or 256");
  // The K and V tiles, in dynamic shared memory: 65 KiB at head_dim 256, over the 48 KiB a
  // block may declare statically.
  static constexpr std::size_t smem_bytes() {
    return sizeof(T) * std::size_t(kKeys) * std::size_t(kKeyStride + Dim);
  }
};

// Eight 16-bit elements at a 16-byte aligned shared address, as floats.
template <class T>
ANSAN_DEVICE void load_vec(const T* ptr, float* f) {
  static_assert(sizeof(T) == 2, "fp16 / bf16");
  const uint4 raw = *reinterpret_cast<const uint4*>(ptr);
  const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
  for (int i = 0; i < 4; ++i) {
    T pair[2];
    memcpy(pair, &words[i], sizeof pair);
    f[2 * i] = to_float(pair[0]), f[2 * i + 1] = to_float(pair[1]);
  }
}

// What one block of a split-KV kernel (grid (splits, heads_kv, B)) works on: one KV head of one
// sequence, one split of its key rows, and the sequence's query rows times the group's query
// heads as "rows" that run over the heads of a group fastest.
struct SplitKvBlock {
  std::int32_t split, h_kv, group, q_begin, rows_total, k_begin;
  SplitRange range;  // key rows, relative to k_begin
  ANSAN_DEVICE std::int32_t token_of(std::int32_t row) const { return q_begin + row / group; }
  ANSAN_DEVICE std::int32_t head_of(std::int32_t row) const { return h_kv * group + row % group; }

  // This split's normalised result for (token t, head h): element d of O, and the row's lse.
  // With one split per sequence it is the answer and goes straight to out and lse (the merge
  // is not launched; it would multiply by 2^0 = 1); otherwise to the partials it merges.
  template <class T>
  ANSAN_DEVICE void store_out(const AttentionParams<T>& p, std::int32_t t, std::int32_t h, int d,
                              float o) const {
    if (p.splits == 1)
      p.out_row(t, h)[d] = from_float<T>(o);
    else
      p.partial_out[((index_t(split) * p.total_q + t) * p.heads_q + h) * p.head_dim + d] = o;
  }
  template <class T>
  ANSAN_DEVICE void store_lse(const AttentionParams<T>& p, std::int32_t t, std::int32_t h,
                              float lse) const {
    if (p.splits == 1)
      p.store_lse(t, h, lse);
    else
      p.partial_lse[(index_t(split) * p.heads_q + h) * p.total_q + t] = lse;
  }
};
template <class T>
ANSAN_DEVICE SplitKvBlock split_kv_block(const AttentionParams<T>& p) {
  const std::int32_t b = std::int32_t(blockIdx.z), group = p.heads_q / p.heads_kv;
  const std::int32_t q_begin = p.cu_seqlens_q[b], k_begin = p.k_begin(b);
  return {std::int32_t(blockIdx.x),
          std::int32_t(blockIdx.y),
          group,
          q_begin,
          (p.cu_seqlens_q[b + 1] - q_begin) * group,
          k_begin,
          split_range(p.k_end(b) - k_begin, p.splits, std::int32_t(blockIdx.x), kDecodeKeys)};
}

template <class T, int Dim>
__global__ void __launch_bounds__(DecodeTraits<T, Dim>::kThreads)
    attention_decode_kernel(const __grid_constant__ AttentionParams<T> p) {
  using Tr = DecodeTraits<T, Dim>;
  constexpr int kKeys = Tr::kKeys, kRows = Tr::kRows, kVec = Tr::kVec;
  T* sK = dynamic_shared_memory<T>();   // (kKeys, Dim + pad)
  T* sV = sK + kKeys * Tr::kKeyStride;  // (kKeys, Dim), 16-byte aligned: kKeyStride % kVec == 0
  __shared__ float sQ[kRows * Dim];                     // (kRows, Dim), pre-scaled
  __shared__ float sS[kRows * kKeys];                   // (kRows, kKeys) scores, then P
  __shared__ float sMax[kRows], sSum[kRows], sRescale[kRows];
  __shared__ QueryInfo sQuery[kRows];
  __shared__ KeyInfo sKey[kKeys];
  __shared__ bool sKeyValid[kKeys];

  const SplitKvBlock blk = split_kv_block(p);
  const std::int32_t h_kv = blk.h_kv, k_begin = blk.k_begin;
  const SplitRange range = blk.range;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;

  for (std::int32_t row0 = 0; row0 < blk.rows_total; row0 += kRows) {
    const int rows = min(kRows, blk.rows_total - row0);
    const auto token_of = [&](int r) { return blk.token_of(row0 + r); };  // of pass row r
    const auto head_of = [&](int r) { return blk.head_of(row0 + r); };
    for (int i = tid; i < kRows * Dim; i += Tr::kThreads) {
      const int r = i / Dim, d = i % Dim;
      sQ[i] = r < rows ? to_float(p.q_row(token_of(r), head_of(r))[d]) * p.softmax_scale : 0.f;
    }
    if (tid < kRows) {
      sMax[tid] = kMinusInf, sSum[tid] = 0.f;
      if (tid < rows) sQuery[tid] = p.query(token_of(tid));
    }
    float acc[Tr::kRowsPerThread][kVec] = {};  // unnormalised O rows of this thread
    const int out_group = tid / Tr::kThreadsPerRow, d0 = (tid % Tr::kThreadsPerRow) * kVec;

    for (std::int32_t key0 = range.begin; key0 < range.end; key0 += kKeys) {
      __syncthreads();  // the previous tile (or pass) is done with sK, sV, sS
      const int keys = min(kKeys, range.end - key0);
      if (tid < kKeys) {
        sKeyValid[tid] = tid < keys;
        if (tid < keys) sKey[tid] = p.key(k_begin + key0 + tid);
      }
      // cp.async: the whole tile (16 KiB of K and of V at head_dim 128) in flight at once, in
      // no registers, K and V as two groups so that V still lands during S and the softmax;
      // rows past the split's end are zero-filled.
      const auto load = [&](T* tile, int stride, auto row_of) {
        for (int i = tid; i < kKeys * Tr::kThreadsPerRow; i += Tr::kThreads) {
          const int c = i / Tr::kThreadsPerRow, d = (i % Tr::kThreadsPerRow) * kVec;
          const bool valid = c < keys;
          cp_async_16(&tile[c * stride + d], row_of(k_begin + key0 + (valid ? c : 0)) + d, valid);
        }
        cp_async_commit();
      };
      load(sK, Tr::kKeyStride, [&](std::int32_t row) { return p.k_row(row, h_kv); });
      load(sV, Dim, [&](std::int32_t row) { return p.v_row(row, h_kv); });
      cp_async_wait_group<1>();  // K has landed
      __syncthreads();

      {  // S = (scale Q) K^T: thread = key c, rows r0, r0+2, r0+4, r0+6
        const int c = tid % kKeys, r0 = tid / kKeys;
        float dot[Tr::kScoreRowsPerThread] = {};
        for (int d = 0; d < Dim; d += kVec) {
          float k_vec[kVec];
          load_vec(&sK[c * Tr::kKeyStride + d], k_vec);
          for (int i = 0; i < Tr::kScoreRowsPerThread; ++i)
            if (r0 + 2 * i < rows)  // block-uniform: 1 query row x 4 heads fills half the rows
              for (int e = 0; e < kVec; ++e) dot[i] += sQ[(r0 + 2 * i) * Dim + d + e] * k_vec[e];
        }
        for (int i = 0; i < Tr::kScoreRowsPerThread; ++i) {
          const int r = r0 + 2 * i;
          const bool seen = r < rows && sKeyValid[c] && visible(p.policy, sQuery[r], sKey[c]);
          sS[r * kKeys + c] = seen ? dot[i] : kMinusInf;
        }
      }
      __syncthreads();

      for (int r = warp; r < kRows; r += Tr::kThreads / 32) {  // online softmax, warp = row
        const float s0 = sS[r * kKeys + lane], s1 = sS[r * kKeys + lane + 32];
        const float old_max = sMax[r];
        const float new_max = fmaxf(old_max, warp_max(fmaxf(s0, s1)));
        const float p0 = exp_from(s0, new_max), p1 = exp_from(s1, new_max);
        sS[r * kKeys + lane] = p0, sS[r * kKeys + lane + 32] = p1;
        const float tile_sum = warp_sum(p0 + p1);
        __syncwarp();  // every lane has read sMax[r]: shuffles order execution, not memory
        if (lane == 0) {
          const float rescale = exp_from(old_max, new_max);
          sRescale[r] = rescale;
          sSum[r] = sSum[r] * rescale + tile_sum;
          sMax[r] = new_max;
        }
      }
      cp_async_wait_all();  // V has landed
      __syncthreads();

      for (int i = 0; i < Tr::kRowsPerThread; ++i) {  // O = O * rescale + P V
        const int r = out_group + i * Tr::kRowGroups;
        if (r < kRows)
          for (int e = 0; e < kVec; ++e) acc[i][e] *= sRescale[r];
      }
      for (int c = 0; c < keys; ++c) {
        float v_vec[kVec];
        load_vec(&sV[c * Dim + d0], v_vec);
        for (int i = 0; i < Tr::kRowsPerThread; ++i) {
          const int r = out_group + i * Tr::kRowGroups;
          if (r >= rows) continue;
          const float prob = sS[r * kKeys + c];
          for (int e = 0; e < kVec; ++e) acc[i][e] += prob * v_vec[e];
        }
      }
    }
    __syncthreads();  // sSum / sMax final for this pass

    for (int i = 0; i < Tr::kRowsPerThread; ++i) {
      const int r = out_group + i * Tr::kRowGroups;
      if (r >= rows) continue;
      const std::int32_t t = token_of(r), h = head_of(r);
      const float sum = sSum[r], inv_sum = sum > 0.f ? 1.f / sum : 0.f;
      for (int e = 0; e < kVec; ++e) blk.store_out(p, t, h, d0 + e, acc[i][e] * inv_sum);
      if (d0 == 0) blk.store_lse(p, t, h, sum > 0.f ? sMax[r] + logf(sum) : kMinusInf);
    }
    __syncthreads();  // the next pass rewrites sQ, sMax, sSum
  }
}

// One warp per (token, head): combine the splits' partial results by their log-sum-exp.
template <class T>
__global__ void __launch_bounds__(128) merge_splits_kernel(const __grid_constant__ AttentionParams<T> p) {
  const index_t item = index_t(blockIdx.x) * 4 + threadIdx.x / 32;
  const int lane = int(threadIdx.x) % 32;
  if (item >= index_t(p.total_q) * p.heads_q) return;
  const std::int32_t t = std::int32_t(item / p.heads_q), h = std::int32_t(item % p.heads_q);
  const auto split_lse = [&](int s) { return p.partial_lse[(index_t(s) * p.heads_q + h) * p.total_q + t]; };
  float max_lse = kMinusInf;
  for (int s = 0; s < p.splits; ++s) max_lse = fmaxf(max_lse, split_lse(s));
  float total = 0.f;
  for (int s = 0; s < p.splits; ++s) total += exp_from(split_lse(s), max_lse);
  const float lse = total > 0.f ? max_lse + logf(total) : kMinusInf;
  T* out = p.out_row(t, h);
  for (int d = lane; d < p.head_dim; d += 32) {
    float o = 0.f;
    for (int s = 0; s < p.splits; ++s) {
      const float weight = exp_from(split_lse(s), lse);
      if (weight > 0.f) o += weight * p.partial_out[((index_t(s) * p.total_q + t) * p.heads_q + h) * p.head_dim + d];
    }
    out[d] = from_float<T>(o);
  }
  if (lane == 0) p.store_lse(t, h, lse);
}

// Splits per sequence: enough thread blocks for about two waves, no split shorter than a tile.
inline std::int32_t decode_splits(std::int32_t batch, std::int32_t heads_kv, std::int32_t total_k,
                                  int multiprocessors) {
  const std::int32_t blocks = batch * heads_kv;
  const std::int32_t tiles_per_sequence = (total_k / (batch > 0 ? batch : 1) + kDecodeKeys - 1) / kDecodeKeys;
  std::int32_t splits = (2 * multiprocessors + blocks - 1) / (blocks > 0 ? blocks : 1);
  splits = splits < tiles_per_sequence ? splits : tiles_per_sequence;
  splits = splits > 64 ? 64 : splits;
  return splits < 1 ? 1 : splits;
}

// A split-KV decode kernel (this one or attention_decode_mma.cuh's) over grid (splits,
// heads_kv, B), then, for more than one split, the merge of its partial results into out and
// lse.
template <class Traits, class T>
cudaError_t launch_split_kv(void (*kernel)(AttentionParams<T>), const AttentionParams<T>& p,
                            cudaStream_t stream) {
  const dim3 grid(unsigned(p.splits), unsigned(p.heads_kv), unsigned(p.batch));
  ANSAN_CUDA_RETURN(
      launch_kernel(kernel, {grid, Traits::kThreads, Traits::smem_bytes()}, stream, p));
  if (p.splits == 1) return cudaSuccess;  // the kernel wrote out and lse itself
  const index_t items = index_t(p.total_q) * p.heads_q;
  return launch_kernel(merge_splits_kernel<T>, {dim3(unsigned((items + 3) / 4)), 128, 0}, stream,
                       p);
}

template <class T>
cudaError_t launch_attention_decode(const AttentionParams<T>& p, cudaStream_t stream) {
  return for_head_dim(p, [&](auto dim) {
    constexpr int kDim = decltype(dim)::value;
    return launch_split_kv<DecodeTraits<T, kDim>>(attention_decode_kernel<T, kDim>, p, stream);
  });
}

}  // namespace ansan::cuda::detail
