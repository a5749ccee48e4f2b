// ansan/dense_mask.hpp - the mask as a dense matrix: boolean, or additive for Hugging Face.
//
// The readable export: every element is ansan::visible() of its (query, key) pair, so these
// can serve as the reference for the other exports and for attention kernels.
// O(n^2) memory: meant for short sequences, tests and models that take a dense mask.
//
//   dense_mask(L, b, policy, out)            (n, n)        1 = visible, one sequence
//   dense_mask_packed(L, policy, out)        (total, total) block-diagonal over the batch
//   additive_mask<T>(L, policy, out, opts)   (B, 1, max_len, max_len)  0 / masked_value
//
// The additive mask is what Hugging Face attention adds to the scores: 0 where visible and a
// large negative elsewhere (by default the dtype's lowest finite value, as transformers uses
// torch.finfo(dtype).min, so a row that sees nothing softmaxes to a finite result, not NaN).
// Each sequence sits in its own (max_len, max_len) slab, right-padded by default; padding
// rows and columns are fully masked (SPEC section 2).
//
// Every entry point validates all arguments before writing any output element.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "ansan/detail/mask_rows.hpp"
#include "ansan/dtype.hpp"
#include "ansan/error.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "ansan/tensor.hpp"

namespace ansan {

// The most negative finite value of T: what Hugging Face fills masked positions with.
template <class T>
T lowest_finite() {
  if constexpr (std::is_same_v<T, half>) return from_float<half>(-65504.0f);
  // bf16 0xff7f; rounding float's lowest to bf16 would overflow to -inf.
  else if constexpr (std::is_same_v<T, bf16>) return from_float<bf16>(-3.38953138925153547e38f);
  else return std::numeric_limits<T>::lowest();
}

namespace detail {
template <class T>
void require_shape(const TensorView<T, 2>& out, index_t rows, index_t cols, const char* fn) {
  require(out.data != nullptr || rows * cols == 0, fn, "out.data", "null", "a buffer");
  require(out.shape[0] == rows && out.shape[1] == cols, fn, "out.shape", shape_string(out),
          concat("(", rows, ", ", cols, ")"));
}
}  // namespace detail

// Sequence b's mask: out(i, j) = 1 iff query i may attend key j (sequence-local positions).
inline void dense_mask(const AnchorLayout& layout, std::int32_t b, const MaskPolicy& policy,
                       TensorView<std::uint8_t, 2> out) {  // (n, n)
  const char* fn = "dense_mask";
  validate_policy(policy, fn);
  detail::validate_mask_layout(layout, fn);
  require(b >= 0 && b < layout.batch(), fn, "b", b,
          detail::concat("a sequence index in [0, ", layout.batch(), ")"));
  const std::int32_t n = layout.seq_len(b);
  detail::require_shape(out, n, n, fn);
  for (std::int32_t i = 0; i < n; ++i) {
    const QueryInfo q = layout.query(b, i);
    for (std::int32_t j = 0; j < n; ++j) out(i, j) = visible(policy, q, layout.key(b, j)) ? 1 : 0;
  }
}

// The packed batch as one block-diagonal mask: out(s, t) over packed token indices; pairs
// from different sequences are 0.
inline void dense_mask_packed(const AnchorLayout& layout, const MaskPolicy& policy,
                              TensorView<std::uint8_t, 2> out) {  // (total, total)
  const char* fn = "dense_mask_packed";
  validate_policy(policy, fn);
  detail::validate_mask_layout(layout, fn);
  const index_t total = layout.total_tokens();
  detail::require_shape(out, total, total, fn);
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    const std::int32_t begin = layout.cu_seqlens[b], end = layout.cu_seqlens[b + 1];
    for (std::int32_t s = begin; s < end; ++s) {
      const QueryInfo q = layout.query(b, s - begin);
      for (index_t t = 0; t < total; ++t) out(s, t) = 0;
      for (std::int32_t t = begin; t < end; ++t)
        out(s, t) = visible(policy, q, layout.key(b, t - begin)) ? 1 : 0;
    }
  }
}

