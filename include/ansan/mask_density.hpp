// ansan/mask_density.hpp - how much of the causal work a mask leaves, in pairs and in tiles.
//
// SPEC section 4 in numbers for a given layout and policy:
//   pairs  visible (query, key) pairs per sequence and in total, next to the n(n+1)/2 pairs of
//          dense causal attention. O(n): each row's count comes from its visible interval and
//          a prefix count of retained keys (detail/mask_rows.hpp), no pair is enumerated.
//   tiles  for square tiles of each requested size (default 64 and 128), how many of the
//          on-or-below-diagonal tiles a block-sparse kernel must visit (any visible pair) and
//          how many of those are full (every pair visible, so no per-element mask). Tiles are
//          cut per sequence, as a varlen kernel does, and clipped at its end: an edge tile is
//          full if all its pairs inside the sequence are visible. O(n^2 / tile).
//
// For AnLLM with mean segment length 20 at n = 8192 (bench_layout_mask), pair_fraction() is
// 1/20 while 96% of the 64-tiles and 99% of the 128-tiles must be visited, almost none full:
// tile skipping alone cannot deliver the pair savings.
#pragma once

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "ansan/detail/mask_rows.hpp"
#include "ansan/error.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

namespace ansan {

struct TileDensity {
  std::int32_t tile = 0;            // query tile = key tile
  std::int64_t causal_tiles = 0;    // tiles on or below the diagonal: what a causal kernel visits
  std::int64_t visited_tiles = 0;   // tiles holding at least one visible pair
  std::int64_t full_tiles = 0;      // visited tiles with every (in-sequence) pair visible

  double visited_fraction() const {
    return causal_tiles ? double(visited_tiles) / double(causal_tiles) : 0.0;
  }
};

struct MaskDensity {
  std::vector<std::int64_t> visible_pairs;  // (B)
  std::vector<std::int64_t> causal_pairs;   // (B) n(n+1)/2
  std::int64_t total_visible = 0;
  std::int64_t total_causal = 0;
  std::vector<TileDensity> tiles;           // one per requested tile size, in order

  // Visible pairs over causal pairs: the work left by a kernel that skips every masked pair.
  double pair_fraction() const {
    return total_causal ? double(total_visible) / double(total_causal) : 0.0;
  }
};

inline MaskDensity mask_density(const AnchorLayout& layout, const MaskPolicy& policy,
                                const std::vector<std::int32_t>& tile_sizes = {64, 128}) {
  const char* fn = "mask_density";
  validate_policy(policy, fn);
  for (std::size_t s = 0; s < tile_sizes.size(); ++s)
    require(tile_sizes[s] > 0, fn, detail::concat("tile_sizes[", s, "]").c_str(), tile_sizes[s],
            "> 0");
  detail::validate_mask_layout(layout, fn);

  const std::vector<detail::PackedRow> rows = detail::packed_rows(layout, policy);
  const std::vector<std::int32_t> prefix = detail::retained_prefix(layout, policy);
  MaskDensity d;
  d.visible_pairs.assign(std::size_t(layout.batch()), 0);
  d.causal_pairs.assign(std::size_t(layout.batch()), 0);
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    const std::int32_t begin = layout.cu_seqlens[b], n = layout.seq_len(b);
    for (std::int32_t t = begin; t < begin + n; ++t)
      d.visible_pairs[std::size_t(b)] +=
          detail::count_visible(rows[std::size_t(t)].keys, 0, n, prefix.data() + begin);
    d.causal_pairs[std::size_t(b)] = std::int64_t(n) * (n + 1) / 2;
    d.total_visible += d.visible_pairs[std::size_t(b)];
    d.total_causal += d.causal_pairs[std::size_t(b)];
  }

  for (const std::int32_t tile : tile_sizes) {
    TileDensity td;
    td.tile = tile;
    for (std::int32_t b = 0; b < layout.batch(); ++b) {
      const std::int32_t begin = layout.cu_seqlens[b], end = layout.cu_seqlens[b + 1];
      for (std::int64_t r0 = begin; r0 < end; r0 += tile) {  // 64-bit: tile may be huge
        const std::int64_t r1 = std::min<std::int64_t>(r0 + tile, end);
        for (std::int64_t c0 = begin; c0 <= r0; c0 += tile) {
          const std::int64_t c1 = std::min<std::int64_t>(c0 + tile, end);
          const std::int64_t seen = detail::count_block(rows, prefix, std::int32_t(r0), std::int32_t(r1),
                                                        std::int32_t(c0), std::int32_t(c1));
          ++td.causal_tiles;
          td.visited_tiles += seen > 0;
          td.full_tiles += seen == (r1 - r0) * (c1 - c0);
        }
      }
    }
    d.tiles.push_back(td);
  }
  return d;
}

// A few lines for a terminal: pairs, the fraction of causal work, and the tile counts.
inline std::string density_report(const MaskDensity& d) {
  std::ostringstream os;
  os << "visible pairs " << d.total_visible << " of " << d.total_causal << " causal ("
     << 100.0 * d.pair_fraction() << "%)\n";
  for (const TileDensity& t : d.tiles)
    os << "  tile " << t.tile << ": visit " << t.visited_tiles << " of " << t.causal_tiles
       << " causal tiles (" << 100.0 * t.visited_fraction() << "%), " << t.full_tiles
       << " full\n";
  return os.str();
}

}  // namespace ansan
