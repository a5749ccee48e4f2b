// The CUDA attention kernels - simt, tensor-core (mma.sync / ldmatrix / cp.async) and split-KV
// decode with its merge - run on the CPU through tests/emulator/kernel_emulator.hpp, against the
// float64 reference on fresh random inputs, through the public entry point ansan::cuda::attention
// (validation, plan, launchers): every policy, GQA/MQA, ragged batches with empty sequences and
// n = 1, the edge layouts, chunked prefill, decode over compacted caches with slack rows and
// several split counts, head-major K/V and padded q views. Outputs are poisoned with NaN first.
//
// What the GPU test (tests/test_attention_cuda.cu, also built as test_attention_cuda_emulated)
// cannot do: runs alternate between warps in lockstep and one warp running ahead to its next
// barrier, and the same launch under reversed and shuffled thread orders, with cp.async data
// landing early and late, must give bit-identical results (a missing barrier would not).
// This checks the kernels' logic, not that they run on a GPU (tests/gpu/check.sh does that).
#include "emulator/kernel_emulator.hpp"  // first: it switches the CUDA headers to host emulation

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ansan/cuda/attention.cuh"
#include "support/attention_device_problem.hpp"
#include "support/attention_problems.hpp"
#include "support/random_layouts.hpp"

namespace {

using namespace ansan;
using ansan::cuda::AttentionKernel;
using test::AttentionProblem;
using test::DeviceProblem;
using test::shape;
namespace emu = ansan::emulator;

constexpr AttentionKernel kSimt = AttentionKernel::simt, kTensor = AttentionKernel::tensor,
                          kDecode = AttentionKernel::decode,
                          kDecodeTensor = AttentionKernel::decode_tensor,
                          kTensorSm90 = AttentionKernel::tensor_sm90,
                          kTensorSm90Ws = AttentionKernel::tensor_sm90_ws;
const std::vector<AttentionKernel> kEveryKernel = {kSimt,         kTensor,     kDecode,
                                                   kDecodeTensor, kTensorSm90, kTensorSm90Ws};

// Runs cycle through four emulations: warps in lockstep (forward order) or one warp at a time
// (reverse order), with cp.async data landing at its wait_group (or as late as an mbarrier
// waiter allows) or as soon as it is issued (a copy that overwrites a tile other warps still
// read then shows). The persistent kernel (tensor_sm90_ws) runs on 1 to 4 multiprocessors, so
// its blocks take several work items each.
template <class T>
void check(AttentionKernel kernel, DeviceProblem<T>& dp, const test::Reference& ref) {
  static int runs = 0;
  const emu::Stats before = emu::stats();
  const emu::Options defaults = emu::options();
  const int emulation = runs++ % 4;
  if (emulation % 2)
    emu::options().schedule = emu::Schedule::reverse, emu::options().one_warp_at_a_time = true;
  if (emulation >= 2) emu::options().async_copy = emu::AsyncCopy::at_issue;
  const emu::Device device = emu::device();
  if (kernel == kTensorSm90Ws && device.multiprocessors == emu::Device{}.multiprocessors)
    emu::device().multiprocessors = 1 + emulation;  // unless the test chose a count
  dp.poison_outputs();
  ansan::cuda::attention(dp.args(), 0, kernel);
  emu::options() = defaults;
  emu::device() = device;
  const test::Comparison c = dp.compare_with(ref);
  INFO((std::string(ansan::cuda::kernel_name(kernel)) + " " + dtype_name<T>() + " " +
        test::describe(dp.pr)),
       "; worst relative error ", c.worst, " at ", c.where);
  CHECK(c.worst < test::tolerance<T>());
  if (dp.pr.total_q() > 0 && dp.pr.shape.heads_q > 0) {
    CHECK(emu::stats().blocks > before.blocks);  // the kernel ran
    const bool sees_a_key =
        std::any_of(ref.lse.begin(), ref.lse.end(), [](float x) { return std::isfinite(x); });
    if ((kernel == kTensor || kernel == kDecodeTensor || kernel == kTensorSm90 ||
         kernel == kTensorSm90Ws) &&
        sees_a_key)
      CHECK(emu::stats().mma > before.mma);  // on tensor cores
  }
}

// Four calls of check() go through all four emulations, whatever the count before them: for
// the cases a barrier may be needed in only one of them (an empty decode split, say).
template <class T>
void check_every_emulation(AttentionKernel kernel, DeviceProblem<T>& dp,
                           const test::Reference& ref) {
  for (int emulation = 0; emulation < 4; ++emulation) check(kernel, dp, ref);
}

// Every listed kernel that takes the problem, on one set of random inputs.
template <class T>
void check_all(std::mt19937& rng, const AttentionProblem& pr,
               const std::vector<AttentionKernel>& kernels = kEveryKernel) {
  DeviceProblem<T> dp(rng, pr);
  const test::Reference ref = dp.reference();
  for (AttentionKernel k : kernels)
    if (ansan::cuda::detail::supports(k, dp.args())) check(k, dp, ref);
}

// Emulation costs about a microsecond per warp collective, so problems stay small.
}  // namespace

