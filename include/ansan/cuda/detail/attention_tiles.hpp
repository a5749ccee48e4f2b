// ansan/cuda/detail/attention_tiles.hpp - which keys a query row, a query tile and a decode
// split visit (SPEC.md section 4), as plain index arithmetic.
//
// Not CUDA-only: every function is ANSAN_HOST_DEVICE, so tests/test_attention_tiles.cpp checks
// it on the host against the brute-force predicate ansan::visible, and the kernels call the
// same code.
//
// A row's visible keys are two disjoint parts (policy.hpp, visible_local / visible_retained):
//   local     key rows [local_begin, local_end): positions in [local_lower_bound, pos];
//   retained  the first `retained` entries of its sequence's retained-key list (the keys with
//             is_retained(), in key-row order); all lie below the local band.
// The retained list is described by an exclusive prefix count over key rows:
//   retained_prefix[t] = number of retained keys among rows [0, t)  (rows of every sequence)
// so the retained keys of sequence b that lie below row t number
//   retained_prefix[t] - retained_prefix[k_begin(b)].
//
//   k_pos       0  1  2  3  4  5  6  7  8  9        (AnLLM, anchors at 3 and 7; row pos 9)
//   retained    .  .  .  1  .  .  .  1  .  .        retained_prefix = 0 0 0 0 1 1 1 1 2 2 2
//   row 9       local rows [8, 10), retained 2 (keys 3 and 7)
#pragma once

#include <climits>
#include <cstdint>

#include "ansan/config.hpp"
#include "ansan/detail/lower_bound.hpp"
#include "ansan/policy.hpp"

namespace ansan::cuda::detail {

// First row in [begin, end) whose position is >= pos, or end. k_pos is strictly ascending in
// the range (attention_args.hpp requires it), so row begin + i holds a position of at least
// k_pos[begin] + i and row end - 1 - i one of at most k_pos[end - 1] - i: the answer lies
// within pos - k_pos[begin] rows of begin and k_pos[end - 1] - pos rows of end - 1. Where the
// positions have no gaps (a prefill's keys) that leaves nothing to search; elsewhere the binary
// search runs over the gaps only. Each step is a dependent load, and a GPU thread waits for each.
ANSAN_HOST_DEVICE std::int32_t first_key_at_or_after(const std::int32_t* k_pos, std::int32_t begin,
                                                     std::int32_t end, std::int32_t pos) {
  if (begin >= end) return end;
  const std::int32_t first = k_pos[begin];
  if (pos <= first) return begin;
  const std::int32_t last = k_pos[end - 1];
  if (pos > last) return end;
  std::int32_t lo = begin + 1, hi = end - 1;  // first < pos <= last: the answer is in [lo, hi]
  if (pos - first < hi - begin) hi = begin + (pos - first);
  if (last - pos < end - 1 - lo) lo = end - 1 - (last - pos);
  return ansan::detail::lower_bound_index(k_pos, lo, hi, pos);  // k_pos[hi] >= pos
}

// The keys one query row sees, in the two parts of SPEC section 4.
struct RowKeys {
  std::int32_t local_begin;  // first key row of the local band
  std::int32_t local_end;    // one past its last key row
  std::int32_t retained;     // length of the visible prefix of the sequence's retained list
};

// Key rows of the row's sequence are [k_begin, k_end). retained_prefix may be null when the
// policy retains nothing.
ANSAN_HOST_DEVICE RowKeys row_keys(const MaskPolicy& policy, const QueryInfo& q,
                                   const std::int32_t* k_pos, const std::int32_t* retained_prefix,
                                   std::int32_t k_begin, std::int32_t k_end) {
  RowKeys r;
  r.local_begin = first_key_at_or_after(k_pos, k_begin, k_end, local_lower_bound(policy, q));
  r.local_end = first_key_at_or_after(k_pos, r.local_begin, k_end, q.pos + 1);
  const bool any = policy.has_retained() && sees_retained(policy, q) && retained_prefix;
  r.retained = any ? retained_prefix[r.local_begin] - retained_prefix[k_begin] : 0;
  return r;
}

// The rows of a query tile see intervals [begin_r, end_r) of one index space (key rows for
// the local part, retained-list indices for the retained part); bounds hold their extremes.
struct TileBounds {
  std::int32_t min_begin, max_begin;
  std::int32_t min_end, max_end;

