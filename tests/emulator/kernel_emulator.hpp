// tests/emulator/kernel_emulator.hpp - runs this library's CUDA code on the CPU: every kernel,
// thread by thread, so its index arithmetic, barriers, warp collectives and tensor-core fragment
// traffic are exercised on a machine without a GPU, and the host code around it (validation,
// temp storage, caches) against an emulated runtime.
//
// Include it first, before any ansan header, in one host (g++ / clang) translation unit per
// program; tests/CMakeLists.txt builds every GPU test (tests/test_*.cu) this way as well. It
//   - defines ANSAN_KERNEL_EMULATION, so kernel_launch.cuh, mma_sm80.cuh and device_algorithms.cuh
//     leave out their device definitions and the library uses the ones here: launches, the sm_80
//     instructions (sm80_instructions.hpp), CUB's scans and selection (device_algorithms.hpp), and
//     the CUDA runtime calls over host memory (runtime.hpp);
//   - maps the kernel language onto C++: __global__ and __grid_constant__ vanish, __shared__
//     becomes `static` (blocks run one at a time, so a function-static array is the block's
//     shared memory), threadIdx / blockIdx / blockDim / gridDim read the running emulated thread's;
//   - runs each thread block as blockDim threads on fibers (fiber.hpp) of one OS thread. A thread
//     runs until it reaches __syncthreads(), a warp collective, an mbarrier wait or a named barrier
//     (mbarrier.hpp); a barrier opens when every thread of the block (every lane of the warp, the
//     named barrier's count) waits at it, a waiter when the phase it waits for completes. Anything
//     a GPU would hang on or leave undefined throws emulation_error: a __syncthreads some threads
//     skip or reach at another line, lanes of a warp in different collectives, a partial warp
//     mask, threads that all wait for something no thread left can do;
//   - emulates the sm_80 instructions of the tensor-core kernel from the PTX ISA's fragment layouts
//     (ldmatrix .x4 [.trans], mma.sync m16n8k16 with f32 accumulation, cp.async with zero fill and
//     commit/wait groups), checking that shared addresses lie in the block's dynamic shared memory
//     and are 16-byte aligned; and those of the Hopper kernel (sm90_instructions.hpp: wgmma with
//     shared-memory descriptors and the 128-byte swizzle, retired at its wait_group). Dynamic
//     shared memory is filled with 0xff (NaN) at each block start.
//
// What it cannot show: speed, register pressure, bank conflicts, or the memory model. Shared
// writes are visible at once, so a missing barrier shows up only as a dependence on the order the
// threads run in: tests run each launch under several schedules (Options::schedule) and with
// cp.async data landing as early or as late as the PTX rules allow (Options::async_copy), and
// require bit-identical outputs. Passing here means "the kernel's logic is right", never "it runs
// on a GPU".
#pragma once

#if defined(__CUDACC__)
#error "kernel_emulator.hpp is for a host compiler; nvcc builds these kernels for the GPU"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#define ANSAN_KERNEL_EMULATION 1

#include "emulator/fiber.hpp"  // also ANSAN_EMULATOR_ASAN and ASan's fiber annotations
#include "emulator/runtime.hpp"

