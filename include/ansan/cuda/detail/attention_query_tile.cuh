// ansan/cuda/detail/attention_query_tile.cuh - what the two tensor-core prefill kernels
// (attention_mma_sm80.cuh on mma.sync, attention_mma_sm90.cuh on wgmma) do alike around their
// key-tile loops: find the block's query tile, load its Q rows, bound the keys its rows and
// warps see (the TileWalk), load key tiles, mask a warp's S tile, and write O and the
// log-sum-exp.
//
// Both kernels hold a warp's 16 query rows in the mma.sync C layout (mma_layout.hpp): lane l
// holds rows l/4 and l/4 + 8 of the warp, columns 8 nt + 2 (l % 4) + {0, 1} of each n-tile nt.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/attention_tiles.hpp"
#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"
#include "ansan/cuda/detail/wgmma_layout.hpp"

namespace ansan::cuda::detail {

// Where work item `item` lies: query heads h .. h + heads_per_item - 1 (head groups vary
// fastest; all of one KV head when heads_per_item divides heads_q / heads_kv) and query tile
// `tile`, taken last-first: late query tiles see the most retained keys, so the heaviest items
// start first and the light ones fill the tail. tile < 0: the grid's upper bound passed the
// last tile.
struct QueryTile {
  std::int32_t h, h_kv, tile;
  std::int32_t b, q_begin, rows;        // sequence, first query row, rows held (<= tile rows)
  std::int32_t k_begin, retained_base;  // the sequence's first key row and retained-list entry
};
template <class T>
ANSAN_DEVICE QueryTile locate_query_tile(const AttentionParams<T>& p, unsigned item, int tile_rows,
                                         int heads_per_item = 1) {
  QueryTile q;
  const unsigned head_groups = unsigned(p.heads_q / heads_per_item);
  q.h = std::int32_t(item % head_groups) * heads_per_item;
  q.h_kv = q.h / (p.heads_q / p.heads_kv);
  q.tile = p.tile_prefix[p.batch] - 1 - std::int32_t(item / head_groups);
  if (q.tile < 0) return q;
  q.b = sequence_of_tile(p.tile_prefix, p.batch, q.tile);
  q.q_begin = p.cu_seqlens_q[q.b] + (q.tile - p.tile_prefix[q.b]) * tile_rows;
  q.rows = min(tile_rows, p.cu_seqlens_q[q.b + 1] - q.q_begin);
  q.k_begin = p.k_begin(q.b);
  q.retained_base = p.retained_prefix ? p.retained_prefix[q.k_begin] : 0;
  return q;
}

// The barrier of the threads that bound a query tile: by default the whole block.
struct BlockBarrier {
  ANSAN_DEVICE void operator()() const { __syncthreads(); }
};

// The tile's rows, 16 per warp: row_keys[r] (rows past the tile see nothing), the bounds of
// each warp's rows warp_bounds[w][part], and of the whole tile, bounds[part] (part 0: retained,
// 1: local), each in its part's own index space (the TileWalk packs them). Threads
// 0 .. 32 Warps - 1 call it, and `sync` is their barrier; it ends on one.
template <class T, int Rows, int Warps, class Barrier = BlockBarrier>
ANSAN_DEVICE void bound_query_tile(const AttentionParams<T>& p, const QueryTile& q,
                                   RowKeys (&row_keys)[Rows], TileBounds (&warp_bounds)[Warps][2],
                                   TileBounds (&bounds)[2], Barrier sync = {}) {
  static_assert(Rows == 16 * Warps, "16 rows per warp");
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  if (tid < Rows)
    row_keys[tid] = tid < q.rows ? p.row_keys[q.q_begin + tid] : RowKeys{q.k_begin, q.k_begin, 0};
  sync();
  {  // lanes 16-31 repeat lanes 0-15
    const int row = 16 * warp + lane % 16;
    const RowKeys rk = row_keys[row];
    const bool active = row < q.rows;
    const auto lo = [&](int x) { return __reduce_min_sync(0xffffffffu, active ? x : INT32_MAX); };
    const auto hi = [&](int x) { return __reduce_max_sync(0xffffffffu, active ? x : INT32_MIN); };
    const TileBounds retained{lo(0), hi(0), lo(rk.retained), hi(rk.retained)};
    const TileBounds local{lo(rk.local_begin), hi(rk.local_begin), lo(rk.local_end),
                           hi(rk.local_end)};
    if (lane == 0) warp_bounds[warp][0] = retained, warp_bounds[warp][1] = local;
  }
  sync();
  if (tid < 2) {
    TileBounds all = TileBounds::empty();
    for (int w = 0; w < Warps; ++w) all.merge(warp_bounds[w][tid]);
    bounds[tid] = all;
  }
  sync();
}

// Where a kernel keeps (row, col) of a shared tile of `rows` rows of Dim 16-bit elements.
template <int Dim>
struct RowSwizzle {  // mma.sync kernels: rows of Dim, chunk c of row r at c ^ (r % 8)
  ANSAN_HOST_DEVICE static int offset(int row, int col, int /*rows*/) {
    return swizzled_offset(row, col, Dim);
  }
};
struct ColumnBlockSwizzle {  // wgmma: 64-column blocks, 128-byte swizzle (wgmma_layout.hpp)
  ANSAN_HOST_DEVICE static int offset(int row, int col, int rows) {
    return sw128_offset(row, col, rows);
  }
};

// Copies the query tile's rows of head q.h into shared tile sQ by cp.async (zeros past its
// rows) and commits them as one group.
template <class Layout, int Rows, int Dim, int Threads, class T>
ANSAN_DEVICE void load_query_rows(const AttentionParams<T>& p, const QueryTile& q, T* sQ) {
  constexpr int kChunks = Dim / 8;
  for (int i = int(threadIdx.x); i < Rows * kChunks; i += Threads) {
    const int r = i / kChunks, c = i % kChunks;
    const bool valid = r < q.rows;
    cp_async_16(sQ + Layout::offset(r, 8 * c, Rows),
                valid ? p.q_row(q.q_begin + r, q.h) + 8 * c : p.q, valid);
  }
  cp_async_commit();
}

// The key-tile loads of both kernels: thread `tid` copies 16-byte chunk `chunk` of key slots
// slot0, slot0 + kSlotStep, ... The offset of the key row behind each slot comes from a table
// offsets[K, V][slot], which threads 0..Keys-1 fill one tile ahead (key_row, then
// store_offsets): one global read and one 64-bit multiply per slot, not one per chunk.
template <class T, class Layout, int Keys, int Dim, int Threads>
struct KeyTileLoader {
  static constexpr int kChunks = Dim / 8, kSlotStep = Threads / kChunks, kLoads = Keys / kSlotStep;
  static_assert(Keys % kSlotStep == 0 && Threads >= Keys, "whole load passes");
  using Offsets = index_t[2][Keys];  // [K, V][slot]: element offset of the slot's key row

