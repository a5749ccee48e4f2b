// The kernel emulator itself (kernel_emulator.hpp, sm80/sm90_instructions.hpp): before it is
// trusted with the attention kernels, it must compute what the hardware computes - shuffles, warp
// reductions, ldmatrix and mma.sync fed through the library's own fragment layouts
// (mma_layout.hpp) equal a plain matmul - and it must refuse or expose what a GPU would get
// wrong: divergent barriers, collectives some lanes miss, shared addresses out of range, data
// read before cp.async lands, a missing barrier, and mbarrier or named-barrier waits that would
// hang or race.
#include "emulator/kernel_emulator.hpp"  // first: it switches the kernel headers to host emulation

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mbarrier_sm90.cuh"
#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"
#include "ansan/cuda/detail/mma_sm90.cuh"
#include "ansan/cuda/detail/wgmma_layout.hpp"
#include "ansan/dtype.hpp"

namespace {

using namespace ansan;
namespace emu = ansan::emulator;
namespace kd = ansan::cuda::detail;

cudaError_t launch(unsigned blocks, unsigned threads, std::size_t smem,
                   std::function<void()> body) {
  return emu::launch(dim3(blocks), dim3(threads), smem, std::move(body));
}

// out[i] = the sum over the warp, by an xor butterfly, and the warp's min and max, for lane values
// 3 * lane - 40.
__global__ void butterfly_kernel(int* sum, int* lo, int* hi) {
  const int lane = int(threadIdx.x) % 32, value = 3 * lane - 40;
  int total = value;
  for (int offset = 16; offset > 0; offset /= 2)
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  sum[threadIdx.x] = total;
  lo[threadIdx.x] = __reduce_min_sync(0xffffffffu, value);
  hi[threadIdx.x] = __shfl_sync(0xffffffffu, __reduce_max_sync(0xffffffffu, value), 7);
}

// Each warp computes D (16x8) = A (16x16) B (16x8) for row-major A and B^T (8 x 16) tiles in shared
// memory, loading fragments with ldmatrix at the addresses the attention kernel uses.
template <class T>
void mma_kernel(const T* a, const T* b_t, float* d) {
  T* sA = kd::dynamic_shared_memory<T>();  // (16, 16)
  T* sB = sA + 16 * 16;                    // (8, 16): B transposed, rows = n
  const int lane = int(threadIdx.x);
  for (int i = lane; i < 16 * 16; i += 32) sA[i] = a[i];
  for (int i = lane; i < 8 * 16; i += 32) sB[i] = b_t[i];
  __syncthreads();
  std::uint32_t frag_a[4], frag_b[4];
  const kd::RowCol at = kd::ldmatrix_a_address(lane, 0);
  kd::ldmatrix_x4(frag_a, sA + at.row * 16 + at.col);
  // B fragments for one n-tile: matrices 0 and 1 are keys (n) 0-7 at k 0-7 and 8-15.
  const kd::RowCol bt = kd::ldmatrix_k_address(lane % 16, 0, 0);
  kd::ldmatrix_x4(frag_b, sB + (bt.row % 8) * 16 + bt.col);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  kd::mma_m16n8k16<T>(acc, frag_a, frag_b[0], frag_b[1]);
  for (int i = 0; i < 4; ++i) {
    const kd::RowCol c = kd::mma_c_element(lane, i);
    d[c.row * 8 + c.col] = acc[i];
  }
}

template <class T>
void check_mma_against_matmul(std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  std::vector<T> a(16 * 16), b_t(8 * 16);
  for (auto& x : a) x = from_float<T>(value(rng));
  for (auto& x : b_t) x = from_float<T>(value(rng));
  std::vector<float> d(16 * 8, -1e30f);
  const emu::Stats before = emu::stats();
  REQUIRE(launch(1, 32, sizeof(T) * (16 * 16 + 8 * 16),
                 [&] { mma_kernel<T>(a.data(), b_t.data(), d.data()); }) == cudaSuccess);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = 0.0;
      for (int k = 0; k < 16; ++k)
        want +=
            double(to_float(a[std::size_t(m * 16 + k)])) * to_float(b_t[std::size_t(n * 16 + k)]);
      INFO("D(", m, ", ", n, ")");
      CHECK(d[std::size_t(m * 8 + n)] == doctest::Approx(want).epsilon(1e-5));
    }
  CHECK(emu::stats().mma - before.mma == 1);  // one warp-wide mma
  CHECK(emu::stats().block_barriers - before.block_barriers == 1);
}

}  // namespace