TEST_CASE("smoke: one sequence of 64 tokens, one head, every kernel and policy") {
  std::mt19937 rng(7);
  const AnchorLayout L =
      build_layout_from_flags(test::random_flags(rng, 64, 6.0), std::vector<std::int32_t>{0, 64});
  for (const MaskPolicy& p : test::all_policies()) {
    check_all<bf16>(rng, test::prefill_problem(L, p, shape(1, 1, 64), "smoke"));
    check_all<float>(rng, test::prefill_problem(L, p, shape(1, 1, 64), "smoke"), {kSimt});
  }
}

TEST_CASE("prefill, every policy: edge layouts and ragged batches, GQA/MQA, head dims 64-256") {
  std::mt19937 rng(202);
  const int heads[][2] = {{2, 2}, {4, 2}, {4, 1}};  // MHA, GQA, MQA
  int i = 0;
  for (const MaskPolicy& p : test::all_policies()) {
    check_all<bf16>(rng,
                    test::prefill_problem(test::edge_batch(), p, shape(2, 1, 64), "edge layouts"));
    for (int dim : {64, 128, 256}) {
      const AnchorLayout L =
          test::random_layout(rng, 1 + i % 3, i % 2 ? 150 : 70, 2.0 + 3 * (i % 7));
      const AttentionProblem pr = test::prefill_problem(
          L, p, shape(heads[i % 3][0], heads[i % 3][1], dim), "random prefill");
      if (i++ % 2)
        check_all<half>(rng, pr, {kTensor, kTensorSm90, kTensorSm90Ws, kSimt});
      else
        check_all<bf16>(rng, pr, {kTensor, kTensorSm90, kTensorSm90Ws, kSimt});
    }
  }
}

TEST_CASE("simt float32, odd head dims and padded q rows: every policy") {
  std::mt19937 rng(303);
  for (const MaskPolicy& p : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 2, 50, 5.0);
    check_all<float>(rng, test::prefill_problem(L, p, shape(2, 1, 40), "head_dim 40"));
    test::AttentionShape padded = shape(2, 2, 72);
    padded.q_row_pad = 3;
    check_all<bf16>(rng, test::prefill_problem(L, p, padded, "head_dim 72, q head stride 75"));
  }
  const AnchorLayout L = test::random_layout(rng, 2, 40, 4.0);
  check_all<float>(rng,
                   test::prefill_problem(L, MaskPolicy::anllm(), shape(1, 1, 256), "head_dim 256"));
  check_all<float>(
      rng, test::prefill_problem(L, MaskPolicy::sepllm(2, 16), shape(1, 1, 1), "head_dim 1"));
}

TEST_CASE("strided views: head-major K/V and padded q rows, without lse") {
  std::mt19937 rng(404);
  for (const MaskPolicy& p :
       {MaskPolicy::anllm(), MaskPolicy::streaming_llm(2, 24), MaskPolicy::causal()}) {
    test::AttentionShape s = shape(4, 2, 128);
    s.kv_head_major = true, s.q_row_pad = 8, s.with_lse = false;
    check_all<bf16>(rng, test::prefill_problem(test::random_layout(rng, 2, 90, 9.0), p, s,
                                               "HND K/V, q head stride 136"));
  }
}

TEST_CASE("chunked prefill: query rows at positions p..n-1 over the whole prefix") {
  std::mt19937 rng(505);
  for (const MaskPolicy& p : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 3, 120, 6.0);
    check_all<bf16>(rng, test::chunked_problem(rng, L, p, shape(4, 2, 64)));
  }
}