  TileWalk walk;
  const std::int32_t* retained_rows;  // the sequence's retained list
  index_t stride_t[2];                // K and V token strides
  const T* src[2];                    // this thread's chunk of K and V row 0 of its KV head
  int slot0, chunk;

  ANSAN_DEVICE KeyTileLoader(const AttentionParams<T>& p, const QueryTile& q, const TileWalk& w,
                             int tid)
      : walk(w),
        retained_rows(p.retained_rows + q.retained_base),
        stride_t{p.k_stride_t, p.v_stride_t},
        src{p.k + q.h_kv * p.k_stride_h + 8 * (tid % kChunks),
            p.v + q.h_kv * p.v_stride_h + 8 * (tid % kChunks)},
        slot0(tid / kChunks),
        chunk(tid % kChunks) {}

  // K (kv = 0) or V (kv = 1) of tile j into dst, zeros past the end of the walk.
  ANSAN_DEVICE void load(T* dst, int kv, std::int32_t j, const Offsets& offsets) const {
    const std::int32_t held = walk.slots_held(j);
    for (int i = 0; i < kLoads; ++i) {
      const int slot = slot0 + i * kSlotStep;
      cp_async_16(dst + Layout::offset(slot, 8 * chunk, Keys), src[kv] + offsets[kv][slot],
                  slot < held);
    }
  }
  // The key row behind slot `slot` of tile j, -1 where the tile runs past the walk's end.
  ANSAN_DEVICE std::int32_t key_row(std::int32_t j, int slot) const {
    return walk.key_row(walk.begin(j) + slot, retained_rows);
  }
  // Run by thread `slot` < Keys; a slot not held gets 0 (its copy reads nothing).
  ANSAN_DEVICE void store_offsets(Offsets& offsets, int slot, std::int32_t key_row) const {
    for (int kv = 0; kv < 2; ++kv) offsets[kv][slot] = key_row >= 0 ? key_row * stride_t[kv] : 0;
  }

