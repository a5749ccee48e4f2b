// ansan/tensor.hpp - a non-owning strided view: pointer, shape and strides (in elements).
//
// The same view type is used on host and device; where the pointer lives is the caller's
// business (CPU entry points take host pointers, ansan::cuda entry points device pointers).
//
//   float q[total_tokens * heads * dim];
//   auto vq = ansan::make_view(q, total_tokens, heads, dim);   // (tokens, heads, dim)
//   vq(t, h, d) = 1.0f;                                          // q[(t*heads + h)*dim + d]
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>

#include "ansan/config.hpp"

namespace ansan {

template <class T, int Rank>
struct TensorView {
  static_assert(Rank >= 1, "a tensor view has at least one dimension");
  T* data = nullptr;
  index_t shape[Rank] = {};
  index_t stride[Rank] = {};  // in elements, not bytes

  template <class... Index>
  ANSAN_HOST_DEVICE T& operator()(Index... index) const {
    static_assert(sizeof...(Index) == Rank, "one index per dimension");
    const index_t idx[Rank] = {index_t(index)...};
    index_t offset = 0;
    for (int d = 0; d < Rank; ++d) offset += idx[d] * stride[d];
    return data[offset];
  }
  ANSAN_HOST_DEVICE index_t size(int dim) const { return shape[dim]; }
  ANSAN_HOST_DEVICE index_t numel() const {
    index_t n = 1;
    for (int d = 0; d < Rank; ++d) n *= shape[d];
    return n;
  }
  // True when the innermost dimension is unit-stride and each outer stride spans the
  // dimensions inside it exactly (plain row-major storage).
  ANSAN_HOST_DEVICE bool is_contiguous() const {
    index_t expect = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      if (shape[d] != 1 && stride[d] != expect) return false;
      expect *= shape[d];
    }
    return true;
  }
  // The view as read-only, for passing outputs of one call as inputs of the next (only
  // declared for mutable views: a const view converting to itself would be a no-op).
  template <class U = T, class = std::enable_if_t<!std::is_const_v<U>>>
  ANSAN_HOST_DEVICE operator TensorView<const U, Rank>() const {
    TensorView<const U, Rank> v;
    v.data = data;
    for (int d = 0; d < Rank; ++d) v.shape[d] = shape[d], v.stride[d] = stride[d];
    return v;
  }
};

// A row-major view of `data` with the given shape.
template <class T, class... Extent>
TensorView<T, int(sizeof...(Extent))> make_view(T* data, Extent... extent) {
  TensorView<T, int(sizeof...(Extent))> v;
  v.data = data;
  const index_t ext[] = {index_t(extent)...};
  index_t stride = 1;
  for (int d = int(sizeof...(Extent)) - 1; d >= 0; --d) {
    v.shape[d] = ext[d];
    v.stride[d] = stride;
    stride *= ext[d];
  }
  return v;
}

// "(a, b, c)", for error messages about shapes.
template <class T, int Rank>
std::string shape_string(const TensorView<T, Rank>& v) {
  std::string s = "(";
  for (int d = 0; d < Rank; ++d) s += (d ? ", " : "") + std::to_string(v.shape[d]);
  return s + ")";
}

}  // namespace ansan
