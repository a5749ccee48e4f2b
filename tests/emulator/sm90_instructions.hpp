// tests/emulator/sm90_instructions.hpp - host definitions of the Hopper instructions in
// ansan/cuda/detail/mma_sm90.cuh, and of shared_address(), for kernel_emulator.hpp (which
// includes this file).
//
// Written from the PTX ISA (wgmma.mma_async, "Shared Memory Matrix Layout", "Matrix Descriptor
// Format"), not from wgmma_layout.hpp, so the two are independent statements of the layouts:
//   descriptor  bits 0-13: start address >> 4; 16-29: leading byte offset (LBO) >> 4; 32-45:
//               stride byte offset (SBO) >> 4; 49-51: base offset; 62-63: swizzle (1 = 128 B)
//   128-byte swizzle, 16-bit elements: element (mn, k) of a K-major operand at byte
//               start + 128 (mn % 8) + SBO (mn / 8) + 2 k, of an MN-major one at
//               start + 2 (mn % 64) + LBO (mn / 64) + 128 (k % 8) + SBO (k / 8); then address
//               bits 4-6 XOR bits 7-9 (only base offset 0 is emulated: patterns on 1024 B)
//   fragments   warp w of a warpgroup owns rows 16 (w % 4) .. +15 of A and D; D element i of
//               lane l is row l/4 + 8 ((i/2) % 2), column 8 (i/4) + 2 (l % 4) + i % 2; the A
//               registers of the register form hold mma.sync's A fragment (sm80_instructions.hpp)
//   async       an MMA reads its operands and writes D when its group retires. Here that is
//               the wgmma.wait_group that retires it: a kernel that reads D before the wait, or
//               changes A's registers or B's tile before it, computes something else.
// Shared addresses: the block's dynamic shared memory starts at kSharedWindowBase of the
// emulated shared window, 16-byte aligned but not 1024 (on a GPU the static shared variables
// come first), so a kernel must align its swizzled tiles itself, as it must on a GPU.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>

#include "ansan/dtype.hpp"

