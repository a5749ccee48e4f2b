// benchmarks/support/compacted_decode.hpp - the metadata of one decode step over compacted
// AnLLM caches, shared by the CPU and GPU decode benchmarks (plain C++: compiles under g++ and
// nvcc).
//
// `batch` sequences, each a cache of `cache` entries: the anchors of kSegment-token segments,
// then an open segment of kOpen tokens. One non-anchor query row per sequence at the newest
// position, already in the cache; it sees every entry.
#pragma once

#include <cstdint>
#include <vector>

namespace ansan::bench {

struct CompactedDecode {
  static constexpr std::int32_t kOpen = 16, kSegment = 20;
  std::vector<std::int32_t> cu_q, cu_k, q_pos, q_seg_start, k_pos;  // as AttentionArgs names them
  std::vector<std::uint8_t> q_is_anchor, k_is_anchor;

  CompactedDecode(std::int32_t batch, std::int32_t cache)
      : q_is_anchor(std::size_t(batch), 0) {
    for (std::int32_t b = 0; b <= batch; ++b) cu_q.push_back(b), cu_k.push_back(b * cache);
    for (std::int32_t b = 0; b < batch; ++b) {
      const std::int32_t anchors = cache - kOpen, open_start = kSegment * anchors;
      for (std::int32_t a = 0; a < anchors; ++a)
        k_pos.push_back(kSegment * a + kSegment - 1), k_is_anchor.push_back(1);
      for (std::int32_t j = 0; j < kOpen; ++j)
        k_pos.push_back(open_start + j), k_is_anchor.push_back(0);
      q_pos.push_back(open_start + kOpen - 1);
      q_seg_start.push_back(open_start);
    }
  }
};

}  // namespace ansan::bench