TEST_CASE("shuffles and warp reductions: every lane gets the warp's result") {
  std::vector<int> sum(64), lo(64), hi(64);
  const emu::Stats before = emu::stats();
  REQUIRE(launch(1, 64, 0, [&] { butterfly_kernel(sum.data(), lo.data(), hi.data()); }) ==
          cudaSuccess);
  // 2 warps x (5 butterfly steps + min + max + broadcast), no block barrier
  CHECK(emu::stats().warp_collectives - before.warp_collectives == 2 * 8);
  CHECK(emu::stats().block_barriers == before.block_barriers);
  for (int t = 0; t < 64; ++t) {
    CHECK(sum[std::size_t(t)] == 3 * (31 * 32 / 2) - 40 * 32);
    CHECK(lo[std::size_t(t)] == -40);
    CHECK(hi[std::size_t(t)] == 3 * 31 - 40);
  }
}

TEST_CASE("ldmatrix and mma.sync through the kernel's fragment layouts equal a plain matmul") {
  check_mma_against_matmul<bf16>(1);
  check_mma_against_matmul<half>(2);
}

// (wgmma's products against a plain matmul: tests/test_wgmma_cuda.cu, which also runs here as
// test_wgmma_cuda_emulated.)
TEST_CASE("wgmma results exist only after their wait_group: a thread that never waits is refused") {
  CHECK_THROWS_AS(
      launch(1, 128, 1024 + 64 * 64 * 2,
             [&] {
               unsigned char* raw = kd::dynamic_shared_memory<unsigned char>();
               unsigned char* tile = raw + (1024 - kd::shared_address(raw) % 1024) % 1024;
               const std::uint64_t desc = kd::k_major_descriptor(kd::shared_address(tile));
               float s[8][4];
               kd::wgmma_fence();
               kd::wgmma_m64n64k16_ss<bf16>(s, desc, desc, false);
               kd::wgmma_commit();  // and no wgmma_wait
             }),
      emu::emulation_error);
}

TEST_CASE("ldmatrix .trans gives the transposed fragments") {
  // A 16 x 16 tile with element (r, c) = r * 16 + c, as half; .trans of matrix j at lane l holds
  // rows 2 * (l % 4) + {0, 1} of column l / 4.
  std::vector<half> tile(256);
  for (int i = 0; i < 256; ++i) tile[std::size_t(i)] = from_float<half>(float(i));
  std::vector<float> got(32 * 8);
  REQUIRE(launch(1, 32, 512, [&] {
            half* s = kd::dynamic_shared_memory<half>();
            const int lane = int(threadIdx.x);
            for (int i = lane; i < 256; i += 32) s[i] = tile[std::size_t(i)];
            __syncthreads();
            std::uint32_t r[4];
            const int matrix = lane / 8, row = lane % 8;  // matrices: the four 8x8 quadrants
            kd::ldmatrix_x4_trans(r, s + (8 * (matrix % 2) + row) * 16 + 8 * (matrix / 2));
            for (int j = 0; j < 4; ++j)
              for (int e = 0; e < 2; ++e) {
                const std::uint16_t bits = std::uint16_t(e ? r[j] >> 16 : r[j] & 0xffffu);
                half x;
                std::memcpy(&x, &bits, sizeof x);
                got[std::size_t(lane * 8 + j * 2 + e)] = to_float(x);
              }
          }) == cudaSuccess);
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < 4; ++j)
      for (int e = 0; e < 2; ++e) {
        const int row = 8 * (j % 2) + 2 * (lane % 4) + e, col = 8 * (j / 2) + lane / 4;
        CHECK(got[std::size_t(lane * 8 + j * 2 + e)] == float(row * 16 + col));
      }
}

TEST_CASE(
    "cp.async: data lands at wait_group, invalid copies write zeros, and shared memory starts "
    "poisoned") {
  alignas(16) const float source[4] = {1.f, 2.f, 3.f, 4.f};
  for (const emu::AsyncCopy when : {emu::AsyncCopy::at_issue, emu::AsyncCopy::at_wait}) {
    emu::options().async_copy = when;
    float before = 0.f, after[8] = {};
    REQUIRE(launch(1, 32, 64, [&] {
              float* s = kd::dynamic_shared_memory<float>();
              if (threadIdx.x == 0) {
                kd::cp_async_16(s, source, true);
                kd::cp_async_16(s + 4, source, false);
                kd::cp_async_commit();
                before = s[0];
                kd::cp_async_wait_all();
                for (int i = 0; i < 8; ++i) after[i] = s[i];
              }
            }) == cudaSuccess);
    emu::options().async_copy = emu::AsyncCopy::at_wait;
    if (when == emu::AsyncCopy::at_wait)
      CHECK(std::isnan(before));  // the 0xff poison: not landed yet
    else
      CHECK(before == 1.f);
    for (int i = 0; i < 4; ++i) CHECK(after[i] == source[i]);
    for (int i = 4; i < 8; ++i) CHECK(after[i] == 0.f);
  }
}

