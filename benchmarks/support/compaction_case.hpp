// benchmarks/support/compaction_case.hpp - the cache, keep flags and reported counters shared
// by the host and device KV compaction benchmarks (plain C++: compiles under g++ and nvcc).
//
// A case is a bf16 cache of kBatch equal sequences, kHeads KV heads, head_dim kDim, with
// state.range(0) = 0 for NHD or 1 for HND, state.range(1) MiB of K+V and about
// state.range(2) percent of the rows flagged kept at random (seed 7).
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "ansan/compaction.hpp"
#include "ansan/dtype.hpp"

namespace ansan::bench {

constexpr std::int32_t kBatch = 4, kHeads = 8, kDim = 128;

// One benchmark case's shape and keep flags, all on the host.
struct CompactionCase {
  KVStorage storage;
  std::size_t row_bytes;                 // bytes of one row of K (or of V)
  index_t rows;                          // rows of the whole cache
  std::vector<std::int32_t> cu_seqlens;  // (kBatch + 1)
  std::vector<std::uint8_t> keep;        // (rows)
  std::int64_t kept_rows;
  std::size_t moved_bytes;  // kept K and V bytes, read + written
};

// The case that state's first three arguments describe.
inline CompactionCase compaction_case(const benchmark::State& state) {
  CompactionCase c;
  c.storage = state.range(0) == 0 ? KVStorage::nhd : KVStorage::hnd;
  const std::int64_t cache_bytes = state.range(1) << 20;  // K + V
  const double keep_rate = double(state.range(2)) / 100.0;
  c.row_bytes = std::size_t(kHeads) * kDim * sizeof(bf16);
  c.rows = index_t(cache_bytes / std::int64_t(2 * c.row_bytes));
  c.cu_seqlens = {0};
  for (std::int32_t b = 0; b < kBatch; ++b)
    c.cu_seqlens.push_back(std::int32_t(c.rows * (b + 1) / kBatch));
  c.keep.resize(static_cast<std::size_t>(c.rows));
  std::mt19937 rng(7);
  std::bernoulli_distribution kept(keep_rate);
  c.kept_rows = 0;
  for (auto& f : c.keep) c.kept_rows += f = kept(rng);
  c.moved_bytes = 2 * 2 * std::size_t(c.kept_rows) * c.row_bytes;
  return c;
}

// Sets the GBps, memcpy_GBps (the in-run ceiling), of_memcpy and kept_rows counters from the
// summed compaction and copy times of all iterations.
inline void report_against_memcpy(benchmark::State& state, const CompactionCase& c,
                                  double seconds, double memcpy_seconds) {
  const double rate = double(c.moved_bytes) * double(state.iterations()) / seconds;
  const double ceiling = double(c.moved_bytes) * double(state.iterations()) / memcpy_seconds;
  state.counters["GBps"] = rate / 1e9;
  state.counters["memcpy_GBps"] = ceiling / 1e9;
  state.counters["of_memcpy"] = rate / ceiling;
  state.counters["kept_rows"] = double(c.kept_rows);
}

}  // namespace ansan::bench