TEST_CASE("decode over compacted caches with slack rows: split-KV and merge, every policy") {
  std::mt19937 rng(606);
  for (const MaskPolicy& p : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 3, 500, 6.0);
    const AttentionProblem pr = test::decode_problem(rng, L, p, shape(8, 2, 128), 2);
    DeviceProblem<bf16> dp(rng, pr);
    const test::Reference ref = dp.reference();
    for (int multiprocessors : {1, 8, 132}) {  // 1 split, a few, as many as the keys allow
      emu::device().multiprocessors = multiprocessors;
      check_every_emulation(kDecode, dp, ref);
      check_every_emulation(kDecodeTensor, dp, ref);
    }
    emu::device() = emu::Device{};
    check_all<half>(rng,
                    test::decode_problem(rng, test::edge_batch(), p, shape(4, 1, 64), 3));  // MQA
    check_all<bf16>(rng, test::decode_problem(rng, L, p, shape(4, 2, 256), 1),
                    {kDecode, kDecodeTensor});
  }
}

TEST_CASE(
    "decode at head_dim 256 on a GPU with 99 KiB per block: the FMA kernel, decode_tensor "
    "refused") {
  std::mt19937 rng(616);
  const AnchorLayout L = test::random_layout(rng, 2, 200, 6.0);
  const AttentionProblem pr256 =
      test::decode_problem(rng, L, MaskPolicy::anllm(), shape(4, 2, 256), 1);
  const AttentionProblem pr128 =
      test::decode_problem(rng, L, MaskPolicy::anllm(), shape(4, 2, 128), 1);
  DeviceProblem<bf16> dp256(rng, pr256), dp128(rng, pr128);
  CHECK(ansan::cuda::choose_kernel(dp256.args()) == kDecodeTensor);  // 227 KiB: an H100
  emu::device().shared_memory_per_block_optin = 99 * 1024;           // sm_86, sm_89
  CHECK(ansan::cuda::choose_kernel(dp256.args()) == kDecode);
  CHECK(ansan::cuda::choose_kernel(dp128.args()) == kDecodeTensor);
  CHECK_THROWS_AS(ansan::cuda::attention(dp256.args(), 0, kDecodeTensor), std::invalid_argument);
  check(AttentionKernel::automatic, dp256, dp256.reference());
  emu::device() = emu::Device{};
}

TEST_CASE("tensor_sm90 runs on a compute capability 9.0 device only, where it is the prefill") {
  std::mt19937 rng(626);
  const AnchorLayout L = test::random_layout(rng, 2, 100, 6.0);
  const AttentionProblem pr =
      test::prefill_problem(L, MaskPolicy::anllm(), shape(2, 1, 128), "sm90");
  const AttentionProblem pr256 =
      test::prefill_problem(L, MaskPolicy::anllm(), shape(2, 1, 256), "sm90");
  DeviceProblem<bf16> dp(rng, pr), dp256(rng, pr256);  // they keep references to the problems
  CHECK(ansan::cuda::detail::supports(kTensorSm90, dp.args()));
  CHECK_FALSE(ansan::cuda::detail::supports(kTensorSm90, dp256.args()));  // 256: not taken
  CHECK(ansan::cuda::choose_kernel(dp.args()) == kTensorSm90);
  CHECK(ansan::cuda::choose_kernel(dp256.args()) == kTensor);
  emu::device().compute_capability = 80;  // an A100
  CHECK_FALSE(ansan::cuda::detail::supports(kTensorSm90, dp.args()));
  CHECK(ansan::cuda::choose_kernel(dp.args()) == kTensor);
  CHECK_THROWS_AS(ansan::cuda::attention(dp.args(), 0, kTensorSm90), std::invalid_argument);
  emu::device() = emu::Device{};
}

