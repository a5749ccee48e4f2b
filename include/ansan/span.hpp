// ansan/span.hpp - a pointer and a length (C++17 has no std::span).
//
// Host entry points take spans so that callers can pass a std::vector, a raw buffer from
// their engine, or a slice of either without copying.
#pragma once

#include <cstddef>
#include <vector>

namespace ansan {

template <class T>
struct span {
  T* ptr = nullptr;
  std::size_t len = 0;

  constexpr span() = default;
  constexpr span(T* data, std::size_t size) : ptr(data), len(size) {}
  template <class U, class A>
  span(std::vector<U, A>& v) : ptr(v.data()), len(v.size()) {}
  template <class U, class A>
  span(const std::vector<U, A>& v) : ptr(v.data()), len(v.size()) {}

  constexpr T* data() const { return ptr; }
  constexpr std::size_t size() const { return len; }
  constexpr bool empty() const { return len == 0; }
  constexpr T& operator[](std::size_t i) const { return ptr[i]; }
  constexpr T* begin() const { return ptr; }
  constexpr T* end() const { return ptr + len; }
};

}  // namespace ansan
