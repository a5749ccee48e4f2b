// benchmarks/support/decode_batch.hpp - the rows a batched decode appends to its KV cache, for
// the benchmarks of a cache's reduction on the host and on the device (plain C++: compiles
// under g++ and nvcc).
//
// kDecodeBatch sequences of AnLLM segments kSegment tokens long, ending staggered: sequence
// b's anchors sit at the positions p with p % kSegment == b % kSegment, so after a prompt each
// decode step closes a segment in kDecodeBatch / kSegment sequences. A cache reduced after every
// chunk then holds about context / kSegment anchors and one open segment per sequence.
#pragma once

#include <cstdint>
#include <vector>

namespace ansan::bench {

constexpr std::int32_t kDecodeBatch = 64, kSegment = 16, kPromptChunk = 1024;

class DecodeBatch {
 public:
  // What KVCache::append_rows takes: `rows_each` more tokens for every sequence.
  struct Chunk {
    std::vector<std::int32_t> cu{0}, pos;
    std::vector<std::uint8_t> is_anchor;
  };
  Chunk next(std::int32_t rows_each) {
    Chunk c;
    for (std::int32_t b = 0; b < kDecodeBatch; ++b) {
      for (std::int32_t i = 0; i < rows_each; ++i, ++next_pos_[std::size_t(b)]) {
        const std::int32_t p = next_pos_[std::size_t(b)];
        c.pos.push_back(p);
        c.is_anchor.push_back(p % kSegment == b % kSegment);
      }
      c.cu.push_back(c.cu.back() + rows_each);
    }
    return c;
  }

 private:
  std::vector<std::int32_t> next_pos_ = std::vector<std::int32_t>(kDecodeBatch, 0);
};

}  // namespace ansan::bench