namespace ansan::emulator {

class emulation_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

enum class Schedule : std::uint8_t { forward, reverse, shuffled };  // thread order between barriers
enum class AsyncCopy : std::uint8_t { at_issue, at_wait };          // when cp.async data lands

struct Options {
  Schedule schedule = Schedule::forward;
  std::uint32_t seed = 1;  // Schedule::shuffled
  AsyncCopy async_copy = AsyncCopy::at_wait;
  // Let one warp at a time through its collectives (the first in schedule order that can go), so
  // it runs ahead to the next __syncthreads while the others wait: a barrier that only keeps
  // warps apart shows up. Otherwise warps move through their collectives in lockstep.
  bool one_warp_at_a_time = false;
  std::size_t max_dynamic_smem = 227 * 1024;  // sm_90's opt-in limit per block
};
inline Options& options() {
  static Options current;
  return current;
}

// What ran, so a test can tell a kernel that did its work from one that returned early.
struct Stats {
  std::uint64_t blocks = 0, block_barriers = 0, warp_collectives = 0, mma = 0;
  std::uint64_t mbarrier_waits = 0;  // waits that blocked: the phase had not completed yet
};
inline Stats& stats() {
  static Stats counts;
  return counts;
}

namespace detail {

[[noreturn]] inline void fail(const std::string& what) {
  throw emulation_error("kernel emulator: " + what);
}

enum class Wait : std::uint8_t { none, block, warp, mbarrier, named, exited };

struct AsyncCopyRecord {
  void* dst;
  const void* src;
  bool valid;
  int group;  // index of its commit group in this thread, -1 until cp.async.commit_group
  std::uint64_t sequence;  // issue order in this thread: an mbarrier arrival covers those before
};

struct AsyncMmaRecord {  // a wgmma.mma_async issued and not yet retired (sm90_instructions.hpp)
  int group;             // index of its commit group in this thread, -1 until wgmma.commit_group
  std::function<void()> retire;
};

struct Thread {
  uint3 idx{};
  int lane = 0, warp = 0;
  Wait wait = Wait::none;
  const char* site = nullptr;  // the __syncthreads line or collective it waits at
  int line = 0;
  int parity = 0;  // exchange buffer of its next warp collective
  std::vector<AsyncCopyRecord> copies;
  std::uint64_t copies_issued = 0;
  int committed_groups = 0;
  // Wait::mbarrier: the barrier, the parity of the phase awaited, and whether that phase completed.
  const std::uint64_t* mbarrier = nullptr;
  unsigned mbarrier_parity = 0;
  bool phase_completed = false;
  // Wait::named: bar.sync's id and thread count, and when this thread got there (in the block).
  unsigned named_barrier = 0, named_threads = 0;
  std::uint64_t named_arrival = 0;
  std::vector<AsyncMmaRecord> mmas;
  int mma_groups = 0;  // wgmma groups committed
  FiberContext fiber;
  void* asan_fake_stack = nullptr;
};

constexpr std::size_t kSlotBytes = 64;  // the largest collective operand: mma's A, B and C

// Fiber stacks, each above a guard page, kept from launch to launch (a test makes thousands).
class StackPool {
 public:
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  static StackPool& get() {
    static StackPool pool;
    return pool;
  }
  static constexpr std::size_t stack_bytes() {
#if defined(ANSAN_EMULATOR_ASAN)
    return 256 * 1024;  // redzones make frames larger; ASan clears a stack's shadow at every switch
#else
    return 128 * 1024;
#endif
  }
  // The stack of thread i of a block of `threads`.
  char* stack(std::size_t i, std::size_t threads) {
    if (threads > count_) grow(threads);
    return base_ + i * slot() + page_;
  }

