// benchmarks/bench_compaction_cuda.cu - device KV compaction throughput against an in-run
// cudaMemcpyAsync device-to-device of the same bytes.
//
// Out-of-place ansan::cuda::compact_kv (CUB select + 16-byte gather) and compact_kv_inplace of
// a bf16 cache (4 sequences, 8 KV heads, head_dim 128) of 4, 64 or 512 MiB of K+V, keeping ~5%
// (anchor-like) or ~50% of the rows at random, NHD and HND. in_place: 0 out of place, 1 in
// place repacking the batch (the two phases through scratch), 2 in place within each
// sequence's rows (maybe_seq_start set, as ansan::cuda::KVCache does: one launch, no scratch).
// Timed with CUDA events around each call (manual time). Reported:
//   GBps         kept K+V bytes read + written per second (metadata and the select not counted;
//                in place counts the scratch round trip as one move, the useful work)
//   memcpy_GBps  cudaMemcpyAsync D2D of the same number of bytes, timed in every iteration
//   of_memcpy    GBps / memcpy_GBps
//
// BM_cache_reduce_cuda: the reduction of a decode step, ansan::cuda::KVCache::reduce(), on the
// long-context decode batch of BM_cache_reduce (bench_compaction.cpp, support/decode_batch.hpp:
// 64 sequences, 16-token segments, 4 closing each step) at 1k and 16k tokens of context, 8 or 32
// layers, bf16, 8 KV heads, head_dim 128. Each iteration appends one row per sequence (not
// timed), then times reduce() until the stream is idle (manual time): host work (what moves,
// the move table), the upload, the launch and the kernel. Reported beside it:
//   host_us      until reduce() returns: the host's share (and any wait the upload makes)
//   floor_us     a 4-byte cudaMemsetAsync and the same synchronisation, timed in every
//                iteration: the least any stream operation costs here
//   of_floor     reduce time / floor
//   rows_held, dropped_per_step   as in BM_cache_reduce
// Without a CUDA device every case reports "no CUDA device" and is skipped.
//
//   ./bench_compaction_cuda --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "ansan/cuda/compaction.cuh"
#include "ansan/cuda/kv_cache.cuh"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda_check.hpp"
#include "ansan/dtype.hpp"
#include "support/compaction_case.hpp"
#include "support/decode_batch.hpp"

