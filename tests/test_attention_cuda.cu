// The CUDA attention kernels (ansan/cuda/attention.cuh) against the float64 reference
// (reference_attention<double> on float64 copies of the same inputs), on fresh random inputs:
// every kernel (simt, tensor, decode) that supports a case runs it; every policy, GQA/MQA,
// head dims, ragged batches with empty sequences and n = 1, the edge layouts, chunked prefill,
// decode over compacted caches with slack rows (maybe_k_seq_start), strided (HND) views; one
// plan serving several layers (attention_plan / attention_run), also captured in a CUDA graph.
// Outputs and lse are poisoned with NaN before each run, so an unwritten element fails.
// Tolerance: relative error < 1e-5 for float (simt), < 1e-2 for fp16/bf16.
// "sanitizer: ..." cases are small and deterministic, for compute-sanitizer (tests/gpu/check.sh).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ansan/cuda/attention.cuh"
#include "ansan/reference_attention.hpp"
#include "support/attention_device_problem.hpp"
#include "support/attention_problems.hpp"
#include "support/gpu_main.hpp"
#include "support/random_layouts.hpp"
#include "support/sm90a_expected.hpp"

// A named namespace, not `using namespace ansan` at global scope: nvcc's generated stubs for
// the CUB kernels name ::cuda::std, which ansan::cuda would make ambiguous.
namespace attention_cuda_test {
using namespace ansan;
using ansan::cuda::AttentionKernel;

namespace {

// Under the kernel emulator (docs/emulator.md) this file runs on the CPU, where every warp
// collective costs microseconds: the same cases, with the long sequences and sweeps shortened.
#if defined(ANSAN_KERNEL_EMULATION)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif
int scaled(int on_gpu, int emulated) { return kEmulated ? emulated : on_gpu; }

using Shape = test::AttentionShape;
using Problem = test::AttentionProblem;
using test::chunked_problem;
using test::decode_problem;
using test::DeviceProblem;
using test::edge_batch;
using test::prefill_problem;
using test::shape;

// Runs `kernel` on the problem (unless the caller already did, after poisoning) and compares
// with the reference; reports the worst element.
template <class T>
void check_kernel(DeviceProblem<T>& dp, const test::Reference& ref, AttentionKernel kernel,
                  bool launch = true) {
  const Problem& pr = dp.pr;
  if (launch) {
    dp.poison_outputs();
    ansan::cuda::attention(dp.args(), 0, kernel);
  }
  const test::Comparison c = dp.compare_with(ref);
  INFO((std::string(ansan::cuda::kernel_name(kernel)) + " " + dtype_name<T>() + " " +
        test::describe(pr)),
       "; worst relative error ", c.worst, " at ", c.where);
  CHECK(c.worst < test::tolerance<T>());
}

// The prefill automatic picks: tensor_sm90 where the device and the build have it (an sm_90a
// build on an H100/H200), tensor elsewhere.
AttentionKernel expected_prefill_kernel() {
  return test::sm90a_expected() ? AttentionKernel::tensor_sm90 : AttentionKernel::tensor;
}

// tensor_sm90 and tensor_sm90_ws run where the device and the build have them (an sm_90a build
// on an H100/H200); tensor_sm90_ws where heads_q / heads_kv is even.
const std::vector<AttentionKernel> kEveryKernel = {
    AttentionKernel::simt,          AttentionKernel::tensor,      AttentionKernel::decode,
    AttentionKernel::decode_tensor, AttentionKernel::tensor_sm90, AttentionKernel::tensor_sm90_ws};

// Every kernel that supports the problem (or the listed ones).
template <class T>
void check_all(std::mt19937& rng, const Problem& pr,
               const std::vector<AttentionKernel>& kernels = kEveryKernel) {
  DeviceProblem<T> dp(rng, pr);
  const test::Reference ref = dp.reference();
  for (AttentionKernel k : kernels)
    if (ansan::cuda::detail::supports(k, dp.args())) check_kernel(dp, ref, k);
}

template <class T>
void prefill_sweep(std::uint32_t seed, const std::vector<int>& dims, int trials) {
  std::mt19937 rng(seed);
  const int heads[][2] = {{4, 4}, {4, 2}, {6, 1}};  // MHA, GQA, MQA
  int i = 0;
  for (const MaskPolicy& p : test::all_policies()) {
    for (int dim : dims) {
      check_all<T>(rng, prefill_problem(edge_batch(), p, shape(4, 2, dim), "edge layouts"));
      for (int trial = 0; trial < scaled(trials, 1); ++trial, ++i) {
        const AnchorLayout L =
            test::random_layout(rng, 1 + i % 4, i % 3 == 0 ? scaled(300, 150) : 90, 2.0 + i % 25);
        check_all<T>(rng, prefill_problem(L, p, shape(heads[i % 3][0], heads[i % 3][1], dim), "random prefill"));
      }
    }
  }
}

}  // namespace

// First, the smallest case each kernel can get wrong: one 64-token sequence, one head, one
// tile. If this fails for a kernel and simt passes, look at that kernel's fragment or lane
// arithmetic before its tile walk.
TEST_CASE("smoke: one sequence of 64 tokens, one head, every kernel and policy") {
  std::mt19937 rng(7);
  const std::vector<std::uint8_t> flags = test::random_flags(rng, 64, 6.0);
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 64});
  for (const MaskPolicy& p : test::all_policies()) {
    check_all<bf16>(rng, prefill_problem(L, p, shape(1, 1, 64), "smoke"));
    check_all<float>(rng, prefill_problem(L, p, shape(1, 1, 64), "smoke"));
  }
}

