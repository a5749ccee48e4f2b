// benchmarks/bench_compaction.cpp - host KV compaction throughput against an in-run memcpy.
//
// Out-of-place ansan::compact_kv of a bf16 cache (4 sequences, 8 KV heads, head_dim 128) of
// 4 or 64 MiB of K+V, keeping ~5% (anchor-like) or ~50% of the rows at random, NHD and HND,
// on 1 or 2 threads. Reported:
//   GBps         bytes moved per second: kept K+V bytes read + written (metadata not counted)
//   memcpy_GBps  std::memcpy of the same number of bytes between two other buffers, timed in
//                every iteration right after the compaction (one thread: the one-core copy rate)
//   of_memcpy    GBps / memcpy_GBps (the goal is >= 0.6 at >= 4 MiB)
//
// BM_cache_steps: a decode loop's cache work over many layers, with the layers in one
// ansan::KVCache (LayerCount) or in one cache each; see its comment.
// BM_cache_reduce: one reduce() of a long-context decode batch; see its comment.
//
//   ./bench_compaction --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "ansan/compaction.hpp"
#include "ansan/dtype.hpp"
#include "ansan/kv_cache.hpp"
#include "support/compaction_case.hpp"
#include "support/decode_batch.hpp"

namespace {

using ansan::bench::kBatch, ansan::bench::kHeads, ansan::bench::kDim;

void BM_compact_kv(benchmark::State& state) {
  const ansan::bench::CompactionCase c = ansan::bench::compaction_case(state);
  const auto storage = c.storage;
  const int threads = int(state.range(3));
  const auto rows = c.rows;

  std::vector<ansan::bf16> k(std::size_t(rows) * kHeads * kDim), v(k.size()), out_k(k.size()),
      out_v(k.size());
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i] = ansan::from_float<ansan::bf16>(float(i % 251)),
    v[i] = ansan::from_float<ansan::bf16>(-float(i % 241));
  std::vector<std::int32_t> pos(static_cast<std::size_t>(rows)), out_pos(pos.size()),
      cu_out(kBatch + 1);
  std::vector<std::uint8_t> anchor(pos.size()), out_anchor(pos.size());

  const ansan::KVRows<const ansan::bf16> in{
      ansan::kv_view<const ansan::bf16>(k.data(), storage, rows, kHeads, kDim),
      ansan::kv_view<const ansan::bf16>(v.data(), storage, rows, kHeads, kDim), pos.data(),
      anchor.data()};
  const ansan::KVRows<ansan::bf16> out{ansan::kv_view(out_k.data(), storage, rows, kHeads, kDim),
                                       ansan::kv_view(out_v.data(), storage, rows, kHeads, kDim),
                                       out_pos.data(), out_anchor.data()};
  const ansan::RaggedRows seqs{kBatch, c.cu_seqlens.data(), nullptr};
  const std::size_t moved = c.moved_bytes;
  // The ceiling: std::memcpy of the same bytes between two other buffers, timed in every
  // iteration right after the compaction, so both see the same machine load.
  std::vector<unsigned char> copy_from(moved / 2, 1), copy_to(moved / 2, 0);
  using clock = std::chrono::steady_clock;
  double seconds = 0, memcpy_seconds = 0;
  for (auto _ : state) {
    auto start = clock::now();
    ansan::compact_kv<ansan::bf16>(in, seqs, c.keep, out, cu_out, nullptr, threads);
    benchmark::DoNotOptimize(out_k.data());
    benchmark::ClobberMemory();
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    state.SetIterationTime(elapsed);
    seconds += elapsed;
    start = clock::now();
    std::memcpy(copy_to.data(), copy_from.data(), copy_from.size());
    benchmark::DoNotOptimize(copy_to.data());
    benchmark::ClobberMemory();
    memcpy_seconds += std::chrono::duration<double>(clock::now() - start).count();
  }
  ansan::bench::report_against_memcpy(state, c, seconds, memcpy_seconds);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(moved));
}

void compaction_cases(benchmark::internal::Benchmark* b) {
  b->ArgNames({"hnd", "cache_MiB", "keep_pct", "threads"});
  for (const int storage : {0, 1})
    for (const int mib : {4, 64})
      for (const int keep : {5, 50})
        for (const int threads : {1, 2}) b->Args({storage, mib, keep, threads});
  b->Unit(benchmark::kMicrosecond)->UseManualTime();
}