 private:
  StackPool() : page_(std::size_t(sysconf(_SC_PAGESIZE))) {}
  ~StackPool() {
    if (base_) munmap(base_, count_ * slot());
  }
  std::size_t slot() const { return stack_bytes() + page_; }
  void grow(std::size_t threads) {
    if (base_) munmap(base_, count_ * slot());
    void* mem =
        mmap(nullptr, threads * slot(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) fail("cannot map thread stacks");
    base_ = static_cast<char*>(mem), count_ = threads;
    for (std::size_t i = 0; i < threads; ++i) mprotect(base_ + i * slot(), page_, PROT_NONE);
  }
  std::size_t page_;
  char* base_ = nullptr;
  std::size_t count_ = 0;
};

// One launch: the threads of the block being run, their stacks, its shared memory.
class Engine {
 public:
  Engine(dim3 grid, dim3 block, std::size_t dynamic_smem_bytes, std::function<void()> body)
      : grid_(grid),
        block_(block),
        body_(std::move(body)),
        threads_(std::size_t(block.x) * block.y * block.z) {
    smem_bytes_ = dynamic_smem_bytes;
    smem_.assign((dynamic_smem_bytes + 15) / 16 + 1, {});
    for (auto& parity : exchange_) parity.assign(threads_.size(), {});
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void run_block(uint3 idx) {
    block_idx_ = idx;
    std::memset(smem_.data(), 0xff, smem_.size() * sizeof(smem_[0]));
    async_arrivals_.clear();
    named_arrivals_ = 0;
    named_passed_ = {};
    for (std::size_t i = 0; i < threads_.size(); ++i) {
      Thread& t = threads_[i];
      t = Thread{};
      t.idx = {unsigned(i % block_.x), unsigned(i / block_.x % block_.y),
               unsigned(i / (block_.x * block_.y))};
      t.lane = int(i % 32), t.warp = int(i / 32);
      start_fiber(t.fiber, stack_of(i), StackPool::stack_bytes(), &Engine::thread_main);
    }
    std::vector<std::size_t> order(threads_.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (options().schedule == Schedule::reverse) std::reverse(order.begin(), order.end());
    std::mt19937 rng(options().seed ^ (idx.x * 0x9e3779b9u) ^ (idx.y << 16) ^ idx.z);
    std::vector<std::size_t> warp_order;
    for (;;) {
      if (options().schedule == Schedule::shuffled) std::shuffle(order.begin(), order.end(), rng);
      for (std::size_t i : order)
        if (threads_[i].wait == Wait::none) {
          resume(i);
          if (error_) std::rethrow_exception(error_);
        }
      warp_order.clear();
      for (std::size_t i : order)
        if (std::find(warp_order.begin(), warp_order.end(), i / 32) == warp_order.end())
          warp_order.push_back(i / 32);
      if (!release_waiting(warp_order)) break;
    }
    // Stricter than the hardware, which drops a barrier's state with its block: an arrival left
    // over means a hand-off whose two sides did not pair up.
    for (unsigned id = 1; id < 16; ++id)
      if (named_passed_[id].arrived > 0)
        fail(block_name() + " exited with " + std::to_string(named_passed_[id].arrived) +
             " threads' bar.arrive " + std::to_string(id) + " never matched by a bar.sync");
    ++stats().blocks;
  }

  static Engine*& running();  // the launch in progress, or null
  Thread& self() { return threads_[current_]; }
  uint3 block_idx() const { return block_idx_; }
  dim3 grid_dim() const { return grid_; }
  dim3 block_dim() const { return block_; }
  unsigned char* dynamic_smem() { return reinterpret_cast<unsigned char*>(smem_.data()); }
  std::size_t dynamic_smem_bytes() const { return smem_bytes_; }

  // The running thread waits at a barrier or collective until release_waiting() lets it go.
  void park(Wait kind, const char* site, int line) {
    Thread& t = self();
    t.wait = kind, t.site = site, t.line = line;
#if defined(ANSAN_EMULATOR_ASAN)
    __sanitizer_start_switch_fiber(&t.asan_fake_stack, main_stack_bottom_, main_stack_size_);
#endif
    switch_fiber(t.fiber, scheduler_);
#if defined(ANSAN_EMULATOR_ASAN)
    __sanitizer_finish_switch_fiber(t.asan_fake_stack, nullptr, nullptr);
#endif
  }

  // A full-warp collective: every lane contributes `mine`; once all 32 have, each lane gets
  // compute(all 32 contributions, its lane).
  template <class Result, class In, class Compute>
  Result collective(const char* name, unsigned mask, const In& mine, Compute&& compute) {
    static_assert(std::is_trivially_copyable_v<In> && sizeof(In) <= kSlotBytes,
                  "a register-sized operand");
    if (mask != 0xffffffffu) fail(std::string(name) + " with a partial lane mask is not emulated");
    if (threads_.size() % 32 != 0) fail(std::string(name) + " in a block of a partial warp");
    Thread& t = self();
    const int parity = t.parity;
    t.parity ^= 1;  // a lane can run at most one collective ahead of the slowest lane of its warp
    std::memcpy(exchange_[parity][std::size_t(t.warp * 32 + t.lane)].data(), &mine, sizeof(In));
    park(Wait::warp, name, 0);
    std::array<In, 32> lanes;
    for (int l = 0; l < 32; ++l)
      std::memcpy(&lanes[std::size_t(l)], exchange_[parity][std::size_t(t.warp * 32 + l)].data(),
                  sizeof(In));
    return compute(lanes, t.lane);
  }

  void require_shared(const void* ptr, std::size_t bytes, const char* what,
                      std::size_t alignment = 16) const {
    const long long offset = shared_offset(ptr);
    if (offset < 0 || std::size_t(offset) + bytes > smem_bytes_)
      fail(std::string(what) + " outside the block's dynamic shared memory (offset " +
           std::to_string(offset) + ", " + std::to_string(bytes) + " bytes, " +
           std::to_string(smem_bytes_) + " allocated)");
    if (reinterpret_cast<std::uintptr_t>(ptr) % alignment != 0)
      fail(std::string(what) + " not " + std::to_string(alignment) +
           "-byte aligned (shared offset " + std::to_string(offset) + ")");
  }
  long long shared_offset(const void* ptr) const {
    return static_cast<const unsigned char*>(ptr) -
           reinterpret_cast<const unsigned char*>(smem_.data());
  }

  // The running thread waits for the phase of `parity` of an mbarrier (mbarrier.hpp) to complete.
  void wait_mbarrier(const std::uint64_t* barrier, unsigned parity) {
    Thread& t = self();
    t.mbarrier = barrier, t.mbarrier_parity = parity, t.phase_completed = false;
    ++stats().mbarrier_waits;
    park(Wait::mbarrier, "mbarrier.try_wait", 0);
  }
  // Marks the waiters of this phase; release_waiting() lets them go.
  void mbarrier_phase_completed(const std::uint64_t* barrier, unsigned parity) {
    for (Thread& t : threads_)
      if (t.wait == Wait::mbarrier && t.mbarrier == barrier && t.mbarrier_parity == parity)
        t.phase_completed = true, woke_waiter_ = true;
  }
  // A cp.async.mbarrier.arrive whose copies land as late as they may: when nothing else can go on.
  void defer_async_arrival(std::function<void()> arrive) {
    async_arrivals_.push_back(std::move(arrive));
  }

  // bar.sync id, threads: waits until `threads` threads (whole warps) have reached `id`, waiting
  // there or passing by bar.arrive.
  void named_barrier(unsigned id, unsigned threads) {
    const std::string name = check_named_barrier("bar.sync", id, threads);
    Thread& t = self();
    t.named_barrier = id, t.named_threads = threads, t.named_arrival = ++named_arrivals_;
    park(Wait::named, "bar.sync", 0);
  }
  // bar.arrive id, threads: counts toward the barrier's `threads` and goes on.
  void named_barrier_arrive(unsigned id, unsigned threads) {
    check_named_barrier("bar.arrive", id, threads);
    named_passed_[id].threads = threads, ++named_passed_[id].arrived;
  }

 private:
  // Refuses a named-barrier use the hardware would not count; returns its name for messages.
  std::string check_named_barrier(const char* op, unsigned id, unsigned threads) const {
    const std::string name = std::string(op) + " " + std::to_string(id) + ", " +
                             std::to_string(threads);
    if (id == 0 || id > 15) fail(name + ": named barriers are 1 to 15 (0 is __syncthreads')");
    if (threads == 0 || threads % 32 != 0 || threads > threads_.size())
      fail(name + ": the count must be whole warps of the block's " +
           std::to_string(threads_.size()) + " threads");
    if (threads_.size() % 32 != 0) fail(name + " in a block of a partial warp");
    for (const Thread& t : threads_)
      if (t.wait == Wait::named && t.named_barrier == id && t.named_threads != threads)
        fail(block_name() + ": " + name + " while other threads wait at it with a count of " +
             std::to_string(t.named_threads));
    if (named_passed_[id].arrived > 0 && named_passed_[id].threads != threads)
      fail(block_name() + ": " + name + " while other threads arrived at it with a count of " +
           std::to_string(named_passed_[id].threads));
    return name;
  }

 private:
  char* stack_of(std::size_t i) { return StackPool::get().stack(i, threads_.size()); }

  static void thread_main() {
    Engine& e = *running();
#if defined(ANSAN_EMULATOR_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &e.main_stack_bottom_, &e.main_stack_size_);
#endif
    try {
      e.body_();
      if (!e.self().mmas.empty())
        fail("a thread exited with wgmma.mma_async not retired by a wait");
    } catch (...) {
      if (!e.error_) e.error_ = std::current_exception();
    }
    Thread& t = e.self();
    t.wait = Wait::exited;
#if defined(ANSAN_EMULATOR_ASAN)
    __sanitizer_start_switch_fiber(nullptr, e.main_stack_bottom_,
                                   e.main_stack_size_);  // this stack dies
#endif
    switch_fiber(t.fiber, e.scheduler_);  // for good: an exited fiber is never resumed
    __builtin_unreachable();
  }

  void resume(std::size_t i) {
    current_ = i;
#if defined(ANSAN_EMULATOR_ASAN)
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, stack_of(i), StackPool::stack_bytes());
#endif
    switch_fiber(scheduler_, threads_[i].fiber);
#if defined(ANSAN_EMULATOR_ASAN)
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
  }

  std::string where(const Thread& t) const {
    return std::string(t.site ? t.site : "?") + (t.line ? ":" + std::to_string(t.line) : "");
  }
  std::string block_name() const {
    return "block (" + std::to_string(block_idx_.x) + "," + std::to_string(block_idx_.y) + "," +
           std::to_string(block_idx_.z) + ")";
  }

  // Nobody is runnable: open the warp collectives every lane has reached and wake the mbarrier
  // waiters whose phase completed (in `warp_order`, or just the first warp with
  // one_warp_at_a_time), else the named barriers, else the block barrier, else make the oldest
  // deferred cp.async.mbarrier.arrive. Returns false when every thread has exited; throws when the
  // rest wait for something no thread can do.
  bool release_waiting(const std::vector<std::size_t>& warp_order) {
    if (release_warps(warp_order) || release_named_barriers() || release_block_barrier())
      return true;
    if (std::all_of(threads_.begin(), threads_.end(),
                    [](const Thread& t) { return t.wait == Wait::exited; }))
      return false;  // arrivals still deferred have nobody to see them
    if (async_arrivals_.empty()) deadlock();
    // Oldest first, until one wakes a waiter: no thread runs between two of them anyway, so
    // the sweeps in between would find nothing to do.
    woke_waiter_ = false;
    while (!woke_waiter_ && !async_arrivals_.empty()) {
      const std::function<void()> arrive = std::move(async_arrivals_.front());
      async_arrivals_.pop_front();
      arrive();
    }
    return true;
  }

  bool release_warps(const std::vector<std::size_t>& warp_order) {
    bool released = false;
    for (std::size_t w : warp_order) {
      Thread* lanes = &threads_[w * 32];
      const std::size_t width = std::min<std::size_t>(32, threads_.size() - w * 32);
      std::size_t at_warp = 0, held = 0;  // held: at __syncthreads or exited, never to join
      bool woke = false;
      const Thread* first = nullptr;
      for (std::size_t l = 0; l < width; ++l) {
        Thread& t = lanes[l];
        if (t.wait == Wait::block || t.wait == Wait::exited) ++held;
        if (t.wait == Wait::mbarrier && t.phase_completed) t.wait = Wait::none, woke = true;
        if (t.wait != Wait::warp) continue;
        ++at_warp;
        if (!first)
          first = &t;
        else if (std::strcmp(first->site, t.site) != 0)
          fail(block_name() + ", warp " + std::to_string(w) + ": lanes in different collectives (" +
               where(*first) + " and " + where(t) + ")");
      }
      if (at_warp > 0 && held > 0)
        fail(block_name() + ", warp " + std::to_string(w) + ": " + where(*first) + " reached by " +
             std::to_string(at_warp) +
             " of 32 lanes (the others wait at __syncthreads or have exited)");
      if (at_warp == 32) {  // else the others wait on mbarriers or named barriers, for now
        for (std::size_t l = 0; l < width; ++l) lanes[l].wait = Wait::none;
        ++stats().warp_collectives;
      }
      released = released || woke || at_warp == 32;
      if (released && options().one_warp_at_a_time) break;
    }
    return released;
  }

  // bar.sync counts whole warps: a warp arrives once all its live lanes wait at the same id, and
  // the barrier opens once the waiting warps and the bar.arrive threads make its count: for the
  // first waiting warps to arrive, after the arrivals (which came before any wait of theirs).
  bool release_named_barriers() {
    struct Arrival {
      std::uint64_t when;  // its last lane's
      std::size_t warp;
    };
    std::array<std::vector<Arrival>, 16> arrivals;  // by id
    std::array<unsigned, 16> counts{};
    for (std::size_t w = 0; (w + 1) * 32 <= threads_.size(); ++w) {  // bar.sync needs whole warps
      Arrival arrival{0, w};
      unsigned id = 0;
      bool whole = true;
      for (std::size_t i = w * 32; i < w * 32 + 32; ++i) {
        const Thread& t = threads_[i];
        if (t.wait == Wait::exited) continue;
        if (t.wait != Wait::named || (id != 0 && t.named_barrier != id)) {
          whole = false;
          break;
        }
        id = t.named_barrier, counts[id] = t.named_threads;
        arrival.when = std::max(arrival.when, t.named_arrival);
      }
      if (whole && id != 0) arrivals[id].push_back(arrival);
    }
    bool released = false;
    for (unsigned id = 1; id < 16; ++id) {
      auto& warps = arrivals[id];
      NamedArrivals& passed = named_passed_[id];
      const unsigned count = warps.empty() ? passed.threads : counts[id];
      if (passed.arrived % 32 != 0)  // every thread is parked: the rest of the warp went elsewhere
        fail(block_name() + ": bar.arrive " + std::to_string(id) + " by " +
             std::to_string(passed.arrived % 32) + " lanes of a warp (it counts whole warps)");
      if (count == 0 || warps.size() * 32 + passed.arrived < count) continue;
      std::sort(warps.begin(), warps.end(),
                [](const Arrival& a, const Arrival& b) { return a.when < b.when; });
      const unsigned by_arrival = std::min(passed.arrived, count);
      passed.arrived -= by_arrival;
      for (std::size_t k = 0; k < (count - by_arrival) / 32; ++k)
        for (std::size_t i = warps[k].warp * 32; i < warps[k].warp * 32 + 32; ++i)
          if (threads_[i].wait == Wait::named) threads_[i].wait = Wait::none;
      released = true;
      if (options().one_warp_at_a_time) break;
    }
    return released;
  }

  bool release_block_barrier() {
    std::size_t at_block = 0, exited = 0;
    const Thread* first = nullptr;
    for (const Thread& t : threads_) {
      if (t.wait == Wait::exited) ++exited;
      if (t.wait != Wait::block) continue;
      ++at_block;
      if (!first)
        first = &t;
      else if (t.line != first->line || std::strcmp(t.site, first->site) != 0)
        fail(block_name() + ": threads wait at different __syncthreads (" + where(*first) +
             " and " + where(t) + ")");
    }
    if (at_block > 0 && exited > 0)
      fail(block_name() + ": __syncthreads at " + where(*first) + " after " +
           std::to_string(exited) + " threads of the block returned");
    if (at_block < threads_.size()) return false;  // the others wait on mbarriers or named barriers
    for (Thread& t : threads_) t.wait = Wait::none;
    ++stats().block_barriers;
    return true;
  }

  std::string waits_at(const Thread& t) const {
    switch (t.wait) {
      case Wait::mbarrier:
        return "the mbarrier at shared offset " + std::to_string(shared_offset(t.mbarrier)) +
               " for its phase of parity " + std::to_string(t.mbarrier_parity);
      case Wait::named:
        return "bar.sync " + std::to_string(t.named_barrier) + ", " +
               std::to_string(t.named_threads);
      case Wait::block:
        return "__syncthreads at " + where(t);
      default:
        return where(t);
    }
  }

  // Every thread left waits for another: name one, an mbarrier waiter if any (the likeliest cause).
  [[noreturn]] void deadlock() const {
    std::array<std::size_t, std::size_t(Wait::exited) + 1> by_wait{};
    const Thread* stuck = nullptr;
    for (const Thread& t : threads_) {
      ++by_wait[std::size_t(t.wait)];
      if (t.wait != Wait::exited &&
          (!stuck || (stuck->wait != Wait::mbarrier && t.wait == Wait::mbarrier)))
        stuck = &t;
    }
    const auto count = [&](Wait w) { return std::to_string(by_wait[std::size_t(w)]); };
    fail(block_name() + ": no thread can go on (a GPU would hang): thread " +
         std::to_string(stuck - threads_.data()) + " waits at " + waits_at(*stuck) + "; " +
         count(Wait::mbarrier) + " threads wait on mbarriers, " + count(Wait::named) +
         " at named barriers, " + count(Wait::block) + " at __syncthreads, " + count(Wait::warp) +
         " in warp collectives, " + count(Wait::exited) + " have exited");
  }

  dim3 grid_, block_;
  uint3 block_idx_{};
  std::function<void()> body_;
  std::vector<Thread> threads_;
  std::vector<std::array<unsigned char, kSlotBytes>> exchange_[2];  // (threads), by parity
  struct alignas(16) Chunk {
    unsigned char bytes[16];
  };
  std::vector<Chunk> smem_;  // dynamic shared memory, 16-byte aligned
  std::size_t smem_bytes_ = 0;
  std::size_t current_ = 0;
  std::deque<std::function<void()>> async_arrivals_;  // deferred cp.async.mbarrier.arrive
  bool woke_waiter_ = false;  // an arrival completed a phase some thread waits for
  std::uint64_t named_arrivals_ = 0;
  struct NamedArrivals {  // bar.arrive's, by id, not yet counted in a completed barrier
    unsigned threads = 0, arrived = 0;
  };
  std::array<NamedArrivals, 16> named_passed_{};
  FiberContext scheduler_;
  std::exception_ptr error_;
  const void* main_stack_bottom_ = nullptr;
  std::size_t main_stack_size_ = 0;
};

inline Engine*& Engine::running() {
  static Engine* engine = nullptr;
  return engine;
}

inline Engine& engine() {
  Engine* e = Engine::running();
  if (!e) fail("a device function was called outside a kernel launch");
  return *e;
}

}  // namespace detail

// Runs `body` as a kernel: every block of `grid`, one after another, in x, y, z order. Launch
// configurations a GPU refuses return the CUDA error it would; everything else is thrown.
inline cudaError_t launch(dim3 grid, dim3 block, std::size_t dynamic_smem_bytes,
                          std::function<void()> body) {
  using detail::Engine;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    return detail::record(cudaErrorInvalidConfiguration);
  const std::size_t threads = std::size_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024) return detail::record(cudaErrorInvalidConfiguration);
  if (dynamic_smem_bytes > options().max_dynamic_smem) return detail::record(cudaErrorInvalidValue);
  if (Engine::running()) detail::fail("nested kernel launch");
  Engine engine(grid, block, dynamic_smem_bytes, std::move(body));
  Engine::running() = &engine;
  struct Reset {
    ~Reset() { Engine::running() = nullptr; }
  } reset;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) engine.run_block({x, y, z});
  return cudaSuccess;
}

// --- the kernel language ---------------------------------------------------------------------

inline void syncthreads(const char* file, int line) {
  detail::engine().park(detail::Wait::block, file, line);
}

template <class V>
V shfl_xor_sync(unsigned mask, V value, int lane_mask, int width = 32) {
  if (width != 32) detail::fail("__shfl_xor_sync with width != 32 is not emulated");
  return detail::engine().collective<V>(
      "__shfl_xor_sync", mask, value,
      [&](const std::array<V, 32>& all, int lane) { return all[std::size_t(lane ^ lane_mask)]; });
}
template <class V>
V shfl_sync(unsigned mask, V value, int src_lane, int width = 32) {
  if (width != 32) detail::fail("__shfl_sync with width != 32 is not emulated");
  return detail::engine().collective<V>(
      "__shfl_sync", mask, value,
      [&](const std::array<V, 32>& all, int) { return all[std::size_t(src_lane % 32)]; });
}
// A collective that exchanges nothing: every lane of the warp must reach it.
inline void syncwarp(unsigned mask = 0xffffffffu) {
  detail::engine().collective<int>("__syncwarp", mask, 0,
                                   [](const std::array<int, 32>&, int) { return 0; });
}
// One thread runs at a time, so a read-modify-write is atomic as it stands.
template <class V>
V atomic_min(V* address, V value) {
  const V old = *address;
  if (value < old) *address = value;
  return old;
}

inline int any_sync(unsigned mask, int predicate) {
  return detail::engine().collective<int>(
      "__any_sync", mask, int(predicate != 0), [](const std::array<int, 32>& all, int) {
        return int(std::any_of(all.begin(), all.end(), [](int x) { return x != 0; }));
      });
}

template <class V>
V reduce_min_sync(unsigned mask, V value) {
  return detail::engine().collective<V>(
      "__reduce_min_sync", mask, value,
      [](const std::array<V, 32>& all, int) { return *std::min_element(all.begin(), all.end()); });
}
template <class V>
V reduce_max_sync(unsigned mask, V value) {
  return detail::engine().collective<V>(
      "__reduce_max_sync", mask, value,
      [](const std::array<V, 32>& all, int) { return *std::max_element(all.begin(), all.end()); });
}

}  // namespace ansan::emulator

