// tests/support/random_layouts.hpp - random ragged batches and layouts for property tests.
//
// Segment lengths are drawn around a mean (so anchors land anywhere: at 0, back to back, at
// the very end); edge layouts are listed explicitly in edge_layouts().
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

namespace ansan::test {

// One sequence's anchor flags: geometric gaps with the given mean segment length.
inline std::vector<std::uint8_t> random_flags(std::mt19937& rng, int n, double mean_segment) {
  std::vector<std::uint8_t> flags(std::size_t(n), 0);
  std::bernoulli_distribution is_anchor(mean_segment <= 1.0 ? 1.0 : 1.0 / mean_segment);
  for (auto& f : flags) f = is_anchor(rng);
  return flags;
}

// A ragged batch of `batch` sequences with lengths in [0, max_len] (empty ones included).
inline AnchorLayout random_layout(std::mt19937& rng, int batch, int max_len, double mean_segment) {
  std::uniform_int_distribution<int> len(0, max_len);
  std::vector<std::int32_t> cu{0};
  std::vector<std::uint8_t> flags;
  for (int b = 0; b < batch; ++b) {
    const auto f = random_flags(rng, len(rng), mean_segment);
    flags.insert(flags.end(), f.begin(), f.end());
    cu.push_back(cu.back() + std::int32_t(f.size()));
  }
  return build_layout_from_flags(flags, cu);
}

// The edge cases SPEC.md and the issues name, as single-sequence flag vectors.
inline std::vector<std::vector<std::uint8_t>> edge_flags() {
  return {
      {},                          // empty sequence
      {0},                         // n = 1, no anchor
      {1},                         // n = 1, an anchor
      {0, 0, 0, 0, 0, 0},          // no anchor: plain causal
      {1, 0, 0, 0, 0, 0},          // anchor at position 0
      {0, 1, 1, 1, 0, 0},          // consecutive anchors
      {1, 1, 1, 1, 1},             // every token an anchor
      {0, 0, 1, 0, 0, 1},          // ends on an anchor: no open segment
      {0, 1, 0, 0, 1, 0, 0, 0},    // trailing open segment
  };
}

// Every edge_flags() sequence as a batch of its own, then all of them packed into one batch.
inline std::vector<AnchorLayout> edge_layouts() {
  std::vector<AnchorLayout> layouts;
  std::vector<std::uint8_t> all_flags;
  std::vector<std::int32_t> all_cu{0};
  for (const auto& flags : edge_flags()) {
    layouts.push_back(build_layout_from_flags(flags, std::vector<std::int32_t>{0, std::int32_t(flags.size())}));
    all_flags.insert(all_flags.end(), flags.begin(), flags.end());
    all_cu.push_back(std::int32_t(all_flags.size()));
  }
  layouts.push_back(build_layout_from_flags(all_flags, all_cu));
  return layouts;
}

// The next chunk of texts being fed to a KV cache: up to max_rows - 1 more tokens of each text
// (a random count, 0 included), as a cache append takes them; `fed` advances.
struct CacheChunk {
  std::vector<std::int32_t> cu{0};      // (B+1) offsets
  std::vector<std::int32_t> pos;        // (rows) positions
  std::vector<std::uint8_t> is_anchor;  // (rows)
  bool any_anchor = false;
};
inline CacheChunk next_chunk(std::mt19937& rng,
                             const std::vector<std::vector<std::uint8_t>>& text,
                             std::vector<std::int32_t>& fed, unsigned max_rows) {
  CacheChunk chunk;
  for (std::size_t b = 0; b < text.size(); ++b) {
    const auto left = std::int32_t(text[b].size()) - fed[b];
    const std::int32_t m = std::min<std::int32_t>(left, std::int32_t(rng() % max_rows));
    for (std::int32_t i = 0; i < m; ++i) {
      chunk.pos.push_back(fed[b] + i);
      chunk.is_anchor.push_back(text[b][std::size_t(fed[b] + i)]);
      chunk.any_anchor |= chunk.is_anchor.back() != 0;
    }
    fed[b] += m;
    chunk.cu.push_back(std::int32_t(chunk.pos.size()));
  }
  return chunk;
}

// Every policy of SPEC section 5, with small windows and sinks so they matter.
inline std::vector<MaskPolicy> all_policies() {
  MaskPolicy both = MaskPolicy::anllm();
  both.local = LocalBound::segment_and_window;
  both.window = 3;
  both.sinks = 1;
  return {MaskPolicy::anllm(),          MaskPolicy::anllm_legacy(),
          MaskPolicy::sepllm(2, 4),     MaskPolicy::streaming_llm(1, 3),
          MaskPolicy::causal(),         MaskPolicy::sliding_window(1),
          MaskPolicy::sliding_window(5), both};
}

}  // namespace ansan::test
