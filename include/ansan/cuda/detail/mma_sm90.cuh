// ansan/cuda/detail/mma_sm90.cuh - the Hopper (sm_90a) instructions of the tensor-core prefill
// in attention_mma_sm90.cuh, as inline PTX: warpgroup MMA (wgmma.mma_async m64nNk16, fp16/bf16
// in, f32 accumulate) with B, and A for S = Q K^T, read from shared memory through matrix
// descriptors (wgmma_layout.hpp), and its fences and commit/wait groups; setmaxnreg, which moves
// registers between the warp-specialized kernel's warpgroups; ANSAN_SM90A_PASS, the compilation
// passes the Hopper kernels have bodies in, and their head-dim dispatch.
//
// A warpgroup is four consecutive warps; one wgmma computes a 64 x N tile, warp w of the group
// owning rows 16 w .. 16 w + 15 in the same fragment layout as mma.sync m16n8k16 (mma_layout.hpp):
// accumulator element d[nt][i] is row lane/4 + 8 (i/2), column 8 nt + 2 (lane%4) + i%2, and
// the A registers of the register form are mma.sync's A fragment of the warp's 16 rows.
//
// The MMA runs asynchronously: it reads its registers and shared memory, and writes its
// accumulators, at some time before the wgmma.wait_group that retires its group. So:
//   - wgmma_fence() before the first wgmma of a batch (orders earlier register writes);
//   - the compiler must not move or reuse those registers meanwhile: fence_registers() after
//     the wait keeps the accumulators and the A registers in place until then;
//   - shared memory written by ordinary stores or cp.async becomes visible to the MMA's
//     (async-proxy) reads only after fence_proxy_async() and a barrier.
// These instructions exist only in sm_90a code (the "a": architecture-specific features);
// the kernel compiles its body only where __CUDA_ARCH_FEAT_SM90_ALL is defined.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "ansan/dtype.hpp"

// Whether this compilation pass has sm_90a's instructions: the Hopper kernels compile their
// bodies only then (and in the emulator), and are empty otherwise.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(ANSAN_KERNEL_EMULATION)
#define ANSAN_SM90A_PASS 1
#else
#define ANSAN_SM90A_PASS 0
#endif

namespace ansan::cuda::detail {

// tests/emulator/sm90_instructions.hpp defines these on the host instead.
#if !defined(ANSAN_KERNEL_EMULATION)

ANSAN_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
ANSAN_DEVICE void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most `Pending` of the warpgroup's most recently committed groups are in flight.
template <int Pending>
ANSAN_DEVICE void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
// Makes this thread's earlier shared-memory writes visible to the async proxy (wgmma's reads).
ANSAN_DEVICE void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Warp specialization: every thread of the warpgroup lowers (dec) or raises (inc) its register
// count to `Registers` (a multiple of 8 in 24..256); inc waits until the block's pool, which
// the launch sized, holds enough of what dec gave back.
template <int Registers>
ANSAN_DEVICE void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Registers));
}
template <int Registers>
ANSAN_DEVICE void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Registers));
}

// An empty asm that "reads and writes" each register: the compiler keeps them live, in place,
// up to this point (after a wgmma_wait).
template <int Tiles>
ANSAN_DEVICE void fence_registers(float (&d)[Tiles][4]) {
  for (int t = 0; t < Tiles; ++t)
    for (int i = 0; i < 4; ++i) asm volatile("" : "+f"(d[t][i])::"memory");
}
template <int Steps>
ANSAN_DEVICE void fence_registers(std::uint32_t (&a)[Steps][4]) {
  for (int t = 0; t < Steps; ++t)
    for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(a[t][i])::"memory");
}

#define ANSAN_WGMMA_F4(d, t) "+f"(d[t][0]), "+f"(d[t][1]), "+f"(d[t][2]), "+f"(d[t][3])
#define ANSAN_WGMMA_F32(d)                                                                \
  ANSAN_WGMMA_F4(d, 0), ANSAN_WGMMA_F4(d, 1), ANSAN_WGMMA_F4(d, 2), ANSAN_WGMMA_F4(d, 3), \
      ANSAN_WGMMA_F4(d, 4), ANSAN_WGMMA_F4(d, 5), ANSAN_WGMMA_F4(d, 6), ANSAN_WGMMA_F4(d, 7)
#define ANSAN_WGMMA_F64(d)                                                                        \
  ANSAN_WGMMA_F32(d), ANSAN_WGMMA_F4(d, 8), ANSAN_WGMMA_F4(d, 9), ANSAN_WGMMA_F4(d, 10),          \
      ANSAN_WGMMA_F4(d, 11), ANSAN_WGMMA_F4(d, 12), ANSAN_WGMMA_F4(d, 13), ANSAN_WGMMA_F4(d, 14), \
      ANSAN_WGMMA_F4(d, 15)
