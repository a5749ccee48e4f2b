// GPU anchor-layout construction (ansan/cuda/layout.cuh): tokens/s at n = 2^16, 2^20, 2^24.
//
// Batches of 4096-token sequences, one anchor per 20 tokens on average (SPEC section 4's L).
// Cases:
//   host_build_layout  the baseline: ansan::build_layout on the host, one core (no device
//                      needed), beside an in-run host memcpy of the same bytes
//   build_tokens       the raw EP builder (ids -> layout), storage allocated once, CUDA events
//   build_flags        the raw flag builder
//   device_layout      DeviceLayout::from_tokens: device checks, allocation, build, two syncs
// Bytes are the least a builder must move (4 B of id in, 13 B of pos/is_anchor/seg/seg_start
// and 4 B per anchor out); copy_per_second is a device-to-device cudaMemcpy of that many
// bytes timed in the same run, the ceiling to compare bytes_per_second with (for the host
// baseline, memcpy_per_second: one core's memcpy).
// Every GPU case skips itself without a CUDA device.
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "ansan/cuda/device_layout.cuh"
#include "ansan/cuda/layout.cuh"
#include "ansan/cuda_check.hpp"
#include "ansan/layout.hpp"

namespace {

using ansan::cuda::detail::DeviceBuffer;

constexpr std::int32_t seq_len = 4096;
constexpr std::int32_t anchor_id = 46;  // '.'
constexpr std::int32_t vocab = 256;

// A packed batch on the host: ids with an anchor every ~20 tokens, their flags, offsets.
struct HostBatch {
  std::int64_t anchors = 0;
  std::vector<std::int32_t> ids;         // (tokens)
  std::vector<std::uint8_t> flags;       // (tokens)
  std::vector<std::int32_t> cu_seqlens;  // (batch+1)

  explicit HostBatch(std::int64_t n)
      : ids(static_cast<std::size_t>(n)),
        flags(static_cast<std::size_t>(n)),
        cu_seqlens(static_cast<std::size_t>(n / seq_len) + 1) {
    std::mt19937 rng(2402);
    std::bernoulli_distribution is_anchor(1.0 / 20);
    for (std::size_t t = 0; t < ids.size(); ++t) {
      flags[t] = is_anchor(rng);
      ids[t] = flags[t] ? anchor_id : std::int32_t(97 + rng() % 26);
      anchors += flags[t];
    }
    for (std::size_t b = 0; b < cu_seqlens.size(); ++b) cu_seqlens[b] = std::int32_t(b) * seq_len;
  }
};

// Google Benchmark runs each case several times; a batch of 2^24 tokens is made once.
const HostBatch& host_batch(std::int64_t n) {
  static std::map<std::int64_t, std::unique_ptr<HostBatch>> made;
  auto& batch = made[n];
  if (!batch) batch = std::make_unique<HostBatch>(n);
  return *batch;
}

// The same batch on the device, with the EP lookup table.
struct DeviceBatch {
  std::int64_t tokens = 0;
  std::int32_t batch = 0;
  std::int64_t anchors = 0;
  DeviceBuffer<std::int32_t> ids;           // (tokens)
  DeviceBuffer<std::uint8_t> flags;         // (tokens)
  DeviceBuffer<std::int32_t> cu_seqlens;    // (batch+1)
  DeviceBuffer<std::uint8_t> id_is_anchor;  // (vocab)

  explicit DeviceBatch(std::int64_t n) : tokens(n), batch(std::int32_t(n / seq_len)) {
    const HostBatch& host = host_batch(n);
    std::vector<std::uint8_t> lookup(vocab, 0);  // (vocab)
    lookup[anchor_id] = 1;
    anchors = host.anchors;
    ids = upload(host.ids);
    flags = upload(host.flags);
    cu_seqlens = upload(host.cu_seqlens);
    id_is_anchor = upload(lookup);
  }

  double min_bytes() const { return double(tokens) * (4 + 13) + double(anchors) * 4; }

