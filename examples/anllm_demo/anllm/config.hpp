// anllm/config.hpp - the shape of the demo model: a small Llama-style decoder.
//
// This is the whole hyper-parameter set of the reference transformer (embedding, RMSNorm,
// RoPE, grouped-query attention, SwiGLU MLP, output head). It is not a training config:
// the demo runs seeded random weights or weights loaded from a safetensors file of this shape.
// The default runs a few thousand tokens in seconds on a 2-core machine.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "ansan/error.hpp"

namespace anllm {

// Throws std::invalid_argument "anllm::<function>: <argument> is <seen>, expected <expected>"
// (ansan::require's message, in this example's namespace).
template <class Seen, class Expected>
void require(bool ok, const char* function, const char* argument, const Seen& seen,
             const Expected& expected) {
  if (!ok)
    throw std::invalid_argument(ansan::detail::concat("anllm::", function, ": ", argument, " is ",
                                                      seen, ", expected ", expected));
}

struct ModelConfig {
  std::int32_t layers = 2;
  std::int32_t dim = 128;      // model (residual stream) width
  std::int32_t heads = 4;      // query heads
  std::int32_t kv_heads = 2;   // key/value heads (grouped-query attention: heads % kv_heads == 0)
  std::int32_t head_dim = 32;  // heads * head_dim need not equal dim (Llama-style projections)
  std::int32_t ffn_dim = 384;  // SwiGLU hidden width
  std::int32_t vocab = 259;    // 256 bytes + <bos>, <AC>, <pad> (tokenizer.hpp)
  float rope_theta = 10000.f;
  float norm_eps = 1e-5f;
  bool tied_head = false;  // true: the output head reuses the token embedding

  // Throws std::invalid_argument naming the first field out of range.
  void validate() const {
    const char* fn = "ModelConfig";
    require(layers >= 1, fn, "layers", layers, ">= 1");
    require(dim >= 1, fn, "dim", dim, ">= 1");
    require(heads >= 1, fn, "heads", heads, ">= 1");
    require(kv_heads >= 1 && heads % kv_heads == 0, fn, "kv_heads", kv_heads,
            ansan::detail::concat("a divisor of heads = ", heads));
    require(head_dim >= 2 && head_dim % 2 == 0, fn, "head_dim", head_dim,
            "an even number >= 2 (RoPE rotates pairs)");
    require(ffn_dim >= 1, fn, "ffn_dim", ffn_dim, ">= 1");
    require(vocab >= 259, fn, "vocab", vocab, ">= 259 (bytes and special tokens)");
    require(rope_theta > 0.f, fn, "rope_theta", rope_theta, "> 0");
    require(norm_eps > 0.f, fn, "norm_eps", norm_eps, "> 0");
  }
};

}  // namespace anllm
