// tests/emulator/sm80_instructions.hpp - host definitions of the sm_80 instructions in
// ansan/cuda/detail/mma_sm80.cuh, for kernel_emulator.hpp (which includes this file).
//
// Written from the PTX ISA's descriptions, with group = lane / 4 and quad = lane % 4:
//   ldmatrix .m8n8 .x4 .b16   lanes 8j..8j+7 give the row addresses of matrix j; register j of
//                             lane l gets row l/4, columns 2*quad, 2*quad+1 of matrix j (low
//                             half first); .trans gives rows 2*quad, 2*quad+1 of column l/4.
//   mma.m16n8k16 .row.col     A 16x16: register r holds row group + 8*(r%2), columns
//                             2*quad + 8*(r/2) + {0,1}; B 16x8: register r holds k = 2*quad + 8r
//                             + {0,1} of column group; C/D f32 16x8: element i is row
//                             group + 8*(i/2), column 2*quad + i%2.
//   cp.async 16 bytes         lands by the cp.async.wait_group N that leaves at most N newer
//                             committed groups pending; an ignored source (ignore-src) writes
//                             zeros.
// The kernel computes these positions with mma_layout.hpp; this file does not use it, so the
// two are independent statements of the same tables.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ansan/dtype.hpp"

namespace ansan::cuda::detail {

namespace emulated {

inline void land(const ::ansan::emulator::detail::AsyncCopyRecord& copy) {
  if (copy.valid)
    std::memcpy(copy.dst, copy.src, 16);
  else
    std::memset(copy.dst, 0, 16);
}

// The 16-bit element at byte offset 2 * column of a shared row, as raw bits.
inline std::uint16_t element_bits(const unsigned char* row, int column) {
  std::uint16_t bits;
  std::memcpy(&bits, row + 2 * column, sizeof bits);
  return bits;
}

inline std::uint32_t pair(std::uint16_t low, std::uint16_t high) {
  return std::uint32_t(low) | std::uint32_t(high) << 16;
}

template <class T>
float element(std::uint32_t reg, int which) {
  const std::uint16_t bits = std::uint16_t(which ? reg >> 16 : reg & 0xffffu);
  T x;
  std::memcpy(&x, &bits, sizeof x);
  return to_float(x);
}

inline void ldmatrix(std::uint32_t (&r)[4], const void* smem, bool transposed) {
  auto& engine = ::ansan::emulator::detail::engine();
  engine.require_shared(smem, 16, "ldmatrix row address");
  const auto* row = static_cast<const unsigned char*>(smem);
  const auto regs = engine.collective<std::array<std::uint32_t, 4>>(
      transposed ? "ldmatrix.x4.trans" : "ldmatrix.x4", 0xffffffffu, row,
      [&](const std::array<const unsigned char*, 32>& rows, int lane) {
        std::array<std::uint32_t, 4> out{};
        const int group = lane / 4, quad = lane % 4;
        for (int j = 0; j < 4; ++j) {
          const unsigned char* const* m =
              &rows[std::size_t(8 * j)];  // the 8 row addresses of matrix j
          out[std::size_t(j)] =
              transposed
                  ? pair(element_bits(m[2 * quad], group), element_bits(m[2 * quad + 1], group))
                  : pair(element_bits(m[group], 2 * quad), element_bits(m[group], 2 * quad + 1));
        }
        return out;
      });
  for (int j = 0; j < 4; ++j) r[j] = regs[std::size_t(j)];
}

struct MmaOperands {
  std::uint32_t a[4], b[2];
  float c[4];
};

}  // namespace emulated

inline void cp_async_16(void* smem, const void* gmem, bool valid) {
  auto& engine = ::ansan::emulator::detail::engine();
  engine.require_shared(smem, 16, "cp.async destination");
  if (valid && reinterpret_cast<std::uintptr_t>(gmem) % 16 != 0)
    ::ansan::emulator::detail::fail("cp.async source not 16-byte aligned");
  auto& self = engine.self();
  const ::ansan::emulator::detail::AsyncCopyRecord copy{smem, gmem, valid, -1,
                                                        self.copies_issued++};
  if (::ansan::emulator::options().async_copy == ::ansan::emulator::AsyncCopy::at_issue)
    emulated::land(copy);
  else
    self.copies.push_back(copy);
}

// Closes a group of this thread's uncommitted copies (an empty group when there are none).
inline void cp_async_commit() {
  auto& self = ::ansan::emulator::detail::engine().self();
  for (auto& copy : self.copies)
    if (copy.group < 0) copy.group = self.committed_groups;
  ++self.committed_groups;
}

// cp.async.wait_group Pending: every committed group but the Pending most recent has landed;
// uncommitted copies may still be in flight.
template <int Pending>
void cp_async_wait_group() {
  static_assert(Pending >= 0, "a count of groups");
  auto& self = ::ansan::emulator::detail::engine().self();
  std::vector<::ansan::emulator::detail::AsyncCopyRecord> in_flight;
  for (const auto& copy : self.copies) {
    if (copy.group >= 0 && copy.group < self.committed_groups - Pending)
      emulated::land(copy);
    else
      in_flight.push_back(copy);
  }
  self.copies.swap(in_flight);
}
inline void cp_async_wait_all() { cp_async_wait_group<0>(); }

inline void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) {
  emulated::ldmatrix(r, smem, false);
}
inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem) {
  emulated::ldmatrix(r, smem, true);
}

// d += a b, f32 accumulation in k order.
template <class T>
void mma_m16n8k16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, half>, "bf16 or fp16 inputs");
  using emulated::element;
  emulated::MmaOperands mine{{a[0], a[1], a[2], a[3]}, {b0, b1}, {d[0], d[1], d[2], d[3]}};
  const auto result = ::ansan::emulator::detail::engine().collective<std::array<float, 4>>(
      "mma.m16n8k16", 0xffffffffu, mine,
      [](const std::array<emulated::MmaOperands, 32>& all, int lane) {
        const auto a_at = [&](int row, int k) {  // A(row, k)
          const int quad = (k % 8) / 2;
          return element<T>(all[std::size_t(4 * (row % 8) + quad)].a[row / 8 + 2 * (k / 8)], k % 2);
        };
        const auto b_at = [&](int k, int col) {  // B(k, col)
          return element<T>(all[std::size_t(4 * col + (k % 8) / 2)].b[k / 8], k % 2);
        };
        std::array<float, 4> out{};
        for (int i = 0; i < 4; ++i) {
          const int row = lane / 4 + 8 * (i / 2), col = 2 * (lane % 4) + i % 2;
          float acc = all[std::size_t(lane)].c[i];
          for (int k = 0; k < 16; ++k) acc += a_at(row, k) * b_at(k, col);
          out[std::size_t(i)] = acc;
        }
        return out;
      });
  for (int i = 0; i < 4; ++i) d[i] = result[std::size_t(i)];
  if (::ansan::emulator::detail::engine().self().lane == 0)
    ++::ansan::emulator::stats().mma;  // one per warp
}

// ex2.approx.ftz.f32: the exact 2^x stands in for the approximation (the tests' tolerances
// hold either way); subnormal results flush to zero as on the device.
inline float exp2_approx(float x) {
  const float y = std::exp2(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? 0.f : y;
}

}  // namespace ansan::cuda::detail
