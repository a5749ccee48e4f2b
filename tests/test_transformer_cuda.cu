// tests/test_transformer_cuda.cu - the reference transformer's GPU attention backend
// (examples/anllm_demo/anllm/cuda_backend.cuh) against its CPU backend (model.hpp).
//
// For random small models and texts in both anchor modes: (b) the whole text under the AnLLM
// mask and (c) anchor-based inference (prefill, reduce, token by token with a reduction after
// every anchor, by hand and through run_text) give the same logits on CudaAttention as on
// CpuAttention within 1e-4 relative, and after every reduction the device cache holds the same
// positions, anchor flags and every layer's keys/values as the host cache, which holds exactly
// the earlier anchors plus the open segment (each chunk planned once, at its first layer); and
// one backend kept across texts and policies (it plans a text once for all its layers) plans
// each new one anew. Without a device the binary
// exits 77 (SKIP).
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "../examples/anllm_demo/anllm/cuda_backend.cuh"
#include "../examples/anllm_demo/anllm/generate.hpp"
#include "../examples/anllm_demo/anllm/model.hpp"
#include "../examples/anllm_demo/anllm/tokenizer.hpp"
#include "support/gpu_main.hpp"
#include "support/transformer_cases.hpp"

namespace {

using anllm::AnchorMode;
using anllm::Matrix;
using anllm::Tokenizer;
using ansan::test::expected_cache;
using ansan::test::relative_error;

// The SIMT kernel takes any head_dim up to 256: include a realistic one.
constexpr int kHeadDims[3] = {8, 16, 64};

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 1e-30;
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(std::isfinite(b[i]));
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(a[i])));
  }
  return diff / scale;
}