TEST_CASE("tensor_sm90_ws: persistent blocks over many work items, ring and slots reused") {
  std::mt19937 rng(636);
  // Ragged: 8 query heads in pairs over 2 KV heads and about 10 query tiles, 40 work items, each
  // block of 1, 3 or 7 taking several. Long: 800 tokens in 3-token segments, walks of up to 8
  // key tiles, so the 4-stage ring wraps inside an item (a stage refilled before both consumers
  // left it shows).
  const AnchorLayout ragged = test::random_layout(rng, 3, 200, 5.0);
  const AnchorLayout longest =
      build_layout_from_flags(test::random_flags(rng, 800, 3.0), std::vector<std::int32_t>{0, 800});
  struct Case {
    const AnchorLayout& layout;
    MaskPolicy policy;
    int dim;
  };
  for (const Case& k :
       {Case{ragged, MaskPolicy::anllm(), 64}, Case{ragged, MaskPolicy::anllm(), 128},
        Case{ragged, MaskPolicy::streaming_llm(2, 48), 64}, Case{longest, MaskPolicy::anllm(), 64},
        Case{longest, MaskPolicy::sepllm(4, 96), 128}}) {
    const AttentionProblem pr =
        test::prefill_problem(k.layout, k.policy, shape(8, 2, k.dim), "persistent");
    DeviceProblem<bf16> dp(rng, pr);  // keeps a reference to pr
    const test::Reference ref = dp.reference();
    for (int multiprocessors : {1, 3, 7}) {
      emu::device().multiprocessors = multiprocessors;
      check(kTensorSm90Ws, dp, ref);
    }
    emu::device() = emu::Device{};
  }
  // Items that see nothing between items that do: a block holding an item's last P V meets an
  // empty item, which must first finish the one before it.
  const AttentionProblem mixed = test::keys_between_empty_problem(4, 2);
  DeviceProblem<bf16> mixed_dp(rng, mixed);
  const test::Reference mixed_ref = mixed_dp.reference();
  for (int multiprocessors : {1, 2}) {
    emu::device().multiprocessors = multiprocessors;
    check_every_emulation(kTensorSm90Ws, mixed_dp, mixed_ref);
  }
  emu::device() = emu::Device{};
  // Odd heads_q / heads_kv: no GQA pair to share a block.
  const AttentionProblem mha_problem =
      test::prefill_problem(ragged, MaskPolicy::anllm(), shape(2, 2, 64), "MHA");
  DeviceProblem<bf16> mha(rng, mha_problem);
  CHECK_FALSE(ansan::cuda::detail::supports(kTensorSm90Ws, mha.args()));
  CHECK_THROWS_AS(ansan::cuda::attention(mha.args(), 0, kTensorSm90Ws), std::invalid_argument);
}

