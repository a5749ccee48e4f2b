// ansan/cuda/detail/layout_steps.hpp - the per-element steps of the CUDA layout builder.
//
// Plain C++ (host-and-device functions, no CUDA headers), so the host tests run exactly the
// code the kernels run. ansan/cuda/layout.cuh builds a layout in element-wise steps around
// two CUB scans over the packed batch:
//
//   tokens         T  h  .  C  .  |  a  .  b        two sequences, cu_seqlens = [0, 5, 8]
//   seed           is_anchor, and the two scan inputs:
//     seg          0  0  1  0  1     0  1  0        anchor count term
//     seg_start    0  0  3  0  5     0  7  0        anchor end term: t+1 at an anchor
//   scan           exclusive sum / exclusive max over the whole batch:
//     seg          0  0  0  1  1     2  2  3        anchors before t in the batch
//     seg_start    0  0  0  3  3     5  5  7        one past the last anchor before t
//   offsets        cu_anchors = [0, 2, 3]           anchors before each sequence's first token
//   finish         sequence-local fields, as ansan::build_layout_from_flags makes them:
//     seg          0  0  0  1  1     0  0  1
//     seg_start    0  0  0  3  3     0  0  2
//     anchor_pos   [2, 4, 1]                        scattered to cu_anchors[b] + seg[t]
//
// The checks run before a build: each returns a fault key (check kind in the high word, the
// offending index in the low word, no_fault when fine); the device keeps the smallest key,
// so the report is the first fault in check order, whatever the thread schedule.
#pragma once

#include <cstdint>

#include "ansan/config.hpp"

