// ansan/cpu/detail/key_panel.hpp - the keys one (sequence, kv head) offers its query tiles,
// as float blocks.
//
// A sequence's keys are its rows of the cache, positions ascending. SPEC section 4 splits what
// a query row sees into two parts, each an index space here (KeyPart):
//   retained  the retained keys (ansan::is_retained), listed once: a row sees a prefix of
//             them, those with position < its local lower bound;
//   local     every key of the sequence: a row sees those with position in [lower bound, pos].
// The products need float rows. When several query tiles share the keys (prefill: more than
// kQueryRows query rows), the panel converts every key once, and gathers the retained ones, into
// float matrices that the tiles then read in place. When one tile uses each key once (decode:
// one query row over a long cache), such a copy would write and re-read twice the cache's bytes
// to use them once, so the panel copies nothing and the tile converts each block just before
// multiplying it (convert_keys, for every KV head the tile covers).
#pragma once

#include <cstdint>
#include <tuple>
#include <vector>

#include <Eigen/Core>

#include "ansan/attention_args.hpp"
#include "ansan/dtype.hpp"
#include "ansan/policy.hpp"

namespace ansan::cpu::detail {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowBlock = Eigen::Ref<const RowMatrix>;  // rows of a RowMatrix, no copy

struct KeyPanel {
  index_t first_row = 0;                    // cache row of the sequence's key 0
  index_t keys = 0;
  const std::int32_t* pos = nullptr;        // (keys) sequence-local positions, ascending
  const std::uint8_t* is_anchor = nullptr;  // (keys)
  std::vector<index_t> retained_rows;       // (retained) cache rows of the retained keys
  std::vector<std::int32_t> retained_pos;   // (retained) their positions, ascending
  bool converted = false;                   // the float copies below are filled
  RowMatrix k, v;                           // (keys, head_dim) every key
  RowMatrix retained_k, retained_v;         // (retained, head_dim)
};

// One part of a panel. Key j is cache row rows[j] (the retained list) or first_row + j (every
// key); k, v are the part's float copies when the panel made them.
struct KeyPart {
  const index_t* rows = nullptr;
  index_t first_row = 0;
  const RowMatrix* k = nullptr;
  const RowMatrix* v = nullptr;
  index_t cache_row(index_t j) const { return rows ? rows[j] : first_row + j; }
};
inline KeyPart retained_part(const KeyPanel& p) {
  return {p.retained_rows.data(), 0, p.converted ? &p.retained_k : nullptr,
          p.converted ? &p.retained_v : nullptr};
}
inline KeyPart local_part(const KeyPanel& p) {
  return {nullptr, p.first_row, p.converted ? &p.k : nullptr, p.converted ? &p.v : nullptr};
}

// Keys [j0, j0 + cols) of `part` for KV heads [kv_head, kv_head + heads), converted to float:
// head h's rows into the (k, v) pair of matrices that scratch_of(h) returns (std::tie), each
// (cols, head_dim). Row by row, every head of a cache row before the next row: the row holds
// all KV heads of its token, and reading it whole is faster than reading one head's share of
// every row and coming back for the next (docs/benchmarks.md, CPU decode).
template <class T, class ScratchOf>
void convert_keys(const ScratchOf& scratch_of, const AttentionArgs<T>& a, KeyPart part,
                  index_t kv_head, index_t heads, index_t j0, index_t cols) {
  const index_t dim = a.head_dim();
  for (index_t h = 0; h < heads; ++h) {
    auto [k, v] = scratch_of(h);
    k.resize(cols, dim);
    v.resize(cols, dim);
  }
  for (index_t c = 0; c < cols; ++c) {
    const index_t row = part.cache_row(j0 + c);
    for (index_t h = 0; h < heads; ++h) {
      auto [k, v] = scratch_of(h);
      const T* k_src = &a.k(row, kv_head + h, 0);  // (head_dim), unit stride
      const T* v_src = &a.v(row, kv_head + h, 0);  // (head_dim)
      float* k_dst = k.row(c).data();
      float* v_dst = v.row(c).data();
      for (index_t d = 0; d < dim; ++d) k_dst[d] = to_float(k_src[d]), v_dst[d] = to_float(v_src[d]);
    }
  }
}

// Keys [j0, j0 + cols) of `part` as float rows: a view of the panel's copy, or of what
// convert_keys left in (k_scratch, v_scratch).
struct KeyBlock {
  RowBlock k, v;  // (cols, head_dim)
};
inline KeyBlock key_block(const RowMatrix& k_scratch, const RowMatrix& v_scratch, KeyPart part,
                          index_t j0, index_t cols) {
  if (part.k) return {part.k->middleRows(j0, cols), part.v->middleRows(j0, cols)};
  return {k_scratch, v_scratch};
}

template <class T>
void fill_key_panel(KeyPanel& panel, const AttentionArgs<T>& a, std::int32_t b, index_t kv_head,
                    bool gather_retained, bool convert) {
  panel.first_row = a.k_row_begin(b);
  panel.keys = a.k_len(b);
  panel.pos = a.k_pos + panel.first_row;
  panel.is_anchor = a.k_is_anchor + panel.first_row;
  if (gather_retained)
    for (index_t j = 0; j < panel.keys; ++j)
      if (is_retained(a.policy, KeyInfo{panel.pos[j], panel.is_anchor[j] != 0})) {
        panel.retained_rows.push_back(panel.first_row + j);
        panel.retained_pos.push_back(panel.pos[j]);
      }
  panel.converted = convert;
  if (!convert) return;
  convert_keys([&](index_t) { return std::tie(panel.k, panel.v); }, a,
               KeyPart{nullptr, panel.first_row}, kv_head, 1, 0, panel.keys);  // every key
  const auto retained = index_t(panel.retained_rows.size());
  panel.retained_k.resize(retained, a.head_dim());
  panel.retained_v.resize(retained, a.head_dim());
  for (index_t r = 0; r < retained; ++r) {
    const index_t j = panel.retained_rows[std::size_t(r)] - panel.first_row;
    panel.retained_k.row(r) = panel.k.row(j);
    panel.retained_v.row(r) = panel.v.row(j);
  }
}

}  // namespace ansan::cpu::detail
