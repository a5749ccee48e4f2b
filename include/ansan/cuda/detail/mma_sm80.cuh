// ansan/cuda/detail/mma_sm80.cuh - the sm_80 instructions of the tensor-core and decode
// kernels, as inline PTX: mma.sync m16n8k16 (fp16/bf16 in, f32 accumulate), ldmatrix .x4 (plain
// and .trans), cp.async with zero fill and commit groups, and ex2.approx for the softmax. Which
// lane holds which element is in mma_layout.hpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/dtype.hpp"

namespace ansan::cuda::detail {

// tests/emulator/kernel_emulator.hpp defines these instructions on the host instead.
#if !defined(ANSAN_KERNEL_EMULATION)

ANSAN_DEVICE std::uint32_t shared_address(const void* ptr) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(ptr));
}

// 16 bytes global -> shared, bypassing L1; when !valid, reads nothing and writes zeros (the
// ignore-src predicate: no src-size arithmetic per copy).
ANSAN_DEVICE void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile(
      "{\n .reg .pred ignore;\n setp.eq.u32 ignore, %2, 0;\n"
      " cp.async.cg.shared.global [%0], [%1], 16, ignore;\n}\n" ::"r"(shared_address(smem)),
      "l"(gmem), "r"(std::uint32_t(valid)));
}
ANSAN_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `Pending` of this thread's most recently committed groups are in flight.
template <int Pending>
ANSAN_DEVICE void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}
ANSAN_DEVICE void cp_async_wait_all() { cp_async_wait_group<0>(); }

// Four 8x8 matrices of 16-bit elements; lane l gives the address of row l % 8 of matrix l / 8.
ANSAN_DEVICE void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem)));
}
ANSAN_DEVICE void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem)));
}

// d += a b for a 16x16 (row) A, 16x8 (col) B, f32 16x8 C.
template <class T>
ANSAN_DEVICE void mma_m16n8k16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                               std::uint32_t b1) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, half>, "bf16 or fp16 inputs");
  if constexpr (std::is_same_v<T, bf16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// 2^x on the special-function unit (ex2.approx.ftz: relative error about 2^-22, subnormal
// results flushed to 0, 2^-inf = 0). exp2f wraps the same instruction in range checks for
// subnormal results, four more instructions per element that the softmax does not need: its
// weights are summed in f32, where a weight under 2^-126 changes nothing.
ANSAN_DEVICE float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

#endif  // !ANSAN_KERNEL_EMULATION

// Two floats rounded to T, low element first (the order of a fragment register).
template <class T>
ANSAN_DEVICE std::uint32_t pack2(float lo, float hi) {
  T pair[2] = {from_float<T>(lo), from_float<T>(hi)};
  std::uint32_t word;
  memcpy(&word, pair, sizeof word);
  return word;
}

// P V's A fragment for keys 16 kk .. 16 kk + 15, rounded to T, from S's accumulators, in place:
// a lane's A register r holds C elements of n-tile 2 kk + r / 2 (mma_layout.hpp). mma.sync and
// wgmma's register-sourced A share this layout, so every tensor-core kernel converts P alike.
template <class T, int KeyTiles>
ANSAN_DEVICE void p_fragment(const float (&s)[KeyTiles][4], int kk, std::uint32_t (&a)[4]) {
  for (int r = 0; r < 4; ++r) {
    const float* c = s[2 * kk + p_tile_of_a_element(2 * r)];
    const int e = p_c_element_of_a_element(2 * r);
    a[r] = pack2<T>(c[e], c[e + 1]);
  }
}

}  // namespace ansan::cuda::detail