TEST_CASE("__any_sync: 1 in every lane of a warp where some lane's predicate holds, else 0") {
  std::vector<int> any(64);
  REQUIRE(launch(1, 64, 0, [&] {
            const int tid = int(threadIdx.x);
            any[std::size_t(tid)] = __any_sync(0xffffffffu, tid == 37);  // one lane of warp 1
          }) == cudaSuccess);
  for (int t = 0; t < 64; ++t) CHECK(any[std::size_t(t)] == (t >= 32 ? 1 : 0));
}

TEST_CASE("__syncwarp orders a warp's shared-memory writes before its reads") {
  std::vector<int> shared(64, -1), seen(64);
  const emu::Stats before = emu::stats();
  REQUIRE(launch(1, 64, 0, [&] {
            const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
            shared[std::size_t(tid)] = tid;
            __syncwarp();  // without it, a lane reads its neighbour's slot before it is written
            seen[std::size_t(tid)] = shared[std::size_t(warp * 32 + (lane + 1) % 32)];
          }) == cudaSuccess);
  CHECK(emu::stats().warp_collectives - before.warp_collectives == 2);
  CHECK(emu::stats().block_barriers == before.block_barriers);
  for (int t = 0; t < 64; ++t) CHECK(seen[std::size_t(t)] == (t / 32) * 32 + (t % 32 + 1) % 32);
}

TEST_CASE("what a GPU would hang on or corrupt throws emulation_error") {
  std::vector<int> sink(64);
  SUBCASE("__syncthreads that only some threads reach") {
    CHECK_THROWS_AS(launch(1, 64, 0,
                           [&] {
                             if (threadIdx.x < 32) __syncthreads();
                           }),
                    emu::emulation_error);
  }
  SUBCASE("__syncthreads at two different lines") {
    CHECK_THROWS_AS(launch(1, 64, 0,
                           [&] {
                             if (threadIdx.x < 32) {
                               __syncthreads();
                             } else {
                               __syncthreads();
                             }
                           }),
                    emu::emulation_error);
  }
  SUBCASE("a shuffle half the warp skips") {
    CHECK_THROWS_AS(launch(1, 32, 0,
                           [&] {
                             if (threadIdx.x % 2)
                               sink[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
                           }),
                    emu::emulation_error);
  }
  SUBCASE("a __syncwarp half the warp skips") {
    CHECK_THROWS_AS(launch(1, 32, 0,
                           [&] {
                             if (threadIdx.x % 2) __syncwarp();
                           }),
                    emu::emulation_error);
  }
  SUBCASE("lanes in different collectives") {
    CHECK_THROWS_AS(launch(1, 32, 0,
                           [&] {
                             sink[threadIdx.x] = threadIdx.x % 2
                                                     ? __shfl_xor_sync(0xffffffffu, 1, 1)
                                                     : __reduce_min_sync(0xffffffffu, 1);
                           }),
                    emu::emulation_error);
  }
  SUBCASE("a partial lane mask") {
    CHECK_THROWS_AS(launch(1, 32, 0, [&] { sink[threadIdx.x] = __shfl_sync(0x0000ffffu, 1, 0); }),
                    emu::emulation_error);
  }
  SUBCASE("ldmatrix and cp.async outside dynamic shared memory, or misaligned") {
    std::uint32_t r[4];
    CHECK_THROWS_AS(
        launch(1, 32, 256, [&] { kd::ldmatrix_x4(r, kd::dynamic_shared_memory<char>() + 256); }),
        emu::emulation_error);
    CHECK_THROWS_AS(
        launch(1, 32, 256, [&] { kd::ldmatrix_x4(r, kd::dynamic_shared_memory<char>() + 8); }),
        emu::emulation_error);
    alignas(16) static const char global[32] = {};
    CHECK_THROWS_AS(
        launch(1, 32, 256,
               [&] { kd::cp_async_16(kd::dynamic_shared_memory<char>(), global + 4, true); }),
        emu::emulation_error);
  }
  SUBCASE("an exception inside a kernel reaches the caller") {
    CHECK_THROWS_AS(launch(2, 32, 0,
                           [&] {
                             if (blockIdx.x == 1 && threadIdx.x == 5)
                               throw std::runtime_error("from a kernel");
                             __syncthreads();
                           }),
                    std::runtime_error);
  }
}

TEST_CASE("cp.async.wait_group N leaves the N newest committed groups in flight") {
  alignas(16) const float source[8] = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f};
  float seen[3][2] = {};  // (s[0], s[4]) after wait_group 2, 1, 0
  REQUIRE(launch(1, 32, 64, [&] {
            float* s = kd::dynamic_shared_memory<float>();
            if (threadIdx.x == 0) {
              kd::cp_async_16(s, source, true);
              kd::cp_async_commit();  // group 0
              kd::cp_async_16(s + 4, source + 4, true);
              kd::cp_async_commit();  // group 1
              kd::cp_async_commit();  // group 2, empty
              kd::cp_async_wait_group<2>();
              seen[0][0] = s[0], seen[0][1] = s[4];
              kd::cp_async_wait_group<1>();
              seen[1][0] = s[0], seen[1][1] = s[4];
              kd::cp_async_wait_group<0>();
              seen[2][0] = s[0], seen[2][1] = s[4];
            }
          }) == cudaSuccess);
  CHECK(seen[0][0] == 1.f);
  CHECK(std::isnan(seen[0][1]));  // group 1 is one of the two newest: may be in flight
  CHECK(seen[1][0] == 1.f);
  CHECK(seen[1][1] == 5.f);
  CHECK(seen[2][1] == 5.f);
}