namespace ansan::cuda::detail {

// The sequence holding packed token t: the last b with cu_seqlens[b] <= t, which skips
// empty sequences. Needs batch >= 1 and cu_seqlens[0] <= t.
ANSAN_HOST_DEVICE std::int32_t sequence_of(const std::int32_t* cu_seqlens, std::int32_t batch,
                                           std::int64_t t) {
  std::int32_t lo = 0, hi = batch - 1;  // the answer lies in [lo, hi]
  while (lo < hi) {
    const std::int32_t mid = lo + (hi - lo + 1) / 2;
    if (cu_seqlens[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// Anchor sources for seed_token(): EP/AC selection by token id, or a flag per token.
struct AnchorById {
  const std::int32_t* tokens;        // (total_tokens)
  const std::uint8_t* id_is_anchor;  // (vocab_size)
  std::int32_t vocab_size;
  ANSAN_HOST_DEVICE bool operator()(std::int64_t t) const {
    const std::int32_t id = tokens[t];
    return id >= 0 && id < vocab_size && id_is_anchor[id] != 0;  // ids were checked before
  }
};
struct AnchorByFlag {
  const std::uint8_t* flags;  // (total_tokens), any non-zero byte is an anchor
  ANSAN_HOST_DEVICE bool operator()(std::int64_t t) const { return flags[t] != 0; }
};

// seed: the anchor flag and the two scan inputs of token t.
ANSAN_HOST_DEVICE void seed_token(std::int64_t t, bool anchor, std::uint8_t* is_anchor,
                                  std::int32_t* seg, std::int32_t* seg_start) {
  is_anchor[t] = anchor ? 1 : 0;
  seg[t] = anchor ? 1 : 0;
  seg_start[t] = anchor ? std::int32_t(t + 1) : 0;
}

// For the position builder: marks the token of anchor a (is_anchor zeroed before).
ANSAN_HOST_DEVICE void mark_anchor_position(std::int64_t a, const std::int32_t* anchor_pos,
                                            const std::int32_t* cu_anchors,
                                            const std::int32_t* cu_seqlens, std::int32_t batch,
                                            std::uint8_t* is_anchor) {
  const std::int32_t b = sequence_of(cu_anchors, batch, a);
  is_anchor[cu_seqlens[b] + anchor_pos[a]] = 1;
}

// offsets: cu_anchors[b] from the scanned counts (anchors_before: (total_tokens)).
ANSAN_HOST_DEVICE void sequence_anchor_offset(std::int32_t b, const std::int32_t* cu_seqlens,
                                              std::int64_t total_tokens,
                                              const std::int32_t* anchors_before,
                                              const std::uint8_t* is_anchor,
                                              std::int32_t* cu_anchors) {
  const std::int32_t first = cu_seqlens[b];
  if (first < total_tokens)
    cu_anchors[b] = anchors_before[first];
  else  // an empty tail: every anchor of the batch lies before it
    cu_anchors[b] = total_tokens == 0 ? 0
                                      : anchors_before[total_tokens - 1] +
                                            std::int32_t(is_anchor[total_tokens - 1]);
}

// finish: token t's sequence-local pos, seg and seg_start (seg and seg_start hold the
// batch-wide scans on entry), and its slot in anchor_pos if it is an anchor.
ANSAN_HOST_DEVICE void finish_token(std::int64_t t, const std::int32_t* cu_seqlens,
                                    std::int32_t batch, const std::int32_t* cu_anchors,
                                    const std::uint8_t* is_anchor, std::int32_t* pos,
                                    std::int32_t* seg, std::int32_t* seg_start,
                                    std::int32_t* anchor_pos) {
  const std::int32_t b = sequence_of(cu_seqlens, batch, t);
  const std::int32_t first = cu_seqlens[b];
  const std::int32_t i = std::int32_t(t) - first;
  pos[t] = i;
  seg[t] -= cu_anchors[b];
  // An end at or below `first` comes from an earlier sequence: this one has no anchor yet.
  seg_start[t] = (seg_start[t] > first ? seg_start[t] : first) - first;
  if (is_anchor[t]) anchor_pos[cu_anchors[b] + seg[t]] = i;
}

// --- checks ------------------------------------------------------------------------------

// In check order: a fault in the offsets hides faults in what they index.
enum class LayoutFaultKind : std::uint32_t {
  cu_seqlens = 0,  // cu_seqlens[index]
  cu_anchors = 1,  // cu_anchors[index]
  token_id = 2,    // tokens[index] outside [0, vocab_size)
  anchor_pos = 3,  // anchor_pos[index] outside its sequence or not increasing
};
constexpr std::uint64_t no_fault = ~std::uint64_t(0);

ANSAN_HOST_DEVICE std::uint64_t fault_key(LayoutFaultKind kind, std::int64_t index) {
  return (std::uint64_t(kind) << 32) | std::uint64_t(std::uint32_t(index));
}
ANSAN_HOST_DEVICE LayoutFaultKind fault_kind(std::uint64_t key) {
  return LayoutFaultKind(std::uint32_t(key >> 32));
}
ANSAN_HOST_DEVICE std::int64_t fault_index(std::uint64_t key) {
  return std::int64_t(std::uint32_t(key));
}

// Offsets (B+1): offsets[0] == 0, non-decreasing, offsets[B] == total (as
// ansan::validate_cu_seqlens checks on the host).
ANSAN_HOST_DEVICE std::uint64_t offset_fault(std::int32_t b, const std::int32_t* offsets,
                                             std::int32_t batch, std::int64_t total,
                                             LayoutFaultKind kind) {
  const bool ok = (b == 0 ? offsets[0] == 0 : offsets[b] >= offsets[b - 1]) &&
                  (b != batch || offsets[b] == total);
  return ok ? no_fault : fault_key(kind, b);
}

ANSAN_HOST_DEVICE std::uint64_t token_fault(std::int64_t t, const std::int32_t* tokens,
                                            std::int32_t vocab_size) {
  const std::int32_t id = tokens[t];
  return id >= 0 && id < vocab_size ? no_fault : fault_key(LayoutFaultKind::token_id, t);
}

// Anchor a must lie inside its sequence and after the previous anchor of that sequence.
// Valid offsets assumed (their faults come first).
ANSAN_HOST_DEVICE std::uint64_t position_fault(std::int64_t a, const std::int32_t* anchor_pos,
                                               const std::int32_t* cu_anchors,
                                               const std::int32_t* cu_seqlens, std::int32_t batch) {
  const std::int32_t b = sequence_of(cu_anchors, batch, a);
  const std::int32_t n = cu_seqlens[b + 1] - cu_seqlens[b];
  const std::int32_t lo = a > cu_anchors[b] ? anchor_pos[a - 1] + 1 : 0;
  return anchor_pos[a] >= lo && anchor_pos[a] < n ? no_fault
                                                  : fault_key(LayoutFaultKind::anchor_pos, a);
}

}  // namespace ansan::cuda::detail
