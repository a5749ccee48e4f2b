// Decoding speed of the reference transformer (examples/anllm_demo) with a full cache against
// AnLLM's anchor cache (issue 6): tokens per second after a prompt of n tokens, and the KV
// bytes each cache holds. The goal at n = 16k: anchor decoding >= 3.5x faster per token and
// its cache >= 90% smaller.
//
//   full_cache/prompt:n     causal attention, the cache keeps every token (today's baseline)
//   anchor_cache/prompt:n   AnLLM: the prompt is reduced after prefill and again after every
//                           anchor the decoded tokens bring
//   ceiling/...             Eigen sgemv and memcpy in the same run: a decode step is
//                           matrix-vector work, bound by memory bandwidth
//
// The model is the demo's default (2 layers, dim 128, 4 query / 2 KV heads of 32, fp32). The
// text is synthetic: sentences of 13..21 random letters, ". ", <AC> after each sentence end,
// so segments average 20 tokens. Each prompt is prefilled once (the 16k causal prefill is the
// slow part) and shared by the iterations, which feed the text's next tokens one at a time.
// Decoding runs on one thread, as anllm::IncrementalDecoder does for one-token steps.
//
// Counters: tokens_per_s; keys_per_token (cached rows one layer's attention reads, mean over
// the steps); cache_bytes (K+V of all layers at the end) and full_cache_bytes (what a cache
// that never reduces holds); attn_GFLOPs (4 * head_dim flops per query head per key read);
// sgemv_GFLOPs and memcpy_GBps (the in-run ceilings: bytes read + written per second); on
// anchor cases x_full (the full-cache step time at the same prompt over this one, wall clock)
// and cache_saved_pct (1 - cache_bytes / full_cache_bytes).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../examples/anllm_demo/anllm/generate.hpp"
#include "../examples/anllm_demo/anllm/model.hpp"
#include "../examples/anllm_demo/anllm/tokenizer.hpp"
#include "../examples/anllm_demo/anllm/weights.hpp"

namespace {

constexpr int kDecodeSteps = 256;

std::map<int, double> g_full_seconds_per_token;  // prompt length -> full-cache step time

const anllm::Weights& model() {
  static const anllm::Weights weights = anllm::init_weights(anllm::ModelConfig{}, 1);
  return weights;
}

// The synthetic text's ids: at least `tokens` of them.
const std::vector<std::int32_t>& text_ids(std::size_t tokens) {
  static std::vector<std::int32_t> ids;
  if (ids.size() < tokens) {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> letter('a', 'z'), length(13, 21);
    std::string text;
    while (text.size() < tokens) {
      for (int c = length(rng); c > 0; --c) text.push_back(char(letter(rng)));
      text += ". ";
    }
    ids = anllm::Tokenizer{anllm::AnchorMode::ac}.encode(text);
  }
  return ids;
}

// A decoder that has prefilled (and, for the anchor cache, reduced) the first n tokens.
struct Prefilled {
  std::unique_ptr<anllm::IncrementalDecoder> decoder;
  std::size_t next = 0;  // index of the next token of the text to feed
  double prefill_seconds = 0;
};

Prefilled& prefilled(int n, bool anchor) {
  static std::map<std::pair<int, bool>, Prefilled> cache;
  Prefilled& p = cache[{n, anchor}];
  if (p.decoder) return p;
  const anllm::Tokenizer tok{anllm::AnchorMode::ac};
  const auto& ids = text_ids(std::size_t(n) + kDecodeSteps + 1);
  const std::vector<std::int32_t> prompt(ids.begin(), ids.begin() + n);
  std::vector<std::uint8_t> flags;
  for (const auto id : prompt) flags.push_back(tok.is_anchor(id));
  p.decoder = std::make_unique<anllm::IncrementalDecoder>(
      model(), anchor ? ansan::MaskPolicy::anllm() : ansan::MaskPolicy::causal(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  p.decoder->feed(prompt, flags);
  if (anchor) p.decoder->reduce();
  p.prefill_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  p.next = std::size_t(n);
  return p;
}

void BM_decode(benchmark::State& state, bool anchor) {
  const int n = int(state.range(0));
  Prefilled& p = prefilled(n, anchor);
  const anllm::Tokenizer tok{anllm::AnchorMode::ac};
  const auto& ids = text_ids(0);
  const anllm::ModelConfig& c = model().config;
  double keys_read = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (p.next >= ids.size()) {
      state.SkipWithError("synthetic text exhausted");
      break;
    }
    const std::int32_t id = ids[p.next++];
    const std::uint8_t is_anchor = tok.is_anchor(id);
    keys_read += double(p.decoder->entries()) / c.layers + 1;  // the step's own key too
    benchmark::DoNotOptimize(p.decoder->feed({id}, {is_anchor}).data());
    if (anchor && is_anchor) p.decoder->reduce();
  }
  const double steps = double(state.iterations());
  const double seconds_per_token =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
  if (!anchor) g_full_seconds_per_token[n] = seconds_per_token;
  if (anchor && g_full_seconds_per_token.count(n)) {
    state.counters["x_full"] = g_full_seconds_per_token[n] / seconds_per_token;
    state.counters["cache_saved_pct"] =
        100.0 * (1.0 - double(p.decoder->bytes()) / double(p.decoder->full_cache_bytes()));
  }
  state.counters["tokens_per_s"] = benchmark::Counter(steps, benchmark::Counter::kIsRate);
  state.counters["keys_per_token"] = keys_read / steps;
  state.counters["attn_GFLOPs"] = benchmark::Counter(
      keys_read * c.layers * c.heads * 4.0 * c.head_dim * 1e-9, benchmark::Counter::kIsRate);
  state.counters["cache_bytes"] = double(p.decoder->bytes());
  state.counters["full_cache_bytes"] = double(p.decoder->full_cache_bytes());
  state.counters["prefill_s"] = p.prefill_seconds;
}

// y = A x with A: (4096, 4096) fp32, 64 MiB: the shape of a decode step's work.
void BM_ceiling_sgemv(benchmark::State& state) {
  const anllm::Matrix a = anllm::Matrix::Random(4096, 4096);
  const Eigen::VectorXf x = Eigen::VectorXf::Random(4096);
  Eigen::VectorXf y(4096);
  for (auto _ : state) {
    y.noalias() = a * x;
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["sgemv_GFLOPs"] = benchmark::Counter(
      2.0 * 4096 * 4096 * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_ceiling_memcpy(benchmark::State& state) {
  const std::size_t bytes = std::size_t(64) << 20;
  std::vector<char> from(bytes, 1), to(bytes, 0);
  for (auto _ : state) {
    std::memcpy(to.data(), from.data(), bytes);
    benchmark::DoNotOptimize(to.data());
  }
  state.counters["memcpy_GBps"] = benchmark::Counter(
      2.0 * double(bytes) * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

// The prompt lengths and timing settings of both decode variants.
void decode_cases(benchmark::internal::Benchmark* b) {
  b->ArgName("prompt")
      ->Arg(1024)
      ->Arg(4096)
      ->Arg(16384)
      ->Iterations(kDecodeSteps)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_ceiling_sgemv)->Name("ceiling/sgemv_4096x4096")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ceiling_memcpy)->Name("ceiling/memcpy_64MiB")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_decode, full_cache, false)->Apply(decode_cases);
BENCHMARK_CAPTURE(BM_decode, anchor_cache, true)->Apply(decode_cases);

BENCHMARK_MAIN();
