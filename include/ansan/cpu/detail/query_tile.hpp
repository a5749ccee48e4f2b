// ansan/cpu/detail/query_tile.hpp - one query tile of the fused CPU forward (SPEC section 4).
//
// A tile is up to kQueryRows consecutive query rows of one sequence, for every query head of
// one GQA group, stacked so that one multiply by a key block serves the whole group:
//     stacked row r  =  (query row first + r / group,  query head kv_head * group + r % group)
// A decode tile (a few stacked rows over keys converted block by block) may cover several KV
// heads (tile_plan.hpp): each key block is then converted for all of them at once, and each
// head's group runs on its own scratch exactly as a tile of that head alone would.
//
// Under TileSkipping::two_part the keys a query row sees form, in each part, one contiguous
// interval of key indices:
//     retained part  [0, number of retained keys with position < its local lower bound)
//                    (empty for a row that does not see retained keys)
//     local part     the keys with position in [local lower bound, pos]  (binary search)
// A part is walked in blocks of kKeyBlock keys over the union of its rows' intervals, as float
// rows (key_panel.hpp: the panel's copy, or converted just before the multiply). A block
// inside every row's interval is used whole; in a block crossing an interval's edge each row
// uses only its own columns (the others get probability 0, and no exp is spent on them).
// Both parts feed one online softmax (running max, running sum, rescaled accumulator), so
// the result equals ansan::reference_attention.
//
//     keys:   retained (gathered)            local (by position)
//     row 0   [########....]                 [...###..........]     # seen by that row
//     row 1   [#########...]                 [...####.........]     the tile multiplies the
//     row 2   [#########...]                 [.......#........]     union of the intervals
//
// TileSkipping::dense_mask walks every key with position <= the tile's last row and applies
// ansan::visible to each (row, key) pair: what a custom-mask kernel does.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include <Eigen/Core>

#include "ansan/attention_args.hpp"
#include "ansan/cpu/attention_options.hpp"
#include "ansan/cpu/detail/key_panel.hpp"
#include "ansan/cpu/detail/softmax_exp.hpp"
#include "ansan/dtype.hpp"
#include "ansan/policy.hpp"