TEST_CASE("launch configurations a GPU refuses return its error") {
  const auto nothing = [] {};
  CHECK(emu::launch(dim3(0), dim3(32), 0, nothing) == cudaErrorInvalidConfiguration);
  CHECK(emu::launch(dim3(1, 65536), dim3(32), 0, nothing) == cudaErrorInvalidConfiguration);
  CHECK(emu::launch(dim3(1), dim3(1025), 0, nothing) == cudaErrorInvalidConfiguration);
  CHECK(emu::launch(dim3(1), dim3(32), 228 * 1024, nothing) == cudaErrorInvalidValue);
  CHECK(emu::launch(dim3(2, 3, 2), dim3(32, 2), 0, nothing) == cudaSuccess);
}

TEST_CASE("a missing barrier shows up as a result that depends on the schedule") {
  // Warp 0 writes a shared value that warp 1 reads; with the barrier every schedule agrees.
  const auto run = [](bool with_barrier, emu::Options o) {
    std::vector<int> out(64, 0);
    emu::options() = o;
    REQUIRE(launch(1, 64, 0, [&] {
              __shared__ int shared_value;
              if (threadIdx.x == 0) shared_value = 0;
              __syncthreads();
              if (threadIdx.x == 0) shared_value = 42;
              if (with_barrier) __syncthreads();
              out[threadIdx.x] = shared_value;
            }) == cudaSuccess);
    emu::options() = emu::Options{};
    return out;
  };
  const emu::Options forward{}, reverse{emu::Schedule::reverse, 1, emu::AsyncCopy::at_wait, false};
  CHECK(run(true, forward) == run(true, reverse));
  CHECK(run(false, forward) != run(false, reverse));
}

TEST_CASE("one warp at a time lets a warp run ahead, exposing races that lockstep hides") {
  // Warp 1 reads the slot between two collectives; warp 0 rewrites it after the second. In lockstep
  // no warp passes a collective before the others reach it, so warp 1 always reads first.
  const auto run = [](bool one_warp) {
    std::vector<int> out(64, 0);
    emu::options().one_warp_at_a_time = one_warp;
    REQUIRE(launch(1, 64, 0, [&] {
              __shared__ int slot;
              const int tid = int(threadIdx.x);
              if (tid == 0) slot = 1;
              __syncthreads();
              int x = __shfl_sync(0xffffffffu, tid, 0);
              const int seen = tid >= 32 ? slot : 0;
              x += __shfl_sync(0xffffffffu, x, 0);
              if (tid == 0) slot = 2 + x - x;
              out[std::size_t(tid)] = seen;
            }) == cudaSuccess);
    emu::options() = emu::Options{};
    return out;
  };
  CHECK(run(false)[32] == 1);
  CHECK(run(true)[32] == 2);
}

