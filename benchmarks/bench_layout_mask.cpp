// bench_layout_mask - host cost of building anchor layouts and exporting masks.
//
// One sequence of n byte tokens whose anchors ('.') fall with mean segment length 20, AnLLM
// policy. Every case reports tokens/s; dense exports also bytes/s of mask written, next to
// memcpy's bandwidth on this machine measured in the same run (the ceiling for a pure store
// stream: counter memcpy_Bps, and of_memcpy = achieved / ceiling). The naive block-mask
// case classifies every (query, key) pair with ansan::visible (n^2 / 2 predicate calls); the
// library version counts each block row by row from visible intervals (n^2 / (2 block) steps).
//
//   bench_layout_mask --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <algorithm>
#include <ctime>
#include <cstring>
#include <random>
#include <vector>

#include "ansan/dense_mask.hpp"
#include "ansan/flashinfer_mask.hpp"
#include "ansan/flex_block_mask.hpp"
#include "ansan/layout.hpp"
#include "ansan/mask_density.hpp"

namespace {

constexpr double kMeanSegment = 20.0;

// Random lowercase bytes with a '.' ending each segment (geometric lengths, mean 20).
std::vector<std::int32_t> sample_tokens(std::int64_t n) {
  std::mt19937 rng{static_cast<std::uint32_t>(n)};
  std::bernoulli_distribution period(1.0 / kMeanSegment);
  std::uniform_int_distribution<int> letter('a', 'z');
  std::vector<std::int32_t> tokens(std::size_t(n), 0);
  for (auto& t : tokens) t = period(rng) ? '.' : letter(rng);
  return tokens;
}

ansan::AnchorLayout sample_layout(std::int64_t n) {
  const std::vector<std::int32_t> tokens = sample_tokens(n);
  return ansan::build_layout(tokens, std::vector<std::int32_t>{0, std::int32_t(n)},
                             ansan::AnchorSelector::endpoint({'.'}), 256);
}

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// memcpy bandwidth (bytes/s) of a 64 MiB copy, best of 5, measured once per run in CPU time
// like Google Benchmark's rates (so a loaded machine skews both alike).
double memcpy_bandwidth() {
  static const double bandwidth = [] {
    const std::size_t bytes = std::size_t(64) << 20;
    std::vector<char> src(bytes, 1), dst(bytes, 0);
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = thread_cpu_seconds();
      std::memcpy(dst.data(), src.data(), bytes);
      benchmark::DoNotOptimize(dst.data());
      best = std::max(best, double(bytes) / (thread_cpu_seconds() - t0));
    }
    return best;
  }();
  return bandwidth;
}

void set_token_rate(benchmark::State& state, std::int64_t n) {
  state.counters["tokens_per_s"] =
      benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
}