// The device library's integer min / max.
using std::max;
using std::min;

#undef __global__
#define __global__
#undef __shared__
#define __shared__ static
#undef __grid_constant__
#define __grid_constant__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define threadIdx (::ansan::emulator::detail::engine().self().idx)
#define blockIdx (::ansan::emulator::detail::engine().block_idx())
#define blockDim (::ansan::emulator::detail::engine().block_dim())
#define gridDim (::ansan::emulator::detail::engine().grid_dim())
#define __syncthreads() ::ansan::emulator::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::ansan::emulator::syncwarp(__VA_ARGS__)
#define __shfl_xor_sync(...) ::ansan::emulator::shfl_xor_sync(__VA_ARGS__)
#define __shfl_sync(...) ::ansan::emulator::shfl_sync(__VA_ARGS__)
#define __any_sync(...) ::ansan::emulator::any_sync(__VA_ARGS__)
#define __reduce_min_sync(...) ::ansan::emulator::reduce_min_sync(__VA_ARGS__)
#define __reduce_max_sync(...) ::ansan::emulator::reduce_max_sync(__VA_ARGS__)
#define atomicMin(...) ::ansan::emulator::atomic_min(__VA_ARGS__)

#include "ansan/cuda/detail/kernel_launch.cuh"  // LaunchShape; its device half is left out
#include "emulator/device_algorithms.hpp"
#include "emulator/mbarrier.hpp"
#include "emulator/sm80_instructions.hpp"
#include "emulator/sm90_instructions.hpp"

namespace ansan::cuda::detail {

template <class T>
T* dynamic_shared_memory() {
  return reinterpret_cast<T*>(::ansan::emulator::detail::engine().dynamic_smem());
}

template <class... Params, class... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), const LaunchShape& shape, cudaStream_t stream,
                          const Args&... args) {
  return ::ansan::emulator::detail::run_or_record(stream, [=] {
    return ::ansan::emulator::launch(shape.grid, shape.block, shape.dynamic_smem_bytes,
                                     [=] { kernel(args...); });
  });
}

}  // namespace ansan::cuda::detail
