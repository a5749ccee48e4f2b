// ansan/cuda/detail/mbarrier_sm90.cuh - the block-local synchronisation of the warp-specialized
// Hopper prefill (attention_ws_sm90.cuh), as inline PTX: shared-memory barriers (mbarrier) that
// one group of warps arrives on and another waits on, cp.async copies that arrive on one when
// they land, and named barriers that sync a subset of the block's warps (or hand a turn between
// two of its warpgroups).
//
// An mbarrier is a 64-bit word in shared memory holding an expected arrival count, the arrivals
// still missing in its current phase, and the phase's parity. When the last expected arrival
// comes, the phase completes: the count resets and the parity flips. A waiter names the parity
// of the phase it waits for, so a ring of stages needs one bit of state per stage on each side:
//   producer: wait(empty[s], parity ^ 1), fill stage s, arrivals on full[s]
//   consumer: wait(full[s], parity), use stage s, arrive(empty[s])
// (the producer's first pass waits for the parity-1 phase "before" phase 0, which counts as
// complete, so it starts without the consumers' arrivals).
// Arrive has release and wait has acquire semantics at block scope: what a thread wrote before
// its arrival is visible to a thread whose wait saw the phase complete.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ansan/config.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"  // shared_address

namespace ansan::cuda::detail {

// tests/emulator/mbarrier.hpp defines these on the host instead.
#if !defined(ANSAN_KERNEL_EMULATION)

// Before any use, by one thread, followed by a block barrier.
ANSAN_DEVICE void mbarrier_init(std::uint64_t* barrier, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(barrier)),
               "r"(arrivals)
               : "memory");
}

// One of the `arrivals` the current phase expects.
ANSAN_DEVICE void mbarrier_arrive(std::uint64_t* barrier) {
  asm volatile(
      "mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(barrier))
      : "memory");
}

// Returns once the phase of parity `parity` has completed (try_wait suspends the thread for a
// while in hardware before it reports failure, so the loop does not spin hot).
ANSAN_DEVICE void mbarrier_wait(std::uint64_t* barrier, unsigned parity) {
  asm volatile(
      "{\n .reg .pred done;\n"
      "wait_%=:\n"
      " mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 done, [%0], %1;\n"
      " @!done bra wait_%=;\n}\n" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
}

// One arrival on `barrier`, made when every cp.async this thread issued before it has landed
// (.noinc: it counts toward the expected arrivals).
ANSAN_DEVICE void cp_async_mbarrier_arrive(std::uint64_t* barrier) {
  asm volatile(
      "cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(shared_address(barrier))
      : "memory");
}

// Waits until `threads` threads (whole warps) of the block have reached barrier `id` (1-15;
// 0 is __syncthreads').
ANSAN_DEVICE void named_barrier_sync(unsigned id, unsigned threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Counts this thread's warp toward barrier `id`'s `threads` without waiting: the other side of
// a hand-off, where one group waits at the barrier and the other signals it and goes on.
ANSAN_DEVICE void named_barrier_arrive(unsigned id, unsigned threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

#endif  // !ANSAN_KERNEL_EMULATION

}  // namespace ansan::cuda::detail
