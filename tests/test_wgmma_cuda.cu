// tests/test_wgmma_cuda.cu - the Hopper prefill's two products (attention_mma_sm90.cuh) alone,
// on one warpgroup: wgmma through the shared tiles and descriptors of wgmma_layout.hpp and the
// PTX of mma_sm90.cuh must equal a plain matmul. If tensor_sm90 fails on a GPU, this case
// separates "the layouts and descriptors are wrong" from "the kernel around them is".
//   S (64 x 64) = A B^T    A, B (64 x 32) K-major: two k-steps of wgmma m64n64k16, both from
//                          shared memory (Q K^T)
//   O (64 x 128) = P V     P (64 x 32) from registers (mma A fragments), V (32 x 128) MN-major:
//                          two k-steps of wgmma m64n128k16 (P V)
// Runs on a compute capability 9.0 GPU from a build with sm_90a code (elsewhere the kernel is
// empty: reported, and a failure where the build has 90a and the device is a Hopper), and
// through the kernel emulator as test_wgmma_cuda_emulated, where wgmma is emulated from the PTX
// ISA independently of wgmma_layout.hpp.
#include <cstdint>
#include <random>
#include <vector>

#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"
#include "ansan/cuda/detail/mma_sm90.cuh"
#include "ansan/cuda/detail/wgmma_layout.hpp"
#include "ansan/dtype.hpp"
#include "support/device_copies.hpp"
#include "support/gpu_main.hpp"
#include "support/sm90a_expected.hpp"

namespace wgmma_cuda_test {
namespace kd = ansan::cuda::detail;
using ansan::bf16, ansan::half, ansan::from_float, ansan::to_float;

// Tiles on 1024-byte boundaries found from shared_address(), as in the kernel; *ran = 1 once
// the products are stored (an empty body, outside sm_90a, leaves it 0).
template <class T>
__global__ void __launch_bounds__(128)
    wgmma_products_kernel(const T* a, const T* b, const T* p, const T* v, float* s_out,
                          float* o_out, int* ran) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(ANSAN_KERNEL_EMULATION)
  unsigned char* raw = kd::dynamic_shared_memory<unsigned char>();
  T* sA = reinterpret_cast<T*>(raw + (1024 - kd::shared_address(raw) % 1024) % 1024);
  T* sB = sA + 64 * 64;  // each tile takes one 64 x 64 column block (8 KiB)
  T* sV = sB + 64 * 64;  // 32 rows, two column blocks
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  for (int i = tid; i < 64 * 32; i += 128) {
    sA[kd::sw128_offset(i / 32, i % 32, 64)] = a[i];
    sB[kd::sw128_offset(i / 32, i % 32, 64)] = b[i];
  }
  for (int i = tid; i < 32 * 128; i += 128) sV[kd::sw128_offset(i / 128, i % 128, 32)] = v[i];
  kd::fence_proxy_async();
  __syncthreads();

  float s[8][4];
  const std::uint64_t a_desc = kd::k_major_descriptor(kd::shared_address(sA));
  const std::uint64_t b_desc = kd::k_major_descriptor(kd::shared_address(sB));
  kd::wgmma_fence();
  for (int ks = 0; ks < 2; ++ks)
    kd::wgmma_m64n64k16_ss<T>(s, kd::advance_descriptor(a_desc, kd::k_major_step_bytes(ks, 64)),
                              kd::advance_descriptor(b_desc, kd::k_major_step_bytes(ks, 64)),
                              ks > 0);
  kd::wgmma_commit();
  kd::wgmma_wait<0>();
  kd::fence_registers(s);