namespace {

// Sets the emulator's options for a scope, and restores the defaults also when a launch throws.
struct WithOptions {
  explicit WithOptions(const emu::Options& o) { emu::options() = o; }
  ~WithOptions() { emu::options() = emu::Options{}; }
};

// Every schedule, with cp.async landing at issue and at wait, in lockstep and one warp at a time.
std::vector<emu::Options> every_emulation() {
  std::vector<emu::Options> all;
  for (const emu::Schedule schedule :
       {emu::Schedule::forward, emu::Schedule::reverse, emu::Schedule::shuffled})
    for (const emu::AsyncCopy async_copy : {emu::AsyncCopy::at_issue, emu::AsyncCopy::at_wait})
      for (const bool one_warp : {false, true}) {
        emu::Options o;
        o.schedule = schedule, o.seed = 7, o.async_copy = async_copy,
        o.one_warp_at_a_time = one_warp;
        all.push_back(o);
      }
  return all;
}
std::string describe(const emu::Options& o) {
  return std::string(o.schedule == emu::Schedule::forward   ? "forward"
                     : o.schedule == emu::Schedule::reverse ? "reverse"
                                                            : "shuffled") +
         (o.async_copy == emu::AsyncCopy::at_issue ? ", copies land at issue" : ", at wait") +
         (o.one_warp_at_a_time ? ", one warp at a time" : "");
}

// The emulation_error `run` throws, or "" if it throws none.
std::string error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const emu::emulation_error& e) {
    return e.what();
  }
  return "";
}

std::uint64_t* barrier_at(std::size_t offset) {
  return reinterpret_cast<std::uint64_t*>(kd::dynamic_shared_memory<unsigned char>() + offset);
}

// A warp-specialised ring of two stages, as in the Hopper prefill: warp 0 copies tile `it` of
// `src` into stage it % 2 with cp.async, whose arrivals on full[stage] say it landed; warps 1-2
// wait on full, copy the stage to `dst` and arrive on empty, which the producer waits on before it
// refills the stage (unless `wait_empty` is false: the bug).
constexpr int kStages = 2, kTiles = 12, kTileInts = 128;  // a tile: 32 lanes x 16 bytes
constexpr std::size_t kRingSmem = 32 + sizeof(int) * kStages * kTileInts;
void ring_kernel(const int* src, int* dst, bool wait_empty) {
  std::uint64_t* full = barrier_at(0);                 // (kStages)
  std::uint64_t* empty = full + kStages;               // (kStages)
  int* stages = kd::dynamic_shared_memory<int>() + 8;  // (kStages, kTileInts)
  const int tid = int(threadIdx.x);
  if (tid == 0)
    for (int s = 0; s < kStages; ++s) {
      kd::mbarrier_init(&full[s], 32);   // one cp.async arrival per producer lane
      kd::mbarrier_init(&empty[s], 64);  // one arrival per consumer thread
    }
  __syncthreads();
  for (int it = 0; it < kTiles; ++it) {
    const int s = it % kStages;
    const unsigned parity = unsigned(it / kStages) % 2;
    if (tid < 32) {
      if (wait_empty) kd::mbarrier_wait(&empty[s], parity ^ 1);
      kd::cp_async_16(stages + s * kTileInts + 4 * tid, src + it * kTileInts + 4 * tid, true);
      kd::cp_async_mbarrier_arrive(&full[s]);
    } else {
      kd::mbarrier_wait(&full[s], parity);
      for (int i = tid - 32; i < kTileInts; i += 64)
        dst[it * kTileInts + i] = stages[s * kTileInts + i];
      kd::mbarrier_arrive(&empty[s]);
    }
  }
  __syncthreads();  // the producer gets here while the consumers still wait on full
}

std::vector<int> ring_source() {
  std::vector<int> src(kTiles * kTileInts);
  std::iota(src.begin(), src.end(), 1000);
  return src;
}

}  // namespace

TEST_CASE("an mbarrier ring fed by cp.async gives the same data under every emulation") {
  const std::vector<int> src = ring_source();
  for (const emu::Options& o : every_emulation()) {
    INFO(describe(o));
    std::vector<int> dst(src.size(), -1);
    const emu::Stats before = emu::stats();
    {
      WithOptions with(o);
      REQUIRE(launch(1, 96, kRingSmem, [&] { ring_kernel(src.data(), dst.data(), true); }) ==
              cudaSuccess);
    }
    CHECK(dst == src);
    CHECK(emu::stats().mbarrier_waits > before.mbarrier_waits);  // the consumers did wait
  }
}

TEST_CASE("an mbarrier ring whose producer refills a stage before it is free: exposed") {
  // Copies landing at issue complete a full phase twice before the consumers look, so they wait
  // forever (refused); landing late, a producer lane's later tiles overwrite its earlier ones
  // before the consumers read them (wrong data). No emulation gets the right data.
  const std::vector<int> src = ring_source();
  int right = 0, wrong = 0, refused = 0;
  for (const emu::Options& o : every_emulation()) {
    std::vector<int> dst(src.size(), -1);
    const std::string error = error_of([&] {
      WithOptions with(o);
      launch(1, 96, kRingSmem, [&] { ring_kernel(src.data(), dst.data(), false); });
    });
    if (!error.empty())
      ++refused;
    else
      ++(dst == src ? right : wrong);
  }
  CHECK(right == 0);
  CHECK(wrong > 0);
  CHECK(refused > 0);
}

