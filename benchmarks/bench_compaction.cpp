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
//   ./bench_compaction --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "ansan/compaction.hpp"
#include "ansan/dtype.hpp"

namespace {

constexpr std::int32_t kBatch = 4, kHeads = 8, kDim = 128;

void BM_compact_kv(benchmark::State& state) {
  const auto storage = state.range(0) == 0 ? ansan::KVStorage::nhd : ansan::KVStorage::hnd;
  const std::int64_t cache_bytes = state.range(1) << 20;  // K + V
  const double keep_rate = double(state.range(2)) / 100.0;
  const int threads = int(state.range(3));
  const std::size_t row_bytes = std::size_t(kHeads) * kDim * sizeof(ansan::bf16);  // one of K or V
  const auto rows = ansan::index_t(cache_bytes / std::int64_t(2 * row_bytes));

  std::vector<ansan::bf16> k(std::size_t(rows) * kHeads * kDim), v(k.size()), out_k(k.size()),
      out_v(k.size());
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i] = ansan::from_float<ansan::bf16>(float(i % 251)),
    v[i] = ansan::from_float<ansan::bf16>(-float(i % 241));
  std::vector<std::int32_t> pos(static_cast<std::size_t>(rows)), out_pos(pos.size()), cu{0},
      cu_out(kBatch + 1);
  std::vector<std::uint8_t> anchor(pos.size()), out_anchor(pos.size()), keep(pos.size());
  for (std::int32_t b = 0; b < kBatch; ++b) cu.push_back(std::int32_t(rows * (b + 1) / kBatch));
  std::mt19937 rng(7);
  std::bernoulli_distribution kept(keep_rate);
  std::int64_t kept_rows = 0;
  for (auto& f : keep) kept_rows += f = kept(rng);

  const ansan::KVRows<const ansan::bf16> in{
      ansan::kv_view<const ansan::bf16>(k.data(), storage, rows, kHeads, kDim),
      ansan::kv_view<const ansan::bf16>(v.data(), storage, rows, kHeads, kDim), pos.data(),
      anchor.data()};
  const ansan::KVRows<ansan::bf16> out{ansan::kv_view(out_k.data(), storage, rows, kHeads, kDim),
                                       ansan::kv_view(out_v.data(), storage, rows, kHeads, kDim),
                                       out_pos.data(), out_anchor.data()};
  const ansan::RaggedRows seqs{kBatch, cu.data(), nullptr};
  const std::size_t moved = 2 * 2 * std::size_t(kept_rows) * row_bytes;  // K and V, read + written
  // The ceiling: std::memcpy of the same bytes between two other buffers, timed in every
  // iteration right after the compaction, so both see the same machine load.
  std::vector<unsigned char> copy_from(moved / 2, 1), copy_to(moved / 2, 0);
  using clock = std::chrono::steady_clock;
  double seconds = 0, memcpy_seconds = 0;
  for (auto _ : state) {
    auto start = clock::now();
    ansan::compact_kv<ansan::bf16>(in, seqs, keep, out, cu_out, nullptr, threads);
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
  const double rate = double(moved) * double(state.iterations()) / seconds;
  const double ceiling = double(moved) * double(state.iterations()) / memcpy_seconds;
  state.counters["GBps"] = rate / 1e9;
  state.counters["memcpy_GBps"] = ceiling / 1e9;
  state.counters["of_memcpy"] = rate / ceiling;
  state.counters["kept_rows"] = double(kept_rows);
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

}  // namespace

BENCHMARK_MAIN();