  std::uint32_t p_frag[2][4];
  for (int kk = 0; kk < 2; ++kk)
    for (int r = 0; r < 4; ++r) {
      const kd::RowCol lo = kd::mma_a_element(lane, 2 * r), hi = kd::mma_a_element(lane, 2 * r + 1);
      p_frag[kk][r] = kd::pack2<T>(to_float(p[(16 * warp + lo.row) * 32 + 16 * kk + lo.col]),
                                   to_float(p[(16 * warp + hi.row) * 32 + 16 * kk + hi.col]));
    }
  float o[16][4] = {};
  const std::uint64_t v_desc = kd::mn_major_descriptor(kd::shared_address(sV), 32);
  kd::wgmma_fence();
  for (int kk = 0; kk < 2; ++kk)
    kd::wgmma_m64nNk16_rs<T, 128>(
        o, p_frag[kk], kd::advance_descriptor(v_desc, kd::mn_major_step_bytes(kk)), true);
  kd::wgmma_commit();
  kd::wgmma_wait<0>();
  kd::fence_registers(o);
  kd::fence_registers(p_frag);
  for (int i = 0; i < 4; ++i) {
    const kd::RowCol c = kd::mma_c_element(lane, i);
    for (int nt = 0; nt < 8; ++nt) s_out[(16 * warp + c.row) * 64 + 8 * nt + c.col] = s[nt][i];
    for (int nt = 0; nt < 16; ++nt) o_out[(16 * warp + c.row) * 128 + 8 * nt + c.col] = o[nt][i];
  }
  if (tid == 0) *ran = 1;
#endif
}

template <class T>
void check_products(std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  const auto random = [&](std::size_t n) {
    std::vector<T> x(n);
    for (auto& e : x) e = from_float<T>(value(rng));
    return x;
  };
  const std::vector<T> a = random(64 * 32), b = random(64 * 32), p = random(64 * 32),
                       v = random(32 * 128);
  const auto d_a = ansan::test::to_device(a), d_b = ansan::test::to_device(b),
             d_p = ansan::test::to_device(p), d_v = ansan::test::to_device(v);
  const auto d_s = ansan::test::to_device(std::vector<float>(64 * 64, -1e30f));
  const auto d_o = ansan::test::to_device(std::vector<float>(64 * 128, -1e30f));
  const auto d_ran = ansan::test::to_device(std::vector<int>{0});
  const std::size_t smem = 1024 + 3 * 64 * 64 * sizeof(T);
  ANSAN_CUDA_THROW(kd::launch_kernel(wgmma_products_kernel<T>, {dim3(1), dim3(128), smem}, 0,
                                     d_a.data(), d_b.data(), d_p.data(), d_v.data(), d_s.data(),
                                     d_o.data(), d_ran.data()));
  if (ansan::test::to_host(d_ran)[0] == 0) {
    REQUIRE_MESSAGE(!ansan::test::sm90a_expected(),
                    "a Hopper GPU and an sm_90a build, but the kernel was empty");
    MESSAGE("no sm_90a code for this device: wgmma not run here");
    return;
  }
  const std::vector<float> s = ansan::test::to_host(d_s), o = ansan::test::to_host(d_o);
  const auto f = [](T x) { return double(to_float(x)); };
  int wrong = 0;
  for (int m = 0; m < 64; ++m) {
    for (int n = 0; n < 64; ++n) {
      double want = 0.0;
      for (int k = 0; k < 32; ++k)
        want += f(a[std::size_t(m * 32 + k)]) * f(b[std::size_t(n * 32 + k)]);
      if (s[std::size_t(m * 64 + n)] != doctest::Approx(want).epsilon(1e-5) && wrong++ < 8)
        FAIL_CHECK("S(", m, ", ", n, ") = ", s[std::size_t(m * 64 + n)], ", want ", want);
    }
    for (int n = 0; n < 128; ++n) {
      double want = 0.0;
      for (int k = 0; k < 32; ++k)
        want += f(p[std::size_t(m * 32 + k)]) * f(v[std::size_t(k * 128 + n)]);
      if (o[std::size_t(m * 128 + n)] != doctest::Approx(want).epsilon(1e-5) && wrong++ < 8)
        FAIL_CHECK("O(", m, ", ", n, ") = ", o[std::size_t(m * 128 + n)], ", want ", want);
    }
  }
  CHECK_MESSAGE(wrong == 0, wrong, " of ", 64 * 64 + 64 * 128, " elements wrong");
}

TEST_CASE("wgmma through wgmma_layout.hpp's tiles and descriptors equals a plain matmul") {
  check_products<bf16>(3);
  check_products<half>(4);
}

}  // namespace wgmma_cuda_test
