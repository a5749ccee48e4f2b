// ansan/cuda/prefill_work.hpp - how much work the tensor-core prefill does on a layout, counted
// on the host by replaying its tile walk (attention_tiles.hpp): no GPU needed.
//
//   const ansan::cuda::PrefillWork w = ansan::cuda::prefill_work(layout, MaskPolicy::anllm());
//   w.computed_pairs() / w.visible_pairs      // tile overhead: pairs multiplied but masked
//   w.causal_pairs / w.computed_pairs()       // the kernel's work against dense causal
//   w.warpgroup_pairs(true)                   // what tensor_sm90_ws multiplies instead
//   w.local_masked_pairs                      // of tensor_sm90's masked pairs, those in the band
//   for_each_query_tile(layout, policy, shape, [](const QueryTileWalk& t) { ... });  // each block
//
// A thread block takes 64 query rows and walks 64-key tiles; a warp (16 rows) skips a tile no
// row of it sees and otherwise multiplies all 16 x 64 (query, key) pairs of it, in S = Q K^T and
// again in O += P V. So at head_dim D the kernel runs 4 * D flops per computed pair, and reads
// two tiles of 64 x D (K and V) per loaded tile. A benchmark divides these counts by its time
// (bench_attention_cuda: TFLOP/s on executed work beside TFLOP/s on visible work).
//
// Counts are per attention head, for a whole-text prefill (keys = queries of the layout).
#pragma once

#include <cstdint>
#include <vector>

#include "ansan/cuda/detail/attention_tiles.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

namespace ansan::cuda {

struct PrefillWork {
  double visible_pairs = 0;  // (query, key) pairs the mask lets through
  double causal_pairs = 0;   // n (n + 1) / 2 summed over sequences: a dense causal kernel's work
  double query_tiles = 0;    // thread blocks
  double loaded_tiles = 0;   // key tiles the blocks walk (each: tile_keys rows of K and of V)
  double warp_tiles = 0;     // (warp, key tile) products not skipped
  double held_groups = 0;    // 16-key groups of the loaded tiles, up to each one's last held key
  // Where the pairs a Hopper block multiplies and no row sees lie; with visible_pairs they sum
  // to warpgroup_pairs(false):
  double padding_pairs = 0;          // slots past a walk's last key; rows past a sequence's end
  double retained_masked_pairs = 0;  // the block's retained keys a row does not see (an AnLLM
                                     // anchor sees none of them)
  double local_masked_pairs = 0;     // the block's band keys a row does not see (other rows'
                                     // segments, and the keys after the row)
  detail::TileShape shape = detail::kTensorTileShape;

  // What the mma.sync kernel multiplies, in pairs of 4 D flops (S and P V of a warp's tiles).
  double computed_pairs() const { return warp_tiles * shape.warp_rows * shape.tile_keys; }
  // What the Hopper kernels multiply: wgmma has no per-warp skip, so the whole block's rows times
  // every loaded tile in S, and in P V the same (tensor_sm90) or only the held 16-key groups
  // (tensor_sm90_ws); in pairs of 4 D flops, half of them in each product.
  double warpgroup_pairs(bool pv_over_held_groups) const {
    const double s = loaded_tiles * shape.block_rows * shape.tile_keys;
    const double pv = pv_over_held_groups ? held_groups * kHeldGroupKeys * shape.block_rows : s;
    return 0.5 * (s + pv);
  }
  static constexpr int kHeldGroupKeys = 16;  // wgmma's k step
};

// One thread block's walk, as the host replays it: its query rows (their keys, as the plan
// computes them), the key tiles it loads, and each warp's bounds, from which the class of
// every (warp, tile) product follows.
struct QueryTileWalk {
  std::int32_t b = 0, q_begin = 0;    // sequence, its first query row (sequence-local)
  std::vector<detail::RowKeys> rows;  // the block's rows (fewer than block_rows at the end)
  detail::TileWalk walk{};            // retained keys, then local keys, packed in tiles
  std::vector<detail::TileBounds> warp_bounds;  // [2 w + part]: warp w's retained / local bounds