namespace ansan::cuda::detail {

namespace emulated {

constexpr std::uint32_t kSharedWindowBase = 0x230;

struct MatrixDescriptor {
  std::uint32_t start, leading, stride;
  int base_offset, swizzle;
};
inline MatrixDescriptor decode(std::uint64_t d) {
  const auto bytes = [&](int shift) { return std::uint32_t((d >> shift) & 0x3fffu) << 4; };
  return {bytes(0), bytes(16), bytes(32), int((d >> 49) & 7u), int(d >> 62)};
}

// Element (mn, k) of a 16-bit operand in shared memory, as the descriptor places it.
template <class T>
float operand_element(const MatrixDescriptor& m, bool mn_major, int mn, int k) {
  using ::ansan::emulator::detail::fail;
  if (m.swizzle != 1 || m.base_offset != 0)
    fail("wgmma descriptor: only the 128-byte swizzle with base offset 0 is emulated");
  if (!mn_major && m.start % 128 + 32 > 128)
    fail("wgmma descriptor: a K-major k-step's 32 bytes cross a 128-byte swizzle row");
  std::uint32_t a = mn_major ? m.start + 2 * std::uint32_t(mn % 64) +
                                   m.leading * std::uint32_t(mn / 64) + 128 * std::uint32_t(k % 8) +
                                   m.stride * std::uint32_t(k / 8)
                             : m.start + 128 * std::uint32_t(mn % 8) +
                                   m.stride * std::uint32_t(mn / 8) + 2 * std::uint32_t(k);
  a ^= ((a >> 7) & 7u) << 4;
  auto& engine = ::ansan::emulator::detail::engine();
  if (a < kSharedWindowBase || a + 2 > kSharedWindowBase + engine.dynamic_smem_bytes())
    fail("wgmma operand element at shared address " + std::to_string(a) +
         " outside the block's dynamic shared memory");
  T x;
  std::memcpy(&x, engine.dynamic_smem() + (a - kSharedWindowBase), sizeof x);
  return to_float(x);
}

// What each lane gives when its wgmma retires.
struct WgmmaOperands {
  std::uint64_t a_desc, b_desc;
  std::uint32_t a[4];  // the register form's A fragment
  int accumulate;
};

// d (this lane's N/2 accumulators) = A B (+ d): A from the lanes' registers (a_regs non-null)
// or from a_desc; B from b_desc, MN-major when trans_b. Runs at the retiring wait.
template <class T, int N>
void retire_wgmma(float* d, const std::uint32_t* a_regs, std::uint64_t a_desc, std::uint64_t b_desc,
                  bool trans_b, bool accumulate) {
  auto& engine = ::ansan::emulator::detail::engine();
  WgmmaOperands mine{a_desc, b_desc, {}, int(accumulate)};
  if (a_regs)
    for (int r = 0; r < 4; ++r) mine.a[r] = a_regs[r];  // read now, as the hardware may
  const int warp_rows = 16 * (engine.self().warp % 4);
  const auto result = engine.collective<std::array<float, N / 2>>(
      "wgmma.mma_async (retired)", 0xffffffffu, mine,
      [&](const std::array<WgmmaOperands, 32>& all, int lane) {
        for (const WgmmaOperands& o : all)
          if (o.a_desc != mine.a_desc || o.b_desc != mine.b_desc || o.accumulate != mine.accumulate)
            ::ansan::emulator::detail::fail("wgmma: lanes differ in descriptors or scale-d");
        const MatrixDescriptor a_matrix = decode(a_desc), b_matrix = decode(b_desc);
        const auto a_at = [&](int row, int k) {  // A(row, k), row within the warp's 16
          if (a_regs) {
            const int quad = (k % 8) / 2;
            return element<T>(all[std::size_t(4 * (row % 8) + quad)].a[row / 8 + 2 * (k / 8)],
                              k % 2);
          }
          return operand_element<T>(a_matrix, false, warp_rows + row, k);
        };
        // This lane's two rows of A and N/4 columns of B, each element read once. Static: one
        // fiber runs at a time and none yields in here, and 2 KiB frames would cost the
        // sanitizer build a fake stack per call.
        static float a_rows[2][16], b_cols[N / 4][16];
        for (int k = 0; k < 16; ++k) {
          for (int r = 0; r < 2; ++r) a_rows[r][k] = a_at(lane / 4 + 8 * r, k);
          for (int c = 0; c < N / 4; ++c)
            b_cols[c][k] =
                operand_element<T>(b_matrix, trans_b, 8 * (c / 2) + 2 * (lane % 4) + c % 2, k);
        }
        std::array<float, N / 2> out{};
        for (int i = 0; i < N / 2;
             ++i) {  // row lane/4 + 8 ((i/2) % 2), column 8 (i/4) + 2 (lane%4) + i%2
          const float* a = a_rows[(i / 2) % 2];
          const float* b = b_cols[2 * (i / 4) + i % 2];
          float acc = accumulate ? d[i] : 0.f;
          for (int k = 0; k < 16; ++k) acc += a[k] * b[k];
          out[std::size_t(i)] = acc;
        }
        return out;
      });
  for (int i = 0; i < N / 2; ++i) d[i] = result[std::size_t(i)];
  if (engine.self().lane == 0) ++::ansan::emulator::stats().mma;  // one per warp
}

}  // namespace emulated

inline std::uint32_t shared_address(const void* ptr) {
  auto& engine = ::ansan::emulator::detail::engine();
  const auto* p = static_cast<const unsigned char*>(ptr);
  if (p < engine.dynamic_smem() || p > engine.dynamic_smem() + engine.dynamic_smem_bytes())
    ::ansan::emulator::detail::fail("shared_address of a pointer outside dynamic shared memory");
  return emulated::kSharedWindowBase + std::uint32_t(p - engine.dynamic_smem());
}

// Shared writes are visible to every reader at once here.
inline void fence_proxy_async() {}

inline void wgmma_fence() { ::ansan::emulator::syncwarp(); }

// Closes a group of this thread's wgmma not yet committed.
inline void wgmma_commit() {
  ::ansan::emulator::syncwarp();
  auto& self = ::ansan::emulator::detail::engine().self();
  for (auto& mma : self.mmas)
    if (mma.group < 0) mma.group = self.mma_groups;
  ++self.mma_groups;
}

// Retires, in issue order, every committed group but the Pending most recent.
template <int Pending>
void wgmma_wait() {
  static_assert(Pending >= 0, "a count of groups");
  auto& self = ::ansan::emulator::detail::engine().self();
  const int retire_below = self.mma_groups - Pending;
  auto mmas = std::move(self.mmas);
  self.mmas.clear();
  for (auto& mma : mmas) {
    if (mma.group >= 0 && mma.group < retire_below)
      mma.retire();
    else
      self.mmas.push_back(std::move(mma));
  }
}

// Registers are no resource here; a warpgroup's threads must still all give the instruction.
template <int Registers>
void setmaxnreg_dec() {
  static_assert(Registers % 8 == 0 && Registers >= 24 && Registers <= 256, "setmaxnreg's range");
  ::ansan::emulator::syncwarp();
}
template <int Registers>
void setmaxnreg_inc() {
  static_assert(Registers % 8 == 0 && Registers >= 24 && Registers <= 256, "setmaxnreg's range");
  ::ansan::emulator::syncwarp();
}

template <int Tiles>
void fence_registers(float (&)[Tiles][4]) {}
template <int Steps>
void fence_registers(std::uint32_t (&)[Steps][4]) {}

template <class T>
void wgmma_m64n64k16_ss(float (&d)[8][4], std::uint64_t a_desc, std::uint64_t b_desc,
                        bool accumulate) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, half>, "bf16 or fp16 inputs");
  float* out = &d[0][0];
  ::ansan::emulator::detail::engine().self().mmas.push_back(
      {-1,
       [=] { emulated::retire_wgmma<T, 64>(out, nullptr, a_desc, b_desc, false, accumulate); }});
}

template <class T, int N>
void wgmma_m64nNk16_rs(float (&d)[N / 8][4], const std::uint32_t (&a)[4], std::uint64_t b_desc,
                       bool accumulate) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, half>, "bf16 or fp16 inputs");
  static_assert(N == 64 || N == 128, "the head dims the Hopper kernel takes");
  float* out = &d[0][0];
  const std::uint32_t* regs = a;  // read when the MMA retires: the kernel must keep them
  ::ansan::emulator::detail::engine().self().mmas.push_back(
      {-1, [=] { emulated::retire_wgmma<T, N>(out, regs, 0, b_desc, true, accumulate); }});
}

}  // namespace ansan::cuda::detail