namespace {

using ansan::bench::kBatch, ansan::bench::kHeads, ansan::bench::kDim;
using Element = ansan::bf16;
using ansan::cuda::detail::DeviceBuffer;

template <class E>
DeviceBuffer<E> to_device(const std::vector<E>& host) {
  DeviceBuffer<E> d(host.size());
  ANSAN_CUDA_THROW(
      cudaMemcpy(d.data(), host.data(), host.size() * sizeof(E), cudaMemcpyHostToDevice));
  return d;
}

// Seconds between two events recorded around `work` on the default stream.
template <class Work>
double timed(cudaEvent_t start, cudaEvent_t stop, Work&& work) {
  ANSAN_CUDA_THROW(cudaEventRecord(start));
  work();
  ANSAN_CUDA_THROW(cudaEventRecord(stop));
  ANSAN_CUDA_THROW(cudaEventSynchronize(stop));
  float ms = 0;
  ANSAN_CUDA_THROW(cudaEventElapsedTime(&ms, start, stop));
  return double(ms) / 1e3;
}

void BM_compact_kv_cuda(benchmark::State& state) {
  if (!ansan::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const ansan::bench::CompactionCase c = ansan::bench::compaction_case(state);
  const auto storage = c.storage;
  const bool in_place = state.range(3) != 0, within_sequences = state.range(3) == 2;
  const auto rows = c.rows;

  DeviceBuffer<Element> d_k(std::size_t(rows) * kHeads * kDim), d_v(d_k.size()),
      d_out_k(d_k.size()), d_out_v(d_k.size());
  ANSAN_CUDA_THROW(cudaMemset(d_k.data(), 1, d_k.bytes()));
  ANSAN_CUDA_THROW(cudaMemset(d_v.data(), 2, d_v.bytes()));
  DeviceBuffer<std::int32_t> d_pos(static_cast<std::size_t>(rows)), d_out_pos(d_pos.size()),
      d_cu_out(kBatch + 1);
  DeviceBuffer<std::uint8_t> d_anchor(d_pos.size()), d_out_anchor(d_pos.size());
  const auto d_cu = to_device(c.cu_seqlens);
  const auto d_seq_start =
      to_device(std::vector<std::int32_t>(c.cu_seqlens.begin(), c.cu_seqlens.end() - 1));
  const auto d_keep = to_device(c.keep);

  const ansan::KVRows<Element> in{ansan::kv_view(d_k.data(), storage, rows, kHeads, kDim),
                                  ansan::kv_view(d_v.data(), storage, rows, kHeads, kDim),
                                  d_pos.data(), d_anchor.data()};
  const ansan::KVRows<Element> out{ansan::kv_view(d_out_k.data(), storage, rows, kHeads, kDim),
                                   ansan::kv_view(d_out_v.data(), storage, rows, kHeads, kDim),
                                   d_out_pos.data(), d_out_anchor.data()};
  const ansan::RaggedRows seqs{kBatch, d_cu.data(),
                               within_sequences ? d_seq_start.data() : nullptr};
  std::size_t bytes = 0;
  if (in_place)
    ANSAN_CUDA_THROW(ansan::cuda::compact_kv_inplace(nullptr, bytes, in, seqs, rows, d_keep.data(),
                                                     d_cu_out.data()));
  else
    ANSAN_CUDA_THROW(ansan::cuda::compact_kv<Element>(nullptr, bytes, in, seqs, rows, d_keep.data(),
                                                      out, d_cu_out.data()));
  const DeviceBuffer<unsigned char> d_temp(bytes);
  DeviceBuffer<unsigned char> d_copy_from(c.moved_bytes / 2), d_copy_to(c.moved_bytes / 2);

  cudaEvent_t start, stop;
  ANSAN_CUDA_THROW(cudaEventCreate(&start));
  ANSAN_CUDA_THROW(cudaEventCreate(&stop));
  double seconds = 0, memcpy_seconds = 0;
  for (auto _ : state) {
    // In place, every call moves the same rows (the flags and offsets are unchanged); only
    // the values differ from the first call on.
    const double elapsed = timed(start, stop, [&] {
      std::size_t temp_bytes = bytes;
      if (in_place)
        ANSAN_CUDA_THROW(ansan::cuda::compact_kv_inplace(d_temp.data(), temp_bytes, in, seqs, rows,
                                                         d_keep.data(), d_cu_out.data()));
      else
        ANSAN_CUDA_THROW(ansan::cuda::compact_kv<Element>(d_temp.data(), temp_bytes, in, seqs, rows,
                                                          d_keep.data(), out, d_cu_out.data()));
    });
    state.SetIterationTime(elapsed);
    seconds += elapsed;
    memcpy_seconds += timed(start, stop, [&] {
      ANSAN_CUDA_THROW(cudaMemcpyAsync(d_copy_to.data(), d_copy_from.data(), d_copy_from.bytes(),
                                       cudaMemcpyDeviceToDevice));
    });
  }
  ANSAN_CUDA_THROW(cudaEventDestroy(start));
  ANSAN_CUDA_THROW(cudaEventDestroy(stop));
  ansan::bench::report_against_memcpy(state, c, seconds, memcpy_seconds);
}

void cuda_cases(benchmark::internal::Benchmark* b) {
  b->ArgNames({"hnd", "cache_MiB", "keep_pct", "in_place"});
  for (const int storage : {0, 1})
    for (const int mib : {4, 64, 512})
      for (const int keep : {5, 50})
        for (const int in_place : {0, 1, 2}) b->Args({storage, mib, keep, in_place});
  b->Unit(benchmark::kMicrosecond)->UseManualTime();
}

BENCHMARK(BM_compact_kv_cuda)->Apply(cuda_cases);

void BM_cache_reduce_cuda(benchmark::State& state) {
  if (!ansan::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  using ansan::bench::kDecodeBatch, ansan::bench::kPromptChunk;
  const auto context = std::int32_t(state.range(0)), layers = std::int32_t(state.range(1));
  ansan::bench::DecodeBatch text;
  ansan::cuda::KVCache<Element> cache(ansan::LayerCount{layers}, kDecodeBatch, kHeads, kDim,
                                      ansan::MaskPolicy::anllm());
  DeviceBuffer<Element> zeros(std::size_t(kDecodeBatch) * kPromptChunk * kHeads * kDim);
  ANSAN_CUDA_THROW(cudaMemset(zeros.data(), 0, zeros.bytes()));
  const auto append = [&](std::int32_t rows_each) {  // K and V zero: only the moves are timed
    const ansan::bench::DecodeBatch::Chunk c = text.next(rows_each);
    const auto rows = ansan::make_view<const Element>(zeros.data(), ansan::index_t(c.pos.size()),
                                                      kHeads, kDim);
    cache.append_rows(c.cu, c.pos, c.is_anchor);
    for (std::int32_t l = 0; l < layers; ++l) cache.write(l, rows, rows);
  };
  for (std::int32_t fed = 0; fed < context; fed += kPromptChunk) {
    append(std::min(kPromptChunk, context - fed));
    cache.reduce();
  }
  DeviceBuffer<std::int32_t> d_word(1);
  using clock = std::chrono::steady_clock;
  const auto synchronised = [&](auto&& work) {
    ANSAN_CUDA_THROW(cudaStreamSynchronize(cache.stream()));
    const auto start = clock::now();
    work();
    ANSAN_CUDA_THROW(cudaStreamSynchronize(cache.stream()));
    return std::chrono::duration<double>(clock::now() - start).count();
  };
  double seconds = 0, floor_seconds = 0, host_seconds = 0;
  std::int64_t dropped = 0, held = 0;
  for (auto _ : state) {
    append(1);
    held += cache.entries();
    const double elapsed = synchronised([&] {
      const auto start = clock::now();
      dropped += cache.reduce();
      host_seconds += std::chrono::duration<double>(clock::now() - start).count();
    });
    state.SetIterationTime(elapsed);
    seconds += elapsed;
    floor_seconds += synchronised([&] {
      ANSAN_CUDA_THROW(cudaMemsetAsync(d_word.data(), 0, sizeof(std::int32_t), cache.stream()));
    });
  }
  const double n = double(state.iterations());
  state.counters["rows_held"] = double(held) / n;
  state.counters["dropped_per_step"] = double(dropped) / n;
  state.counters["host_us"] = host_seconds / n * 1e6;
  state.counters["floor_us"] = floor_seconds / n * 1e6;
  state.counters["of_floor"] = seconds / floor_seconds;
}
BENCHMARK(BM_cache_reduce_cuda)
    ->ArgNames({"context", "layers"})
    ->Args({1024, 8})
    ->Args({16384, 8})
    ->Args({1024, 32})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime()
    ->Iterations(512);

}  // namespace

BENCHMARK_MAIN();
