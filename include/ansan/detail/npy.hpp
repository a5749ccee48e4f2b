// ansan/detail/npy.hpp - writes arrays as NumPy .npy files (format version 1.0).
//
// Internal to the mask exports' save_* functions, so a PyTorch script can np.load() what the
// C++ side built. The format: the magic "\x93NUMPY", version 1.0, a little-endian uint16
// header length, a Python-dict header ({'descr': '<i4', 'fortran_order': False,
// 'shape': (2, 3), }) padded with spaces and a newline to a multiple of 64 bytes, then the
// raw C-order data. Only little-endian hosts are supported (every CUDA host is one).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "ansan/dtype.hpp"
#include "ansan/error.hpp"

namespace ansan::detail {

template <class T>
constexpr const char* npy_descr() {
  if constexpr (std::is_same_v<T, std::int32_t>) return "<i4";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "<i8";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "|u1";
  else if constexpr (std::is_same_v<T, float>) return "<f4";
  else if constexpr (std::is_same_v<T, half>) return "<f2";
  else static_assert(sizeof(T) == 0, "no .npy type for this element type");
}

// The complete header (magic to newline) for an array of the given dtype and shape.
inline std::string npy_header(const char* descr, const std::vector<std::int64_t>& shape) {
  std::string dims;  // "(5,)" for one dimension, "(2, 3)" for more
  for (std::size_t d = 0; d < shape.size(); ++d) dims += concat(d ? ", " : "", shape[d]);
  if (shape.size() == 1) dims += ",";
  std::string dict = concat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (", dims, ")");
  dict += ", }";
  const std::size_t prefix = 10;  // magic (6) + version (2) + header length (2)
  const std::size_t padded = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(padded - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string header("\x93NUMPY\x01\x00", 8);
  header += char(dict.size() & 0xff);
  header += char(dict.size() >> 8);
  return header + dict;
}

// Writes `count` elements of `element_bytes` each as an array of the given dtype and shape.
inline void write_npy_raw(const std::string& path, const char* descr, const void* data,
                          std::size_t element_bytes, const std::vector<std::int64_t>& shape) {
  std::int64_t count = 1;
  for (std::int64_t extent : shape) count *= extent;
  const std::uint16_t probe = 1;
  std::uint8_t low_byte;
  std::memcpy(&low_byte, &probe, 1);
  require(low_byte == 1, "write_npy", "host byte order", "big-endian", "little-endian");
  std::ofstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(concat("ansan::write_npy: cannot open ", path));
  const std::string header = npy_header(descr, shape);
  file.write(header.data(), std::streamsize(header.size()));
  file.write(static_cast<const char*>(data), std::streamsize(count * std::int64_t(element_bytes)));
  if (!file) throw std::runtime_error(concat("ansan::write_npy: cannot write ", path));
}

template <class T>
void write_npy(const std::string& path, const T* data, const std::vector<std::int64_t>& shape) {
  write_npy_raw(path, npy_descr<T>(), data, sizeof(T), shape);
}

// 0/1 bytes written as a NumPy bool array.
inline void write_npy_flags(const std::string& path, const std::uint8_t* flags,
                            const std::vector<std::int64_t>& shape) {
  write_npy_raw(path, "|b1", flags, 1, shape);
}

}  // namespace ansan::detail
