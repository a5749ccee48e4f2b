// The kernel emulator itself (kernel_emulator.hpp, sm80/sm90_instructions.hpp): before it is
// trusted with the attention kernels, it must compute what the hardware computes - shuffles, warp
// reductions, ldmatrix and mma.sync fed through the library's own fragment layouts
// (mma_layout.hpp) equal a plain matmul - and it must refuse or expose what a GPU would get
// wrong: divergent barriers, collectives some lanes miss, shared addresses out of range, data
// read before cp.async lands, and a missing barrier.
#include "emulator/kernel_emulator.hpp"  // first: it switches the kernel headers to host emulation

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "ansan/cuda/detail/kernel_launch.cuh"
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
