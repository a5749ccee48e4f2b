// ansan/layout.hpp - from token ids to anchors and segments (SPEC.md section 1), on the host.
//
// A ragged batch is packed back to back; cu_seqlens[B+1] holds each sequence's first token
// (FlashAttention's varlen convention). Every per-token field below is sequence-local.
//
//   tokens      T  h  e  .  C  a  t  .  S  o        (one sequence, EP selector {'.'})
//   is_anchor   0  0  0  1  0  0  0  1  0  0
//   seg         0  0  0  0  1  1  1  1  2  2        anchors strictly before i
//   seg_start   0  0  0  0  4  4  4  4  8  8        one past the last anchor before i
//   anchor_pos  [3, 7]                              tokens 8.. are the open segment
//
// build_layout_*() run in O(n) and validate everything before writing anything. The CUDA
// builder (ansan/cuda/layout.cuh) produces the same arrays on the device.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ansan/error.hpp"
#include "ansan/policy.hpp"
#include "ansan/span.hpp"

namespace ansan {

// How anchors are found in token ids (SPEC section 1).
struct AnchorSelector {
  std::vector<std::int32_t> anchor_ids;  // EP: punctuation ids; AC: the single <AC> id

  static AnchorSelector endpoint(std::vector<std::int32_t> punctuation_ids) {
    return {std::move(punctuation_ids)};
  }
  static AnchorSelector appended(std::int32_t ac_id) { return {{ac_id}}; }
};

// Non-owning device- or host-side view of a layout; what kernels take.
struct LayoutView {
  const std::int32_t* cu_seqlens = nullptr;  // (B+1)
  const std::int32_t* pos = nullptr;         // (total_tokens), sequence-local
  const std::uint8_t* is_anchor = nullptr;   // (total_tokens)
  const std::int32_t* seg = nullptr;         // (total_tokens)
  const std::int32_t* seg_start = nullptr;   // (total_tokens), sequence-local
  const std::int32_t* cu_anchors = nullptr;  // (B+1)
  const std::int32_t* anchor_pos = nullptr;  // (total_anchors), sequence-local
  std::int32_t batch = 0;
  std::int64_t total_tokens = 0;
};

struct AnchorLayout {
  std::vector<std::int32_t> cu_seqlens;  // (B+1)
  std::vector<std::int32_t> pos;         // (total_tokens), t - cu_seqlens[b]
  std::vector<std::uint8_t> is_anchor;   // (total_tokens)
  std::vector<std::int32_t> seg;         // (total_tokens)
  std::vector<std::int32_t> seg_start;   // (total_tokens)
  std::vector<std::int32_t> cu_anchors;  // (B+1)
  std::vector<std::int32_t> anchor_pos;  // (total_anchors)

  std::int32_t batch() const { return std::int32_t(cu_seqlens.size()) - 1; }
  std::int64_t total_tokens() const { return std::int64_t(is_anchor.size()); }
  std::int32_t seq_len(std::int32_t b) const { return cu_seqlens[b + 1] - cu_seqlens[b]; }

  // Predicate inputs for token `i` of sequence `b` (i sequence-local).
  QueryInfo query(std::int32_t b, std::int32_t i) const {
    const std::int64_t t = cu_seqlens[b] + i;
    return {i, seg_start[t], is_anchor[t] != 0};
  }
  KeyInfo key(std::int32_t b, std::int32_t j) const {
    return {j, is_anchor[cu_seqlens[b] + j] != 0};
  }