// The plan's tables against the host: tile_prefix, retained_prefix / retained_rows over every
// key row (slack rows included: their -1 positions are sinks under StreamingLLM), row_keys.
// Over 2048 key rows, so that the retained passes take several chunks, and over 256 sequences,
// so that the query-tile table takes several block scans.
TEST_CASE("the prefill plan equals the host's tables, over several chunks of key rows") {
  namespace kd = ansan::cuda::detail;
  std::mt19937 rng(727);
  CHECK(kd::retained_chunk_rows(2048 * kd::kPlanMaxChunks) == 2048);
  CHECK(kd::retained_chunk_rows(2048 * kd::kPlanMaxChunks + 1) == 4096);
  const AnchorLayout L = test::random_layout(rng, 5, 1800, 9.0);
  const AnchorLayout many_anchors =
      test::random_layout(rng, 3, 4000, 2.5);  // large compacted caches
  const AnchorLayout short_sequences = test::random_layout(rng, 300, 30, 4.0);
  for (const MaskPolicy& policy : test::all_policies()) {
    const AttentionProblem prefill = test::prefill_problem(L, policy, shape(2, 1, 64), "plan");
    const AttentionProblem decode =
        test::decode_problem(rng, many_anchors, policy, shape(2, 1, 64), 3);
    const AttentionProblem many_sequences =  // the query-tile table over 300 sequences
        test::prefill_problem(short_sequences, policy, shape(2, 1, 64), "300 sequences");
    for (const AttentionProblem* pr : {&prefill, &decode, &many_sequences}) {
      DeviceProblem<bf16> dp(rng, *pr);
      kd::AttentionParams<bf16> p = kd::make_params(dp.args());
      kd::TempCarver sizes(nullptr);
      REQUIRE(kd::build_plan(sizes, p, 64, 0) == cudaSuccess);
      const kd::DeviceBuffer<char> temp(sizes.bytes());
      kd::TempCarver carver(temp.data());
      // Warps in lockstep for the prefill, one warp running ahead (its block scans reuse their
      // scratch) for the decode.
      if (pr == &decode)
        emu::options().schedule = emu::Schedule::reverse, emu::options().one_warp_at_a_time = true;
      REQUIRE(kd::build_plan(carver, p, 64, 0) == cudaSuccess);
      emu::options() = emu::Options{};
      const std::string policy_text = policy_name(policy);
      CAPTURE(policy_text);
      CAPTURE(pr->what);
      if (pr != &many_sequences && policy.has_retained()) REQUIRE(pr->k_rows > 2048);
      std::int32_t tiles = 0;
      for (std::int32_t b = 0; b <= pr->batch; ++b) {
        CHECK(p.tile_prefix[b] == tiles);
        if (b < pr->batch)
          tiles += (pr->cu_q[std::size_t(b) + 1] - pr->cu_q[std::size_t(b)] + 63) / 64;
      }
      const bool retains = policy.has_retained();
      CHECK((p.retained_prefix != nullptr) == retains);
      std::vector<std::int32_t> prefix{0}, rows;
      for (std::int32_t t = 0; t < pr->k_rows; ++t) {
        const bool kept = is_retained(
            policy, KeyInfo{pr->k_pos[std::size_t(t)], pr->k_anchor[std::size_t(t)] != 0});
        if (kept) rows.push_back(t);
        prefix.push_back(prefix.back() + kept);
      }
      if (retains) {
        CHECK(std::equal(prefix.begin(), prefix.end(), p.retained_prefix));
        CHECK(std::equal(rows.begin(), rows.end(), p.retained_rows));
      }
      for (std::int32_t b = 0; b < pr->batch; ++b) {
        const std::int32_t k_begin =
            pr->uses_k_start ? pr->k_start[std::size_t(b)] : pr->cu_k[std::size_t(b)];
        const std::int32_t k_end =
            k_begin + pr->cu_k[std::size_t(b) + 1] - pr->cu_k[std::size_t(b)];
        for (std::int32_t t = pr->cu_q[std::size_t(b)]; t < pr->cu_q[std::size_t(b) + 1]; ++t) {
          const QueryInfo q{pr->q_pos[std::size_t(t)], pr->q_seg_start[std::size_t(t)],
                            pr->q_anchor[std::size_t(t)] != 0};
          const kd::RowKeys want = kd::row_keys(policy, q, pr->k_pos.data(),
                                                retains ? prefix.data() : nullptr, k_begin, k_end);
          const kd::RowKeys got = p.row_keys[t];
          CHECK(got.local_begin == want.local_begin);
          CHECK(got.local_end == want.local_end);
          CHECK(got.retained == want.retained);
        }
      }
    }
  }
}

TEST_CASE("rows that see no key get O = 0 and lse = -inf, on every kernel") {
  std::mt19937 rng(808);
  const AttentionProblem pr = test::no_visible_key_problem();
  check_all<bf16>(rng, pr);
  check_all<float>(rng, pr, {kSimt});
}

TEST_CASE("a longer sequence: many retained and local tiles per query tile") {
  std::mt19937 rng(707);
  const AnchorLayout L = build_layout_from_flags(test::random_flags(rng, 700, 20.0),
                                                 std::vector<std::int32_t>{0, 700});
  check_all<bf16>(rng, test::prefill_problem(L, MaskPolicy::anllm(), shape(1, 1, 64), "n = 700"),
                  {kTensor, kTensorSm90});
  check_all<bf16>(rng,
                  test::prefill_problem(L, MaskPolicy::sepllm(4, 96), shape(2, 1, 128), "n = 700"),
                  {kTensor, kTensorSm90});
}

// A NaN in one sequence's values reaches only the rows that see it: the kernels never read
// another sequence's keys, and the persistent kernel, whose consumers carry O from item to
// item, starts each item's O from zero (0 x NaN would not clear it).
TEST_CASE("a NaN in one sequence's values stays in that sequence's rows, on every kernel") {
  std::mt19937 rng(919);
  const AnchorLayout L = build_layout_from_flags(test::random_flags(rng, 128, 6.0),
                                                 std::vector<std::int32_t>{0, 64, 128});
  const AttentionProblem pr =
      test::prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "NaN values in sequence 1");
  DeviceProblem<bf16> dp(rng, pr);
  const test::Storage kv = test::kv_storage(pr);
  for (std::int32_t row = pr.cu_k[1]; row < pr.cu_k[2]; ++row)  // sequence 1, taken first
    for (index_t h = 0; h < kv.shape[1]; ++h)
      for (index_t d = 0; d < kv.shape[2]; ++d)
        dp.v[std::size_t(row * kv.stride[0] + h * kv.stride[1] + d * kv.stride[2])] =
            from_float<bf16>(NAN);
  dp.d_v = test::to_device(dp.v);
  const test::Reference ref = dp.reference();
  REQUIRE(std::isnan(ref.out.back()));  // sequence 1's rows are NaN, sequence 0's are not
  REQUIRE(std::isfinite(ref.out.front()));
  emu::device().multiprocessors = 1;  // one block takes sequence 1's items, then sequence 0's
  for (AttentionKernel k : kEveryKernel)
    if (ansan::cuda::detail::supports(k, dp.args())) check(k, dp, ref);
  emu::device() = emu::Device{};
}