void set_dense_rate(benchmark::State& state, std::int64_t n, double bytes_per_iteration) {
  set_token_rate(state, n);
  state.SetBytesProcessed(std::int64_t(bytes_per_iteration) * std::int64_t(state.iterations()));
  state.counters["memcpy_Bps"] = memcpy_bandwidth();
  state.counters["of_memcpy"] = benchmark::Counter(
      bytes_per_iteration / memcpy_bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_memcpy_ceiling(benchmark::State& state) {
  const std::size_t bytes = std::size_t(state.range(0));
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(std::int64_t(bytes) * std::int64_t(state.iterations()));
}

void BM_build_layout(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const std::vector<std::int32_t> tokens = sample_tokens(n);
  const std::vector<std::int32_t> cu{0, std::int32_t(n)};
  const ansan::AnchorSelector selector = ansan::AnchorSelector::endpoint({'.'});
  for (auto _ : state) benchmark::DoNotOptimize(ansan::build_layout(tokens, cu, selector, 256));
  set_token_rate(state, n);
}

void BM_dense_mask_packed(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const ansan::AnchorLayout L = sample_layout(n);
  std::vector<std::uint8_t> mask(std::size_t(n * n));
  for (auto _ : state) {
    ansan::dense_mask_packed(L, ansan::MaskPolicy::anllm(), ansan::make_view(mask.data(), n, n));
    benchmark::DoNotOptimize(mask.data());
  }
  set_dense_rate(state, n, double(n) * double(n));
}

template <class T>
void BM_additive_mask(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const ansan::AnchorLayout L = sample_layout(n);
  std::vector<T> mask(std::size_t(n * n));
  for (auto _ : state) {
    ansan::additive_mask(L, ansan::MaskPolicy::anllm(), ansan::make_view(mask.data(), 1, 1, n, n));
    benchmark::DoNotOptimize(mask.data());
  }
  set_dense_rate(state, n, double(n) * double(n) * sizeof(T));
}

void BM_flashinfer_packed_mask(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const ansan::AnchorLayout L = sample_layout(n);
  const std::vector<std::int32_t> indptr = ansan::flashinfer_mask_indptr(L);
  std::vector<std::uint8_t> packed(std::size_t(indptr.back()));
  std::vector<std::int32_t> offsets(indptr.size());
  for (auto _ : state) {
    ansan::flashinfer_packed_mask(L, ansan::MaskPolicy::anllm(), packed, offsets);
    benchmark::DoNotOptimize(packed.data());
  }
  set_dense_rate(state, n, double(packed.size()));
}

void BM_flex_block_mask(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const std::int32_t block = std::int32_t(state.range(2));
  const ansan::AnchorLayout L = sample_layout(n);
  for (auto _ : state)
    benchmark::DoNotOptimize(ansan::flex_block_mask(L, ansan::MaskPolicy::anllm(), block));
  set_token_rate(state, n);
}

// The baseline: classify each block by evaluating ansan::visible on all of its pairs.
void BM_flex_block_mask_naive(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const std::int32_t block = std::int32_t(state.range(2));
  const ansan::AnchorLayout L = sample_layout(n);
  const ansan::MaskPolicy p = ansan::MaskPolicy::anllm();
  const std::int64_t blocks = (n + block - 1) / block;
  std::vector<std::int64_t> seen(std::size_t(blocks * blocks));
  for (auto _ : state) {
    std::fill(seen.begin(), seen.end(), 0);
    for (std::int32_t i = 0; i < n; ++i)
      for (std::int32_t j = 0; j <= i; ++j)
        seen[std::size_t((i / block) * blocks + j / block)] += ansan::visible(p, L.query(0, i), L.key(0, j));
    benchmark::DoNotOptimize(seen.data());
  }
  set_token_rate(state, n);
}

void BM_mask_density(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const ansan::AnchorLayout L = sample_layout(n);
  ansan::MaskDensity d;
  for (auto _ : state) benchmark::DoNotOptimize(d = ansan::mask_density(L, ansan::MaskPolicy::anllm()));
  set_token_rate(state, n);
  state.counters["visible_pairs"] = double(d.total_visible);
  state.counters["causal_pairs"] = double(d.total_causal);
  state.counters["tiles64_visited"] = d.tiles[0].visited_fraction();
  state.counters["tiles128_visited"] = d.tiles[1].visited_fraction();
  state.counters["tiles64_full"] = double(d.tiles[0].full_tiles);
  state.counters["tiles128_full"] = double(d.tiles[1].full_tiles);
}

void sizes(benchmark::internal::Benchmark* b, std::int64_t max_n) {
  b->ArgNames({"n", "seg"});
  for (std::int64_t n : {1024, 8192, 65536})
    if (n <= max_n) b->Args({n, std::int64_t(kMeanSegment)});
  b->Unit(benchmark::kMillisecond);
}
void sizes_all(benchmark::internal::Benchmark* b) { sizes(b, 65536); }
void sizes_dense(benchmark::internal::Benchmark* b) { sizes(b, 8192); }
void sizes_blocks(benchmark::internal::Benchmark* b, std::int64_t max_n) {
  b->ArgNames({"n", "seg", "block"});
  for (std::int64_t n : {1024, 8192, 65536})
    for (std::int64_t block : {64, 128})
      if (n <= max_n) b->Args({n, std::int64_t(kMeanSegment), block});
  b->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_memcpy_ceiling)->Arg(std::int64_t(64) << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_build_layout)->Apply(sizes_all);
BENCHMARK(BM_dense_mask_packed)->Apply(sizes_dense);
BENCHMARK_TEMPLATE(BM_additive_mask, float)->Apply(sizes_dense);
BENCHMARK_TEMPLATE(BM_additive_mask, ansan::bf16)->Apply(sizes_dense);
BENCHMARK(BM_flashinfer_packed_mask)->Apply(sizes_dense);
BENCHMARK(BM_flex_block_mask)->Apply([](benchmark::internal::Benchmark* b) { sizes_blocks(b, 65536); });
BENCHMARK(BM_flex_block_mask_naive)->Apply([](benchmark::internal::Benchmark* b) { sizes_blocks(b, 8192); });
BENCHMARK(BM_mask_density)->Apply(sizes_all);

BENCHMARK_MAIN();