TEST_CASE("mbarrier_wait(parity) returns once the phase of that parity has completed") {
  // Thread 0 inits a barrier for `expected` arrivals, makes `arrivals` of them and waits for
  // `parity`: how many waits blocked (none, or a throw: nobody else can complete the phase).
  const auto blocked_waits = [](unsigned expected, unsigned arrivals, unsigned parity) {
    const std::uint64_t before = emu::stats().mbarrier_waits;
    launch(1, 32, 16, [&] {
      std::uint64_t* barrier = barrier_at(8);
      if (threadIdx.x != 0) return;
      kd::mbarrier_init(barrier, expected);
      for (unsigned i = 0; i < arrivals; ++i) kd::mbarrier_arrive(barrier);
      kd::mbarrier_wait(barrier, parity);
    });
    return emu::stats().mbarrier_waits - before;
  };
  CHECK(blocked_waits(1, 0, 1) == 0);  // a fresh barrier: the phase "before" phase 0 is complete
  CHECK(blocked_waits(2, 2, 0) == 0);  // phase 0 completed
  CHECK(blocked_waits(1, 2, 1) == 0);  // phases 0 and 1 completed
  CHECK_THROWS_AS(blocked_waits(1, 0, 0), emu::emulation_error);  // phase 0 needs an arrival
  CHECK_THROWS_AS(blocked_waits(2, 1, 0), emu::emulation_error);  // one arrival of two
  CHECK_THROWS_AS(blocked_waits(1, 1, 1), emu::emulation_error);  // phase 1 needs another
}

TEST_CASE("mbarrier arrive and wait order plain shared writes; without the wait a reader races") {
  // Warp 1 writes a slot per lane and arrives; warp 0 waits, then reads warp 1's slots.
  const auto run = [](bool wait, const emu::Options& o) {
    std::vector<int> seen(32, 0);
    WithOptions with(o);
    REQUIRE(launch(1, 64, 16 + 32 * sizeof(int), [&] {
              std::uint64_t* barrier = barrier_at(0);
              int* slots = kd::dynamic_shared_memory<int>() + 4;  // (32)
              const int tid = int(threadIdx.x);
              if (tid == 0) kd::mbarrier_init(barrier, 32);
              __syncthreads();
              if (tid >= 32) {
                slots[tid - 32] = 100 + tid;
                kd::mbarrier_arrive(barrier);
              } else {
                if (wait) kd::mbarrier_wait(barrier, 0);
                seen[std::size_t(tid)] = slots[31 - tid];
              }
            }) == cudaSuccess);
    return seen;
  };
  for (const emu::Options& o : every_emulation()) {
    INFO(describe(o));
    const std::vector<int> seen = run(true, o);
    for (int lane = 0; lane < 32; ++lane) CHECK(seen[std::size_t(lane)] == 100 + 32 + 31 - lane);
  }
  CHECK(run(false, emu::Options{}) != run(true, emu::Options{}));  // warp 0 runs first: poison
}

TEST_CASE("cp.async.mbarrier.arrive covers the copies issued before it, and lands each once") {
  alignas(16) const float source[8] = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f};
  float first = 0.f, later = 0.f;
  WithOptions with(emu::Options{});  // copies land at wait
  REQUIRE(launch(1, 32, 48, [&] {
            std::uint64_t* barrier = barrier_at(0);
            float* s = kd::dynamic_shared_memory<float>() + 4;  // (8)
            if (threadIdx.x != 0) return;
            kd::mbarrier_init(barrier, 1);
            kd::cp_async_16(s, source, true);
            kd::cp_async_commit();
            kd::cp_async_wait_all();
            s[0] = -1.f;  // landed: the arrival must not land it again
            kd::cp_async_mbarrier_arrive(barrier);
            kd::cp_async_16(s + 4, source + 4, true);  // after the arrival: not covered
            kd::mbarrier_wait(barrier, 0);
            first = s[0], later = s[4];
          }) == cudaSuccess);
  CHECK(first == -1.f);
  CHECK(std::isnan(later));  // the 0xff poison: still in flight
}

