// anllm/safetensors.hpp - read and write the safetensors file format (F32, BF16, F16).
//
// A safetensors file is
//   8 bytes      N, the header length, unsigned little-endian
//   N bytes      a JSON object: {"<name>": {"dtype": "F32", "shape": [r, c],
//                "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
//   the rest     the tensors' bytes, row-major little-endian; offsets count from here
// This reader loads every tensor to float32 and checks every field before trusting it: a
// truncated, malformed or unsupported file throws std::runtime_error naming the field or the
// tensor. It is not a zero-copy loader (the demo's files are a few MiB) and reads no other
// dtypes (I8, F64, ...).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ansan/dtype.hpp"
#include "ansan/error.hpp"

namespace anllm {

// Throws std::runtime_error "anllm::<function>: <what> is <seen>, expected <expected>".
template <class Seen, class Expected>
void check_file(bool ok, const std::string& function, const std::string& what, const Seen& seen,
                const Expected& expected) {
  if (!ok)
    throw std::runtime_error(ansan::detail::concat("anllm::", function, ": ", what, " is ", seen,
                                                   ", expected ", expected));
}

enum class FileDtype : std::uint8_t { f32, bf16, f16 };

inline const char* dtype_tag(FileDtype d) {
  return d == FileDtype::f32 ? "F32" : d == FileDtype::bf16 ? "BF16" : "F16";
}
inline std::size_t dtype_bytes(FileDtype d) { return d == FileDtype::f32 ? 4 : 2; }

struct FileTensor {
  std::vector<std::int64_t> shape;
  std::vector<float> data;  // (product of shape), row-major
  FileDtype stored_as = FileDtype::f32;
};

inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

namespace detail {

inline float decode_element(const unsigned char* p, FileDtype d) {
  if (d == FileDtype::f32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  std::uint16_t bits;
  std::memcpy(&bits, p, 2);
  if (d == FileDtype::bf16) {
    ansan::bf16 x;
    std::memcpy(&x, &bits, 2);
    return ansan::to_float(x);
  }
  ansan::half x;
  std::memcpy(&x, &bits, 2);
  return ansan::to_float(x);
}

inline void encode_element(unsigned char* p, float f, FileDtype d) {
  if (d == FileDtype::f32) return void(std::memcpy(p, &f, 4));
  if (d == FileDtype::bf16) {
    const ansan::bf16 x = ansan::from_float<ansan::bf16>(f);
    return void(std::memcpy(p, &x, 2));
  }
  const ansan::half x = ansan::from_float<ansan::half>(f);
  std::memcpy(p, &x, 2);
}

}  // namespace detail

// Every tensor of the file at `path`, by name, converted to float32.
inline std::map<std::string, FileTensor> read_safetensors(const std::string& path) {
  const std::string fn = "read_safetensors(" + path + ")";
  std::ifstream file(path, std::ios::binary);
  check_file(bool(file), fn, "the file", "unreadable", "an existing safetensors file");
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  check_file(bytes.size() >= 8, fn, "the file size", bytes.size(), "at least 8 bytes");

  std::uint64_t header_len = 0;
  for (int b = 7; b >= 0; --b)
    header_len = (header_len << 8) | static_cast<unsigned char>(bytes[b]);
  check_file(header_len <= bytes.size() - 8, fn, "the header length", header_len,
             ansan::detail::concat("<= ", bytes.size() - 8, " (the bytes after it; truncated?)"));
  nlohmann::json header;
  try {
    header =
        nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + std::ptrdiff_t(header_len));
  } catch (const nlohmann::json::exception& e) {
    check_file(false, fn, "the JSON header", std::string("invalid (") + e.what() + ")",
               "a JSON object");
  }
  check_file(header.is_object(), fn, "the JSON header", header.type_name(), "an object");

  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data()) + 8 + header_len;
  const std::uint64_t data_len = bytes.size() - 8 - header_len;
  std::map<std::string, FileTensor> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string what = "tensor '" + name + "'";
    check_file(entry.is_object(), fn, what, entry.type_name(), "an object");
    FileTensor t;
    const auto dtype = entry.find("dtype");
    check_file(dtype != entry.end() && dtype->is_string(), fn, what + " dtype",
               dtype == entry.end() ? "missing" : dtype->dump(), "a string");
    const std::string tag = dtype->get<std::string>();
    if (tag == "F32")
      t.stored_as = FileDtype::f32;
    else if (tag == "BF16")
      t.stored_as = FileDtype::bf16;
    else if (tag == "F16")
      t.stored_as = FileDtype::f16;
    else
      check_file(false, fn, what + " dtype", tag, "F32, BF16 or F16");