// Random problems (test::random_problem: policy, head dim, GQA shape, strides, prefill /
// chunked / decode) in a random dtype, with 1, 4 or 132 SMs' worth of decode splits, through
// every kernel that takes each. 40 by default; ANSAN_SOAK_SECONDS=S keeps drawing for S
// seconds, ANSAN_SOAK_SEED=N replays problem N alone.
TEST_CASE("soak: random problems through every kernel that takes them") {
  const int problems = test::soak(40, [](std::uint32_t seed) {
    std::mt19937 rng(seed);
    CAPTURE(seed);
    const int multiprocessors[] = {1, 4, 132};
    emu::device().multiprocessors = multiprocessors[rng() % 3];
    const unsigned dtype = rng() % 3;
    const AttentionProblem pr = test::random_problem(rng);
    if (dtype == 0) check_all<bf16>(rng, pr);
    if (dtype == 1) check_all<half>(rng, pr);
    if (dtype == 2) check_all<float>(rng, pr);
    emu::device() = emu::Device{};
  });
  MESSAGE(problems, " random problems");
}

TEST_CASE("results do not depend on thread order or on when cp.async data lands") {
  std::mt19937 rng(909);
  const AnchorLayout L = test::random_layout(rng, 2, 100, 5.0);
  // Decode over about 160 cached keys per sequence in one split: several tiles, so a tile's
  // loads overwrite shared memory an earlier tile was read from.
  const AnchorLayout long_layout = test::random_layout(rng, 2, 800, 5.0);
  emu::device().multiprocessors = 1;
  for (AttentionKernel kernel : kEveryKernel) {
    const bool decode = kernel == kDecode || kernel == kDecodeTensor;
    const AttentionProblem pr =
        decode ? test::decode_problem(rng, long_layout, MaskPolicy::anllm(), shape(4, 2, 64), 3)
               : test::prefill_problem(L, MaskPolicy::anllm(), shape(2, 1, 64), "schedules");
    // The first sequence's cache spans two 64-key decode tiles and gives each of decode_tensor's
    // warps three 16-key tiles (a stage loaded again).
    if (decode) REQUIRE(pr.cu_k[1] > 4 * 16 * 2);
    DeviceProblem<bf16> dp(rng, pr);
    const auto run = [&] {
      dp.poison_outputs();
      ansan::cuda::attention(dp.args(), 0, kernel);
      return std::make_pair(test::to_host(dp.d_out), test::to_host(dp.d_lse));
    };
    const auto first = run();
    const emu::Options variants[] = {{emu::Schedule::reverse, 1, emu::AsyncCopy::at_wait, false},
                                     {emu::Schedule::forward, 1, emu::AsyncCopy::at_wait, true},
                                     {emu::Schedule::reverse, 1, emu::AsyncCopy::at_issue, true},
                                     {emu::Schedule::shuffled, 2, emu::AsyncCopy::at_issue, false},
                                     {emu::Schedule::shuffled, 3, emu::AsyncCopy::at_wait, true}};
    for (const emu::Options& o : variants) {
      emu::options() = o;
      const auto again = run();
      emu::options() = emu::Options{};
      INFO(std::string(ansan::cuda::kernel_name(kernel)), ": schedule ", int(o.schedule), " seed ",
           o.seed, " cp.async ", int(o.async_copy), " one warp at a time ", o.one_warp_at_a_time);
      CHECK(std::memcmp(again.first.data(), first.first.data(),
                        first.first.size() * sizeof(bf16)) == 0);
      CHECK(std::memcmp(again.second.data(), first.second.data(),
                        first.second.size() * sizeof(float)) == 0);
    }
  }
  emu::device() = emu::Device{};
}
