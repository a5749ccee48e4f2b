// ansan/cpu/detail/key_panel.hpp - the keys one (sequence, kv head) offers its query tiles.
//
// Built once per (sequence, kv head) before any tile runs, so every tile multiplies plain
// contiguous float matrices whatever the input type and strides:
//   k, v                every key row of the sequence, in cache order (positions ascending);
//   retained_k/v        the retained keys (ansan::is_retained) gathered into a contiguous
//                       block, SPEC section 4's first part. In that index space the keys a
//                       row sees are a prefix: those with position < its local lower bound.
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
  const std::int32_t* pos = nullptr;        // (keys) sequence-local positions, ascending
  const std::uint8_t* is_anchor = nullptr;  // (keys)
  RowMatrix k, v;                           // (keys, head_dim)
  std::vector<std::int32_t> retained_pos;   // (retained) ascending
  RowMatrix retained_k, retained_v;         // (retained, head_dim)

  index_t keys() const { return k.rows(); }
};

// Copies key row `row` of `kv_head` into row `dst` of k/v, converting to float.
template <class T>
void copy_key_row(RowMatrix& k, RowMatrix& v, index_t dst, const AttentionArgs<T>& a,
                  index_t row, index_t kv_head) {
  const T* k_src = &a.k(row, kv_head, 0);  // (head_dim), unit stride
  const T* v_src = &a.v(row, kv_head, 0);  // (head_dim)
  for (index_t d = 0; d < k.cols(); ++d) {
    k(dst, d) = to_float(k_src[d]);
    v(dst, d) = to_float(v_src[d]);
  }
}

template <class T>
void fill_key_panel(KeyPanel& panel, const AttentionArgs<T>& a, std::int32_t b, index_t kv_head,
                    bool gather_retained) {
  const index_t first = a.k_row_begin(b), keys = a.k_len(b), dim = a.head_dim();
  panel.pos = a.k_pos + first;
  panel.is_anchor = a.k_is_anchor + first;
  panel.k.resize(keys, dim);
  panel.v.resize(keys, dim);
  for (index_t j = 0; j < keys; ++j) copy_key_row(panel.k, panel.v, j, a, first + j, kv_head);

  std::vector<index_t> retained_rows;  // (retained) indices into k/v
  if (gather_retained)
    for (index_t j = 0; j < keys; ++j)
      if (is_retained(a.policy, KeyInfo{panel.pos[j], panel.is_anchor[j] != 0}))
        retained_rows.push_back(j);
  const index_t retained = index_t(retained_rows.size());
  panel.retained_pos.resize(std::size_t(retained));
  panel.retained_k.resize(retained, dim);
  panel.retained_v.resize(retained, dim);
  for (index_t r = 0; r < retained; ++r) {
    const index_t j = retained_rows[std::size_t(r)];
    panel.retained_pos[std::size_t(r)] = panel.pos[j];
    panel.retained_k.row(r) = panel.k.row(j);
    panel.retained_v.row(r) = panel.v.row(j);
  }
}

}  // namespace ansan::cpu::detail