TEST_CASE("mbarrier misuse throws: uninitialised or overwritten words, bad addresses and counts") {
  const auto on_barrier = [](const std::function<void(std::uint64_t*)>& use) {
    launch(1, 32, 64, [&] {
      if (threadIdx.x == 0) use(barrier_at(16));
    });
  };
  const std::string uninitialised = error_of([&] {
    on_barrier([](std::uint64_t* barrier) { kd::mbarrier_wait(barrier, 0); });  // the poison
  });
  CHECK(uninitialised.find("mbarrier.try_wait at shared offset 16, which holds no mbarrier") !=
        std::string::npos);
  CHECK_THROWS_AS(on_barrier([](std::uint64_t* barrier) { kd::mbarrier_arrive(barrier); }),
                  emu::emulation_error);
  CHECK_THROWS_AS(on_barrier([](std::uint64_t* barrier) { kd::cp_async_mbarrier_arrive(barrier); }),
                  emu::emulation_error);
  CHECK_THROWS_AS(on_barrier([](std::uint64_t* barrier) {
                    kd::mbarrier_init(barrier, 1);
                    *barrier = 0;  // overwritten by data
                    kd::mbarrier_arrive(barrier);
                  }),
                  emu::emulation_error);
  CHECK_THROWS_AS(
      on_barrier([](std::uint64_t* barrier) {
        kd::mbarrier_init(
            reinterpret_cast<std::uint64_t*>(reinterpret_cast<unsigned char*>(barrier) + 4), 1);
      }),
      emu::emulation_error);
  CHECK_THROWS_AS(on_barrier([](std::uint64_t* barrier) { kd::mbarrier_init(barrier + 6, 1); }),
                  emu::emulation_error);  // past the 64 bytes
  CHECK_THROWS_AS(on_barrier([](std::uint64_t* barrier) { kd::mbarrier_init(barrier, 0); }),
                  emu::emulation_error);
  CHECK_THROWS_AS(on_barrier([](std::uint64_t* barrier) {
                    kd::mbarrier_init(barrier, 1);
                    kd::mbarrier_wait(barrier, 2);
                  }),
                  emu::emulation_error);
  // An init with no __syncthreads before the others use it: fine only if thread 0 runs first.
  const auto init_then_arrive = [] {
    launch(1, 32, 16, [] {
      if (threadIdx.x == 0) kd::mbarrier_init(barrier_at(0), 32);
      kd::mbarrier_arrive(barrier_at(0));
    });
  };
  CHECK_NOTHROW(init_then_arrive());
  WithOptions reverse(emu::Options{emu::Schedule::reverse, 1, emu::AsyncCopy::at_wait, false});
  CHECK_THROWS_AS(init_then_arrive(), emu::emulation_error);
}

TEST_CASE("waiting for a phase nobody completes throws, naming the barrier, instead of hanging") {
  // Warp 0 arrives (32 of the 64 expected) and goes on to __syncthreads, which is no error while
  // warp 1 waits on the barrier; but nothing can go on then.
  const std::string error = error_of([] {
    launch(1, 64, 16, [] {
      std::uint64_t* barrier = barrier_at(8);
      if (threadIdx.x == 0) kd::mbarrier_init(barrier, 64);
      __syncthreads();
      if (threadIdx.x < 32) {
        kd::mbarrier_arrive(barrier);
        __syncthreads();
      } else {
        kd::mbarrier_wait(barrier, 0);
      }
    });
  });
  INFO(error);
  CHECK(error.find("block (0,0,0): no thread can go on") != std::string::npos);
  CHECK(
      error.find("thread 32 waits at the mbarrier at shared offset 8 for its phase of parity 0") !=
      std::string::npos);
}

TEST_CASE("named barriers sync a subset of warps while the others go on") {
  // Warps 0-1 exchange slots across bar.sync 1, 64; warps 2-3 shuffle and reach __syncthreads
  // while warps 0-1 still wait. Then all four warps pass bar.sync 3, 64 as two barriers of two.
  for (const emu::Options& o : every_emulation()) {
    INFO(describe(o));
    std::vector<int> seen(128, -1);
    WithOptions with(o);
    REQUIRE(launch(1, 128, 128 * sizeof(int), [&] {
              int* slots = kd::dynamic_shared_memory<int>();  // (128)
              const int tid = int(threadIdx.x);
              slots[tid] = 3 * tid;
              if (tid < 64) {
                kd::named_barrier_sync(1, 64);
                seen[std::size_t(tid)] = slots[63 - tid];
              } else {
                seen[std::size_t(tid)] = __shfl_xor_sync(0xffffffffu, tid, 1);
              }
              __syncthreads();
              kd::named_barrier_sync(3, 64);
            }) == cudaSuccess);
    for (int t = 0; t < 128; ++t) CHECK(seen[std::size_t(t)] == (t < 64 ? 3 * (63 - t) : t ^ 1));
  }
}