// Owning form of dense_mask_packed: (total, total), row-major.
inline std::vector<std::uint8_t> dense_mask_packed(const AnchorLayout& layout,
                                                   const MaskPolicy& policy) {
  detail::validate_mask_layout(layout, "dense_mask_packed");
  const index_t total = layout.total_tokens();
  std::vector<std::uint8_t> mask(std::size_t(total * total));
  dense_mask_packed(layout, policy, make_view(mask.data(), total, total));
  return mask;
}

enum class PaddingSide : std::uint8_t {
  right,  // sequence b occupies rows/columns [0, len_b) of its slab
  left,   // it occupies [max_len - len_b, max_len) (Hugging Face batched generation)
};

struct AdditiveMaskOptions {
  // Added where a pair is not visible; NaN means the output dtype's lowest finite value.
  float masked_value = std::numeric_limits<float>::quiet_NaN();
  PaddingSide padding = PaddingSide::right;
};

// Hugging Face's 4-D additive mask: out(b, 0, i, j) = 0 if query i of sequence b sees key j,
// else the masked value. out.shape must be (B, 1, L, L) with L >= the longest sequence.
template <class T>
void additive_mask(const AnchorLayout& layout, const MaskPolicy& policy,
                   TensorView<T, 4> out,  // (B, 1, max_len, max_len)
                   const AdditiveMaskOptions& options = {}) {
  const char* fn = "additive_mask";
  validate_policy(policy, fn);
  detail::validate_mask_layout(layout, fn);
  std::int32_t longest = 0;
  for (std::int32_t b = 0; b < layout.batch(); ++b) longest = std::max(longest, layout.seq_len(b));
  const index_t slab = out.shape[2];
  require(out.shape[0] == layout.batch() && out.shape[1] == 1 && out.shape[3] == slab &&
              slab >= longest,
          fn, "out.shape", shape_string(out),
          detail::concat("(", layout.batch(), ", 1, L, L) with L >= the longest sequence (",
                         longest, ")"));
  require(out.data != nullptr || out.numel() == 0, fn, "out.data", "null", "a buffer");
  const bool use_lowest = std::isnan(options.masked_value);
  const T masked = use_lowest ? lowest_finite<T>() : from_float<T>(options.masked_value);
  require(to_float(masked) < 0.0f, fn, "options.masked_value", options.masked_value,
          detail::concat("a negative value that stays negative in ", dtype_name<T>()));
  const T zero = from_float<T>(0.0f);
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    const std::int32_t n = layout.seq_len(b);
    const index_t first = options.padding == PaddingSide::right ? 0 : slab - n;  // slab offset
    for (index_t r = 0; r < slab; ++r)
      for (index_t c = 0; c < slab; ++c) {
        const index_t i = r - first, j = c - first;
        const bool real = i >= 0 && i < n && j >= 0 && j < n;
        out(b, 0, r, c) = real && visible(policy, layout.query(b, std::int32_t(i)),
                                          layout.key(b, std::int32_t(j)))
                              ? zero
                              : masked;
      }
  }
}

// Owning form: (B, 1, L, L) row-major with L = the longest sequence.
template <class T>
std::vector<T> additive_mask(const AnchorLayout& layout, const MaskPolicy& policy,
                             const AdditiveMaskOptions& options = {}) {
  detail::validate_mask_layout(layout, "additive_mask");
  std::int32_t longest = 0;
  for (std::int32_t b = 0; b < layout.batch(); ++b) longest = std::max(longest, layout.seq_len(b));
  std::vector<T> mask(std::size_t(layout.batch()) * std::size_t(longest) * std::size_t(longest));
  additive_mask(layout, policy, make_view(mask.data(), layout.batch(), 1, longest, longest), options);
  return mask;
}

}  // namespace ansan
