// tests/emulator/mbarrier.hpp - host definitions of the block-local synchronisation in
// ansan/cuda/detail/mbarrier_sm90.cuh, for kernel_emulator.hpp (which includes this file).
//
// Written from the PTX ISA (mbarrier, cp.async.mbarrier.arrive, bar.sync):
//   mbarrier    a 64-bit shared word: the arrivals a phase expects, those still pending, and the
//               phase's parity. The arrival that leaves none pending completes the phase: the
//               parity flips and the count resets. A wait for parity p returns once the phase of
//               parity p has completed, that is while the current phase's parity is not p.
//   cp.async.mbarrier.arrive.noinc
//               one arrival, once every cp.async this thread issued before it has landed. With
//               AsyncCopy::at_wait it happens as late as it may: only when no thread can go on
//               otherwise (Engine::release_waiting), oldest first, landing its copies then.
//   bar.sync    counts whole warps; opens when `threads` threads have reached the id, waiting
//               there or passing it by bar.arrive (which does not wait).
// The word's encoding is the emulator's own and carries a marker, so a barrier used before its
// mbarrier.init in this block (the 0xff poison) or overwritten by data is refused, not read as
// counts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "emulator/sm80_instructions.hpp"  // emulated::land

namespace ansan::emulator::detail {

struct MbarrierWord {
  static constexpr std::uint64_t kMarker = 0x6d62;          // bits 48-63
  static constexpr unsigned kMaxArrivals = (1u << 20) - 1;  // the ISA's limit
  unsigned expected, pending, parity;                       // bits 0-19, 20-39, 40

  std::uint64_t encode() const {
    return kMarker << 48 | std::uint64_t(parity) << 40 | std::uint64_t(pending) << 20 | expected;
  }
};

// The state of the mbarrier at `barrier`, or a throw if the word holds none.
inline MbarrierWord read_mbarrier(const std::uint64_t* barrier, const char* what) {
  Engine& e = engine();
  e.require_shared(barrier, sizeof *barrier, what, sizeof *barrier);
  const std::uint64_t word = *barrier;
  const MbarrierWord state{unsigned(word & MbarrierWord::kMaxArrivals),
                           unsigned(word >> 20 & MbarrierWord::kMaxArrivals),
                           unsigned(word >> 40 & 1)};
  if (word != state.encode() || state.pending == 0 || state.pending > state.expected) {
    char bits[19];
    std::snprintf(bits, sizeof bits, "0x%016llx", static_cast<unsigned long long>(word));
    fail(std::string(what) + " at shared offset " + std::to_string(e.shared_offset(barrier)) +
         ", which holds no mbarrier (" + bits +
         "): not initialised in this block, or overwritten since");
  }
  return state;
}

// One arrival; the one that leaves none pending completes the phase and wakes its waiters.
inline void arrive_on_mbarrier(std::uint64_t* barrier, const char* what) {
  MbarrierWord state = read_mbarrier(barrier, what);
  if (--state.pending == 0) {
    engine().mbarrier_phase_completed(barrier, state.parity);
    state.parity ^= 1, state.pending = state.expected;
  }
  *barrier = state.encode();
}

}  // namespace ansan::emulator::detail

namespace ansan::cuda::detail {

inline void mbarrier_init(std::uint64_t* barrier, unsigned arrivals) {
  using namespace ::ansan::emulator::detail;
  engine().require_shared(barrier, sizeof *barrier, "mbarrier.init", sizeof *barrier);
  if (arrivals == 0 || arrivals > MbarrierWord::kMaxArrivals)
    fail("mbarrier.init with " + std::to_string(arrivals) + " arrivals (1 to 2^20 - 1)");
  *barrier = MbarrierWord{arrivals, arrivals, 0}.encode();
}

inline void mbarrier_arrive(std::uint64_t* barrier) {
  ::ansan::emulator::detail::arrive_on_mbarrier(barrier, "mbarrier.arrive");
}

inline void mbarrier_wait(std::uint64_t* barrier, unsigned parity) {
  using namespace ::ansan::emulator::detail;
  if (parity > 1) fail("mbarrier.try_wait.parity with parity " + std::to_string(parity));
  if (read_mbarrier(barrier, "mbarrier.try_wait").parity == parity)
    engine().wait_mbarrier(barrier, parity);
}

inline void cp_async_mbarrier_arrive(std::uint64_t* barrier) {
  using namespace ::ansan::emulator::detail;
  constexpr const char* kWhat = "cp.async.mbarrier.arrive";
  read_mbarrier(barrier, kWhat);  // refused where it is issued, not only where it arrives
  if (::ansan::emulator::options().async_copy == ::ansan::emulator::AsyncCopy::at_issue)
    return arrive_on_mbarrier(barrier, kWhat);  // the copies landed at issue
  Thread& self = engine().self();
  engine().defer_async_arrival([&self, barrier, covered = self.copies_issued] {
    // Copies are kept in issue order, so those it covers (not landed by a wait_group) lead.
    auto& copies = self.copies;
    const auto uncovered =
        std::find_if(copies.begin(), copies.end(),
                     [&](const AsyncCopyRecord& copy) { return copy.sequence >= covered; });
    std::for_each(copies.begin(), uncovered, emulated::land);
    copies.erase(copies.begin(), uncovered);
    arrive_on_mbarrier(barrier, kWhat);
  });
}

inline void named_barrier_sync(unsigned id, unsigned threads) {
  ::ansan::emulator::detail::engine().named_barrier(id, threads);
}

inline void named_barrier_arrive(unsigned id, unsigned threads) {
  ::ansan::emulator::detail::engine().named_barrier_arrive(id, threads);
}

}  // namespace ansan::cuda::detail