// Runs `ids` on both backends as (b) and as (c) with a prompt of prompt_len tokens; returns
// the reductions compared.
int compare_backends(const anllm::Weights& w, const Tokenizer& tok,
                     const std::vector<std::int32_t>& ids, std::size_t prompt_len) {
  const anllm::ModelConfig& c = w.config;
  const std::vector<std::int32_t> cu{0, std::int32_t(ids.size())};
  const ansan::AnchorLayout layout = ansan::build_layout(ids, cu, tok.selector(), c.vocab);
  const std::vector<std::uint8_t> flags(layout.is_anchor.begin(), layout.is_anchor.end());
  CAPTURE(c.layers);
  CAPTURE(c.heads);
  CAPTURE(c.kv_heads);
  CAPTURE(c.head_dim);
  CAPTURE(Tokenizer::decode(ids, true, "|"));
  CAPTURE(prompt_len);

  // (b) on both backends.
  anllm::CpuAttention cpu{1};
  anllm::CudaAttention gpu;
  const Matrix whole_cpu = anllm::forward_masked(w, ids, layout, ansan::MaskPolicy::anllm(), cpu);
  const Matrix whole_gpu = anllm::forward_masked(w, ids, layout, ansan::MaskPolicy::anllm(), gpu);
  CHECK(relative_error(whole_cpu, whole_gpu) < 1e-4);

  // (c) driven step by step on both, comparing the caches after every reduction.
  anllm::IncrementalDecoder on_cpu(w, ansan::MaskPolicy::anllm(), 1);
  anllm::BasicIncrementalDecoder<anllm::CudaAttention> on_gpu(w, ansan::MaskPolicy::anllm(),
                                                             anllm::CudaAttention{});
  Matrix logits_cpu = Matrix::Constant(Eigen::Index(ids.size()), c.vocab, NAN);
  Matrix logits_gpu = logits_cpu;
  int reductions = 0;
  const auto reduce_and_compare = [&](std::int32_t next_pos) {
    CHECK(on_gpu.reduce() == on_cpu.reduce());
    const auto expected = expected_cache(layout, next_pos);
    CHECK(on_cpu.cache().positions(0) == expected);
    CHECK(on_gpu.cache().positions(0) == expected);
    CHECK(on_gpu.cache().anchor_flags(0) == on_cpu.cache().anchor_flags(0));
    for (int l = 0; l < c.layers; ++l) {
      CHECK(relative_error(on_cpu.cache().keys(0, l), on_gpu.cache().keys(0, l)) < 1e-4);
      CHECK(relative_error(on_cpu.cache().values(0, l), on_gpu.cache().values(0, l)) < 1e-4);
    }
    CHECK(on_gpu.entries() == on_cpu.entries());
    CHECK(on_gpu.bytes() == on_cpu.bytes());
    CHECK(on_gpu.full_cache_bytes() == on_cpu.full_cache_bytes());
    ++reductions;
  };
  const std::vector<std::int32_t> prompt(ids.begin(), ids.begin() + std::ptrdiff_t(prompt_len));
  const std::vector<std::uint8_t> prompt_flags(flags.begin(),
                                               flags.begin() + std::ptrdiff_t(prompt_len));
  logits_cpu.topRows(Eigen::Index(prompt_len)) = on_cpu.feed(prompt, prompt_flags);
  logits_gpu.topRows(Eigen::Index(prompt_len)) = on_gpu.feed(prompt, prompt_flags);
  reduce_and_compare(std::int32_t(prompt_len));
  for (std::size_t i = prompt_len; i < ids.size(); ++i) {
    logits_cpu.row(Eigen::Index(i)) = on_cpu.feed({ids[i]}, {flags[i]}).row(0);
    logits_gpu.row(Eigen::Index(i)) = on_gpu.feed({ids[i]}, {flags[i]}).row(0);
    if (flags[i]) reduce_and_compare(std::int32_t(i + 1));
  }
  CHECK(relative_error(logits_cpu, logits_gpu) < 1e-4);
  CHECK(relative_error(whole_gpu, logits_gpu) < 1e-4);  // the invariant on the GPU itself

  // run_text, teacher-forced, on both: same logits and the same snapshots.
  const std::vector<std::int32_t> rest(ids.begin() + std::ptrdiff_t(prompt_len), ids.end());
  anllm::RunOptions opt;
  opt.forced = &rest;
  const anllm::RunResult run_cpu = anllm::run_text(w, tok, prompt, opt, anllm::CpuAttention{1});
  const anllm::RunResult run_gpu = anllm::run_text(w, tok, prompt, opt, anllm::CudaAttention{});
  CHECK(run_gpu.ids == ids);
  CHECK(relative_error(run_cpu.logits, run_gpu.logits) < 1e-4);
  REQUIRE(run_gpu.reductions.size() == run_cpu.reductions.size());
  for (std::size_t r = 0; r < run_gpu.reductions.size(); ++r) {
    CHECK(run_gpu.reductions[r].positions == run_cpu.reductions[r].positions);
    CHECK(run_gpu.reductions[r].entries == run_cpu.reductions[r].entries);
    CHECK(run_gpu.reductions[r].bytes == run_cpu.reductions[r].bytes);
  }
  CHECK(run_gpu.final_cache.positions == run_cpu.final_cache.positions);
  return reductions;
}

}  // namespace

TEST_CASE("gpu backend: logits of (b) and (c) and the caches equal the cpu backend's") {
  std::mt19937 rng(67);
  int reductions_compared = 0;
  for (int trial = 0; trial < 12; ++trial) {
    CAPTURE(trial);
    const ansan::test::RandomCase c = ansan::test::random_case(rng, trial, 40, kHeadDims);
    reductions_compared += compare_backends(c.weights, c.tok, c.ids, c.prompt_len);
  }
  CHECK(reductions_compared > 20);
}

TEST_CASE("gpu backend: edge texts (no anchor, all anchors, a lone token)") {
  std::mt19937 rng(5);
  const anllm::Weights w = anllm::init_weights(ansan::test::random_config(rng, kHeadDims), 11);
  for (const AnchorMode mode : {AnchorMode::ac, AnchorMode::ep}) {
    const Tokenizer tok{mode};
    for (const char* text : {"", "no sentence end here", "...!?", "Cat. Dog.\n\nEnd."}) {
      const auto ids = tok.encode(text);
      for (std::size_t prompt_len = 1; prompt_len <= ids.size(); prompt_len += 2)
        compare_backends(w, tok, ids, prompt_len);
    }
  }
}