  template <class T>
  static DeviceBuffer<T> upload(const std::vector<T>& host) {
    DeviceBuffer<T> d(host.size());
    ANSAN_CUDA_THROW(cudaMemcpy(d.data(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
    return d;
  }
};

const DeviceBatch& device_batch(std::int64_t n) {
  static std::map<std::int64_t, std::unique_ptr<DeviceBatch>> made;
  auto& batch = made[n];
  if (!batch) batch = std::make_unique<DeviceBatch>(n);
  return *batch;
}

struct Outputs {
  DeviceBuffer<std::int32_t> pos, seg, seg_start, cu_anchors, anchor_pos;
  DeviceBuffer<std::uint8_t> is_anchor;
  explicit Outputs(const DeviceBatch& in)
      : pos(std::size_t(in.tokens)),
        seg(std::size_t(in.tokens)),
        seg_start(std::size_t(in.tokens)),
        cu_anchors(std::size_t(in.batch) + 1),
        anchor_pos(std::size_t(in.tokens)),
        is_anchor(std::size_t(in.tokens)) {}
  ansan::cuda::LayoutBuffers buffers() {
    return {pos.data(),       is_anchor.data(),  seg.data(),
            seg_start.data(), cu_anchors.data(), anchor_pos.data()};
  }
};

// Times `run()` with CUDA events, one iteration per benchmark iteration.
template <class Run>
double time_ms(Run run) {
  cudaEvent_t start, stop;
  ANSAN_CUDA_THROW(cudaEventCreate(&start));
  ANSAN_CUDA_THROW(cudaEventCreate(&stop));
  ANSAN_CUDA_THROW(cudaEventRecord(start));
  run();
  ANSAN_CUDA_THROW(cudaEventRecord(stop));
  ANSAN_CUDA_THROW(cudaEventSynchronize(stop));
  float ms = 0;
  ANSAN_CUDA_THROW(cudaEventElapsedTime(&ms, start, stop));
  ANSAN_CUDA_THROW(cudaEventDestroy(start));
  ANSAN_CUDA_THROW(cudaEventDestroy(stop));
  return ms;
}

// The in-run ceiling: a device-to-device copy of the builder's minimum traffic.
double copy_bytes_per_second(double bytes) {
  DeviceBuffer<unsigned char> src(std::size_t(bytes / 2)), dst(std::size_t(bytes / 2));
  const auto copy = [&] {  // half read, half written: `bytes` of traffic
    ANSAN_CUDA_THROW(
        cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), cudaMemcpyDeviceToDevice));
  };
  copy();  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < 20; ++rep) best = std::min(best, time_ms(copy));
  return bytes / (best * 1e-3);
}

void report(benchmark::State& state, const DeviceBatch& in) {
  state.SetItemsProcessed(state.iterations() * in.tokens);
  state.SetBytesProcessed(std::int64_t(double(state.iterations()) * in.min_bytes()));
  state.counters["tokens"] = double(in.tokens);
  state.counters["anchors"] = double(in.anchors);
  state.counters["copy_per_second"] =
      benchmark::Counter(copy_bytes_per_second(in.min_bytes()), benchmark::Counter::kDefaults,
                         benchmark::Counter::OneK::kIs1024);
}

bool skip_without_device(benchmark::State& state) {
  if (ansan::cuda_device_available()) return false;
  state.SkipWithError("no CUDA device");
  return true;
}

template <bool FromIds>
void build_raw(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const DeviceBatch& in = device_batch(state.range(0));
  Outputs out(in);
  const auto build = [&](void* temp, std::size_t& bytes) {
    auto buffers = out.buffers();
    return FromIds ? ansan::cuda::build_layout(temp, bytes, in.ids.data(), in.tokens,
                                               in.id_is_anchor.data(), vocab, in.cu_seqlens.data(),
                                               in.batch, buffers)
                   : ansan::cuda::build_layout_from_flags(temp, bytes, in.flags.data(), in.tokens,
                                                          in.cu_seqlens.data(), in.batch, buffers);
  };
  std::size_t temp_bytes = 0;
  ANSAN_CUDA_THROW(build(nullptr, temp_bytes));
  DeviceBuffer<unsigned char> temp(temp_bytes);
  ANSAN_CUDA_THROW(build(temp.data(), temp_bytes));  // warm-up
  for (auto _ : state)
    state.SetIterationTime(time_ms([&] { ANSAN_CUDA_THROW(build(temp.data(), temp_bytes)); }) /
                           1e3);
  report(state, in);
}

void build_tokens(benchmark::State& state) { build_raw<true>(state); }
void build_flags(benchmark::State& state) { build_raw<false>(state); }

void device_layout(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const DeviceBatch& in = device_batch(state.range(0));
  const auto selector = ansan::AnchorSelector::endpoint({anchor_id});
  const auto build = [&] {
    benchmark::DoNotOptimize(ansan::cuda::DeviceLayout::from_tokens(
        in.ids.data(), in.tokens, in.cu_seqlens.data(), in.batch, selector, vocab));
  };
  build();  // warm-up
  for (auto _ : state) state.SetIterationTime(time_ms(build) / 1e3);
  report(state, in);
}

// The naive baseline: the host builder (ansan/layout.hpp) on the same batch, one core. Runs
// with or without a device.
void host_build_layout(benchmark::State& state) {
  const HostBatch& in = host_batch(state.range(0));
  const auto selector = ansan::AnchorSelector::endpoint({anchor_id});
  for (auto _ : state)
    benchmark::DoNotOptimize(ansan::build_layout(in.ids, in.cu_seqlens, selector, vocab));
  state.SetItemsProcessed(state.iterations() * state.range(0));
  const double bytes = double(in.ids.size()) * (4 + 13) + double(in.anchors) * 4;
  state.SetBytesProcessed(std::int64_t(double(state.iterations()) * bytes));
  state.counters["tokens"] = double(state.range(0));
  // The in-run ceiling: one core's memcpy of the same bytes (half read, half written).
  std::vector<char> src(std::size_t(bytes / 2), 1), dst(src.size());
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  state.counters["memcpy_per_second"] = benchmark::Counter(
      bytes / best, benchmark::Counter::kDefaults, benchmark::Counter::OneK::kIs1024);
}

}  // namespace

BENCHMARK(host_build_layout)
    ->ArgName("n")
    ->Arg(1 << 16)
    ->Arg(1 << 20)
    ->Arg(1 << 24)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(build_tokens)->ArgName("n")->Arg(1 << 16)->Arg(1 << 20)->Arg(1 << 24)->UseManualTime();
BENCHMARK(build_flags)->ArgName("n")->Arg(1 << 16)->Arg(1 << 20)->Arg(1 << 24)->UseManualTime();
BENCHMARK(device_layout)->ArgName("n")->Arg(1 << 16)->Arg(1 << 20)->Arg(1 << 24)->UseManualTime();

BENCHMARK_MAIN();
