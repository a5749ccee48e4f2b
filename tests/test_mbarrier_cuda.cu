// tests/test_mbarrier_cuda.cu - the warp-specialized Hopper prefill's synchronisation alone
// (attention_ws_sm90.cuh's roles, on mbarrier_sm90.cuh and setmaxnreg), on one block of three
// warpgroups: a producer streams tiles through a ring of shared-memory stages by cp.async, each
// thread arriving on the stage's `full` barrier when its copies land; two consumers wait on it,
// copy the tile out (each thread reading chunks another thread wrote), arrive on `empty`, and
// take turns at the copy as the kernel's consumers do at issuing (bar.sync on its own named
// barrier, bar.arrive on the other's). Every tile each consumer copied must equal the source:
// a stage read before its copies landed, or refilled before both consumers left it, shows up as
// a wrong tile; turns that do not alternate, in the turn log; a barrier phase that never
// completes, as a hang. If tensor_sm90_ws hangs or
// fails on a GPU, this case says whether the primitives do (tests/gpu/check.sh runs it first,
// under a short limit). Through the kernel emulator as test_mbarrier_cuda_emulated.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mbarrier_sm90.cuh"
#include "ansan/cuda/detail/mma_sm80.cuh"
#include "ansan/cuda/detail/mma_sm90.cuh"
#include "support/device_copies.hpp"
#include "support/gpu_main.hpp"
#include "support/sm90a_expected.hpp"

namespace mbarrier_cuda_test {
namespace kd = ansan::cuda::detail;

constexpr int kWarpgroup = 128, kConsumers = 2, kThreads = kWarpgroup * (1 + kConsumers);
constexpr int kStages = 4;               // as tensor_sm90_ws's ring
constexpr int kChunks = 4 * kWarpgroup;  // 16-byte chunks a tile (8 KiB)

struct alignas(16) Barriers {  // (the stages after it take 16-byte copies)
  std::uint64_t full[kStages], empty[kStages];
  int turns_taken;  // written only by the consumer whose turn it is
};
constexpr std::size_t kSmemBytes = sizeof(Barriers) + sizeof(uint4) * kStages * kChunks;

// dst[c][t]: tile t as consumer c saw it; turns[i]: the consumer that took the i-th turn.
// *ran = 1 once the block got through (an empty body, outside sm_90a, leaves it 0).
__global__ void __launch_bounds__(kThreads, 1)
    ring_kernel(const uint4* src, int tiles, uint4* dst, int* turns, int* ran) {
#if ANSAN_SM90A_PASS
  constexpr unsigned kTurnBarrier = 2;  // consumer c's turn: 2 + c, as tensor_sm90_ws's
  constexpr int kProducerRegisters = 64, kConsumerRegisters = 216;  // as tensor_sm90_ws
  unsigned char* const smem = kd::dynamic_shared_memory<unsigned char>();
  Barriers* const bar = reinterpret_cast<Barriers*>(smem);
  uint4* const stages = reinterpret_cast<uint4*>(smem + sizeof(Barriers));
  const int tid = int(threadIdx.x), role = tid / kWarpgroup, me = tid % kWarpgroup;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      kd::mbarrier_init(&bar->full[s], kWarpgroup);
      kd::mbarrier_init(&bar->empty[s], kConsumers * kWarpgroup);
    }
    bar->turns_taken = 0;
  }
  __syncthreads();

  int stage = 0;
  unsigned parity = 0;
  const auto advance = [&] {
    if (++stage == kStages) stage = 0, parity ^= 1u;
  };
  if (role == 0) {
    kd::setmaxnreg_dec<kProducerRegisters>();
    for (int t = 0; t < tiles; ++t, advance()) {
      kd::mbarrier_wait(&bar->empty[stage], parity ^ 1u);
      for (int c = me; c < kChunks; c += kWarpgroup)
        kd::cp_async_16(stages + stage * kChunks + c, src + std::size_t(t) * kChunks + c, true);
      kd::cp_async_mbarrier_arrive(&bar->full[stage]);
    }
    kd::cp_async_wait_all();
  } else {
    kd::setmaxnreg_inc<kConsumerRegisters>();
    const int consumer = role - 1;
    if (consumer == 1) kd::named_barrier_arrive(kTurnBarrier, kConsumers * kWarpgroup);
    for (int t = 0; t < tiles; ++t, advance()) {
      kd::mbarrier_wait(&bar->full[stage], parity);
      kd::named_barrier_sync(kTurnBarrier + consumer, kConsumers * kWarpgroup);
      if (me == 0) turns[bar->turns_taken++] = consumer;
      // Thread `me` reads the chunks producer thread 127 - me copied.
      for (int c = kWarpgroup - 1 - me; c < kChunks; c += kWarpgroup)
        dst[(std::size_t(consumer) * tiles + t) * kChunks + c] = stages[stage * kChunks + c];
      kd::named_barrier_arrive(kTurnBarrier + (1 - consumer), kConsumers * kWarpgroup);
      kd::mbarrier_arrive(&bar->empty[stage]);
    }
    if (consumer == 0) kd::named_barrier_sync(kTurnBarrier, kConsumers * kWarpgroup);  // the last pass
  }
  if (tid == kWarpgroup) *ran = 1;