BENCHMARK(BM_compact_kv)->Apply(compaction_cases);

// A decode loop's cache work: 16 sequences gain one token a step, each an anchor with
// probability 1/20, and the cache reduces after every step that brought one (Algorithm 1), over
// `layers` layers kept in one KVCache (rows appended once, write() per layer, one reduce()) or
// in one KVCache per layer (append() and reduce() on each). 256 steps after a 256-token prompt
// that was reduced; bf16, NHD, 8 KV heads, head_dim 128, room for every row (no growth), one
// thread. The new rows' K and V are ready beforehand; only the cache calls are timed.
//   us_per_step  time per step
//   memcpy_us    std::memcpy of a step's new K/V bytes (16 * layers rows), the least any cache
//                must do, timed in the same iteration
void BM_cache_steps(benchmark::State& state) {
  const bool shared = state.range(0) != 0;
  const auto layers = std::int32_t(state.range(1));
  constexpr std::int32_t batch = 16, prompt = 256, steps = 256;
  using ansan::bf16;
  std::mt19937 rng(5);
  std::vector<std::uint8_t> flags(std::size_t(batch) * (prompt + steps));  // [t][b]
  for (auto& flag : flags) flag = rng() % 20 == 0;
  std::vector<bf16> prompt_kv(std::size_t(batch) * prompt * kHeads * kDim, ansan::bf16{}),
      step_kv(std::size_t(batch) * kHeads * kDim, ansan::bf16{});
  const auto prompt_rows =
      ansan::make_view<const bf16>(prompt_kv.data(), batch * prompt, kHeads, kDim);
  const auto step_rows = ansan::make_view<const bf16>(step_kv.data(), batch, kHeads, kDim);
  // Prompt: sequence b holds tokens [b * prompt, (b + 1) * prompt) of the chunk.
  std::vector<std::int32_t> prompt_cu, prompt_pos;
  std::vector<std::uint8_t> prompt_flags;
  for (std::int32_t b = 0; b <= batch; ++b) prompt_cu.push_back(b * prompt);
  for (std::int32_t b = 0; b < batch; ++b)
    for (std::int32_t t = 0; t < prompt; ++t)
      prompt_pos.push_back(t), prompt_flags.push_back(flags[std::size_t(t) * batch + b]);
  std::vector<std::int32_t> step_cu;
  for (std::int32_t b = 0; b <= batch; ++b) step_cu.push_back(b);

  using Cache = ansan::KVCache<bf16>;
  const std::size_t step_bytes = std::size_t(batch) * layers * 2 * kHeads * kDim * sizeof(bf16);
  std::vector<unsigned char> copy_from(step_bytes, 1), copy_to(step_bytes, 0);
  using clock = std::chrono::steady_clock;
  double seconds = 0, memcpy_seconds = 0;
  for (auto _ : state) {
    std::vector<Cache> caches;  // one of `layers` layers, or `layers` of one
    for (std::int32_t c = 0; c < (shared ? 1 : layers); ++c)
      caches.emplace_back(ansan::LayerCount{shared ? layers : 1}, batch, kHeads, kDim,
                          ansan::MaskPolicy::anllm(), prompt + steps);
    for (Cache& cache : caches) {
      cache.append_rows(prompt_cu, prompt_pos, prompt_flags);
      for (std::int32_t l = 0; l < cache.layers(); ++l) cache.write(l, prompt_rows, prompt_rows);
      cache.reduce(1);
    }
    auto start = clock::now();
    for (std::int32_t s = 0; s < steps; ++s) {
      const std::int32_t t = prompt + s;
      const std::vector<std::int32_t> pos(std::size_t(batch), t);
      const ansan::span<const std::uint8_t> step_flags(&flags[std::size_t(t) * batch],
                                                       std::size_t(batch));
      bool anchor = false;
      for (const std::uint8_t f : step_flags) anchor |= f != 0;
      for (Cache& cache : caches) {
        if (shared) {
          cache.append_rows(step_cu, pos, step_flags);
          for (std::int32_t l = 0; l < layers; ++l) cache.write(l, step_rows, step_rows);
        } else {
          cache.append(step_rows, step_rows, step_cu, pos, step_flags);
        }
        if (anchor) cache.reduce(1);
      }
    }
    benchmark::ClobberMemory();
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    state.SetIterationTime(elapsed);
    seconds += elapsed;
    start = clock::now();
    for (std::int32_t s = 0; s < steps; ++s) {
      std::memcpy(copy_to.data(), copy_from.data(), step_bytes);
      benchmark::DoNotOptimize(copy_to.data());
      benchmark::ClobberMemory();
    }
    memcpy_seconds += std::chrono::duration<double>(clock::now() - start).count();
  }
  const double step_count = double(state.iterations()) * steps;
  state.counters["us_per_step"] = seconds / step_count * 1e6;
  state.counters["memcpy_us"] = memcpy_seconds / step_count * 1e6;
}