  std::int32_t warps() const { return std::int32_t(warp_bounds.size() / 2); }
  // What warp w does with key tile j: skip it (none), or multiply it, masked or not.
  detail::TileMask warp_class(std::int32_t w, std::int32_t j) const {
    return walk.classify(warp_bounds[std::size_t(2 * w)], warp_bounds[std::size_t(2 * w + 1)], j);
  }
};

// Calls visit(const QueryTileWalk&) for every thread block of the tensor prefill's walk
// (attention_mma_sm80.cuh and attention_mma_sm90.cuh, or another kernel with per-warp classes
// and the given shape) over every sequence of `layout` under `policy`, in sequence and row order.
template <class Visit>
void for_each_query_tile(const AnchorLayout& layout, const MaskPolicy& policy,
                         const detail::TileShape& shape, Visit&& visit) {
  using detail::TileBounds;
  // Key rows are the tokens (key row t = token t), so the retained-key prefix of
  // attention_plan.cuh runs over the layout's tokens.
  std::vector<std::int32_t> retained_prefix(layout.pos.size() + 1, 0);
  for (std::size_t t = 0; t < layout.pos.size(); ++t)
    retained_prefix[t + 1] =
        retained_prefix[t] +
        (is_retained(policy, KeyInfo{layout.pos[t], layout.is_anchor[t] != 0}) ? 1 : 0);
  QueryTileWalk tile;
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    const std::int32_t begin = layout.cu_seqlens[std::size_t(b)], n = layout.seq_len(b);
    for (std::int32_t q0 = 0; q0 < n; q0 += shape.block_rows) {
      const std::int32_t count = n - q0 < shape.block_rows ? n - q0 : shape.block_rows;
      tile.b = b, tile.q_begin = q0;
      tile.rows.clear();
      for (std::int32_t r = 0; r < count; ++r)
        tile.rows.push_back(detail::row_keys(policy, layout.query(b, q0 + r), layout.pos.data(),
                                             retained_prefix.data(), begin, begin + n));
      const auto bounds_of = [&](std::int32_t r0, std::int32_t r1, int part) {
        TileBounds bounds = TileBounds::empty();
        for (std::int32_t r = r0; r < r1 && r < count; ++r) {
          const detail::RowKeys& rk = tile.rows[std::size_t(r)];
          part == 0 ? bounds.add(0, rk.retained) : bounds.add(rk.local_begin, rk.local_end);
        }
        return bounds;
      };
      tile.walk = detail::TileWalk{bounds_of(0, count, 0), bounds_of(0, count, 1), shape.tile_keys};
      tile.warp_bounds.clear();
      for (std::int32_t w0 = 0; w0 < count; w0 += shape.warp_rows)
        for (int part = 0; part < 2; ++part)
          tile.warp_bounds.push_back(bounds_of(w0, w0 + shape.warp_rows, part));
      visit(static_cast<const QueryTileWalk&>(tile));
    }
  }
}

// Counts the walk's work over every sequence of `layout` under `policy`.
inline PrefillWork prefill_work(const AnchorLayout& layout, const MaskPolicy& policy,
                                const detail::TileShape& shape = detail::kTensorTileShape) {
  PrefillWork work;
  work.shape = shape;
  for (std::int32_t b = 0; b < layout.batch(); ++b)
    work.causal_pairs += 0.5 * double(layout.seq_len(b)) * double(layout.seq_len(b) + 1);
  for_each_query_tile(layout, policy, shape, [&](const QueryTileWalk& tile) {
    const detail::TileWalk& walk = tile.walk;
    const double retained_keys = walk.retained.last() - walk.retained.first();
    const double band_keys = walk.local.last() - walk.local.first();
    for (const detail::RowKeys& rk : tile.rows) {
      work.visible_pairs += double(rk.local_end - rk.local_begin) + rk.retained;
      work.retained_masked_pairs += retained_keys - (rk.retained - walk.retained.first());
      work.local_masked_pairs += band_keys - (rk.local_end - rk.local_begin);
    }
    work.padding_pairs += double(walk.count()) * shape.tile_keys * shape.block_rows -
                          (retained_keys + band_keys) * double(tile.rows.size());
    work.query_tiles += 1;
    work.loaded_tiles += walk.count();
    for (std::int32_t j = 0; j < walk.count(); ++j)
      work.held_groups += walk.groups_held(j, PrefillWork::kHeldGroupKeys);
    for (std::int32_t w = 0; w < tile.warps(); ++w)
      for (std::int32_t j = 0; j < walk.count(); ++j)
        if (tile.warp_class(w, j) != detail::TileMask::none) work.warp_tiles += 1;
  });
  return work;
}

}  // namespace ansan::cuda
