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
#include <vector>

#include "ansan/compaction.hpp"
#include "ansan/dtype.hpp"
#include "support/compaction_case.hpp"

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

}  // namespace

BENCHMARK_MAIN();