#define ANSAN_WGMMA_D32                                                                    \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define ANSAN_WGMMA_D64                                                                    \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "  \
  "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "  \
  "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d (64 x 64) = A B (+ d if accumulate): A (64 x 16) and B (16 x 64) both K-major in shared
// memory (S = Q K^T: A = Q's k-step, B = the key tile's).
template <class T>
ANSAN_DEVICE void wgmma_m64n64k16_ss(float (&d)[8][4], std::uint64_t a_desc, std::uint64_t b_desc,
                                     bool accumulate) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, half>, "bf16 or fp16 inputs");
#define ANSAN_WGMMA_SS(TYPE)                                                           \
  asm volatile(                                                                        \
      "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"                                   \
      " wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " " ANSAN_WGMMA_D32 \
      ", %32, %33, p, 1, 1, 0, 0;\n}\n"                                                \
      : ANSAN_WGMMA_F32(d)                                                             \
      : "l"(a_desc), "l"(b_desc), "r"(int(accumulate)))
  if constexpr (std::is_same_v<T, bf16>)
    ANSAN_WGMMA_SS("bf16");
  else
    ANSAN_WGMMA_SS("f16");
#undef ANSAN_WGMMA_SS
}

// d (64 x N) = A B (+ d if accumulate): A (64 x 16) from registers (this warp's 16 rows, mma.sync
// A fragment), B (16 x N) MN-major in shared memory (O += P V: A = P's k-step, B = V's rows).
template <class T, int N>
ANSAN_DEVICE void wgmma_m64nNk16_rs(float (&d)[N / 8][4], const std::uint32_t (&a)[4],
                                    std::uint64_t b_desc, bool accumulate) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, half>, "bf16 or fp16 inputs");
  static_assert(N == 64 || N == 128, "the head dims the Hopper kernel takes");
#define ANSAN_WGMMA_RS(SHAPE, TYPE, D, OPERANDS, A0, A1, A2, A3, DESC, ACC)                        \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " ACC                                           \
               ", 0;\n"                                                                            \
               " wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " " D ", {" A0 ", " A1 \
               ", " A2 ", " A3 "}, " DESC ", p, 1, 1, 1;\n}\n"                                     \
               : OPERANDS(d)                                                                       \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(int(accumulate)))
  if constexpr (N == 64 && std::is_same_v<T, bf16>)
    ANSAN_WGMMA_RS("m64n64k16", "bf16", ANSAN_WGMMA_D32, ANSAN_WGMMA_F32, "%32", "%33", "%34",
                   "%35", "%36", "%37");
  else if constexpr (N == 64)
    ANSAN_WGMMA_RS("m64n64k16", "f16", ANSAN_WGMMA_D32, ANSAN_WGMMA_F32, "%32", "%33", "%34", "%35",
                   "%36", "%37");
  else if constexpr (std::is_same_v<T, bf16>)
    ANSAN_WGMMA_RS("m64n128k16", "bf16", ANSAN_WGMMA_D64, ANSAN_WGMMA_F64, "%64", "%65", "%66",
                   "%67", "%68", "%69");
  else
    ANSAN_WGMMA_RS("m64n128k16", "f16", ANSAN_WGMMA_D64, ANSAN_WGMMA_F64, "%64", "%65", "%66",
                   "%67", "%68", "%69");
#undef ANSAN_WGMMA_RS
}

#undef ANSAN_WGMMA_F4
#undef ANSAN_WGMMA_F32
#undef ANSAN_WGMMA_F64
#undef ANSAN_WGMMA_D32
#undef ANSAN_WGMMA_D64

#endif  // !ANSAN_KERNEL_EMULATION

// The Hopper kernels' one run-time-to-template step: `launch(std::integral_constant<int, D>{})`
// for head_dim D in {64, 128}, fp16/bf16 only; cudaErrorInvalidValue otherwise.
template <class T, class Launch>
cudaError_t for_hopper_head_dim(int head_dim, Launch&& launch) {
  if constexpr (sizeof(T) != 2) {
    return cudaErrorInvalidValue;
  } else {
    if (head_dim == 64) return launch(std::integral_constant<int, 64>{});
    if (head_dim == 128) return launch(std::integral_constant<int, 128>{});
    return cudaErrorInvalidValue;
  }
}

}  // namespace ansan::cuda::detail