BENCHMARK(BM_cache_steps)
    ->ArgNames({"shared", "layers"})
    ->ArgsProduct({{0, 1}, {8, 32}})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime()
    ->Iterations(10);

// A decode step's reduce() on a batch of 64 sequences after a prompt of `context` tokens each
// (support/decode_batch.hpp: segments of 16, 4 sequences closing one each step), bf16, NHD,
// 8 KV heads, head_dim 128, one layer, one thread. The prompt is appended in chunks of 1024
// tokens a sequence, each reduced, as a chunked prefill does; then each iteration appends one
// token a sequence (not timed) and times reduce(). What a reduction must look at is the rows
// that closed since the last one, not the rows held, so the time should not grow with context.
//   rows_held         rows the cache held before each reduce(), on average (each step adds 64
//                     rows and drops 60: the context grows as decoding goes on, 512 steps)
//   dropped_per_step  rows each reduce() dropped, on average
//   memcpy_us         std::memcpy of a step's new K/V bytes (64 rows), timed in every iteration
//   x_memcpy          reduce() time / memcpy_us
void BM_cache_reduce(benchmark::State& state) {
  using ansan::bf16, ansan::bench::kDecodeBatch, ansan::bench::kPromptChunk;
  const auto context = std::int32_t(state.range(0));
  ansan::bench::DecodeBatch text;
  ansan::KVCache<bf16> cache(kDecodeBatch, kHeads, kDim, ansan::MaskPolicy::anllm());
  const std::vector<bf16> zeros(std::size_t(kDecodeBatch) * kPromptChunk * kHeads * kDim);
  const auto append = [&](std::int32_t rows_each) {
    const ansan::bench::DecodeBatch::Chunk c = text.next(rows_each);
    const auto rows =
        ansan::make_view<const bf16>(zeros.data(), ansan::index_t(c.pos.size()), kHeads, kDim);
    cache.append(rows, rows, c.cu, c.pos, c.is_anchor);
  };
  for (std::int32_t fed = 0; fed < context; fed += kPromptChunk) {
    append(std::min(kPromptChunk, context - fed));
    cache.reduce(1);
  }
  const std::size_t step_bytes = std::size_t(kDecodeBatch) * 2 * kHeads * kDim * sizeof(bf16);
  std::vector<unsigned char> copy_from(step_bytes, 1), copy_to(step_bytes, 0);
  using clock = std::chrono::steady_clock;
  double seconds = 0, memcpy_seconds = 0;
  std::int64_t dropped = 0, held = 0;
  for (auto _ : state) {
    append(1);
    held += cache.entries();
    auto start = clock::now();
    dropped += cache.reduce(1);
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    state.SetIterationTime(elapsed);
    seconds += elapsed;
    start = clock::now();
    std::memcpy(copy_to.data(), copy_from.data(), step_bytes);
    benchmark::DoNotOptimize(copy_to.data());
    benchmark::ClobberMemory();
    memcpy_seconds += std::chrono::duration<double>(clock::now() - start).count();
  }
  const double n = double(state.iterations());
  state.counters["rows_held"] = double(held) / n;
  state.counters["dropped_per_step"] = double(dropped) / n;
  state.counters["memcpy_us"] = memcpy_seconds / n * 1e6;
  state.counters["x_memcpy"] = seconds / memcpy_seconds;
}

BENCHMARK(BM_cache_reduce)
    ->ArgNames({"context"})
    ->Arg(1024)
    ->Arg(16384)
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime()
    ->Iterations(512);

}  // namespace

BENCHMARK_MAIN();
