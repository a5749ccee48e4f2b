// ansan/cpu/detail/key_panel.hpp - the keys one sequence offers its query tiles, and the float
// blocks a tile multiplies.
//
// A sequence's keys are its rows of the cache, positions ascending. SPEC section 4 splits what
// a query row sees into two parts, and each is one index space here (a KeyPart):
//   retained  the retained keys (ansan::is_retained), listed once per sequence: a row sees a
//             prefix of them, those with position < its local lower bound;
//   local     every key of the sequence: a row sees those with position in [lower bound, pos].
// Nothing is copied up front. A tile converts each block of keys it multiplies to float right
// before the products (load_key_block), so a key row is read from the cache once per use. That
// is what decode needs (one query row per sequence, every cached row read once: a float copy
// of the whole cache would triple the bytes moved), and for prefill the conversion is a few
// percent of the products it feeds (a block serves up to 64 query rows times the group).
#pragma once

#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "ansan/attention_args.hpp"
#include "ansan/dtype.hpp"
#include "ansan/policy.hpp"

namespace ansan::cpu::detail {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct KeyPanel {
  index_t first_row = 0;                    // cache row of the sequence's key 0
  index_t keys = 0;
  const std::int32_t* pos = nullptr;        // (keys) sequence-local positions, ascending
  const std::uint8_t* is_anchor = nullptr;  // (keys)
  std::vector<index_t> retained_rows;       // (retained) cache rows of the retained keys
  std::vector<std::int32_t> retained_pos;   // (retained) their positions, ascending
};

// Key j of a part is cache row rows[j] (the retained list) or first_row + j (every key).
struct KeyPart {
  const index_t* rows = nullptr;
  index_t first_row = 0;
  index_t cache_row(index_t j) const { return rows ? rows[j] : first_row + j; }
};
inline KeyPart retained_part(const KeyPanel& panel) { return {panel.retained_rows.data(), 0}; }
inline KeyPart local_part(const KeyPanel& panel) { return {nullptr, panel.first_row}; }

template <class T>
void fill_key_panel(KeyPanel& panel, const AttentionArgs<T>& a, std::int32_t b,
                    bool gather_retained) {
  panel.first_row = a.k_row_begin(b);
  panel.keys = a.k_len(b);
  panel.pos = a.k_pos + panel.first_row;
  panel.is_anchor = a.k_is_anchor + panel.first_row;
  panel.retained_rows.clear();
  panel.retained_pos.clear();
  if (!gather_retained) return;
  for (index_t j = 0; j < panel.keys; ++j)
    if (is_retained(a.policy, KeyInfo{panel.pos[j], panel.is_anchor[j] != 0})) {
      panel.retained_rows.push_back(panel.first_row + j);
      panel.retained_pos.push_back(panel.pos[j]);
    }
}

// Keys [j0, j0 + cols) of `part`, head kv_head, converted to float: rows of k and v.
template <class T>
void load_key_block(RowMatrix& k, RowMatrix& v, const AttentionArgs<T>& a, KeyPart part,
                    index_t kv_head, index_t j0, index_t cols) {
  const index_t dim = a.head_dim();
  k.resize(cols, dim);
  v.resize(cols, dim);
  for (index_t c = 0; c < cols; ++c) {
    const index_t row = part.cache_row(j0 + c);
    const T* k_src = &a.k(row, kv_head, 0);  // (head_dim), unit stride
    const T* v_src = &a.v(row, kv_head, 0);  // (head_dim)
    float* k_dst = k.row(c).data();
    float* v_dst = v.row(c).data();
    for (index_t d = 0; d < dim; ++d) k_dst[d] = to_float(k_src[d]), v_dst[d] = to_float(v_src[d]);
  }
}

}  // namespace ansan::cpu::detail