  // Without the shared table (the warp-specialized kernel's producer, which has no barrier to
  // spare per tile): each thread looks up the key rows of its own slots of tile j,
  ANSAN_DEVICE void own_key_rows(std::int32_t j, std::int32_t (&rows)[kLoads]) const {
    for (int i = 0; i < kLoads; ++i) rows[i] = key_row(j, slot0 + i * kSlotStep);
  }
  // and copies K (kv = 0) or V (kv = 1) of them, zeros past the end of the walk.
  ANSAN_DEVICE void load(T* dst, int kv, const std::int32_t (&rows)[kLoads]) const {
    for (int i = 0; i < kLoads; ++i) {
      const bool held = rows[i] >= 0;
      cp_async_16(dst + Layout::offset(slot0 + i * kSlotStep, 8 * chunk, Keys),
                  src[kv] + (held ? rows[i] * stride_t[kv] : 0), held);
    }
  }
};

// Masks a warp's S tile, tile j of the walk, 8 KeyTiles keys wide (partial tiles only: each
// row sees one interval of the tile's walk indices in each part; relative to this lane's first
// column, element (nt, i) is at the compile-time offset 8 nt + i % 2) and returns each of this
// lane's two rows' maximum in tile_max.
template <int KeyTiles>
ANSAN_DEVICE void mask_scores(float (&s)[KeyTiles][4], TileMask mask, const TileWalk& walk,
                              std::int32_t j, const RowKeys (&my_rows)[2], int my_col,
                              float (&tile_max)[2]) {
  if (mask == TileMask::partial)
    for (int r = 0; r < 2; ++r) {
      const SeenKeys seen = walk.seen(mask, my_rows[r], j);
      const std::int32_t first = walk.begin(j) + my_col;
      // A partial tile's retained interval starts at walk index 0, at or below every column:
      // its end is the one compare it needs.
      const std::int32_t retained_end = seen.retained.end - first;
      const KeyInterval local{seen.local.begin - first, seen.local.end - first};
      for (int nt = 0; nt < KeyTiles; ++nt)
        for (int i = 2 * r; i < 2 * r + 2; ++i) {
          const int offset = 8 * nt + i % 2;
          if (offset >= retained_end && !local.contains(offset)) s[nt][i] = kMinusInf;
        }
    }
  tile_max[0] = tile_max[1] = kMinusInf;
  for (int nt = 0; nt < KeyTiles; ++nt)
    for (int i = 0; i < 4; ++i) tile_max[i / 2] = fmaxf(tile_max[i / 2], s[nt][i]);
}

// Writes O / row sum and the log-sum-exp (natural log; -inf and O = 0 for a row that saw no key)
// of this lane's two rows, first_row + lane/4 (+ 8), of the query tile.
template <class T, int DimTiles>
ANSAN_DEVICE void store_query_rows(const AttentionParams<T>& p, const QueryTile& q, int first_row,
                                   const float (&acc_o)[DimTiles][4], const float (&row_max)[2],
                                   const float (&row_sum)[2]) {
  const int lane = int(threadIdx.x) % 32;
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int row = first_row + lane / 4 + 8 * r;
    if (row >= q.rows) continue;
    const std::int32_t t = q.q_begin + row;
    const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
    T* out = p.out_row(t, q.h);
    for (int dt = 0; dt < DimTiles; ++dt) {
      const int col = 8 * dt + mma_c_element(lane, 2 * r).col;
      *reinterpret_cast<std::uint32_t*>(out + col) =
          pack2<T>(acc_o[dt][2 * r] * inv_sum, acc_o[dt][2 * r + 1] * inv_sum);
    }
    if (lane % 4 == 0)
      p.store_lse(t, q.h, sum > 0.f ? (row_max[r] + log2f(sum)) * 0.6931471805599453f : kMinusInf);
  }
}

}  // namespace ansan::cuda::detail
