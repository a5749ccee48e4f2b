// ansan/cpu/attention_options.hpp - knobs of ansan::cpu::attention_forward.
//
// The defaults are what callers want. TileSkipping::dense_mask exists so the benchmark can
// measure, with the very same kernel, what a FlashInfer-style custom mask costs: every key
// tile up to the row's position is multiplied and masked element by element.
#pragma once

#include <cstdint>

namespace ansan::cpu {

enum class TileSkipping : std::uint8_t {
  two_part,    // SPEC section 4: gathered retained keys + the local band; only edge tiles masked
  dense_mask,  // every key tile of [0, pos], the predicate applied to each element
};

struct AttentionOptions {
  int num_threads = 0;  // 0: all hardware threads
  TileSkipping skipping = TileSkipping::two_part;
};

}  // namespace ansan::cpu
