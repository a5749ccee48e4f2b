// Fused CPU anchor attention against what the same kernel costs without the two-part split
// (issue 3): H = 8 query heads, 2 KV heads, D = 128, one sequence of n tokens whose segment
// lengths are drawn uniformly in [L/2, 3L/2].
//
//   sgemm/...        Eigen sgemm 1024^3, the machine's ceiling, measured in the same run
//   anchor/...       ansan::cpu::attention_forward, AnLLM policy, TileSkipping::two_part
//   anchor_bf16/...  the same with bf16 q, k, v and out (the inputs rounded), as an engine
//                    would call it; x_fp32 = its time over the fp32 anchor path's
//   dense_mask/...   the same kernel, TileSkipping::dense_mask (a custom-mask kernel's cost)
//   dense_causal/... the same kernel, plain causal policy (the model without anchors)
//
// Counters: visible_pairs (query-key pairs the mask allows, all heads), GFLOPs = 4 * D flops
// per visible pair per second, sgemm_GFLOPs = the all-thread sgemm rate measured right before
// the case (best of 3; the machine is shared, so the ceiling is taken beside each case),
// of_sgemm = GFLOPs / sgemm_GFLOPs, and for the dense cases x_anchor = their time over the
// anchor path's time at the same n and L. The *_cpu variants use process CPU time (all
// threads) instead of wall time: on a machine shared with other jobs they are the steadier
// figures, as time spent descheduled does not count.
//
//   decode/...       one decode step: B = 16 sequences, each a compacted bf16 cache of C
//                    entries (anchors, then a 16-token open segment; every entry visible),
//                    one query row each, on 1 or all threads. A step reads the whole cache
//                    once, so memory bandwidth is its ceiling: GBps = K+V bytes / time,
//                    copy_GBps = std::memcpy of the same bytes on the same threads (read +
//                    written, as bandwidth is quoted), of_copy = GBps / copy_GBps.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ansan/cpu/attention.hpp"
#include "support/compacted_decode.hpp"

using namespace ansan;

namespace {

constexpr index_t kHeadsQ = 8, kHeadsKv = 2, kDim = 128;
constexpr int kSgemmSize = 1024;

struct WallCpu {
  double wall = 0, cpu = 0;  // a wall-clock and a CPU-time figure (CPU: all threads)
};
std::map<std::pair<int, int>, WallCpu> g_anchor_seconds;  // (n, L) -> anchor path time

template <class T>
struct Tensors {
  std::vector<T> q, k, v, out;  // (n, heads, dim)
};

// One sequence of n tokens; segment lengths uniform in [L/2, 3L/2]; random q, k, v.
struct Problem {
  AnchorLayout layout;
  Tensors<float> fp32;
  Tensors<bf16> bf16_inputs;  // fp32's q, k, v rounded; filled on first use
  std::vector<float> lse;     // (heads_q, n)

  Problem(int n, int mean_segment) {
    std::mt19937 rng(std::uint32_t(n * 131 + mean_segment));
    std::uniform_int_distribution<int> segment(std::max(1, mean_segment / 2),
                                               mean_segment + mean_segment / 2);
    std::vector<std::uint8_t> flags(std::size_t(n), 0);
    for (int end = segment(rng) - 1; end < n; end += segment(rng)) flags[std::size_t(end)] = 1;
    layout = build_layout_from_flags(flags, std::vector<std::int32_t>{0, n});
    std::uniform_real_distribution<float> value(-1.f, 1.f);
    fp32.q.resize(std::size_t(n * kHeadsQ * kDim));
    fp32.k.resize(std::size_t(n * kHeadsKv * kDim));
    fp32.v.resize(fp32.k.size());
    for (auto* x : {&fp32.q, &fp32.k, &fp32.v})
      for (float& e : *x) e = value(rng);
    fp32.out.resize(fp32.q.size());
    lse.resize(std::size_t(n * kHeadsQ));
  }

  template <class T>
  Tensors<T>& tensors() {
    if constexpr (std::is_same_v<T, float>) {
      return fp32;
    } else {
      if (bf16_inputs.q.empty()) {
        const auto round = [](const std::vector<float>& from) {
          std::vector<bf16> to(from.size());
          std::transform(from.begin(), from.end(), to.begin(), from_float<bf16>);
          return to;
        };
        bf16_inputs = {round(fp32.q), round(fp32.k), round(fp32.v),
                       std::vector<bf16>(fp32.out.size())};
      }
      return bf16_inputs;
    }
  }