namespace ansan::cpu::detail {

inline constexpr index_t kQueryRows = 64;     // query rows per tile, before stacking the group
inline constexpr index_t kLocalStacked = 16;  // stacked rows per local sub-tile, when that saves work
inline constexpr index_t kKeyBlock = 128;     // keys per multiply
// A sub-tile of at most kFewRows stacked rows a KV head (decode: one query row times the group;
// a local sub-tile of kLocalStacked rows) runs its products row by row, in blocks of
// kFewRowsKeyBlock keys (fewer where the tile converts them and there are several KV heads);
// see BlockProducts.
inline constexpr index_t kFewRows = kLocalStacked, kFewRowsKeyBlock = 64;
inline constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
// exp(x) for x below about -87 is a denormal, and denormals are many times slower (in the exp
// and in the P V product after it); a probability under e^-80 is far below fp32 resolution
// next to the row's largest term (1), so exponents are clamped there.
inline constexpr float kNegligibleLogit = -80.f;

struct KeyInterval {
  index_t begin = 0, end = 0;  // key indices [begin, end)
};

// What one worker reuses from tile to tile. Stacked rows are query-major (row i * group + g),
// so the stacked rows of a run of query rows are contiguous.
struct TileScratch {
  RowMatrix q;                     // (rows * group, head_dim) queries times softmax_scale
  RowMatrix k, v;                  // (block, head_dim) a key block converted here
  RowMatrix score;                 // (stacked rows of a sub-tile, block) scores, then probabilities
  RowMatrix acc;                   // (rows * group, head_dim) unnormalised output
  Eigen::ArrayXf max_score, sum;   // (rows * group) running max and running sum of exp
  std::vector<QueryInfo> query;    // (rows)
  std::vector<KeyInterval> retained, local;  // (rows) visible keys of each part
  std::vector<KeyInterval> block_cols;       // (stacked rows) columns of the block each row sees
  RowMatrix keep;                  // (rows, block) dense_mask only: 1 visible, 0 masked
};

// Online-softmax step for one key block over stacked rows [first, first + score.rows()):
// turns the scaled scores in ts.score into probabilities exp(s - new max), updates the running
// max and sum, and rescales the accumulator rows. Row r counts only columns ts.block_cols[r]
// (the rest become 0); with `keep` (dense_mask: one row per query row), entries masked there
// must hold -inf and end at 0.
// Row by row, so every operation runs along contiguous memory and exp vectorises.
inline void softmax_block(TileScratch& ts, index_t first, const RowMatrix* keep = nullptr) {
  const index_t cols = ts.score.cols(), group = keep ? ts.q.rows() / keep->rows() : 1;
  for (index_t r = 0; r < ts.score.rows(); ++r) {
    auto prob = ts.score.row(r).array();  // (block)
    const KeyInterval seen = ts.block_cols[std::size_t(r)];
    const index_t s = first + r;
    const float new_max = seen.begin < seen.end
        ? std::max(ts.max_score[s], prob.segment(seen.begin, seen.end - seen.begin).maxCoeff())
        : ts.max_score[s];
    if (new_max == kMinusInf) {  // nothing seen yet, nor in this block
      prob.setZero();
      continue;
    }
    auto seen_prob = prob.segment(seen.begin, seen.end - seen.begin);
    seen_prob = (seen_prob - new_max).max(kNegligibleLogit);
    // row data + offset, not &score(r, begin): `seen` may be empty at the very end of the row.
    exp_nonpositive(ts.score.row(r).data() + seen.begin, seen.end - seen.begin);
    prob.head(seen.begin).setZero();
    prob.tail(cols - seen.end).setZero();
    if (keep) prob *= keep->row((first + r) / group).array();
    const float rescale = std::exp(ts.max_score[s] - new_max);  // 0 for a row's first keys
    ts.sum[s] = rescale * ts.sum[s] + prob.sum();
    if (rescale != 1.f) ts.acc.row(s) *= rescale;
    ts.max_score[s] = new_max;
  }
}

// The two products of one key block, S = Q K^T before the softmax step and O += P V after it.
// Eigen's GEMM first packs both operands into its own layout, which pays off when many stacked
// rows share a block; a decode sub-tile has only the group's few rows, and packing the block
// would cost more than multiplying it. There each row is a matrix-vector product, which Eigen
// runs straight from the block (read once per row while it is still in cache).
struct BlockProducts {
  bool by_row;
  template <class Q>
  void scores(RowMatrix& score, const Q& q, const RowBlock& k) const {
    if (!by_row) return void(score.noalias() = q * k.transpose());
    score.resize(q.rows(), k.rows());
    for (index_t r = 0; r < q.rows(); ++r) score.row(r).noalias() = q.row(r) * k.transpose();
  }
  template <class Acc>
  void accumulate(Acc acc, const RowMatrix& prob, const RowBlock& v) const {
    if (!by_row) return void(acc.noalias() += prob * v);
    for (index_t r = 0; r < acc.rows(); ++r) acc.row(r).noalias() += prob.row(r) * v;
  }
};

// One part of SPEC section 4 for query rows [begin, end) of the tile: query row i sees keys
// visible[i] of `part`. ts[h] holds KV head kv_head + h's group; each key block is converted
// once for all `heads` (only where it is converted here, so heads > 1 only for decode tiles).
template <class T>
void attend_part(TileScratch* ts, index_t heads, const AttentionArgs<T>& a, KeyPart part,
                 index_t kv_head, const std::vector<KeyInterval>& visible, index_t begin,
                 index_t end) {
  const index_t group = ts[0].q.rows() / index_t(visible.size());
  index_t keys_begin = std::numeric_limits<index_t>::max(), keys_end = 0;  // union of the intervals
  index_t full_begin = 0, full_end = keys_begin;  // intersection: keys every row sees
  for (index_t i = begin; i < end; ++i) {
    const KeyInterval& iv = visible[std::size_t(i)];
    if (iv.begin < iv.end) keys_begin = std::min(keys_begin, iv.begin), keys_end = std::max(keys_end, iv.end);
    full_begin = std::max(full_begin, iv.begin);
    full_end = std::min(full_end, iv.end);
  }
  const index_t stacked = (end - begin) * group;
  const BlockProducts products{stacked <= kFewRows};
  // Keys converted here and multiplied by row (decode tiles, which may cover every KV head:
  // tile_plan.hpp) come in blocks of the bytes of kFewRowsKeyBlock keys of one head, shared by
  // the problem's KV heads (64 keys of each of two heads made a decode step over a cache that
  // stays in the CPU's caches 10-40% slower), whatever the tile covers, so that the blocks, and
  // the results, do not depend on the thread count.
  const index_t block = !products.by_row ? kKeyBlock
                        : part.k         ? kFewRowsKeyBlock
                                         : std::max<index_t>(16, kFewRowsKeyBlock / a.heads_kv());
  for (index_t j0 = keys_begin; j0 < keys_end; j0 += block) {
    const index_t cols = std::min(block, keys_end - j0);
    if (!part.k)
      convert_keys([&](index_t h) { return std::tie(ts[h].k, ts[h].v); }, a, part, kv_head, heads,
                   j0, cols);
    const bool full = j0 >= full_begin && j0 + cols <= full_end;  // no row has an edge here
    for (index_t h = 0; h < heads; ++h) {
      TileScratch& head = ts[h];
      const KeyBlock keys = key_block(head.k, head.v, part, j0, cols);
      products.scores(head.score, head.q.middleRows(begin * group, stacked), keys.k);
      head.block_cols.resize(std::size_t(stacked));
      for (index_t r = 0; r < stacked; ++r) {
        const KeyInterval& iv = visible[std::size_t(begin + r / group)];
        const index_t lo = full ? 0 : std::clamp(iv.begin - j0, index_t(0), cols);
        head.block_cols[std::size_t(r)] = {lo, full ? cols : std::clamp(iv.end - j0, lo, cols)};
      }
      softmax_block(head, begin * group);
      products.accumulate(head.acc.middleRows(begin * group, stacked), head.score, keys.v);
    }
  }
}

// Keys multiplied when query rows [begin, end) cover their local band in one piece.
inline index_t band_keys(const std::vector<KeyInterval>& local, index_t begin, index_t end) {
  index_t lo = std::numeric_limits<index_t>::max(), hi = 0;
  for (index_t i = begin; i < end; ++i)
    if (local[std::size_t(i)].begin < local[std::size_t(i)].end)
      lo = std::min(lo, local[std::size_t(i)].begin), hi = std::max(hi, local[std::size_t(i)].end);
  return hi > lo ? hi - lo : 0;
}

// TileSkipping::dense_mask: every key up to the tile's last position, masked per element.
template <class T>
void attend_dense_mask(TileScratch& ts, const AttentionArgs<T>& a, const KeyPanel& panel,
                       index_t kv_head) {
  const index_t rows = index_t(ts.query.size()), group = ts.q.rows() / rows;
  std::int32_t last_pos = 0;
  for (const QueryInfo& query : ts.query) last_pos = std::max(last_pos, query.pos);
  const index_t end = std::upper_bound(panel.pos, panel.pos + panel.keys, last_pos) - panel.pos;
  for (index_t j0 = 0; j0 < end; j0 += kKeyBlock) {
    const index_t cols = std::min(kKeyBlock, end - j0);
    const KeyPart part = local_part(panel);
    if (!part.k)
      convert_keys([&](index_t) { return std::tie(ts.k, ts.v); }, a, part, kv_head, 1, j0, cols);
    const KeyBlock keys = key_block(ts.k, ts.v, part, j0, cols);
    ts.score.noalias() = ts.q * keys.k.transpose();  // S = Q K^T
    // The predicate per (query row, key), shared by the heads of the group as a custom mask is.
    ts.keep.resize(rows, cols);
    for (index_t i = 0; i < rows; ++i)
      for (index_t c = 0; c < cols; ++c) {
        const KeyInfo key{panel.pos[j0 + c], panel.is_anchor[j0 + c] != 0};
        ts.keep(i, c) = visible(a.policy, ts.query[std::size_t(i)], key) ? 1.f : 0.f;
      }
    for (index_t r = 0; r < ts.score.rows(); ++r)
      for (index_t c = 0; c < cols; ++c)
        if (ts.keep(r / group, c) == 0.f) ts.score(r, c) = kMinusInf;  // out of the row max
    ts.block_cols.assign(std::size_t(ts.score.rows()), KeyInterval{0, cols});
    softmax_block(ts, 0, &ts.keep);
    ts.acc.noalias() += ts.score * keys.v;  // O += P V
  }
}

// Query rows [first, first + rows) of one sequence, the query heads of KV heads
// [kv_head, kv_head + kv_heads), head kv_head + h's group on ts[h] (several heads only for a
// decode tile of two_part: tile_plan.hpp). ts[0] also holds what the heads share: the rows'
// positions and visible intervals.
template <class T>
void attend_tile(const AttentionArgs<T>& a, const KeyPanel& panel, index_t kv_head,
                 index_t kv_heads, index_t first, index_t rows, TileSkipping skipping,
                 TileScratch* ts) {
  const index_t group = a.heads_q() / a.heads_kv(), dim = a.head_dim(), stacked = group * rows;
  for (index_t h = 0; h < kv_heads; ++h) {
    TileScratch& head = ts[h];
    head.q.resize(stacked, dim);
    for (index_t i = 0; i < rows; ++i)
      for (index_t g = 0; g < group; ++g) {
        const T* src = &a.q(first + i, (kv_head + h) * group + g, 0);  // (head_dim)
        for (index_t d = 0; d < dim; ++d)
          head.q(i * group + g, d) = a.softmax_scale * to_float(src[d]);
      }
    head.acc.setZero(stacked, dim);
    head.max_score.setConstant(stacked, kMinusInf);
    head.sum.setZero(stacked);
  }
  TileScratch& shared = ts[0];
  shared.query.resize(std::size_t(rows));
  for (index_t i = 0; i < rows; ++i)
    shared.query[std::size_t(i)] = {a.q_pos[first + i], a.q_seg_start[first + i],
                                    a.q_is_anchor[first + i] != 0};

  if (skipping == TileSkipping::dense_mask) {
    attend_dense_mask(shared, a, panel, kv_head);  // (one head a tile)
  } else {
    const std::int32_t *pos = panel.pos, *pos_end = panel.pos + panel.keys;
    const std::int32_t *retained = panel.retained_pos.data(),
                       *retained_end = retained + panel.retained_pos.size();
    shared.retained.resize(std::size_t(rows));
    shared.local.resize(std::size_t(rows));
    for (std::size_t i = 0; i < std::size_t(rows); ++i) {
      const QueryInfo& query = shared.query[i];
      const std::int32_t lower = local_lower_bound(a.policy, query);
      shared.local[i] = {std::lower_bound(pos, pos_end, lower) - pos,
                         std::upper_bound(pos, pos_end, query.pos) - pos};
      shared.retained[i] = {0, sees_retained(a.policy, query)
                                   ? std::lower_bound(retained, retained_end, lower) - retained
                                   : 0};
    }
    attend_part(ts, kv_heads, a, retained_part(panel), kv_head, shared.retained, 0, rows);
    // The local band in one piece, or in sub-tiles of about kLocalStacked stacked rows, each
    // with its own narrower band, when that multiplies clearly fewer keys (short segments or
    // windows; a causal prefix gains nothing and keeps the larger multiplies).
    const index_t sub_rows = std::max<index_t>(1, kLocalStacked / group);
    index_t split = 0;
    for (index_t i = 0; i < rows; i += sub_rows)
      split += std::min(sub_rows, rows - i) * band_keys(shared.local, i, std::min(i + sub_rows, rows));
    const index_t step = 4 * split < 3 * rows * band_keys(shared.local, 0, rows) ? sub_rows : rows;
    for (index_t i = 0; i < rows; i += step)
      attend_part(ts, kv_heads, a, local_part(panel), kv_head, shared.local, i,
                  std::min(i + step, rows));
  }

  for (index_t h = 0; h < kv_heads; ++h) {
    const TileScratch& result = ts[h];
    for (index_t r = 0; r < stacked; ++r) {
      const index_t head = (kv_head + h) * group + r % group, row = first + r / group;
      T* dst = &a.out(row, head, 0);  // (head_dim)
      const bool seen = result.sum[r] > 0.f;
      const float normalise = seen ? 1.f / result.sum[r] : 0.f;  // O = 0 for a row that sees nothing
      for (index_t d = 0; d < dim; ++d) dst[d] = from_float<T>(result.acc(r, d) * normalise);
      if (a.lse.data)
        a.lse(head, row) = seen ? result.max_score[r] + std::log(result.sum[r]) : kMinusInf;
    }
  }
}

}  // namespace ansan::cpu::detail
