// ansan/policy.hpp - which key a query may see: SPEC.md sections 2 and 5 as one predicate.
//
// A mask policy has three parts (SPEC section 5):
//   local      the lowest key position of the row's local band:
//              segment start (AnLLM), i - window + 1 (sliding window), the larger of the
//              two, or 0 (plain causal);
//   retained   keys kept for every later row: anchors/separators, and the first `sinks`
//              tokens (attention sinks);
//   who        which rows see the retained keys: non-anchor rows only (AnLLM) or all rows.
//
// visible() is the single source of truth: the CPU and CUDA kernels, the mask exports, the
// KV-cache keep rule and the tests all call it (or its two halves below).
//
//   text        T  h  e  .  C  a  t  .  S  o
//   is_anchor   .  .  .  A  .  .  .  A  .  .      (AnLLM: row 9 sees 3, 7 and 8..9)
#pragma once

#include <cstdint>

#include "ansan/config.hpp"
#include "ansan/error.hpp"

namespace ansan {

enum class LocalBound : std::uint8_t {
  causal,               // 0: every earlier key is local
  segment,              // seg_start[i]
  window,               // i - window + 1
  segment_and_window,   // max(seg_start[i], i - window + 1)
};

enum class RetainedRows : std::uint8_t {
  non_anchor,  // anchors see only their own segment (AnLLM's final code)
  all,         // every row sees the retained keys (AnLLM's older code, SepLLM, StreamingLLM)
};

struct MaskPolicy {
  LocalBound local = LocalBound::segment;
  std::int32_t window = 0;             // for LocalBound::window / segment_and_window; >= 1
  bool retain_anchors = true;          // anchors (separators) are retained keys
  std::int32_t sinks = 0;              // the first `sinks` positions are retained keys
  RetainedRows retained_rows = RetainedRows::non_anchor;

  static constexpr MaskPolicy anllm() { return {}; }
  static constexpr MaskPolicy anllm_legacy() {
    return {LocalBound::segment, 0, true, 0, RetainedRows::all};
  }
  static constexpr MaskPolicy sepllm(std::int32_t sinks, std::int32_t window) {
    return {LocalBound::window, window, true, sinks, RetainedRows::all};
  }
  static constexpr MaskPolicy streaming_llm(std::int32_t sinks, std::int32_t window) {
    return {LocalBound::window, window, false, sinks, RetainedRows::all};
  }
  static constexpr MaskPolicy causal() {
    return {LocalBound::causal, 0, false, 0, RetainedRows::all};
  }
  static constexpr MaskPolicy sliding_window(std::int32_t window) {
    return {LocalBound::window, window, false, 0, RetainedRows::all};
  }

  ANSAN_HOST_DEVICE bool uses_window() const {
    return local == LocalBound::window || local == LocalBound::segment_and_window;
  }
  ANSAN_HOST_DEVICE bool has_retained() const { return retain_anchors || sinks > 0; }

  friend constexpr bool operator==(const MaskPolicy& a, const MaskPolicy& b) {
    return a.local == b.local && a.window == b.window && a.retain_anchors == b.retain_anchors &&
           a.sinks == b.sinks && a.retained_rows == b.retained_rows;
  }
  friend constexpr bool operator!=(const MaskPolicy& a, const MaskPolicy& b) { return !(a == b); }
};

// What the predicate needs to know of a query row and of a key. Positions are
// sequence-local (0 for a sequence's first token); seg_start is one past the last anchor
// before the row, or 0 (SPEC section 1).
struct QueryInfo {
  std::int32_t pos;
  std::int32_t seg_start;
  bool is_anchor;
};
struct KeyInfo {
  std::int32_t pos;
  bool is_anchor;
};

// Lowest key position in the row's local band (SPEC section 5). Never above q.pos.
ANSAN_HOST_DEVICE std::int32_t local_lower_bound(const MaskPolicy& p, const QueryInfo& q) {
  const std::int32_t window_start = q.pos - p.window + 1;
  switch (p.local) {
    case LocalBound::causal: return 0;
    case LocalBound::segment: return q.seg_start;
    case LocalBound::window: return window_start > 0 ? window_start : 0;
    default: return q.seg_start > window_start ? q.seg_start : window_start;
  }
}

ANSAN_HOST_DEVICE bool is_retained(const MaskPolicy& p, const KeyInfo& k) {
  return (p.retain_anchors && k.is_anchor) || k.pos < p.sinks;
}

ANSAN_HOST_DEVICE bool sees_retained(const MaskPolicy& p, const QueryInfo& q) {
  return p.retained_rows == RetainedRows::all || !q.is_anchor;
}

// The two disjoint parts of a row's visible keys (SPEC section 4). A kernel evaluates them
// separately: the local part is a contiguous band of positions, the retained part a prefix
// of the gathered retained keys (those below the band).
ANSAN_HOST_DEVICE bool visible_local(const MaskPolicy& p, const QueryInfo& q, const KeyInfo& k) {
  return k.pos <= q.pos && k.pos >= local_lower_bound(p, q);
}
ANSAN_HOST_DEVICE bool visible_retained(const MaskPolicy& p, const QueryInfo& q,
                                        const KeyInfo& k) {
  return k.pos < local_lower_bound(p, q) && is_retained(p, k) && sees_retained(p, q);
}

// SPEC section 2 (generalised by section 5): may query q attend key k of the same sequence?
ANSAN_HOST_DEVICE bool visible(const MaskPolicy& p, const QueryInfo& q, const KeyInfo& k) {
  return visible_local(p, q, k) || visible_retained(p, q, k);
}

// SPEC section 3: may a key still be seen by some future row? The future row that sees the
// most is a non-anchor at the next position `next_pos` in the open segment starting at
// `open_seg_start`: local bounds only grow with the position, and non-anchor rows see the
// retained set under every policy. So a key may be dropped iff that row cannot see it.
ANSAN_HOST_DEVICE bool still_visible(const MaskPolicy& p, const KeyInfo& k, std::int32_t next_pos,
                                     std::int32_t open_seg_start) {
  return visible(p, QueryInfo{next_pos, open_seg_start, false}, k);
}

// Host-side validation for entry points that take a policy.
inline void validate_policy(const MaskPolicy& p, const char* function) {
  if (p.uses_window()) require(p.window >= 1, function, "policy.window", p.window, ">= 1");
  require(p.sinks >= 0, function, "policy.sinks", p.sinks, ">= 0");
}

inline const char* policy_name(const MaskPolicy& p) {
  if (p.local == LocalBound::segment && p.retain_anchors && p.sinks == 0)
    return p.retained_rows == RetainedRows::non_anchor ? "anllm" : "anllm_legacy";
  if (p.local == LocalBound::window && p.retain_anchors) return "sepllm";
  if (p.local == LocalBound::window && !p.retain_anchors && p.sinks > 0) return "streaming_llm";
  if (p.local == LocalBound::window && !p.has_retained()) return "sliding_window";
  if (p.local == LocalBound::causal && !p.has_retained()) return "causal";
  return "custom";
}

}  // namespace ansan