// One backend for several texts, as a server keeps one: the plan a text's first layer made
// serves that text's other layers only. Another text (also one of the same length whose anchors
// differ, whose metadata lands at the same device addresses) or another policy plans again; a
// chunk's call in between has a plan of its own and leaves the text's intact.
TEST_CASE("gpu backend: one backend for several texts and policies plans each anew") {
  std::mt19937 rng(71);
  for (int trial = 0; trial < 4; ++trial) {
    CAPTURE(trial);
    const ansan::test::RandomCase rc = ansan::test::random_case(rng, trial, 40, kHeadDims);
    const anllm::ModelConfig& c = rc.weights.config;
    const auto cu_of = [](std::size_t n) { return std::vector<std::int32_t>{0, std::int32_t(n)}; };
    const std::vector<std::int32_t>& whole = rc.ids;
    const std::vector<std::int32_t> half(whole.begin(),
                                         whole.begin() + std::ptrdiff_t((whole.size() + 1) / 2));
    const ansan::AnchorLayout whole_layout =
        ansan::build_layout(whole, cu_of(whole.size()), rc.tok.selector(), c.vocab);
    const ansan::AnchorLayout half_layout =
        ansan::build_layout(half, cu_of(half.size()), rc.tok.selector(), c.vocab);
    std::vector<std::uint8_t> other_flags(whole.size());  // same length, other anchors
    for (std::size_t i = 0; i < other_flags.size(); ++i)
      other_flags[i] = std::uint8_t(!whole_layout.is_anchor[i] && i % 3 == 0);
    const ansan::AnchorLayout other_layout =
        ansan::build_layout_from_flags(other_flags, cu_of(whole.size()));

    anllm::CpuAttention cpu{1};
    anllm::CudaAttention gpu;  // every call below
    const auto same_on_both = [&](const std::vector<std::int32_t>& ids,
                                  const ansan::AnchorLayout& layout,
                                  const ansan::MaskPolicy& policy) {
      CHECK(relative_error(anllm::forward_masked(rc.weights, ids, layout, policy, cpu),
                           anllm::forward_masked(rc.weights, ids, layout, policy, gpu)) < 1e-4);
    };
    const ansan::MaskPolicy anllm_mask = ansan::MaskPolicy::anllm();
    same_on_both(whole, whole_layout, anllm_mask);
    same_on_both(half, half_layout, anllm_mask);
    same_on_both(whole, whole_layout, anllm_mask);
    same_on_both(whole, other_layout, anllm_mask);
    same_on_both(whole, other_layout, ansan::MaskPolicy::anllm_legacy());
    {  // a chunk attends to a cache in between
      const std::int32_t tokens = 3;
      const std::vector<std::int32_t> cu_new{0, tokens}, pos{0, 1, 2}, seg_start{0, 0, 0};
      const std::vector<std::uint8_t> is_anchor{0, 1, 0};
      const anllm::ChunkQueries chunk{cu_new, pos, seg_start, is_anchor};
      anllm::CudaAttention::Cache cache = gpu.make_cache(c, anllm_mask, 16);
      const Matrix q = Matrix::Random(tokens, c.heads * c.head_dim);
      const Matrix k = Matrix::Random(tokens, c.kv_heads * c.head_dim);
      const Matrix v = Matrix::Random(tokens, c.kv_heads * c.head_dim);
      Matrix out(tokens, c.heads * c.head_dim);
      gpu.append_rows(cache, chunk);
      gpu.cached(cache, 0, c, chunk, anllm_mask, q, k, v, out);
    }
    same_on_both(whole, other_layout, ansan::MaskPolicy::anllm_legacy());
    same_on_both(whole, whole_layout, anllm_mask);
  }
}
