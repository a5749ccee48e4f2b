// ansan/cpu/detail/tile_plan.hpp - how the CPU forward splits a call into tasks (tiles).
//
// A tile is up to kQueryRows query rows of one sequence and the query heads of one KV head
// (query_tile.hpp). A sequence's keys are converted to float once, into its key panel, where
// more than one of its tiles will read them (prefill); otherwise (decode: one or a few rows
// over a long cache) each tile converts a block as it multiplies it (key_panel.hpp).
//
// Such a decode tile reads one KV head's half (a quarter, ...) of every cache row, and the
// tile of the next head comes back for the next; reading whole rows is 1.5x faster
// (docs/benchmarks.md, CPU decode). So where every product of a decode tile runs row by row
// (at most kFewRows stacked rows a KV head), the tile spans several KV heads of its sequence:
// all of them, or the largest divisor of heads_kv that still leaves a tile for every thread.
//
//     sequence b, 4 KV heads, 2 threads, 1 sequence:   [b: heads 0-1] [b: heads 2-3]
//     sequence b, 4 KV heads, 2 threads, 4 sequences:  [b: heads 0-3]  (and 3 more like it)
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/cpu/attention_options.hpp"
#include "ansan/cpu/detail/parallel_for.hpp"
#include "ansan/cpu/detail/query_tile.hpp"

namespace ansan::cpu::detail {

struct Tile {
  std::int32_t batch;
  index_t kv_head, kv_heads;  // KV heads [kv_head, kv_head + kv_heads)
  index_t first_row, rows;    // query rows [first_row, first_row + rows)
};

// Whether a sequence with `query_rows` rows gets a key panel of float copies.
inline bool converts_keys(index_t query_rows) { return query_rows > kQueryRows; }

template <class T>
std::vector<Tile> plan_tiles(const AttentionArgs<T>& a, const AttentionOptions& options) {
  const index_t heads_kv = a.heads_kv(), group = a.heads_q() / heads_kv;
  const auto query_rows = [&](std::int32_t b) { return index_t(a.cu_seqlens_q[b + 1] - a.cu_seqlens_q[b]); };
  const auto may_span = [&](std::int32_t b) {
    return options.skipping == TileSkipping::two_part && query_rows(b) > 0 &&
           !converts_keys(query_rows(b)) && query_rows(b) * group <= kFewRows;
  };
  std::int64_t spanning = 0, single_head_tiles = 0;  // sequences; tiles of the others
  for (std::int32_t b = 0; b < a.batch; ++b)
    if (may_span(b))
      ++spanning;
    else
      single_head_tiles += heads_kv * ((query_rows(b) + kQueryRows - 1) / kQueryRows);
  const int threads = worker_count(options.num_threads, spanning * heads_kv + single_head_tiles);
  index_t span = heads_kv;
  while (span > 1 &&
         (heads_kv % span != 0 || spanning * (heads_kv / span) + single_head_tiles < threads))
    --span;

  std::vector<Tile> tiles;
  for (std::int32_t b = 0; b < a.batch; ++b) {
    const index_t heads = may_span(b) ? span : 1;
    for (index_t h = 0; h < heads_kv; h += heads)
      for (index_t t = a.cu_seqlens_q[b]; t < a.cu_seqlens_q[b + 1]; t += kQueryRows)
        tiles.push_back({b, h, heads, t, std::min<index_t>(kQueryRows, a.cu_seqlens_q[b + 1] - t)});
  }
  return tiles;
}

}  // namespace ansan::cpu::detail