TEST_CASE("simt float32 equals the float64 reference: every policy, ragged batches, edge layouts") {
  prefill_sweep<float>(101, {64, 40, 256}, 2);
}

TEST_CASE("fp16 and bf16 prefill, every kernel: every policy, GQA/MQA, head dims 64 and 128") {
  prefill_sweep<bf16>(202, {64, 128}, 3);
  prefill_sweep<half>(203, {64, 128}, 2);
}

TEST_CASE("head_dim 256: tensor prefill (Q fragments re-read from shared), chunked, decode") {
  std::mt19937 rng(252);
  for (const MaskPolicy& p : test::all_policies()) {
    check_all<bf16>(rng, prefill_problem(edge_batch(), p, shape(2, 1, 256), "edge layouts"));
    const AnchorLayout L = test::random_layout(rng, 3, scaled(200, 90), 7.0);
    check_all<half>(rng, prefill_problem(L, p, shape(4, 2, 256), "random prefill"));
    check_all<bf16>(rng, chunked_problem(rng, L, p, shape(2, 2, 256)));
    check_all<bf16>(rng, decode_problem(rng, L, p, shape(8, 2, 256), 2));
  }
}

TEST_CASE("odd head dims and unaligned views fall back to simt and stay exact") {
  std::mt19937 rng(303);
  for (const MaskPolicy& p : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 3, 70, 6.0);
    check_all<bf16>(rng, prefill_problem(L, p, shape(4, 2, 72), "head_dim 72"));
    Shape padded = shape(2, 1, 64);
    padded.q_row_pad = 3;  // q rows not 16-byte aligned: only simt may take it
    check_all<bf16>(rng, prefill_problem(L, p, padded, "q head stride 67"));
  }
}

TEST_CASE("strided views: head-major K/V and padded q rows, without lse") {
  std::mt19937 rng(404);
  for (const MaskPolicy& p : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 3, scaled(150, 80), 9.0);
    Shape s = shape(8, 2, 128);
    s.kv_head_major = true;
    s.q_row_pad = 8;
    s.with_lse = false;
    check_all<bf16>(rng, prefill_problem(L, p, s, "HND K/V, q head stride 136"));
    check_all<float>(rng, prefill_problem(L, p, s, "HND K/V, q head stride 136"));
  }
}

