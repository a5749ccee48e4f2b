// tile_walk - which key tiles the tensor-core prefill loads for each block of 64 query rows, and
// what each warp does with them, against the tiles a block-sparse kernel must visit.
//
//   tile_walk [OUT_DIR] [--n N] [--L MEAN_SEGMENT]
//
// One sequence of N tokens (default 1280) with random anchors, a segment of MEAN_SEGMENT tokens
// on average (default 20), under the AnLLM mask. Prints, per query tile, its retained keys and
// local keys and the class of every (warp, key tile) product, and writes
// OUT_DIR/tile_walk_anllm.svg (default docs/images): left, the 64 x 64 tiles of the causal
// triangle, shaded where any pair is visible (what FlexAttention's BlockMask visits); right, the
// tiles the kernel walks: the retained keys (the earlier anchors, gathered by the plan into a
// dense list) and then the local band, packed end to end, so the tile where the anchors end
// takes the band's first keys; each tile is split into the four warps' 16-row products: full,
// masked (partial) or skipped. The walk is the host replay of the kernels'
// (ansan/cuda/prefill_work.hpp).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ansan/cuda/prefill_work.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

namespace {

using ansan::cuda::QueryTileWalk;
using ansan::cuda::detail::TileMask;
using ansan::cuda::detail::TileShape;

ansan::AnchorLayout random_layout(std::int32_t n, double mean_segment) {
  std::mt19937 rng(2402);
  std::bernoulli_distribution anchor(1.0 / mean_segment);
  std::vector<std::uint8_t> flags(static_cast<std::size_t>(n));
  for (auto& f : flags) f = anchor(rng);
  return ansan::build_layout_from_flags(flags, std::vector<std::int32_t>{0, n});
}

// Whether any (query, key) pair of query tile qt and key tile kt is visible: the block-sparse
// view, one bit per tile pair.
bool tile_pair_visible(const ansan::AnchorLayout& L, const ansan::MaskPolicy& p, std::int32_t qt,
                       std::int32_t kt, std::int32_t tile) {
  const std::int32_t n = L.seq_len(0);
  for (std::int32_t i = qt * tile; i < std::min(n, (qt + 1) * tile); ++i)
    for (std::int32_t j = kt * tile; j < std::min(i + 1, (kt + 1) * tile); ++j)
      if (ansan::visible(p, L.query(0, i), L.key(0, j))) return true;
  return false;
}

// A tile of retained keys only (R), local keys only (L), or both (M: where the anchors end).
char part_char(const ansan::cuda::detail::TileWalk& walk, std::int32_t j) {
  const bool starts_retained = walk.in_retained(walk.begin(j));
  const bool ends_retained = walk.in_retained(walk.begin(j) + walk.slots_held(j) - 1);
  return ends_retained ? 'R' : starts_retained ? 'M' : 'L';
}

char class_char(TileMask m) {
  return m == TileMask::full ? 'F' : m == TileMask::partial ? 'p' : '.';
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_dir = "docs/images";
  std::int32_t n = 1280;
  double mean_segment = 20;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "--n" && a + 1 < argc)
      n = std::atoi(argv[++a]);
    else if (arg == "--L" && a + 1 < argc)
      mean_segment = std::atof(argv[++a]);
    else if (arg.rfind("-", 0) == 0) {
      std::printf("usage: %s [OUT_DIR] [--n N] [--L MEAN_SEGMENT]\n", argv[0]);
      return arg == "-h" || arg == "--help" ? 0 : 2;
    } else
      out_dir = arg;
  }
  if (n < 1 || n > 4096 || !(mean_segment >= 1)) {
    std::fprintf(stderr, "tile_walk: --n must be in 1..4096 (got %d), --L >= 1 (got %g)\n", n,
                 mean_segment);
    return 2;
  }
  try {
    const ansan::MaskPolicy policy = ansan::MaskPolicy::anllm();
    const TileShape shape = ansan::cuda::detail::kTensorTileShape;
    const ansan::AnchorLayout L = random_layout(n, mean_segment);
    std::vector<QueryTileWalk> tiles;
    ansan::cuda::for_each_query_tile(L, policy, shape,
                                     [&](const QueryTileWalk& t) { tiles.push_back(t); });
    const auto query_tiles = std::int32_t(tiles.size());
    // The block-sparse view, once: sparse[qt][kt] for key tiles kt <= qt.
    std::vector<std::vector<bool>> sparse(tiles.size());
    std::int32_t sparse_tiles = 0;
    for (std::int32_t qt = 0; qt < query_tiles; ++qt)
      for (std::int32_t kt = 0; kt <= qt; ++kt) {
        sparse[std::size_t(qt)].push_back(tile_pair_visible(L, policy, qt, kt, shape.tile_keys));
        sparse_tiles += sparse[std::size_t(qt)].back();
      }

    // Text: one line per block.
    std::int32_t walked_tiles = 0, warp_products = 0, warp_skips = 0;
    std::printf(
        "%d tokens, mean segment %g, AnLLM; blocks of %d query rows, tiles of %d keys, "
        "warps of %d rows (F full, p masked, . skipped)\n",
        n, mean_segment, shape.block_rows, shape.tile_keys, shape.warp_rows);
    for (const QueryTileWalk& t : tiles) {
      walked_tiles += t.walk.count();
      std::printf("rows %4d-%4d: %3d retained keys, local keys %4d-%4d:", t.q_begin,
                  t.q_begin + std::int32_t(t.rows.size()) - 1, t.walk.retained.last(),
                  t.walk.local.first(), t.walk.local.last() - 1);
      for (std::int32_t j = 0; j < t.walk.count(); ++j) {
        std::printf(" %c%d[", part_char(t.walk, j), j);
        for (std::int32_t w = 0; w < t.warps(); ++w) {
          const TileMask m = t.warp_class(w, j);
          std::printf("%c", class_char(m));
          (m == TileMask::none ? warp_skips : warp_products) += 1;
        }
        std::printf("]");
      }
      std::printf("\n");
    }
    std::printf(
        "tiles: %d walked by the kernel, %d visited by a block-sparse kernel (%d in the "
        "causal triangle); warp products %d, skipped %d\n",
        walked_tiles, sparse_tiles, query_tiles * (query_tiles + 1) / 2, warp_products, warp_skips);

    // The picture.
    const int cell = 40, gap = 60, left = 70, top = 110;
    // The right panel: each block's tiles in walk order.
    std::int32_t most_tiles = 0;
    for (const QueryTileWalk& t : tiles) most_tiles = std::max(most_tiles, t.walk.count());
    const int right = left + query_tiles * cell + gap, step = cell + 6;
    const int width = std::max(right + most_tiles * step, right + 420) + 20;
    const int height = top + query_tiles * cell + 90;
    const char* retained_fill = "#f08a24";
    const char* local_fill = "#2f6db5";
    const char* visited_fill = "#9aa5b1";
    std::filesystem::create_directories(out_dir);
    const std::string path = out_dir + "/tile_walk_anllm.svg";
    std::ofstream svg(path);
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
        << "\" viewBox=\"0 0 " << width << " " << height
        << "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
        << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        << "<text x=\"12\" y=\"24\" font-size=\"17\" font-weight=\"bold\">The tensor-core "
           "prefill's "
           "tile walk, AnLLM mask</text>\n"
        << "<text x=\"12\" y=\"44\" font-size=\"12\" fill=\"#333\">" << n
        << " tokens, a segment every " << mean_segment << " on average; rows: blocks of "
        << shape.block_rows << " query rows; tiles of " << shape.tile_keys << " keys</text>\n"
        << "<text x=\"" << left << "\" y=\"" << top - 14
        << "\" font-size=\"13\">block-sparse: " << sparse_tiles << " of "
        << query_tiles * (query_tiles + 1) / 2 << " causal tiles</text>\n"
        << "<text x=\"" << right << "\" y=\"" << top - 34
        << "\" font-size=\"13\">ansan: " << walked_tiles
        << " tiles, each as its 4 warps' products</text>\n"
        << "<text x=\"" << right << "\" y=\"" << top - 12
        << "\" font-size=\"11\">retained keys, then local keys, in walk order</text>\n";
    for (std::int32_t qt = 0; qt < query_tiles; ++qt) {
      const int y = top + qt * cell;
      svg << "<text x=\"" << left - 8 << "\" y=\"" << y + cell / 2 + 4
          << "\" font-size=\"11\" text-anchor=\"end\">" << qt * shape.block_rows << "</text>\n";
      for (std::int32_t kt = 0; kt <= qt; ++kt)
        svg << "<rect x=\"" << left + kt * cell + 1 << "\" y=\"" << y + 1 << "\" width=\""
            << cell - 2 << "\" height=\"" << cell - 2 << "\" fill=\""
            << (sparse[std::size_t(qt)][std::size_t(kt)] ? visited_fill : "#eeeeee") << "\"/>\n";
      const QueryTileWalk& t = tiles[std::size_t(qt)];
      const int warp_px = (cell - 4) * shape.warp_rows / shape.block_rows;  // a gap between blocks
      const double slot_px = double(cell - 2) / shape.tile_keys;
      for (std::int32_t j = 0; j < t.walk.count(); ++j) {
        const int x = right + j * step;
        // The tile's slots left to right: retained keys, then local keys, then empty slots.
        const std::int32_t first = t.walk.begin(j);
        const std::int32_t retained_slots =
            std::clamp(t.walk.retained.last() - first, 0, shape.tile_keys);
        const std::int32_t held = t.walk.slots_held(j);
        const struct {
          std::int32_t begin, end;
          const char* fill;
        } spans[] = {{0, retained_slots, retained_fill}, {retained_slots, held, local_fill}};
        for (std::int32_t w = 0; w < t.warps(); ++w) {
          const TileMask m = t.warp_class(w, j);
          const int y_warp = y + 2 + w * warp_px;
          svg << "<rect x=\"" << x + 1 << "\" y=\"" << y_warp << "\" width=\"" << cell - 2
              << "\" height=\"" << warp_px - 1
              << "\" fill=\"white\" stroke=\"#bbb\" stroke-width=\"0.5\"/>\n";
          if (m == TileMask::none) continue;
          for (const auto& span : spans) {
            if (span.end <= span.begin) continue;
            svg << "<rect x=\"" << x + 1 + span.begin * slot_px << "\" y=\"" << y_warp
                << "\" width=\"" << (span.end - span.begin) * slot_px << "\" height=\"" << warp_px - 1 << "\" fill=\""
                << span.fill << "\"" << (m == TileMask::partial ? " fill-opacity=\"0.45\"" : "")
                << "/>\n";
          }
        }
      }
    }
    const int legend_y = top + query_tiles * cell + 24;
    const struct {
      const char* fill;
      const char* opacity;
      const char* text;
    } legend[] = {{visited_fill, "1", "a tile with a visible pair"},
                  {retained_fill, "1", "retained keys (earlier anchors)"},
                  {local_fill, "1", "local keys (own segment)"},
                  {local_fill, "0.45", "lighter: the warp masks pairs"},
                  {"white", "1", "the warp skips the tile"}};
    for (int e = 0; e < 5; ++e) {
      const int x = 12 + e * 190;
      svg << "<rect x=\"" << x << "\" y=\"" << legend_y << "\" width=\"14\" height=\"14\" fill=\""
          << legend[e].fill << "\" fill-opacity=\"" << legend[e].opacity
          << "\" stroke=\"#999\" stroke-width=\"0.5\"/>\n<text x=\"" << x + 20 << "\" y=\""
          << legend_y + 11 << "\" font-size=\"11\">" << legend[e].text << "</text>\n";
    }
    svg << "<text x=\"12\" y=\"" << legend_y + 40 << "\" font-size=\"11\" fill=\"#555\">"
        << "a warp's stripe: its 16 query rows, its tile's slots left to right (white where "
           "a tile ends before its last slot); retained keys are the earlier anchors' key rows, "
           "gathered by the plan; drawn by examples/tile_walk</text>\n</svg>\n";
    if (!svg) throw std::runtime_error("cannot write " + path);
    std::printf("wrote %s\n", path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tile_walk: %s\n", e.what());
    return 1;
  }
  return 0;
}