    const auto shape = entry.find("shape");
    check_file(shape != entry.end() && shape->is_array(), fn, what + " shape",
               shape == entry.end() ? "missing" : shape->dump(), "an array of sizes");
    std::uint64_t numel = 1;
    bool overflow = false;  // a shape whose element count does not fit 64 bits
    for (const auto& extent : *shape) {
      check_file(extent.is_number_integer() && extent.get<std::int64_t>() >= 0, fn, what + " shape",
                 shape->dump(), "non-negative integers");
      t.shape.push_back(extent.get<std::int64_t>());
      overflow |= __builtin_mul_overflow(numel, std::uint64_t(t.shape.back()), &numel);
    }
    check_file(!overflow, fn, what + " shape", shape->dump(), "an element count below 2^64");

    const auto offsets = entry.find("data_offsets");
    const bool offsets_ok = offsets != entry.end() && offsets->is_array() && offsets->size() == 2 &&
                            (*offsets)[0].is_number_unsigned() &&
                            (*offsets)[1].is_number_unsigned();
    check_file(offsets_ok, fn, what + " data_offsets",
               offsets == entry.end() ? "missing" : offsets->dump(), "[begin, end]");
    const auto begin = (*offsets)[0].get<std::uint64_t>(), end = (*offsets)[1].get<std::uint64_t>();
    check_file(begin <= end && end <= data_len, fn, what + " data_offsets", offsets->dump(),
               ansan::detail::concat("a range inside the ", data_len, " data bytes (truncated?)"));
    // With numel <= data_len the product below cannot have wrapped around.
    const std::uint64_t expected_bytes = numel * dtype_bytes(t.stored_as);
    check_file(numel <= data_len && end - begin == expected_bytes, fn, what + " byte count",
               end - begin,
               ansan::detail::concat(expected_bytes, " (", shape_text(t.shape), " ", tag, ")"));

    t.data.resize(numel);
    for (std::uint64_t i = 0; i < numel; ++i)
      t.data[i] = detail::decode_element(data + begin + i * dtype_bytes(t.stored_as), t.stored_as);
    tensors.emplace(name, std::move(t));
  }
  return tensors;
}

// A tensor to write: a name, its shape and `data` (product of shape floats, row-major).
struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data = nullptr;
};

// Writes `tensors` in order, each converted to `dtype`; the header is padded with spaces to
// a multiple of 8 bytes, as the reference implementation does.
inline void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              FileDtype dtype = FileDtype::f32) {
  const std::string fn = "write_safetensors(" + path + ")";
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    check_file(t.name != "__metadata__" && !header.contains(t.name), fn, "tensor name", t.name,
               "unique and not __metadata__");
    std::uint64_t numel = 1;
    for (const auto extent : t.shape) {
      check_file(extent >= 0, fn, "tensor '" + t.name + "' shape", shape_text(t.shape),
                 "non-negative sizes");
      numel *= std::uint64_t(extent);
    }
    check_file(t.data || numel == 0, fn, "tensor '" + t.name + "' data", "null", "a buffer");
    const std::uint64_t end = offset + numel * dtype_bytes(dtype);
    header[t.name] = {
        {"dtype", dtype_tag(dtype)}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::vector<unsigned char> blob(offset);
  std::uint64_t at = 0;
  for (const auto& t : tensors) {
    std::uint64_t numel = 1;
    for (const auto extent : t.shape) numel *= std::uint64_t(extent);
    for (std::uint64_t i = 0; i < numel; ++i, at += dtype_bytes(dtype))
      detail::encode_element(blob.data() + at, t.data[i], dtype);
  }

  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  check_file(bool(file), fn, "the file", "not writable", "a writable path");
  unsigned char length[8];
  for (int b = 0; b < 8; ++b)
    length[b] = static_cast<unsigned char>(std::uint64_t(header_text.size()) >> (8 * b));
  file.write(reinterpret_cast<const char*>(length), 8);
  file.write(header_text.data(), std::streamsize(header_text.size()));
  file.write(reinterpret_cast<const char*>(blob.data()), std::streamsize(blob.size()));
  check_file(bool(file), fn, "the write", "failed", "all bytes written");
}

}  // namespace anllm