TEST_CASE("chunked prefill: query rows at positions p..n-1 over the whole prefix") {
  std::mt19937 rng(505);
  for (const MaskPolicy& p : test::all_policies())
    for (int trial = 0; trial < scaled(3, 1); ++trial) {
      const AnchorLayout L = test::random_layout(rng, 4, scaled(200, 100), 3.0 + 7 * trial);
      check_all<bf16>(rng, chunked_problem(rng, L, p, shape(8, 2, 64)));
      check_all<half>(rng, chunked_problem(rng, L, p, shape(4, 4, 128)));
      check_all<float>(rng, chunked_problem(rng, L, p, shape(2, 1, 32)));
    }
}

TEST_CASE("decode over compacted caches with slack rows: split-KV and merge, every policy") {
  std::mt19937 rng(606);
  // Emulated, the prefill kernels sit out the 32-head problems, and tensor_sm90_ws all of them:
  // the wgmma emulation over caches this long costs many minutes under the sanitizers. They
  // take the MQA problems here and decode shapes in the emulated soak, and all of them on a GPU.
  std::vector<AttentionKernel> kernels = kEveryKernel, kernels_32_heads = kEveryKernel;
  if (kEmulated) {
    kernels.erase(std::remove(kernels.begin(), kernels.end(), AttentionKernel::tensor_sm90_ws),
                  kernels.end());
    kernels_32_heads = {AttentionKernel::simt, AttentionKernel::decode,
                        AttentionKernel::decode_tensor};
  }
  for (const MaskPolicy& p : test::all_policies()) {
    for (int trial = 0; trial < 4; ++trial) {
      const AnchorLayout L = test::random_layout(
          rng, 1 + 5 * trial, trial == 3 ? scaled(3000, 300) : scaled(400, 120), 4.0 + 6 * trial);
      check_all<bf16>(rng, decode_problem(rng, L, p, shape(32, 8, 128), 1), kernels_32_heads);
      // MQA, a few rows
      check_all<half>(rng, decode_problem(rng, L, p, shape(8, 1, 64), 3), kernels);
      check_all<float>(rng, decode_problem(rng, L, p, shape(4, 2, 64), 2));
    }
    check_all<bf16>(rng, decode_problem(rng, edge_batch(), p, shape(4, 2, 64), 2), kernels);
  }
}

TEST_CASE("long sequences: many retained and local tiles per query tile") {
  std::mt19937 rng(707);
  for (const MaskPolicy& p : {MaskPolicy::anllm(), MaskPolicy::sepllm(4, 64), MaskPolicy::causal()}) {
    const int n = scaled(2500, 500);
    const AnchorLayout longest =
        build_layout_from_flags(test::random_flags(rng, n, 20.0), std::vector<std::int32_t>{0, n});
    check_all<bf16>(rng, prefill_problem(longest, p, shape(2, 1, 128), "n = " + std::to_string(n)),
                    {AttentionKernel::simt, AttentionKernel::tensor, AttentionKernel::tensor_sm90,
                     AttentionKernel::tensor_sm90_ws});
  }
}

TEST_CASE("rows that see no key get O = 0 and lse = -inf, on every kernel") {
  std::mt19937 rng(808);
  const Problem pr = test::no_visible_key_problem();
  check_all<bf16>(rng, pr);
  check_all<float>(rng, pr);
}

TEST_CASE("empty batches and empty query sets run no kernel and write nothing") {
  std::mt19937 rng(909);
  const AnchorLayout L = build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0, 0, 0});
  Problem pr = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "two empty sequences");
  DeviceProblem<bf16> dp(rng, pr);
  for (AttentionKernel k : kEveryKernel)
    if (ansan::cuda::detail::supports(k, dp.args()))
      CHECK_NOTHROW(ansan::cuda::attention(dp.args(), 0, k));
  // q with no heads (heads_q = 0 passes heads_q % heads_kv == 0): nothing to launch either
  Problem no_heads = prefill_problem(test::random_layout(rng, 2, 20, 4.0), MaskPolicy::anllm(), shape(0, 2, 64),
                                     "no query heads");
  DeviceProblem<bf16> dh(rng, no_heads);
  for (AttentionKernel k : kEveryKernel)
    if (ansan::cuda::detail::supports(k, dh.args()))
      CHECK_NOTHROW(ansan::cuda::attention(dh.args(), 0, k));
}