#endif
}

TEST_CASE("an mbarrier ring: cp.async tiles reach both consumer warpgroups intact, stage by stage, in alternating turns") {
  std::mt19937 rng(2611);
  for (const int tiles : {1, 3, kStages, kStages + 1, 16 * kStages + 3}) {
    CAPTURE(tiles);
    std::vector<uint4> src(std::size_t(tiles) * kChunks);
    for (uint4& chunk : src) chunk = make_uint4(unsigned(rng()), unsigned(rng()), unsigned(rng()), unsigned(rng()));
    const uint4 poison{0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu};
    const auto d_src = ansan::test::to_device(src);
    const auto d_dst = ansan::test::to_device(std::vector<uint4>(kConsumers * src.size(), poison));
    const auto d_turns = ansan::test::to_device(std::vector<int>(kConsumers * std::size_t(tiles), -1));
    const auto d_ran = ansan::test::to_device(std::vector<int>{0});
    ANSAN_CUDA_THROW(kd::launch_kernel(ring_kernel, {dim3(1), dim3(kThreads), kSmemBytes}, 0,
                                       d_src.data(), tiles, d_dst.data(), d_turns.data(),
                                       d_ran.data()));
    ANSAN_CUDA_THROW(cudaDeviceSynchronize());
    if (ansan::test::to_host(d_ran)[0] == 0) {
      REQUIRE_MESSAGE(!ansan::test::sm90a_expected(),
                      "a Hopper GPU and an sm_90a build, but the kernel was empty");
      MESSAGE("no sm_90a code for this device: the ring not run here");
      return;
    }
    const std::vector<uint4> dst = ansan::test::to_host(d_dst);
    int wrong = 0;
    for (int c = 0; c < kConsumers; ++c)
      for (std::size_t i = 0; i < src.size(); ++i) {
        const uint4 got = dst[std::size_t(c) * src.size() + i], want = src[i];
        if ((got.x != want.x || got.y != want.y || got.z != want.z || got.w != want.w) &&
            wrong++ < 8)
          FAIL_CHECK("consumer ", c, " tile ", i / kChunks, " chunk ", i % kChunks,
                     std::string(got.x == poison.x ? ": never written" : ": wrong data"));
      }
    CHECK_MESSAGE(wrong == 0, wrong, " of ", kConsumers * src.size(), " chunks wrong");
    const std::vector<int> turns = ansan::test::to_host(d_turns);
    for (std::size_t i = 0; i < turns.size(); ++i) CHECK(turns[i] == int(i % kConsumers));
  }
}

}  // namespace mbarrier_cuda_test