  template <class T>
  AttentionArgs<T> args(const MaskPolicy& policy) {
    const index_t n = layout.total_tokens();
    Tensors<T>& t = tensors<T>();
    return prefill_args<T>(layout, make_view<const T>(t.q.data(), n, kHeadsQ, kDim),
                           make_view<const T>(t.k.data(), n, kHeadsKv, kDim),
                           make_view<const T>(t.v.data(), n, kHeadsKv, kDim),
                           make_view(t.out.data(), n, kHeadsQ, kDim),
                           make_view(lse.data(), kHeadsQ, n), policy,
                           float(1 / std::sqrt(double(kDim))));
  }

  // Query-key pairs the policy lets through, summed over the query heads.
  double visible_pairs(const MaskPolicy& policy) const {
    std::vector<std::int64_t> retained_before(1, 0);  // retained keys with position < i
    for (std::int32_t j = 0; j < layout.seq_len(0); ++j)
      retained_before.push_back(retained_before.back() + is_retained(policy, layout.key(0, j)));
    double pairs = 0;
    for (std::int32_t i = 0; i < layout.seq_len(0); ++i) {
      const QueryInfo query = layout.query(0, i);
      const std::int32_t lower = local_lower_bound(policy, query);
      pairs += i - lower + 1;
      if (sees_retained(policy, query)) pairs += double(retained_before[std::size_t(lower)]);
    }
    return pairs * kHeadsQ;
  }
};

Problem& problem(int n, int mean_segment) {
  static std::map<std::pair<int, int>, Problem> cache;
  const auto key = std::make_pair(n, mean_segment);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, Problem(n, mean_segment)).first;
  return it->second;
}

double process_cpu_seconds() {
  timespec now;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

template <class Body>
WallCpu time_iterations(benchmark::State& state, const Body& body) {
  WallCpu total;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = process_cpu_seconds();
    body();
    const double cpu = process_cpu_seconds() - cpu_start;
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(wall);
    total.wall += wall, total.cpu += cpu;
  }
  const double iterations = double(state.iterations());
  return {total.wall / iterations, total.cpu / iterations};
}

// C = A B on `threads` threads (0: all), each multiplying a slice of B's columns.
struct Sgemm {
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(kSgemmSize, kSgemmSize);
  Eigen::MatrixXf b = Eigen::MatrixXf::Random(kSgemmSize, kSgemmSize);
  Eigen::MatrixXf c = Eigen::MatrixXf::Zero(kSgemmSize, kSgemmSize);
  static constexpr double flops = 2.0 * kSgemmSize * kSgemmSize * kSgemmSize;