TEST_CASE(
    "kernel choice: a decode kernel for a few rows per sequence, tensor (tensor_sm90 on a Hopper) "
    "for prefill, simt otherwise") {
  std::mt19937 rng(1010);
  const AnchorLayout L = test::random_layout(rng, 4, 100, 5.0);
  Problem prefill = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "prefill");
  DeviceProblem<bf16> dp(rng, prefill);
  if (L.total_tokens() > 16)
    CHECK(ansan::cuda::choose_kernel(dp.args()) == expected_prefill_kernel());
  for (int dim : {64, 128, 256}) {
    Problem decode = decode_problem(rng, L, MaskPolicy::anllm(), shape(4, 2, dim), 1);
    DeviceProblem<bf16> dd(rng, decode);
    CHECK(ansan::cuda::choose_kernel(dd.args()) == AttentionKernel::decode_tensor);
  }
  DeviceProblem<float> df(rng, prefill);
  CHECK(ansan::cuda::choose_kernel(df.args()) == AttentionKernel::simt);
}

TEST_CASE("tensor_sm90 runs where the device and the build have it, and is then the prefill") {
  std::mt19937 rng(1012);
  const AnchorLayout L = test::random_layout(rng, 2, 100, 5.0);
  Problem prefill = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "prefill");
  DeviceProblem<bf16> dp(rng, prefill);
  CHECK(ansan::cuda::detail::supports(AttentionKernel::tensor_sm90, dp.args()) ==
        test::sm90a_expected());
  CHECK(ansan::cuda::choose_kernel(dp.args()) == expected_prefill_kernel());
}

TEST_CASE("tensor_sm90_ws: only asked for by name, and only for an even heads_q / heads_kv") {
  std::mt19937 rng(1013);
  const AnchorLayout L = test::random_layout(rng, 2, 100, 5.0);
  const Problem gqa = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "GQA 2");
  const Problem mha_problem = prefill_problem(L, MaskPolicy::anllm(), shape(4, 4, 128), "MHA");
  DeviceProblem<bf16> pairs(rng, gqa), mha(rng, mha_problem);  // they keep references
  CHECK(ansan::cuda::detail::supports(AttentionKernel::tensor_sm90_ws, pairs.args()) ==
        test::sm90a_expected());
  CHECK_FALSE(ansan::cuda::detail::supports(AttentionKernel::tensor_sm90_ws, mha.args()));
  CHECK_THROWS_AS(ansan::cuda::attention(mha.args(), 0, AttentionKernel::tensor_sm90_ws),
                  std::invalid_argument);
  CHECK(ansan::cuda::choose_kernel(pairs.args()) != AttentionKernel::tensor_sm90_ws);
}

