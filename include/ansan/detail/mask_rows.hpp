// ansan/detail/mask_rows.hpp - the visible keys of a query row as an interval plus a prefix.
//
// Internal to the mask exports (dense_mask, flex_block_mask, mask_density). Row i of a
// sequence sees (SPEC section 4) the contiguous local band [local_lower_bound, i] and, if it
// sees the retained set, the retained keys below that band. With a prefix count of retained
// keys, the number of visible keys of a row inside any key range is O(1):
//
//   keys         0  1  2  3  4  5  6  7  8  9      AnLLM, anchors at 3 and 7, row i = 9
//   retained     .  .  .  R  .  .  .  R  .  .      retained_prefix: 0 0 0 0 1 1 1 1 2 2 2
//   row 9        .  .  .  #  .  .  .  #  #  #      band [8, 9] + retained keys in [0, 8)
//
// Built from the halves of ansan::visible (local_lower_bound, is_retained, sees_retained), so
// the predicate stays the single definition; the tests compare every count with visible().
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ansan/error.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

namespace ansan::detail {

// Checks what the mask exports read from a layout: offsets, array sizes, and that every
// token's pos and seg_start are sequence-local (so no export can index outside its sequence).
inline void validate_mask_layout(const AnchorLayout& L, const char* function) {
  const std::int64_t total = L.total_tokens();
  validate_cu_seqlens(L.cu_seqlens, total, function, "layout.cu_seqlens");
  require(std::int64_t(L.pos.size()) == total, function, "layout.pos.size()", L.pos.size(),
          concat("the token count ", total));
  require(std::int64_t(L.seg_start.size()) == total, function, "layout.seg_start.size()",
          L.seg_start.size(), concat("the token count ", total));
  for (std::int32_t b = 0; b < L.batch(); ++b)
    for (std::int32_t t = L.cu_seqlens[b]; t < L.cu_seqlens[b + 1]; ++t) {
      const std::int32_t i = t - L.cu_seqlens[b];
      if (L.pos[t] != i)  // messages are built only on failure: this loop runs per token
        require(false, function, concat("layout.pos[", t, "]").c_str(), L.pos[t],
                concat(i, " (sequence-local position in sequence ", b, ")"));
      if (L.seg_start[t] < 0 || L.seg_start[t] > i)
        require(false, function, concat("layout.seg_start[", t, "]").c_str(), L.seg_start[t],
                concat("a value in [0, ", i, "]"));
    }
}

// A row's visible keys, in sequence-local positions: the band [local_begin, local_end) and,
// when sees_retained, every retained key below local_begin.
struct RowKeys {
  std::int32_t local_begin;
  std::int32_t local_end;  // the row's own position + 1
  bool sees_retained;
};

inline RowKeys row_keys(const MaskPolicy& p, const QueryInfo& q) {
  return {local_lower_bound(p, q), q.pos + 1, sees_retained(p, q)};
}

// retained_prefix[t] = number of retained keys among packed tokens [0, t); (total_tokens + 1).
// Differences inside one sequence count that sequence's retained keys.
inline std::vector<std::int32_t> retained_prefix(const AnchorLayout& L, const MaskPolicy& p) {
  std::vector<std::int32_t> prefix(std::size_t(L.total_tokens()) + 1, 0);
  for (std::int64_t t = 0; t < L.total_tokens(); ++t)
    prefix[std::size_t(t) + 1] =
        prefix[std::size_t(t)] + (is_retained(p, KeyInfo{L.pos[t], L.is_anchor[t] != 0}) ? 1 : 0);
  return prefix;
}

// Visible keys of `row` among the sequence-local keys [k0, k1). `seq_prefix` is
// retained_prefix shifted to the row's sequence (seq_prefix[j] counts its keys [0, j)).
inline std::int64_t count_visible(const RowKeys& row, std::int32_t k0, std::int32_t k1,
                                  const std::int32_t* seq_prefix) {
  const std::int32_t band_lo = std::max(k0, row.local_begin), band_hi = std::min(k1, row.local_end);
  std::int64_t count = band_hi > band_lo ? band_hi - band_lo : 0;
  if (row.sees_retained) {
    const std::int32_t retained_hi = std::min(k1, row.local_begin);
    if (retained_hi > k0) count += seq_prefix[retained_hi] - seq_prefix[k0];
  }
  return count;
}

// Per packed token: its sequence's packed range and its row keys. What block and tile
// classification reads for every row.
struct PackedRow {
  std::int32_t seq_begin;  // packed index of the sequence's first token
  std::int32_t seq_end;    // one past its last token
  RowKeys keys;
};

inline std::vector<PackedRow> packed_rows(const AnchorLayout& L, const MaskPolicy& p) {
  std::vector<PackedRow> rows(std::size_t(L.total_tokens()));
  for (std::int32_t b = 0; b < L.batch(); ++b)
    for (std::int32_t i = 0; i < L.seq_len(b); ++i)
      rows[std::size_t(L.cu_seqlens[b] + i)] = {L.cu_seqlens[b], L.cu_seqlens[b + 1],
                                                row_keys(p, L.query(b, i))};
  return rows;
}

// Visible (query, key) pairs in the block of packed rows [r0, r1) x packed keys [c0, c1):
// pairs of different sequences are never visible. O(r1 - r0).
inline std::int64_t count_block(const std::vector<PackedRow>& rows,
                                const std::vector<std::int32_t>& prefix, std::int32_t r0,
                                std::int32_t r1, std::int32_t c0, std::int32_t c1) {
  std::int64_t count = 0;
  for (std::int32_t t = r0; t < r1; ++t) {
    const PackedRow& row = rows[std::size_t(t)];
    const std::int32_t lo = std::max(c0, row.seq_begin), hi = std::min(c1, row.seq_end);
    if (hi > lo)
      count += count_visible(row.keys, lo - row.seq_begin, hi - row.seq_begin,
                             prefix.data() + row.seq_begin);
  }
  return count;
}

}  // namespace ansan::detail