  ANSAN_HOST_DEVICE static TileBounds empty() { return {INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN}; }
  ANSAN_HOST_DEVICE void add(std::int32_t begin, std::int32_t end) {
    min_begin = begin < min_begin ? begin : min_begin;
    max_begin = begin > max_begin ? begin : max_begin;
    min_end = end < min_end ? end : min_end;
    max_end = end > max_end ? end : max_end;
  }
  ANSAN_HOST_DEVICE void merge(const TileBounds& o) {
    min_begin = o.min_begin < min_begin ? o.min_begin : min_begin;
    max_begin = o.max_begin > max_begin ? o.max_begin : max_begin;
    min_end = o.min_end < min_end ? o.min_end : min_end;
    max_end = o.max_end > max_end ? o.max_end : max_end;
  }
  // The key tiles a kernel walks: [min_begin, max_end), empty when no row sees anything.
  ANSAN_HOST_DEVICE std::int32_t first() const { return min_begin; }
  ANSAN_HOST_DEVICE std::int32_t last() const { return max_end > min_begin ? max_end : min_begin; }
};

enum class TileMask : std::uint8_t {
  none,     // no row of the tile sees any key of it: skip
  full,     // every row sees every key: no per-element check
  partial,  // check each (row, key) with the predicate
};

// How a key tile [begin, end) meets the rows of a query tile.
ANSAN_HOST_DEVICE TileMask classify_tile(const TileBounds& b, std::int32_t begin, std::int32_t end) {
  if (end <= b.min_begin || begin >= b.max_end || b.min_begin >= b.max_end) return TileMask::none;
  if (begin >= b.max_begin && end <= b.min_end) return TileMask::full;
  return TileMask::partial;
}

// The walk indices of a tile that a kernel counts for one row (TileWalk::seen): the row's
// retained keys and its local keys, one interval each, so that a kernel checks an element with
// a few compares and no branch (mask_scores: three, the retained interval starting at 0).
struct KeyInterval {
  std::int32_t begin, end;
  ANSAN_HOST_DEVICE bool contains(std::int32_t index) const {
    return index >= begin && index < end;
  }
};
struct SeenKeys {
  KeyInterval retained, local;
  ANSAN_HOST_DEVICE bool contains(std::int32_t index) const {
    return retained.contains(index) || local.contains(index);
  }
};

// The key tiles one query tile walks. Its rows see retained-list indices [retained.first(),
// retained.last()) and key rows [local.first(), local.last()); the walk packs the two ranges
// end to end into one index space, the walk index:
//   w <  retained.last()   entry w of the sequence's retained list
//   w >= retained.last()   key row w - local_shift()
// and cuts it into tiles of tile_keys from retained.first(). So the retained part's last tile,
// rarely full, takes the band's first keys instead of each part ending in its own partial tile
// (at n = 16384, L = 20: 8.0 tiles a query tile instead of 8.7). One tile can then hold keys of
// both parts; a row's two intervals stay disjoint in the walk index, so each visible key is
// counted once. `retained` and `local` bound the rows of the whole query tile.
//
//   walk index    0  1  2  3 |  4  5  6  7 |  8  9 10 11 | 12     (tile_keys 4)
//   key          a0 a1 a2 a3 | a4 40 41 42 | 43 44 45 46 | 47     a: retained-list entries,
//   tile          0          |  1          |  2          |  3      then key rows 40..47:
//                                                                  local_shift() = 5 - 40
struct TileWalk {
  TileBounds retained, local;
  std::int32_t tile_keys;