TEST_CASE("bad input throws std::invalid_argument before anything is written") {
  std::mt19937 rng(1111);
  const AnchorLayout L = test::random_layout(rng, 2, 50, 5.0);
  Problem pr = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "bad input");
  DeviceProblem<bf16> dp(rng, pr);
  const auto expect_throw = [&](AttentionArgs<bf16> a, const char* needle,
                                AttentionKernel k = AttentionKernel::automatic) {
    test::poison(dp.d_out);
    try {
      ansan::cuda::attention(a, 0, k);
      FAIL("no exception for ", needle);
    } catch (const std::invalid_argument& e) {
      INFO("message: ", e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
    CHECK(test::still_poisoned(dp.d_out));
  };
  {
    std::vector<bf16> host_q(dp.q);
    auto a = dp.args();
    a.q.data = host_q.data();  // a host pointer
    expect_throw(a, "q.data");
  }
  {
    std::vector<std::int32_t> host_pos(pr.k_pos);
    auto a = dp.args();
    a.k_pos = host_pos.data();
    expect_throw(a, "k_pos");
  }
  {
    auto a = dp.args();
    a.k.shape[2] = 32;
    a.v.shape[2] = 32;
    expect_throw(a, "k.shape[2]");
  }
  {
    auto a = dp.args();
    a.softmax_scale = 0.f;
    expect_throw(a, "softmax_scale");
  }
  {
    auto a = dp.args();
    a.q.stride[1] = 67, a.q.shape[0] = 1;  // misaligned rows: the tensor kernel cannot take them
    a.out.shape[0] = 1;
    a.lse.data = nullptr;
    std::vector<std::int32_t> cu{0, 1, 1};
    const auto d_cu = test::to_device(cu);
    a.cu_seqlens_q = d_cu.data();
    expect_throw(a, "kernel", AttentionKernel::tensor);
  }
  {
    const auto bad_cu = test::to_device(std::vector<std::int32_t>{0, 7, 3});  // decreasing offsets
    auto a = dp.args();
    a.cu_seqlens_q = bad_cu.data();
    expect_throw(a, "cu_seqlens_q");
  }
  {
    std::vector<std::int32_t> unsorted(pr.k_pos);
    if (unsorted.size() >= 2) std::swap(unsorted[0], unsorted[1]);
    const auto d_unsorted = test::to_device(unsorted);
    auto a = dp.args();
    a.k_pos = d_unsorted.data();
    if (L.seq_len(0) >= 2) expect_throw(a, "k_pos");
  }
  {
    auto a = dp.args();
    a.q.shape[2] = a.k.shape[2] = a.v.shape[2] = a.out.shape[2] = 320;  // head_dim beyond 256
    expect_throw(a, "head_dim");
  }
}

TEST_CASE("attention_forward follows CUB's temp-storage protocol") {
  std::mt19937 rng(1212);
  const AnchorLayout L = test::random_layout(rng, 3, 120, 8.0);
  Problem pr = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "forward protocol");
  DeviceProblem<bf16> dp(rng, pr);
  const test::Reference ref = dp.reference();
  for (AttentionKernel k : kEveryKernel) {
    std::size_t bytes = 0;
    REQUIRE(ansan::cuda::attention_forward(nullptr, bytes, dp.args(), 0, k) == cudaSuccess);
    CHECK(bytes >= 1);
    const ansan::cuda::detail::DeviceBuffer<char> temp(bytes);
    std::size_t too_small = bytes - 1;
    CHECK(ansan::cuda::attention_forward(temp.data(), too_small, dp.args(), 0, k) ==
          cudaErrorInvalidValue);
    dp.poison_outputs();
    REQUIRE(ansan::cuda::attention_forward(temp.data(), bytes, dp.args(), 0, k) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    check_kernel(dp, ref, k, false);  // what attention_forward wrote
    check_kernel(dp, ref, k);         // and the host convenience agrees
  }
}

// `a`'s tensors on the metadata arrays of `from` (equal contents): how the layers of one batch
// share their positions and anchors, so that one plan serves them all.
AttentionArgs<bf16> sharing_metadata(AttentionArgs<bf16> a, const AttentionArgs<bf16>& from) {
  a.cu_seqlens_q = from.cu_seqlens_q, a.cu_seqlens_k = from.cu_seqlens_k;
  a.maybe_k_seq_start = from.maybe_k_seq_start;
  a.q_pos = from.q_pos, a.q_seg_start = from.q_seg_start, a.q_is_anchor = from.q_is_anchor;
  a.k_pos = from.k_pos, a.k_is_anchor = from.k_is_anchor;
  return a;
}

// Two layers of one batch: random tensors of their own on one set of metadata arrays, each
// with its float64 reference. (Built in place: the layers refer to `pr`.)
struct TwoLayers {
  Problem pr;
  DeviceProblem<bf16> layer0, layer1;
  test::Reference ref0, ref1;
  AttentionArgs<bf16> args0, args1;
  TwoLayers(std::mt19937& rng, Problem problem)
      : pr(std::move(problem)),
        layer0(rng, pr),
        layer1(rng, pr),
        ref0(layer0.reference()),
        ref1(layer1.reference()),
        args0(layer0.args()),
        args1(sharing_metadata(layer1.args(), args0)) {}
};

// An inference engine plans once per batch and runs every layer on that plan (FlashInfer's
// plan / run): each run equals its own layer's reference, the plan survives any number of runs,
// and a call it was not built for is refused, naming the argument, before anything is written.
TEST_CASE("attention_plan once, attention_run per layer, and a call the plan does not fit refused") {
  std::mt19937 rng(2402);
  const AnchorLayout L = test::random_layout(rng, 3, scaled(200, 120), 8.0);
  for (const MaskPolicy& policy : {MaskPolicy::anllm(), MaskPolicy::sepllm(2, 24)}) {
    TwoLayers two(rng, prefill_problem(L, policy, shape(4, 2, 128), "plan / run"));
    const Problem& pr = two.pr;
    DeviceProblem<bf16>& layer0 = two.layer0;
    DeviceProblem<bf16>& layer1 = two.layer1;
    const AttentionArgs<bf16>& args0 = two.args0;
    const AttentionArgs<bf16>& args1 = two.args1;
    for (AttentionKernel k : kEveryKernel) {
      if (!ansan::cuda::detail::supports(k, args0)) continue;  // tensor_sm90*: an sm_90a Hopper
      const std::string what =
          std::string(ansan::cuda::kernel_name(k)) + ", " + policy_name(policy);
      INFO(what);
      ansan::cuda::AttentionPlan<bf16> plan;
      std::size_t bytes = 0;
      REQUIRE(ansan::cuda::attention_plan(nullptr, bytes, args0, plan, 0, k) == cudaSuccess);
      CHECK(plan.mismatch(args0) != nullptr);  // a size query builds nothing
      const ansan::cuda::detail::DeviceBuffer<char> temp(bytes);
      REQUIRE(ansan::cuda::attention_plan(temp.data(), bytes, args0, plan, 0, k) == cudaSuccess);
      CHECK(plan.kernel == k);
      for (int round = 0; round < 2; ++round) {
        layer0.poison_outputs();
        REQUIRE(ansan::cuda::attention_run(plan, args0, 0) == cudaSuccess);
        layer1.poison_outputs();
        REQUIRE(ansan::cuda::attention_run(plan, args1, 0) == cudaSuccess);
        REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
        check_kernel(layer0, two.ref0, k, false);
        check_kernel(layer1, two.ref1, k, false);
      }

      const auto expect_refused = [&](const AttentionArgs<bf16>& a, const std::string& name) {
        const char* mismatch = plan.mismatch(a);
        REQUIRE(mismatch != nullptr);
        CHECK(std::string(mismatch) == name);
        test::poison(layer1.d_out);
        CHECK(ansan::cuda::attention_run(plan, a, 0) == cudaErrorInvalidValue);
        REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
        CHECK(test::still_poisoned(layer1.d_out));
      };
      expect_refused(layer1.args(), "cu_seqlens_q");  // equal metadata, but another copy of it
      AttentionArgs<bf16> a = args1;
      a.policy = MaskPolicy::causal();
      expect_refused(a, "policy");
      a = args1;
      a.batch = pr.batch - 1;
      expect_refused(a, "batch");
      a = args1;
      a.k_pos = layer1.d_k_pos.data();
      expect_refused(a, "k_pos");
      a = args1;
      a.q.shape[2] = a.k.shape[2] = a.v.shape[2] = a.out.shape[2] = 64;
      expect_refused(a, "q.shape[2] (head_dim)");
      if (k != AttentionKernel::simt) {
        a = args1;
        a.out.data += 1;  // rows no longer 16-byte aligned
        expect_refused(a, "q, k, v or out (rows 16-byte aligned, as the planned kernel needs)");
      }
      CHECK(std::string(ansan::cuda::AttentionPlan<bf16>{}.mismatch(args0)) ==
            "plan (not built by attention_plan)");
    }
  }
}

// PlannedAttention: attention()'s checks once, at the plan; each call then checks the tensors
// and that the plan fits them, and throws naming the argument before anything is written.
TEST_CASE("PlannedAttention validates once, then checks each call against its plan") {
  std::mt19937 rng(2404);
  const AnchorLayout L = test::random_layout(rng, 2, scaled(150, 90), 6.0);
  TwoLayers two(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "planned"));
  const Problem& pr = two.pr;
  DeviceProblem<bf16>& layer0 = two.layer0;
  DeviceProblem<bf16>& layer1 = two.layer1;
  const AttentionArgs<bf16>& args0 = two.args0;
  const AttentionArgs<bf16>& args1 = two.args1;
  const auto expect_refused = [&](auto&& call, const char* needle) {
    test::poison(layer1.d_out);
    try {
      call();
      FAIL("no exception for ", needle);
    } catch (const std::invalid_argument& e) {
      INFO("message: ", e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(test::still_poisoned(layer1.d_out));
  };

  const ansan::cuda::PlannedAttention<bf16> attend(args0);
  CHECK(attend.plan().kernel == ansan::cuda::choose_kernel(args0));
  for (int round = 0; round < 2; ++round) {
    layer0.poison_outputs();
    layer1.poison_outputs();
    attend(args0);
    attend(args1);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    check_kernel(layer0, two.ref0, attend.plan().kernel, false);
    check_kernel(layer1, two.ref1, attend.plan().kernel, false);
  }
  // Each call: the tensors, and the plan's fit.
  expect_refused([&] { attend(layer1.args()); }, "cu_seqlens_q");  // its own copy of the metadata
  std::vector<bf16> host_q(layer1.q);
  AttentionArgs<bf16> a = args1;
  a.q.data = host_q.data();  // a host pointer
  expect_refused([&] { attend(a); }, "q.data");
  a = args1;
  a.policy = MaskPolicy::anllm_legacy();
  expect_refused([&] { attend(a); }, "policy");
  // The constructor: everything attention() checks, the metadata's contents included.
  REQUIRE(L.seq_len(0) >= 2);
  std::vector<std::int32_t> unsorted(pr.k_pos);
  std::swap(unsorted[0], unsorted[1]);
  const auto d_unsorted = test::to_device(unsorted);
  a = args1;
  a.k_pos = a.q_pos = d_unsorted.data();
  expect_refused([&] { ansan::cuda::PlannedAttention<bf16>{a}; }, "k_pos");
}

// An engine captures its layers' attention into a CUDA graph once and replays it every step:
// attention_run must be capturable (no synchronisation, allocation or host copy inside it; the
// emulator refuses those during a capture as a GPU does), record its work rather than run it,
// and give each layer's reference on every replay. The plan is built outside the capture.
TEST_CASE("attention_run captured in a CUDA graph, replayed") {
  std::mt19937 rng(2403);
  const AnchorLayout L = test::random_layout(rng, 3, scaled(200, 120), 8.0);
  TwoLayers two(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "graph capture"));
  DeviceProblem<bf16>& layer0 = two.layer0;
  DeviceProblem<bf16>& layer1 = two.layer1;
  const AttentionArgs<bf16>& args0 = two.args0;
  const AttentionArgs<bf16>& args1 = two.args1;
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  for (AttentionKernel k : kEveryKernel) {
    if (!ansan::cuda::detail::supports(k, args0)) continue;  // tensor_sm90*: an sm_90a Hopper
    const std::string what = ansan::cuda::kernel_name(k);
    INFO(what);
    ansan::cuda::AttentionPlan<bf16> plan;
    std::size_t bytes = 0;
    REQUIRE(ansan::cuda::attention_plan(nullptr, bytes, args0, plan, stream, k) == cudaSuccess);
    const ansan::cuda::detail::DeviceBuffer<char> temp(bytes);
    REQUIRE(ansan::cuda::attention_plan(temp.data(), bytes, args0, plan, stream, k) ==
            cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);

    layer0.poison_outputs();
    layer1.poison_outputs();
    cudaGraph_t graph = nullptr;
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    const cudaError_t run0 = ansan::cuda::attention_run(plan, args0, stream);
    const cudaError_t run1 = ansan::cuda::attention_run(plan, args1, stream);
    const cudaError_t captured = cudaStreamEndCapture(stream, &graph);
    CHECK(run0 == cudaSuccess);
    CHECK(run1 == cudaSuccess);
    REQUIRE(captured == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(test::still_poisoned(layer0.d_out));  // captured, not run
    CHECK(test::still_poisoned(layer1.d_out));

    cudaGraphExec_t exec = nullptr;
    REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
    for (int replay = 0; replay < 2; ++replay) {
      layer0.poison_outputs();
      layer1.poison_outputs();
      REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
      REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
      check_kernel(layer0, two.ref0, k, false);
      check_kernel(layer1, two.ref1, k, false);
    }
    CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  }
  CHECK(cudaStreamDestroy(stream) == cudaSuccess);
}

// Random problems (test::random_problem) in a random dtype through every kernel that takes
// each: 40 by default; tests/gpu/check.sh sets ANSAN_SOAK_SECONDS for a longer run on the GPU,
// ANSAN_SOAK_SEED=N replays problem N alone.
TEST_CASE("soak: random problems through every kernel that takes them") {
  const int problems = test::soak(40, [](std::uint32_t seed) {
    std::mt19937 rng(seed);
    CAPTURE(seed);
    const unsigned dtype = rng() % 3;
    const Problem pr = test::random_problem(rng);
    if (dtype == 0) check_all<bf16>(rng, pr);
    if (dtype == 1) check_all<half>(rng, pr);
    if (dtype == 2) check_all<float>(rng, pr);
  });
  MESSAGE(problems, " random problems");
}

// Small and deterministic: run under compute-sanitizer by tests/gpu/check.sh.
TEST_CASE("sanitizer: simt") {
  std::mt19937 rng(1);
  const AnchorLayout L = test::random_layout(rng, 3, 40, 5.0);
  check_all<bf16>(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "sanitizer"), {AttentionKernel::simt});
}
TEST_CASE("sanitizer: tensor") {
  std::mt19937 rng(2);
  const AnchorLayout L = test::random_layout(rng, 3, 150, 5.0);
  for (int dim : {128, 256})  // three blocks per SM at 168 registers; 96 KiB of shared memory
    check_all<bf16>(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, dim), "sanitizer"),
                    {AttentionKernel::tensor});
}
TEST_CASE("sanitizer: tensor_sm90") {
  if (!test::sm90a_expected()) {
    MESSAGE("tensor_sm90 needs an sm_90a build on a compute capability 9.0 GPU: not run here");
    return;
  }
  std::mt19937 rng(4);
  const AnchorLayout L = test::random_layout(rng, 3, 150, 5.0);
  for (int dim : {64, 128})
    check_all<bf16>(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, dim), "sanitizer"),
                    {AttentionKernel::tensor_sm90});
}
TEST_CASE("sanitizer: tensor_sm90_ws") {
  if (!test::sm90a_expected()) {
    MESSAGE("tensor_sm90_ws needs an sm_90a build on a compute capability 9.0 GPU: not run here");
    return;
  }
  std::mt19937 rng(5);
  const AnchorLayout L = test::random_layout(rng, 3, 150, 5.0);
  for (int dim : {64, 128})
    check_all<bf16>(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, dim), "sanitizer"),
                    {AttentionKernel::tensor_sm90_ws});
}
TEST_CASE("sanitizer: decode") {
  std::mt19937 rng(3);
  const AnchorLayout L = test::random_layout(rng, 4, 300, 5.0);
  for (int dim : {128, 256})
    check_all<bf16>(rng, decode_problem(rng, L, MaskPolicy::anllm(), shape(8, 2, dim), 2),
                    {AttentionKernel::decode, AttentionKernel::decode_tensor});
}

}  // namespace attention_cuda_test