  LayoutView view() const {
    return {cu_seqlens.data(), pos.data(),        is_anchor.data(), seg.data(),
            seg_start.data(),  cu_anchors.data(), anchor_pos.data(), batch(),
            total_tokens()};
  }
};

// Checks cu_seqlens: at least {0}, starts at 0, non-decreasing, ends at total_tokens.
inline void validate_cu_seqlens(span<const std::int32_t> cu_seqlens, std::int64_t total_tokens,
                                const char* function, const char* name = "cu_seqlens") {
  require(cu_seqlens.size() >= 1, function, name, "empty", "B+1 >= 1 offsets");
  require(cu_seqlens[0] == 0, function, detail::concat(name, "[0]").c_str(), cu_seqlens[0], 0);
  for (std::size_t b = 1; b < cu_seqlens.size(); ++b)
    if (cu_seqlens[b] < cu_seqlens[b - 1])
      fail(function, detail::concat(name, "[", b, "]"), cu_seqlens[b],
           detail::concat(">= ", name, "[", b - 1, "] = ", cu_seqlens[b - 1], " (non-decreasing)"));
  require(cu_seqlens[cu_seqlens.size() - 1] == total_tokens, function,
          detail::concat(name, "[B]").c_str(), cu_seqlens[cu_seqlens.size() - 1],
          detail::concat("the token count ", total_tokens));
}

namespace detail {
// Fills every derived field from is_anchor; the one O(n) pass shared by all builders.
inline AnchorLayout layout_from_flags(span<const std::int32_t> cu_seqlens,
                                      std::vector<std::uint8_t> is_anchor) {
  AnchorLayout L;
  L.cu_seqlens.assign(cu_seqlens.begin(), cu_seqlens.end());
  const std::size_t n = is_anchor.size();
  L.pos.resize(n);
  L.seg.resize(n);
  L.seg_start.resize(n);
  L.cu_anchors.assign(cu_seqlens.size(), 0);
  for (std::int32_t b = 0; b + 1 < std::int32_t(cu_seqlens.size()); ++b) {
    std::int32_t anchors = 0, start = 0;
    for (std::int32_t t = cu_seqlens[b]; t < cu_seqlens[b + 1]; ++t) {
      const std::int32_t i = t - cu_seqlens[b];
      L.pos[t] = i;
      L.seg[t] = anchors;
      L.seg_start[t] = start;
      if (is_anchor[t]) {
        L.anchor_pos.push_back(i);
        ++anchors;
        start = i + 1;
      }
    }
    L.cu_anchors[b + 1] = L.cu_anchors[b] + anchors;
  }
  L.is_anchor = std::move(is_anchor);
  return L;
}
}  // namespace detail

// EP / AC selection: token t is an anchor iff tokens[t] is one of selector.anchor_ids.
// Every id (tokens and selector) must lie in [0, vocab_size).
inline AnchorLayout build_layout(span<const std::int32_t> tokens,
                                 span<const std::int32_t> cu_seqlens,
                                 const AnchorSelector& selector, std::int32_t vocab_size) {
  const char* fn = "build_layout";
  require(vocab_size > 0, fn, "vocab_size", vocab_size, "> 0");
  validate_cu_seqlens(cu_seqlens, std::int64_t(tokens.size()), fn);
  std::vector<std::uint8_t> is_id_anchor(std::size_t(vocab_size), 0);
  for (std::size_t s = 0; s < selector.anchor_ids.size(); ++s) {
    const std::int32_t id = selector.anchor_ids[s];
    require(id >= 0 && id < vocab_size, fn, detail::concat("selector.anchor_ids[", s, "]").c_str(),
            id, detail::concat("an id in [0, ", vocab_size, ")"));
    is_id_anchor[std::size_t(id)] = 1;
  }
  std::vector<std::uint8_t> is_anchor(tokens.size());
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    const std::int32_t id = tokens[t];
    if (id < 0 || id >= vocab_size)
      fail(fn, detail::concat("tokens[", t, "]"), id, detail::concat("an id in [0, ", vocab_size, ")"));
    is_anchor[t] = is_id_anchor[std::size_t(id)];
  }
  return detail::layout_from_flags(cu_seqlens, std::move(is_anchor));
}

// Anchors given as a flag per token (any non-zero byte is an anchor).
inline AnchorLayout build_layout_from_flags(span<const std::uint8_t> is_anchor,
                                            span<const std::int32_t> cu_seqlens) {
  validate_cu_seqlens(cu_seqlens, std::int64_t(is_anchor.size()), "build_layout_from_flags");
  std::vector<std::uint8_t> flags(is_anchor.size());
  for (std::size_t t = 0; t < flags.size(); ++t) flags[t] = is_anchor[t] != 0;
  return detail::layout_from_flags(cu_seqlens, std::move(flags));
}

// Anchors given as sequence-local positions: sequence b's anchors are
// anchor_pos[cu_anchors[b] .. cu_anchors[b+1]), strictly increasing and inside the sequence.
inline AnchorLayout build_layout_from_positions(span<const std::int32_t> anchor_pos,
                                                span<const std::int32_t> cu_anchors,
                                                span<const std::int32_t> cu_seqlens) {
  const char* fn = "build_layout_from_positions";
  require(cu_seqlens.size() >= 1, fn, "cu_seqlens", "empty", "B+1 >= 1 offsets");
  validate_cu_seqlens(cu_seqlens, cu_seqlens[cu_seqlens.size() - 1], fn);
  require(cu_anchors.size() == cu_seqlens.size(), fn, "cu_anchors.size()", cu_anchors.size(),
          detail::concat("cu_seqlens.size() = ", cu_seqlens.size()));
  validate_cu_seqlens(cu_anchors, std::int64_t(anchor_pos.size()), fn, "cu_anchors");
  const auto total = std::size_t(cu_seqlens[cu_seqlens.size() - 1]);
  std::vector<std::uint8_t> is_anchor(total, 0);
  for (std::size_t b = 0; b + 1 < cu_seqlens.size(); ++b) {
    const std::int32_t n = cu_seqlens[b + 1] - cu_seqlens[b];
    for (std::int32_t a = cu_anchors[b]; a < cu_anchors[b + 1]; ++a) {
      const std::int32_t lo = a > cu_anchors[b] ? anchor_pos[a - 1] + 1 : 0;
      if (anchor_pos[a] < lo || anchor_pos[a] >= n)
        fail(fn, detail::concat("anchor_pos[", a, "]"), anchor_pos[a],
              detail::concat("a position in [", lo, ", ", n, ") of sequence ", b,
                             " (strictly increasing)"));
    }
  }
  for (std::size_t b = 0; b + 1 < cu_seqlens.size(); ++b)
    for (std::int32_t a = cu_anchors[b]; a < cu_anchors[b + 1]; ++a)
      is_anchor[std::size_t(cu_seqlens[b] + anchor_pos[a])] = 1;
  return detail::layout_from_flags(cu_seqlens, std::move(is_anchor));
}

}  // namespace ansan
