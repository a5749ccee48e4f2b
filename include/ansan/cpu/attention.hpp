// ansan/cpu/attention.hpp - the fused anchor-attention forward on the CPU.
//
//   ansan::cpu::attention_forward(args);                 // all hardware threads
//   ansan::cpu::attention_forward(args, 1);              // one thread
//   ansan::cpu::attention_forward(args, {0, ansan::cpu::TileSkipping::dense_mask});
//
// Same AttentionArgs<T> and same results as ansan::reference_attention (which it must equal
// up to fp32 rounding): prefill, chunked prefill and decode over a cache, ragged batches,
// GQA/MQA, every MaskPolicy, any head_dim >= 1, strided views. T is float, ansan::bf16 or
// ansan::half; everything is computed in fp32. Writes args.out and, if args.lse.data is set,
// args.lse (natural-log log-sum-exp of the scaled scores; -inf, with O = 0, for a row that
// sees no key).
//
// How (SPEC section 4): per (sequence, kv head) the retained keys are listed and, where several
// query tiles will share them, every key is converted to float once (detail/key_panel.hpp;
// decode converts each block as it multiplies it instead); then every query tile
// (detail/query_tile.hpp) runs one online softmax over the prefix of retained keys it sees and
// the band of local keys near its diagonal, with Eigen doing the products. Work is split over
// (sequence, kv head, query tile) on std::threads (a decode tile may take several kv heads);
// no O(n^2) mask or score matrix is ever built.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/cpu/attention_options.hpp"
#include "ansan/cpu/detail/key_panel.hpp"
#include "ansan/cpu/detail/parallel_for.hpp"
#include "ansan/cpu/detail/query_tile.hpp"
#include "ansan/cpu/detail/tile_plan.hpp"
#include "ansan/dtype.hpp"
#include "ansan/error.hpp"

namespace ansan::cpu {

template <class T>
void attention_forward(const AttentionArgs<T>& args, const AttentionOptions& options) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, half>,
                "ansan::cpu::attention_forward reads float, ansan::bf16 or ansan::half");
  const char* fn = "cpu::attention_forward";
  validate_attention_shapes(args, fn);
  require(args.head_dim() >= 1, fn, "q.shape[2] (head_dim)", args.head_dim(), ">= 1");
  require(args.total_k() == 0 || (args.k.data && args.v.data), fn, "k.data/v.data", "null",
          "buffers (k.shape[0] > 0)");
  require(args.total_q() == 0 || args.out.data, fn, "out.data", "null", "a buffer");
  require(options.num_threads >= 0, fn, "num_threads", options.num_threads,
          ">= 0 (0: all hardware threads)");
  require(options.skipping == TileSkipping::two_part ||
              options.skipping == TileSkipping::dense_mask,
          fn, "options.skipping", int(options.skipping), "two_part or dense_mask");
  validate_attention_metadata(args, fn);

  const index_t heads_kv = args.heads_kv();
  const std::vector<detail::Tile> tiles = detail::plan_tiles(args, options);

  // Key panels, one per (sequence, kv head) that tiles start at (detail/tile_plan.hpp says
  // which sequences get float copies, and which tiles span several kv heads).
  std::vector<const detail::Tile*> firsts;  // each sequence's first tile of each span
  for (const detail::Tile& tile : tiles)
    if (tile.first_row == args.cu_seqlens_q[tile.batch]) firsts.push_back(&tile);
  std::vector<detail::KeyPanel> panels(std::size_t(args.batch * heads_kv));
  const auto panel_count = std::int64_t(firsts.size());
  detail::parallel_for(panel_count, detail::worker_count(options.num_threads, panel_count),
                       [&](std::int64_t i, int) {
                         const detail::Tile& tile = *firsts[std::size_t(i)];
                         const std::int32_t b = tile.batch;
                         detail::fill_key_panel(
                             panels[std::size_t(b * heads_kv + tile.kv_head)], args, b,
                             tile.kv_head, options.skipping == TileSkipping::two_part,
                             detail::converts_keys(args.cu_seqlens_q[b + 1] - args.cu_seqlens_q[b]));
                       });

  const auto tile_count = std::int64_t(tiles.size());
  const int workers = detail::worker_count(options.num_threads, tile_count);
  index_t most_heads = 1;  // KV heads a tile covers, at most
  for (const detail::Tile& tile : tiles) most_heads = std::max(most_heads, tile.kv_heads);
  std::vector<detail::TileScratch> scratch(std::size_t(workers * most_heads));  // per worker, head
  detail::parallel_for(tile_count, workers, [&](std::int64_t i, int worker) {
    // Last tiles first: they see the most keys, and starting them early balances the threads.
    const detail::Tile& tile = tiles[std::size_t(tile_count - 1 - i)];
    detail::attend_tile(args, panels[std::size_t(tile.batch * heads_kv + tile.kv_head)],
                        tile.kv_head, tile.kv_heads, tile.first_row, tile.rows, options.skipping,
                        &scratch[std::size_t(worker * most_heads)]);
  });
}

template <class T>
void attention_forward(const AttentionArgs<T>& args, int num_threads = 0) {
  attention_forward(args, AttentionOptions{num_threads});
}

}  // namespace ansan::cpu