  ANSAN_HOST_DEVICE std::int32_t local_shift() const { return retained.last() - local.first(); }
  // One past the last walk index that holds a key.
  ANSAN_HOST_DEVICE std::int32_t end() const {
    return retained.last() + (local.last() - local.first());
  }
  ANSAN_HOST_DEVICE std::int32_t count() const {
    return (end() - retained.first() + tile_keys - 1) / tile_keys;
  }
  // First walk index of tile j.
  ANSAN_HOST_DEVICE std::int32_t begin(std::int32_t j) const {
    return retained.first() + j * tile_keys;
  }
  ANSAN_HOST_DEVICE bool in_retained(std::int32_t index) const { return index < retained.last(); }
  // How many leading slots of tile j hold a key (the loader zero-fills the rest): walk index
  // begin(j) + slot holds one iff slot < slots_held(j).
  ANSAN_HOST_DEVICE std::int32_t slots_held(std::int32_t j) const {
    const std::int32_t held = end() - begin(j);
    return held < tile_keys ? held : tile_keys;
  }
  // The groups of `group` slots of tile j up to its last held one: tensor_sm90_ws's P V
  // multiplies only these (in wgmma's k steps of 16 keys).
  ANSAN_HOST_DEVICE std::int32_t groups_held(std::int32_t j, std::int32_t group) const {
    return (slots_held(j) + group - 1) / group;
  }
  // The key row behind walk index `index`, or -1 past end(). `retained_rows`: the sequence's
  // retained list (its first entry at index 0).
  ANSAN_HOST_DEVICE std::int32_t key_row(std::int32_t index,
                                         const std::int32_t* retained_rows) const {
    if (index >= end()) return -1;
    return in_retained(index) ? retained_rows[index] : index - local_shift();
  }
  // How tile j meets rows whose retained and local keys `rows_retained` and `rows_local` bound
  // (a warp's rows, or the whole tile's). A tile full for one part lies below the other's
  // first index, so the classes combine without a case for two full parts.
  ANSAN_HOST_DEVICE TileMask classify(const TileBounds& rows_retained,
                                      const TileBounds& rows_local, std::int32_t j) const {
    const std::int32_t first = begin(j), shift = local_shift();
    const TileMask r = classify_tile(rows_retained, first, first + tile_keys);
    const TileMask l = classify_tile(rows_local, first - shift, first + tile_keys - shift);
    return r == TileMask::none ? l : l == TileMask::none ? r : TileMask::partial;
  }
  // The walk indices of tile j a kernel counts for a row with keys `rk`, given the tile's
  // class for the rows being computed: visible_retained / visible_local in index form.
  ANSAN_HOST_DEVICE SeenKeys seen(TileMask mask, const RowKeys& rk, std::int32_t j) const {
    const std::int32_t first = begin(j), shift = local_shift();
    if (mask == TileMask::none) return {{first, first}, {first, first}};
    if (mask == TileMask::full) return {{first, first + tile_keys}, {first, first}};
    return {{0, rk.retained}, {rk.local_begin + shift, rk.local_end + shift}};
  }
};

// A prefill kernel's tiles: query rows per thread block, query rows per warp (the rows one
// none/full/partial class covers), keys per key tile.
struct TileShape {
  std::int32_t block_rows, warp_rows, tile_keys;
};
constexpr TileShape kTensorTileShape{64, 16, 64};  // both tensor-core prefills

// Decode: split s of `splits` takes key rows [begin, end) of a sequence with `keys` rows;
// splits hold whole tiles of `tile` keys, the last ones may be empty.
struct SplitRange {
  std::int32_t begin, end;  // relative to the sequence's first key row
};
ANSAN_HOST_DEVICE SplitRange split_range(std::int32_t keys, std::int32_t splits, std::int32_t s,
                                         std::int32_t tile) {
  const std::int32_t tiles = (keys + tile - 1) / tile;
  const std::int32_t per_split = ((tiles + splits - 1) / splits) * tile;
  const std::int32_t begin = s * per_split < keys ? s * per_split : keys;
  const std::int32_t end = begin + per_split < keys ? begin + per_split : keys;
  return {begin, end};
}

// Query tiles of a ragged batch: sequence b owns tiles [tile_prefix[b], tile_prefix[b+1]).
ANSAN_HOST_DEVICE std::int32_t tiles_of(std::int32_t rows, std::int32_t tile_rows) {
  return (rows + tile_rows - 1) / tile_rows;
}
// The sequence owning global tile x: the last b with tile_prefix[b] <= x (b in [0, batch)).
ANSAN_HOST_DEVICE std::int32_t sequence_of_tile(const std::int32_t* tile_prefix, std::int32_t batch,
                                                std::int32_t x) {
  std::int32_t lo = 0, hi = batch - 1;
  while (lo < hi) {
    const std::int32_t mid = lo + (hi - lo + 1) / 2;
    if (tile_prefix[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace ansan::cuda::detail