  void run(int workers) {
    const int slice = (kSgemmSize + workers - 1) / workers;
    cpu::detail::parallel_for(workers, workers, [&](std::int64_t w, int) {
      const int first = int(w) * slice, cols = std::min(slice, kSgemmSize - first);
      c.middleCols(first, cols).noalias() = a * b.middleCols(first, cols);
    });
    benchmark::DoNotOptimize(c.data());
  }
  // Best of `tries` all-thread runs, in flop per wall second and per CPU second.
  WallCpu rate(int tries = 3) {
    const int workers = cpu::detail::worker_count(0, kSgemmSize);
    WallCpu best{1e30, 1e30};
    for (int t = 0; t < tries; ++t) {
      const auto start = std::chrono::steady_clock::now();
      const double cpu_start = process_cpu_seconds();
      run(workers);
      best.cpu = std::min(best.cpu, process_cpu_seconds() - cpu_start);
      best.wall = std::min(best.wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return {flops / best.wall, flops / best.cpu};
  }
};

void bench_sgemm(benchmark::State& state, int threads) {
  static Sgemm sgemm;
  const int workers = cpu::detail::worker_count(threads, kSgemmSize);
  const WallCpu seconds = time_iterations(state, [&] { sgemm.run(workers); });
  state.counters["GFLOPs"] = Sgemm::flops / seconds.wall * 1e-9;
  state.counters["GFLOPs_per_cpu_s"] = Sgemm::flops / seconds.cpu * 1e-9;
  state.counters["threads"] = workers;
}

enum class Path { anchor, dense_mask, dense_causal };

template <class T>
void bench_attention(benchmark::State& state, Path path, int n, int mean_segment) {
  Problem& p = problem(n, mean_segment);
  const MaskPolicy policy = path == Path::dense_causal ? MaskPolicy::causal() : MaskPolicy::anllm();
  const cpu::AttentionOptions options{
      0, path == Path::dense_mask ? cpu::TileSkipping::dense_mask : cpu::TileSkipping::two_part};
  const AttentionArgs<T> args = p.args<T>(policy);
  static Sgemm sgemm;
  const WallCpu ceiling = sgemm.rate();  // flop/s
  const WallCpu seconds = time_iterations(state, [&] {
    cpu::attention_forward(args, options);
    benchmark::DoNotOptimize(args.out.data);
  });
  const double pairs = p.visible_pairs(policy), flops = 4.0 * kDim * pairs;
  state.counters["visible_pairs"] = pairs;
  state.counters["GFLOPs"] = flops / seconds.wall * 1e-9;
  state.counters["sgemm_GFLOPs"] = ceiling.wall * 1e-9;
  state.counters["of_sgemm"] = flops / seconds.wall / ceiling.wall;
  state.counters["of_sgemm_cpu"] = flops / seconds.cpu / ceiling.cpu;
  const auto key = std::make_pair(n, mean_segment);
  if (!std::is_same_v<T, float>) {
    if (g_anchor_seconds.count(key)) state.counters["x_fp32"] = seconds.wall / g_anchor_seconds[key].wall;
  } else if (path == Path::anchor) {
    g_anchor_seconds[key] = seconds;
  } else if (g_anchor_seconds.count(key)) {
    state.counters["x_anchor"] = seconds.wall / g_anchor_seconds[key].wall;
    state.counters["x_anchor_cpu"] = seconds.cpu / g_anchor_seconds[key].cpu;
  }
}

// Decode: B sequences over compacted caches of `cache` entries (support/compacted_decode.hpp),
// one query row each; the same shape as the GPU benchmark's BM_decode, with the CPU file's heads.
struct DecodeProblem {
  static constexpr std::int32_t kBatch = 16;
  std::int32_t cache;
  bench::CompactedDecode meta;
  std::vector<bf16> q, k, v, out;  // q/out: (B, heads_q, dim); k/v: (B * cache, heads_kv, dim)
  std::vector<float> lse;          // (heads_q, B)

  explicit DecodeProblem(std::int32_t entries) : cache(entries), meta(kBatch, entries) {
    std::mt19937 rng{std::uint32_t(entries)};
    std::uniform_real_distribution<float> value(-1.f, 1.f);
    q.resize(std::size_t(kBatch * kHeadsQ * kDim));
    k.resize(std::size_t(kBatch) * std::size_t(cache) * kHeadsKv * kDim);
    v.resize(k.size());
    for (auto* x : {&q, &k, &v})
      for (bf16& e : *x) e = from_float<bf16>(value(rng));
    out.resize(q.size());
    lse.resize(std::size_t(kBatch * kHeadsQ));
  }
  std::size_t kv_bytes() const { return 2 * k.size() * sizeof(bf16); }
  AttentionArgs<bf16> args() {
    AttentionArgs<bf16> a;
    const index_t keys = index_t(kBatch) * cache;
    a.q = make_view<const bf16>(q.data(), kBatch, kHeadsQ, kDim);
    a.k = make_view<const bf16>(k.data(), keys, kHeadsKv, kDim);
    a.v = make_view<const bf16>(v.data(), keys, kHeadsKv, kDim);
    a.out = make_view(out.data(), kBatch, kHeadsQ, kDim);
    a.lse = make_view(lse.data(), kHeadsQ, kBatch);
    a.batch = kBatch;
    a.cu_seqlens_q = meta.cu_q.data(), a.cu_seqlens_k = meta.cu_k.data();
    a.q_pos = meta.q_pos.data(), a.q_seg_start = meta.q_seg_start.data();
    a.q_is_anchor = meta.q_is_anchor.data();
    a.k_pos = meta.k_pos.data(), a.k_is_anchor = meta.k_is_anchor.data();
    a.policy = MaskPolicy::anllm();
    a.softmax_scale = float(1 / std::sqrt(double(kDim)));
    return a;
  }
};

// std::memcpy of `bytes / 2` bytes on `workers` threads, each a slice, best of 5: bytes per
// second read + written.
double copy_rate(std::size_t bytes, int workers) {
  static std::vector<unsigned char> from, to;
  from.assign(bytes / 2, 1), to.assign(bytes / 2, 0);
  const std::size_t slice = (from.size() + std::size_t(workers) - 1) / std::size_t(workers);
  double best = 1e30;
  for (int t = 0; t < 5; ++t) {
    const auto start = std::chrono::steady_clock::now();
    cpu::detail::parallel_for(workers, workers, [&](std::int64_t w, int) {
      const std::size_t first = std::size_t(w) * slice;
      if (first < from.size())
        std::memcpy(to.data() + first, from.data() + first, std::min(slice, from.size() - first));
    });
    benchmark::DoNotOptimize(to.data());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return double(2 * (bytes / 2)) / best;
}

void bench_decode(benchmark::State& state, std::int32_t cache, int threads) {
  static std::map<std::int32_t, DecodeProblem> problems;
  auto it = problems.find(cache);
  if (it == problems.end()) it = problems.emplace(cache, DecodeProblem(cache)).first;
  DecodeProblem& p = it->second;
  const AttentionArgs<bf16> args = p.args();
  const int workers = cpu::detail::worker_count(threads, DecodeProblem::kBatch * kHeadsKv);
  const WallCpu seconds = time_iterations(state, [&] {
    cpu::attention_forward(args, threads);
    benchmark::DoNotOptimize(p.out.data());
  });
  const double bytes = double(p.kv_bytes()), copy = copy_rate(p.kv_bytes(), workers);
  state.counters["us_per_step"] = seconds.wall * 1e6;
  state.counters["GBps"] = bytes / seconds.wall * 1e-9;
  state.counters["copy_GBps"] = copy * 1e-9;
  state.counters["of_copy"] = bytes / seconds.wall / copy;
  state.counters["threads"] = workers;
}

void register_all() {
  benchmark::RegisterBenchmark("sgemm/1024x1024x1024/threads:all", bench_sgemm, 0)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("sgemm/1024x1024x1024/threads:1", bench_sgemm, 1)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
  const std::string shape = "H:8/Hkv:2/D:128/";
  for (int n : {1024, 4096, 16384})
    for (int L : {8, 20, 64}) {
      const std::string tail = shape + "n:" + std::to_string(n) + "/L:" + std::to_string(L);
      benchmark::RegisterBenchmark(("anchor/" + tail).c_str(), bench_attention<float>, Path::anchor,
                                   n, L)
          ->UseManualTime()->Unit(benchmark::kMillisecond);
      if (n >= 4096 && L == 20)
        benchmark::RegisterBenchmark(("anchor_bf16/" + tail).c_str(), bench_attention<bf16>,
                                     Path::anchor, n, L)
            ->UseManualTime()->Unit(benchmark::kMillisecond);
      auto* dense = benchmark::RegisterBenchmark(("dense_mask/" + tail).c_str(),
                                                 bench_attention<float>, Path::dense_mask, n, L);
      dense->UseManualTime()->Unit(benchmark::kMillisecond);
      if (n >= 4096) dense->Iterations(1);
      // Causal attention ignores anchors; it is timed once per n, next to L = 20.
      if (L == 20) {
        auto* causal = benchmark::RegisterBenchmark(
            ("dense_causal/" + tail).c_str(), bench_attention<float>, Path::dense_causal, n, L);
        causal->UseManualTime()->Unit(benchmark::kMillisecond);
        if (n >= 4096) causal->Iterations(1);
      }
    }
  for (const std::int32_t cache : {512, 2048, 8192})
    for (const int threads : {1, 0}) {
      const std::string name = "decode/B:16/" + shape + "C:" + std::to_string(cache) +
                               "/threads:" + (threads ? "1" : "all");
      benchmark::RegisterBenchmark(name.c_str(), bench_decode, cache, threads)
          ->UseManualTime()->Unit(benchmark::kMicrosecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