TEST_CASE("bar.arrive hands a turn between two warps: they alternate, and without the first pass neither goes") {
  // tensor_sm90_ws's ping-pong in small: warp w waits at barrier 2 + w for its turn, writes the
  // next entry of a shared log, and passes the turn by arriving at the other's barrier. Warp 1
  // passes first, unasked, so warp 0 starts, and warp 0 takes the last pass.
  constexpr int kRounds = 5;
  const auto alternate = [](bool first_pass) {
    return [=] {
      int* log = kd::dynamic_shared_memory<int>();  // (1 + 2 kRounds): the next slot, then entries
      const int warp = int(threadIdx.x) / 32;
      if (threadIdx.x == 0) log[0] = 1;
      __syncthreads();
      if (first_pass && warp == 1) kd::named_barrier_arrive(2, 64);
      for (int round = 0; round < kRounds; ++round) {
        kd::named_barrier_sync(2 + unsigned(warp), 64);
        if (threadIdx.x % 32 == 0) log[log[0]++] = warp;
        __syncwarp();
        kd::named_barrier_arrive(2 + unsigned(1 - warp), 64);
      }
      if (warp == 0) kd::named_barrier_sync(2, 64);  // warp 1's last pass
    };
  };
  for (const emu::Options& o : every_emulation()) {
    INFO(describe(o));
    WithOptions with(o);
    std::vector<int> log(1 + 2 * kRounds);
    REQUIRE(launch(1, 64, log.size() * sizeof(int), [&, body = alternate(true)] {
              body();
              __syncthreads();
              if (threadIdx.x == 0) std::memcpy(log.data(), kd::dynamic_shared_memory<int>(),
                                                log.size() * sizeof(int));
            }) == cudaSuccess);
    CHECK(log[0] == 1 + 2 * kRounds);
    for (int i = 1; i <= 2 * kRounds; ++i) CHECK(log[std::size_t(i)] == (i - 1) % 2);
    std::string error;
    try {
      launch(1, 64, log.size() * sizeof(int), alternate(false));
    } catch (const emu::emulation_error& e) {
      error = e.what();
    }
    CHECK(error.find("no thread can go on") != std::string::npos);
  }
}

TEST_CASE("bar.arrive misuse throws: a count other than the waiters', part of a warp, an arrival left over") {
  CHECK_NOTHROW(launch(1, 64, 0, [] { kd::named_barrier_arrive(2, 64); }));  // nobody waits
  CHECK_THROWS_AS(launch(1, 64, 0,
                         [] {
                           if (threadIdx.x < 32) kd::named_barrier_arrive(2, 64);
                         }),
                  emu::emulation_error);  // the block ends with 32 of 64 arrived
  CHECK_THROWS_AS(launch(1, 64, 0,
                         [] {
                           if (threadIdx.x < 32) kd::named_barrier_sync(2, 64);
                           else kd::named_barrier_arrive(2, 32);
                         }),
                  emu::emulation_error);
  CHECK_THROWS_AS(launch(1, 64, 0,
                         [] {
                           if (threadIdx.x < 32) kd::named_barrier_sync(2, 64);
                           else if (threadIdx.x < 48) kd::named_barrier_arrive(2, 64);
                         }),
                  emu::emulation_error);
  CHECK_THROWS_AS(launch(1, 64, 0, [] { kd::named_barrier_arrive(0, 64); }),
                  emu::emulation_error);  // __syncthreads'
}

TEST_CASE("named barrier misuse throws: mismatched counts, id 0, partial warps, too few threads") {
  const auto sync_all = [](unsigned threads, unsigned id, unsigned count) {
    launch(1, threads, 0, [=] { kd::named_barrier_sync(id, count); });
  };
  CHECK_NOTHROW(sync_all(128, 1, 128));
  CHECK_THROWS_AS(sync_all(128, 0, 128), emu::emulation_error);   // __syncthreads'
  CHECK_THROWS_AS(sync_all(128, 16, 128), emu::emulation_error);  // ids are 1 to 15
  CHECK_THROWS_AS(sync_all(128, 1, 48), emu::emulation_error);    // not whole warps
  CHECK_THROWS_AS(sync_all(128, 1, 160), emu::emulation_error);   // more than the block
  CHECK_THROWS_AS(launch(1, 128, 0, [] { kd::named_barrier_sync(1, threadIdx.x < 64 ? 64 : 128); }),
                  emu::emulation_error);  // two counts at one id
  CHECK_THROWS_AS(launch(1, 64, 0,
                         [] {
                           if (threadIdx.x < 32) kd::named_barrier_sync(1, 64);
                         }),
                  emu::emulation_error);  // warp 1 returns: never 64 threads
}
