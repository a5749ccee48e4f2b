// GPU anchor attention (ansan/cuda/attention.cuh): prefill and decode, bf16, 32 query heads,
// 8 KV heads, head_dim 128 (issue 5's shapes).
//
// Cases (every one skips itself without a CUDA device):
//   prefill/n:N/L:L         AnLLM mask, batch 1, mean segment length L, the mma.sync kernel
//                           (tensor)
//   prefill_sm90/n:N/L:L    the same on the Hopper kernel (tensor_sm90, wgmma), where it runs
//   prefill_sm90_ws/n:N/L:L the same on its warp-specialized form (tensor_sm90_ws), where it
//                           runs
//   prefill_causal/n:N      what automatic runs (tensor_sm90 on a Hopper) on the plain causal
//                           mask: the dense baseline
//   decode/B:64/cache:C/D:D one query row per sequence over compacted caches of C entries, the
//                           FMA split-KV kernel (AttentionKernel::decode); D = 128, and 64 and
//                           256 at C = 2048
//   decode_tensor/...       the same shapes on the tensor-core decode kernel (decode_tensor,
//                           what automatic picks)
//   copy/cache:C            cudaMemcpyAsync device-to-device of the bytes decode reads: the
//                           in-run bandwidth ceiling (bytes read + written per second) that
//                           decode's GB/s (K and V bytes read per second) is compared with
//   mma_peak                back-to-back mma.sync m16n8k16 (bf16, f32 accumulate) on every SM:
//                           the in-run ceiling of the prefill's computed work
//   l2_read                 16-byte L2-only loads (ld.global.cg, as cp.async.cg) over 16 MB,
//                           which stays in L2: the ceiling of the prefill's K/V tile reads
// Timing: CUDA events around each call, the median of `kRepeats` calls per iteration, inputs
// rotated over enough copies to defeat the 50 MB L2. Counters: ms (median of the whole call,
// attention_forward), run_ms (the kernel alone on a plan built once, attention_run: what each
// layer of a model costs when one plan serves them all), visible pairs, TFLOP/s on
// visible work (4 * head_dim flops per visible pair per head) and on computed work
// (every pair of the (warp, key tile) products the kernel multiplies) with its fraction of
// mma_peak, the K/V tile bytes the blocks read per second with their fraction of l2_read, GB/s
// for decode with its fraction of copy (and run_frac_of_copy, on run_ms).
//
// `bench_attention_cuda --work` prints, without a GPU, the work the tensor kernel's tile walk
// does on each prefill shape (ansan/cuda/prefill_work.hpp): pairs computed vs visible vs causal,
// and where the Hopper kernel's masked pairs lie.
// Also: `bench_attention_cuda --dump=DIR --n=N --L=L [--tensors]` writes one prefill problem
// for tests/gpu/torch_compare.py: the FlexAttention BlockMask (save_flex_block_mask), the
// timing of what automatic runs (meta_ours.json: ours_ms the whole call, ours_run_ms the
// kernel on a plan built once) and, with --tensors, q/k/v/out (raw bf16 bits
// as uint16 .npy) and lse; and the same of the other tensor-core prefill where it runs
// (alt_kernel, alt_ms, alt_run_ms, out_alt / lse_alt: on a Hopper, tensor_sm90_ws, the candidate to
// replace tensor_sm90).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ansan/cuda/attention.cuh"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda/detail/mma_sm80.cuh"
#include "ansan/cuda/prefill_work.hpp"
#include "ansan/detail/npy.hpp"
#include "ansan/flex_block_mask.hpp"
#include "ansan/layout.hpp"
#include "support/compacted_decode.hpp"

namespace bench_attention {

using ansan::bf16;
using ansan::cuda::detail::DeviceBuffer;

constexpr int kHeadsQ = 32, kHeadsKV = 8, kDim = 128;
constexpr int kRepeats = 7;
constexpr std::size_t kRotateBytes = std::size_t(256) << 20;  // > L2 on every current GPU

bool have_device() { return ansan::cuda_device_available(); }

// Deterministic pseudo-random bf16 in [-1, 1), written on the device (fast at n = 65536).
__global__ void fill_random_kernel(bf16* data, std::size_t count, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t x = std::uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 16, x *= 0x7feb352du, x ^= x >> 15, x *= 0x846ca68bu, x ^= x >> 16;
    data[i] = __float2bfloat16(float(x) * (2.f / 4294967296.f) - 1.f);
  }
}
void fill_random(bf16* data, std::size_t count, std::uint32_t seed) {
  fill_random_kernel<<<1024, 256>>>(data, count, seed);
  ANSAN_CUDA_THROW(cudaGetLastError());
}

template <class T>
DeviceBuffer<T> upload(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size());
  if (!host.empty()) ANSAN_CUDA_THROW(cudaMemcpy(d.data(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}

// What an engine does for all the layers of a batch: the plan built once, in temp storage of
// its own (attention_plan), then per call only the kernel (run: attention_run).
struct LayerPlan {
  DeviceBuffer<char> temp;
  ansan::cuda::AttentionPlan<bf16> plan;

  void build(const ansan::AttentionArgs<bf16>& args, ansan::cuda::AttentionKernel kernel) {
    std::size_t bytes = 0;
    ANSAN_CUDA_THROW(ansan::cuda::attention_plan(nullptr, bytes, args, plan, 0, kernel));
    temp = DeviceBuffer<char>(bytes);
    ANSAN_CUDA_THROW(ansan::cuda::attention_plan(temp.data(), bytes, args, plan, 0, kernel));
    ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  }
  void run(const ansan::AttentionArgs<bf16>& args) const {
    ANSAN_CUDA_THROW(ansan::cuda::attention_run(plan, args, 0));
  }
};

// One prefill problem on the device, with `copies` rotated input sets.
struct Prefill {
  ansan::AnchorLayout layout;
  ansan::MaskPolicy policy;
  std::int32_t n;
  int copies;
  DeviceBuffer<bf16> q, k, v, out;  // (copies * n, heads, dim) for q/k/v; out (n, 32, 128)
  DeviceBuffer<float> lse;          // (32, n)
  DeviceBuffer<std::int32_t> cu, pos, seg_start;
  DeviceBuffer<std::uint8_t> is_anchor;
  DeviceBuffer<char> temp;
  std::size_t temp_bytes = 0;
  ansan::cuda::AttentionKernel kernel;
  LayerPlan layers;  // the layout's plan, built once by plan_layers()

  Prefill(std::int32_t tokens, double mean_segment, const ansan::MaskPolicy& p, std::uint32_t seed,
          ansan::cuda::AttentionKernel kernel_to_run = ansan::cuda::AttentionKernel::automatic)
      : layout(make_layout(tokens, mean_segment, seed)),
        policy(p),
        n(tokens),
        copies(int(std::max<std::size_t>(1, kRotateBytes / set_bytes(tokens)) + 1)),
        q(std::size_t(copies) * n * kHeadsQ * kDim),
        k(std::size_t(copies) * n * kHeadsKV * kDim),
        v(std::size_t(copies) * n * kHeadsKV * kDim),
        out(std::size_t(n) * kHeadsQ * kDim),
        lse(std::size_t(n) * kHeadsQ),
        cu(upload(layout.cu_seqlens)),
        pos(upload(layout.pos)),
        seg_start(upload(layout.seg_start)),
        is_anchor(upload(layout.is_anchor)),
        kernel(kernel_to_run) {
    fill_random(q.data(), q.size(), seed * 3 + 1);
    fill_random(k.data(), k.size(), seed * 3 + 2);
    fill_random(v.data(), v.size(), seed * 3 + 3);
    ANSAN_CUDA_THROW(ansan::cuda::attention_forward(nullptr, temp_bytes, args(0), 0, kernel));
    temp = DeviceBuffer<char>(temp_bytes);
  }
  static std::size_t set_bytes(std::int32_t tokens) {
    return std::size_t(tokens) * (kHeadsQ + 2 * kHeadsKV) * kDim * sizeof(bf16);
  }
  static ansan::AnchorLayout make_layout(std::int32_t tokens, double mean_segment, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::bernoulli_distribution anchor(1.0 / mean_segment);
    std::vector<std::uint8_t> flags(static_cast<std::size_t>(tokens));
    for (auto& f : flags) f = anchor(rng);
    return ansan::build_layout_from_flags(flags, std::vector<std::int32_t>{0, tokens});
  }
  ansan::AttentionArgs<bf16> args(int copy) const {
    const std::size_t qo = std::size_t(copy) * n * kHeadsQ * kDim, ko = std::size_t(copy) * n * kHeadsKV * kDim;
    ansan::AttentionArgs<bf16> a;
    a.q = ansan::make_view<const bf16>(q.data() + qo, n, kHeadsQ, kDim);
    a.k = ansan::make_view<const bf16>(k.data() + ko, n, kHeadsKV, kDim);
    a.v = ansan::make_view<const bf16>(v.data() + ko, n, kHeadsKV, kDim);
    a.out = ansan::make_view(out.data(), n, kHeadsQ, kDim);
    a.lse = ansan::make_view(lse.data(), kHeadsQ, n);
    a.batch = 1;
    a.cu_seqlens_q = a.cu_seqlens_k = cu.data();
    a.q_pos = a.k_pos = pos.data();
    a.q_seg_start = seg_start.data();
    a.q_is_anchor = a.k_is_anchor = is_anchor.data();
    a.policy = policy;
    a.softmax_scale = 1.f / std::sqrt(float(kDim));
    return a;
  }
  // The whole call: the layout's tables, then the kernel (attention_forward).
  void run(int copy, cudaStream_t stream = 0) {
    std::size_t bytes = temp_bytes;
    ANSAN_CUDA_THROW(
        ansan::cuda::attention_forward(temp.data(), bytes, args(copy), stream, kernel));
  }
  void plan_layers() { layers.build(args(0), kernel); }
  void run_planned(int copy) { layers.run(args(copy)); }
  bool supported() const { return ansan::cuda::detail::supports(kernel, args(0)); }
};

// Median milliseconds of `repeats` timed calls of f(i).
template <class F>
double median_ms(F&& f, int repeats) {
  cudaEvent_t start, stop;
  ANSAN_CUDA_THROW(cudaEventCreate(&start));
  ANSAN_CUDA_THROW(cudaEventCreate(&stop));
  std::vector<float> ms(static_cast<std::size_t>(repeats));
  for (int i = 0; i < repeats; ++i) {
    ANSAN_CUDA_THROW(cudaEventRecord(start));
    f(i);
    ANSAN_CUDA_THROW(cudaEventRecord(stop));
    ANSAN_CUDA_THROW(cudaEventSynchronize(stop));
    ANSAN_CUDA_THROW(cudaEventElapsedTime(&ms[std::size_t(i)], start, stop));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// --- in-run ceilings of the prefill -----------------------------------------------------------

// Eight independent accumulators per warp keep the tensor pipe, not one dependency chain, busy.
// Operands are ordinary bf16 values (never time on zeros).
__global__ void __launch_bounds__(128) mma_peak_kernel(int iterations, float* sink) {
  using ansan::cuda::detail::pack2;
  const float x = 1.f + float(threadIdx.x) * (1.f / 256.f);
  const std::uint32_t a[4] = {pack2<bf16>(x, 0.5f), pack2<bf16>(0.25f, x), pack2<bf16>(-x, 0.75f),
                              pack2<bf16>(0.125f, -x)};
  const std::uint32_t b0 = pack2<bf16>(0.5f, -0.25f), b1 = pack2<bf16>(x, 0.375f);
  float acc[8][4] = {};
  for (int it = 0; it < iterations; ++it)
    for (int k = 0; k < 8; ++k) ansan::cuda::detail::mma_m16n8k16<bf16>(acc[k], a, b0, b1);
  float total = 0.f;
  for (int k = 0; k < 8; ++k)
    for (int i = 0; i < 4; ++i) total += acc[k][i];
  sink[blockIdx.x * blockDim.x + threadIdx.x] = total;
}

// Every thread reads 16-byte words with ld.global.cg (L2, not L1, as the tile loads'
// cp.async.cg do), grid-stride over `words`, `passes` times.
__global__ void __launch_bounds__(256)
    l2_read_kernel(const uint4* data, std::size_t words, int passes, unsigned* sink) {
  unsigned x = 0;
  for (int pass = 0; pass < passes; ++pass)
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < words;
         i += std::size_t(gridDim.x) * blockDim.x) {
      const uint4 w = __ldcg(data + i);
      x ^= w.x ^ w.y ^ w.z ^ w.w;
    }
  sink[blockIdx.x * blockDim.x + threadIdx.x] = x;
}

int multiprocessors() {
  int device = 0, count = 0;
  ANSAN_CUDA_THROW(cudaGetDevice(&device));
  ANSAN_CUDA_THROW(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// Measured once per run (by their own cases, or by the first prefill case that needs them).
double mma_peak_tflops = 0, l2_read_tbps = 0;

double measure_mma_peak() {
  constexpr int kIterations = 512;           // about 0.1 s a launch on an H100
  const int blocks = 8 * multiprocessors();  // 32 warps per SM
  DeviceBuffer<float> sink(std::size_t(blocks) * 128);
  const auto launch = [&](int) {
    mma_peak_kernel<<<blocks, 128>>>(kIterations, sink.data());
    ANSAN_CUDA_THROW(cudaGetLastError());
  };
  launch(0);
  const double ms = median_ms(launch, 11);
  const double flops = double(blocks) * 4 * kIterations * 8 * (2.0 * 16 * 8 * 16);
  return flops / (ms * 1e-3) / 1e12;
}

double measure_l2_read() {
  // A third of the H100's 50 MB L2: its two halves may each hold a copy of what all SMs read.
  constexpr std::size_t kBytes = std::size_t(16) << 20;
  constexpr int kPasses = 30;
  const int blocks = 4 * multiprocessors();
  DeviceBuffer<uint4> data(kBytes / sizeof(uint4));
  DeviceBuffer<unsigned> sink(std::size_t(blocks) * 256);
  ANSAN_CUDA_THROW(cudaMemset(data.data(), 0x5a, kBytes));
  const auto launch = [&](int) {
    l2_read_kernel<<<blocks, 256>>>(data.data(), data.size(), kPasses, sink.data());
    ANSAN_CUDA_THROW(cudaGetLastError());
  };
  launch(0);  // the first pass of this one reads DRAM; the timed ones find the data in L2
  const double ms = median_ms(launch, 11);
  return double(kBytes) * kPasses / (ms * 1e-3) / 1e12;
}

void BM_mma_peak(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  for (auto _ : state) {
    mma_peak_tflops = measure_mma_peak();
    state.SetIterationTime(1e-3);  // the figure is the counter
  }
  state.counters["TFLOPps"] = mma_peak_tflops;
}
void BM_l2_read(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  for (auto _ : state) {
    l2_read_tbps = measure_l2_read();
    state.SetIterationTime(1e-3);
  }
  state.counters["TBps"] = l2_read_tbps;
}

// The K and V tile bytes the prefill's blocks read: every query head's blocks read the tiles of
// its KV head (`heads_per_load` query heads share each load in tensor_sm90_ws).
double kv_tile_bytes(const ansan::cuda::PrefillWork& work, int heads_per_load = 1) {
  return work.loaded_tiles * 2.0 * work.shape.tile_keys * kDim * sizeof(bf16) * kHeadsQ /
         heads_per_load;
}

// What a prefill kernel's tensor cores multiply (prefill_work.hpp), in pairs of 4 D flops:
// mma.sync skips per warp; wgmma multiplies the whole block's rows, and tensor_sm90_ws its P V
// over the held 16-key groups only. (Simt: counted as mma.sync's tiles.)
double multiplied_pairs(const ansan::cuda::PrefillWork& work, ansan::cuda::AttentionKernel kernel) {
  using ansan::cuda::AttentionKernel;
  if (kernel == AttentionKernel::tensor_sm90) return work.warpgroup_pairs(false);
  if (kernel == AttentionKernel::tensor_sm90_ws) return work.warpgroup_pairs(true);
  return work.computed_pairs();
}

void report_prefill(benchmark::State& state, Prefill& problem) {
  const ansan::cuda::AttentionKernel kernel =
      ansan::cuda::choose_kernel(problem.args(0), problem.kernel);
  // tensor_sm90_ws's two consumer warpgroups share each K/V tile load.
  const int heads_per_load =
      kernel == ansan::cuda::AttentionKernel::tensor_sm90_ws
          ? ansan::cuda::detail::WarpSpecializedTraits<bf16, kDim>::kConsumers
          : 1;
  problem.run(0);  // warm-up (and first-launch costs)
  ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  const ansan::cuda::PrefillWork work = ansan::cuda::prefill_work(problem.layout, problem.policy);
  double ms = 0;
  for (auto _ : state) {
    ms = median_ms([&](int i) { problem.run(i % problem.copies); }, kRepeats);
    state.SetIterationTime(ms / 1e3);
  }
  const double flops_per_pair = kHeadsQ * 4.0 * kDim;
  problem.plan_layers();
  const double run_ms =
      median_ms([&](int i) { problem.run_planned(i % problem.copies); }, kRepeats);
  state.counters["ms"] = ms;
  state.counters["run_ms"] = run_ms;
  state.counters["visible_pairs"] = work.visible_pairs;
  state.counters["density"] = work.visible_pairs / work.causal_pairs;
  state.counters["TFLOPps"] = work.visible_pairs * flops_per_pair / (ms * 1e-3) / 1e12;
  // The rate on what the tensor cores multiplied (masked pairs of computed tiles included),
  // and the K/V tile bytes the blocks read, each beside its in-run ceiling.
  if (mma_peak_tflops == 0) mma_peak_tflops = measure_mma_peak();
  if (l2_read_tbps == 0) l2_read_tbps = measure_l2_read();
  const double computed_tflops =
      multiplied_pairs(work, kernel) * flops_per_pair / (ms * 1e-3) / 1e12;
  const double tile_tbps = kv_tile_bytes(work, heads_per_load) / (ms * 1e-3) / 1e12;
  state.counters["TFLOPps_computed"] = computed_tflops;
  state.counters["of_mma_peak"] = computed_tflops / mma_peak_tflops;
  state.counters["tile_TBps"] = tile_tbps;
  state.counters["of_l2_read"] = tile_tbps / l2_read_tbps;
}

// The mma.sync prefill (tensor, asked for by name: on a Hopper automatic picks tensor_sm90).
void BM_prefill(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  Prefill problem(std::int32_t(state.range(0)), double(state.range(1)), ansan::MaskPolicy::anllm(),
                  2402, ansan::cuda::AttentionKernel::tensor);
  report_prefill(state, problem);
}
// The same shapes on the Hopper kernel (tensor_sm90).
void BM_prefill_sm90(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  Prefill problem(std::int32_t(state.range(0)), double(state.range(1)), ansan::MaskPolicy::anllm(),
                  2402, ansan::cuda::AttentionKernel::tensor_sm90);
  if (!problem.supported())
    return state.SkipWithError("tensor_sm90 needs an sm_90a build on a Hopper GPU");
  report_prefill(state, problem);
}
// The same shapes on the warp-specialized Hopper kernel (tensor_sm90_ws: two query heads a
// block share each K/V tile load).
void BM_prefill_sm90_ws(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  Prefill problem(std::int32_t(state.range(0)), double(state.range(1)), ansan::MaskPolicy::anllm(),
                  2402, ansan::cuda::AttentionKernel::tensor_sm90_ws);
  if (!problem.supported())
    return state.SkipWithError("tensor_sm90_ws needs an sm_90a build on a Hopper GPU");
  report_prefill(state, problem);
}
void BM_prefill_causal(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  Prefill problem(std::int32_t(state.range(0)), 20.0, ansan::MaskPolicy::causal(), 2402);
  report_prefill(state, problem);
}
// Dense causal on tensor_sm90_ws: its long walks (128 tiles a block at n = 16384) against SDPA's
// flash kernel on the same work say how much of a gap is the kernel's loop, and how much the
// anchor walks' shortness.
void BM_prefill_causal_sm90_ws(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  Prefill problem(std::int32_t(state.range(0)), 20.0, ansan::MaskPolicy::causal(), 2402,
                  ansan::cuda::AttentionKernel::tensor_sm90_ws);
  if (!problem.supported())
    return state.SkipWithError("tensor_sm90_ws needs an sm_90a build on a Hopper GPU");
  report_prefill(state, problem);
}

// Decode: B sequences over compacted caches of `cache` entries (support/compacted_decode.hpp),
// one non-anchor query row each; every entry is visible.
struct Decode {
  std::int32_t batch, cache, dim;
  ansan::cuda::AttentionKernel kernel;
  int copies;
  DeviceBuffer<bf16> q, k, v, out;  // k/v: (copies * batch * cache, 8, dim)
  DeviceBuffer<float> lse;
  DeviceBuffer<std::int32_t> cu_q, cu_k, q_pos, q_seg_start, k_pos;
  DeviceBuffer<std::uint8_t> q_is_anchor, k_is_anchor;
  DeviceBuffer<char> temp;
  std::size_t temp_bytes = 0;

  Decode(std::int32_t b, std::int32_t c, std::int32_t d, ansan::cuda::AttentionKernel kernel_to_run)
      : batch(b),
        cache(c),
        dim(d),
        kernel(kernel_to_run),
        copies(int(std::max<std::size_t>(1, kRotateBytes / kv_bytes(b, c, d)) + 1)),
        q(std::size_t(b) * kHeadsQ * dim),
        k(std::size_t(copies) * b * c * kHeadsKV * dim),
        v(std::size_t(copies) * b * c * kHeadsKV * dim),
        out(std::size_t(b) * kHeadsQ * dim),
        lse(std::size_t(b) * kHeadsQ) {
    const ansan::bench::CompactedDecode meta(b, c);
    cu_q = upload(meta.cu_q), cu_k = upload(meta.cu_k), q_pos = upload(meta.q_pos);
    q_seg_start = upload(meta.q_seg_start), k_pos = upload(meta.k_pos);
    q_is_anchor = upload(meta.q_is_anchor), k_is_anchor = upload(meta.k_is_anchor);
    fill_random(q.data(), q.size(), 11);
    fill_random(k.data(), k.size(), 12);
    fill_random(v.data(), v.size(), 13);
    ANSAN_CUDA_THROW(ansan::cuda::attention_forward(nullptr, temp_bytes, args(0), 0, kernel));
    temp = DeviceBuffer<char>(temp_bytes);
  }
  static std::size_t kv_bytes(std::int32_t b, std::int32_t c, std::int32_t d) {
    return std::size_t(b) * c * kHeadsKV * d * sizeof(bf16) * 2;
  }
  ansan::AttentionArgs<bf16> args(int copy) const {
    const std::size_t ko = std::size_t(copy) * batch * cache * kHeadsKV * dim;
    ansan::AttentionArgs<bf16> a;
    a.q = ansan::make_view<const bf16>(q.data(), batch, kHeadsQ, dim);
    a.k = ansan::make_view<const bf16>(k.data() + ko, std::int64_t(batch) * cache, kHeadsKV, dim);
    a.v = ansan::make_view<const bf16>(v.data() + ko, std::int64_t(batch) * cache, kHeadsKV, dim);
    a.out = ansan::make_view(out.data(), batch, kHeadsQ, dim);
    a.lse = ansan::make_view(lse.data(), kHeadsQ, batch);
    a.batch = batch;
    a.cu_seqlens_q = cu_q.data(), a.cu_seqlens_k = cu_k.data();
    a.q_pos = q_pos.data(), a.q_seg_start = q_seg_start.data(), a.q_is_anchor = q_is_anchor.data();
    a.k_pos = k_pos.data(), a.k_is_anchor = k_is_anchor.data();
    a.policy = ansan::MaskPolicy::anllm();
    a.softmax_scale = 1.f / std::sqrt(float(dim));
    return a;
  }
  void run(int copy) {
    std::size_t bytes = temp_bytes;
    ANSAN_CUDA_THROW(ansan::cuda::attention_forward(temp.data(), bytes, args(copy), 0, kernel));
  }
  LayerPlan layers;
  void plan_layers() { layers.build(args(0), kernel); }
  void run_planned(int copy) { layers.run(args(copy)); }
};

// The copy ceiling of each decode shape's byte count, measured once per run and shared with
// its decode cases.
std::map<std::size_t, double> copy_gbps;

double measure_copy(std::size_t bytes) {
  DeviceBuffer<char> from(bytes), to(bytes);
  ANSAN_CUDA_THROW(cudaMemset(from.data(), 1, bytes));
  ANSAN_CUDA_THROW(cudaMemcpyAsync(to.data(), from.data(), bytes, cudaMemcpyDeviceToDevice));
  const double ms = median_ms([&](int) {
    ANSAN_CUDA_THROW(cudaMemcpyAsync(to.data(), from.data(), bytes, cudaMemcpyDeviceToDevice));
  }, 21);
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;  // read + written, as bandwidth is quoted
}

void BM_copy(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const std::int32_t cache = std::int32_t(state.range(0));
  const std::size_t bytes = Decode::kv_bytes(64, cache, kDim);
  double gbps = 0;
  for (auto _ : state) {
    gbps = measure_copy(bytes);
    state.SetIterationTime(2.0 * double(bytes) / (gbps * 1e9));
  }
  copy_gbps[bytes] = gbps;
  state.counters["GBps"] = gbps;
  state.counters["bytes"] = double(bytes);
}

void decode_case(benchmark::State& state, ansan::cuda::AttentionKernel kernel) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const std::int32_t batch = std::int32_t(state.range(0)), cache = std::int32_t(state.range(1));
  const std::int32_t dim = std::int32_t(state.range(2));
  Decode problem(batch, cache, dim, kernel);
  problem.run(0);
  ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  double ms = 0;
  for (auto _ : state) {
    ms = median_ms([&](int i) { problem.run(i % problem.copies); }, kRepeats);
    state.SetIterationTime(ms / 1e3);
  }
  problem.plan_layers();
  const double run_ms =
      median_ms([&](int i) { problem.run_planned(i % problem.copies); }, kRepeats);
  const std::size_t bytes = Decode::kv_bytes(batch, cache, dim);
  const double gbps = double(bytes) / (ms * 1e-3) / 1e9;
  state.counters["ms"] = ms;
  state.counters["run_ms"] = run_ms;
  state.counters["GBps"] = gbps;
  if (copy_gbps.count(bytes) == 0) copy_gbps[bytes] = measure_copy(bytes);
  state.counters["copy_GBps"] = copy_gbps[bytes];
  state.counters["frac_of_copy"] = gbps / copy_gbps[bytes];
  state.counters["run_frac_of_copy"] = double(bytes) / (run_ms * 1e-3) / 1e9 / copy_gbps[bytes];
}
// The FMA decode kernel and the one on tensor cores (what automatic picks).
void BM_decode(benchmark::State& state) {
  decode_case(state, ansan::cuda::AttentionKernel::decode);
}
void BM_decode_tensor(benchmark::State& state) {
  decode_case(state, ansan::cuda::AttentionKernel::decode_tensor);
}

BENCHMARK(BM_mma_peak)->UseManualTime()->Iterations(1);
BENCHMARK(BM_l2_read)->UseManualTime()->Iterations(1);
BENCHMARK(BM_prefill)
    ->ArgNames({"n", "L"})
    ->ArgsProduct({{4096, 16384, 65536}, {8, 20, 64}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);
// The Hopper kernels: every n at L = 20, and the other two L at the goal's n.
void hopper_prefill_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "L"})
      ->ArgsProduct({{4096, 16384, 65536}, {20}})
      ->Args({16384, 8})
      ->Args({16384, 64})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(1);
}
BENCHMARK(BM_prefill_sm90)->Apply(hopper_prefill_shapes);
BENCHMARK(BM_prefill_sm90_ws)->Apply(hopper_prefill_shapes);
BENCHMARK(BM_prefill_causal)->ArgNames({"n"})->Arg(4096)->Arg(16384)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_prefill_causal_sm90_ws)->ArgNames({"n"})->Arg(4096)->Arg(16384)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_copy)->ArgNames({"cache"})->Arg(512)->Arg(2048)->Arg(8192)->UseManualTime()->Unit(benchmark::kMicrosecond);
// Issue 5's decode shapes at head_dim 128, and the other two head dims at one cache length.
void decode_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "cache", "D"})->ArgsProduct({{64}, {512, 1024, 2048, 4096, 8192}, {kDim}});
  b->Args({64, 2048, 64})->Args({64, 2048, 256})->UseManualTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_decode)->Apply(decode_shapes);
BENCHMARK(BM_decode_tensor)->Apply(decode_shapes);

// --dump mode: one prefill problem for tests/gpu/torch_compare.py.
int dump(const std::string& dir, std::int32_t n, double mean_segment, bool tensors, int block) {
  if (!have_device()) {
    std::fprintf(stderr, "dump: no CUDA device\n");
    return 77;
  }
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  Prefill problem(n, mean_segment, ansan::MaskPolicy::anllm(), 2402);
  problem.run(0);
  ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  const double ms = median_ms([&](int i) { problem.run(i % problem.copies); }, 11);
  problem.plan_layers();
  const double run_ms = median_ms([&](int i) { problem.run_planned(i % problem.copies); }, 11);
  problem.run(0);  // the outputs below belong to input copy 0
  ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  // The candidate prefill on the same inputs (same seed), where it runs: timed and dumped
  // beside (on a Hopper automatic runs tensor_sm90, and this tensor_sm90_ws).
  using ansan::cuda::AttentionKernel;
  const AttentionKernel chosen = ansan::cuda::choose_kernel(problem.args(0));
  Prefill alt(n, mean_segment, ansan::MaskPolicy::anllm(), 2402,
              chosen == AttentionKernel::tensor_sm90 ? AttentionKernel::tensor_sm90_ws
                                                     : AttentionKernel::tensor_sm90);
  const bool have_alt = alt.supported();
  double alt_ms = -1, alt_run_ms = -1;
  if (have_alt) {
    alt.run(0);
    ANSAN_CUDA_THROW(cudaDeviceSynchronize());
    alt_ms = median_ms([&](int i) { alt.run(i % alt.copies); }, 11);
    alt.plan_layers();
    alt_run_ms = median_ms([&](int i) { alt.run_planned(i % alt.copies); }, 11);
    alt.run(0);
    ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  }
  const ansan::FlexBlockMask mask = ansan::flex_block_mask(problem.layout, problem.policy, block);
  ansan::save_flex_block_mask(mask, problem.layout, dir);
  const double pairs = ansan::cuda::prefill_work(problem.layout, problem.policy).visible_pairs;
  std::ofstream meta(dir + "/meta_ours.json");
  meta << "{\"n\": " << n << ", \"L\": " << mean_segment << ", \"heads_q\": " << kHeadsQ
       << ", \"heads_kv\": " << kHeadsKV << ", \"dim\": " << kDim
       << ", \"softmax_scale\": " << 1.0 / std::sqrt(double(kDim)) << ", \"policy\": \""
       << ansan::policy_name(problem.policy) << "\", \"ours_ms\": " << ms
       << ", \"ours_run_ms\": " << run_ms << ", \"kernel\": \""
       << ansan::cuda::kernel_name(chosen) << "\", \"alt_kernel\": \""
       << ansan::cuda::kernel_name(alt.kernel)
       << "\", \"alt_ms\": " << (have_alt ? std::to_string(alt_ms) : std::string("null"))
       << ", \"alt_run_ms\": " << (have_alt ? std::to_string(alt_run_ms) : std::string("null"))
       << ", \"visible_pairs\": " << pairs << ", \"block_size\": " << block
       << ", \"tensors\": " << (tensors ? "true" : "false") << "}\n";
  if (tensors) {
    const auto save_bf16 = [&](const char* name, const bf16* d_data, std::int64_t rows, int heads) {
      std::vector<std::uint16_t> host(std::size_t(rows) * heads * kDim);  // raw bf16 bits
      ANSAN_CUDA_THROW(cudaMemcpy(host.data(), d_data, host.size() * 2, cudaMemcpyDeviceToHost));
      ansan::detail::write_npy_raw(dir + "/" + name + ".npy", "<u2", host.data(), 2, {rows, heads, kDim});
    };
    const auto save_lse = [&](const char* name, const float* d_lse) {
      std::vector<float> lse(std::size_t(n) * kHeadsQ);  // (heads, n)
      ANSAN_CUDA_THROW(cudaMemcpy(lse.data(), d_lse, lse.size() * 4, cudaMemcpyDeviceToHost));
      ansan::detail::write_npy(dir + "/" + name + ".npy", lse.data(), {kHeadsQ, n});
    };
    save_bf16("q", problem.q.data(), n, kHeadsQ);
    save_bf16("k", problem.k.data(), n, kHeadsKV);
    save_bf16("v", problem.v.data(), n, kHeadsKV);
    save_bf16("out", problem.out.data(), n, kHeadsQ);
    save_lse("lse", problem.lse.data());
    if (have_alt) {
      save_bf16("out_alt", alt.out.data(), n, kHeadsQ);
      save_lse("lse_alt", alt.lse.data());
    }
  }
  std::printf("dump: n=%d L=%g ours_ms=%.3f visible_pairs=%.0f -> %s\n", n, mean_segment, ms, pairs, dir.c_str());
  return 0;
}

// --work mode (no GPU needed): what the tensor kernel's tile walk does on each prefill shape
// of this benchmark, counted on the host (ansan/cuda/prefill_work.hpp), as a Markdown table.
int work() {
  struct Counted {
    const char* mask;
    std::int32_t n;
    double mean_segment;
    ansan::cuda::PrefillWork w;
  };
  std::vector<Counted> shapes;
  const auto count = [&](const char* mask, std::int32_t n, double mean_segment,
                         const ansan::MaskPolicy& policy) {
    const ansan::AnchorLayout layout = Prefill::make_layout(n, mean_segment, 2402);
    shapes.push_back({mask, n, mean_segment, ansan::cuda::prefill_work(layout, policy)});
  };
  for (std::int32_t n : {4096, 16384, 65536})
    for (double mean_segment : {8.0, 20.0, 64.0})
      count("anllm", n, mean_segment, ansan::MaskPolicy::anllm());
  for (std::int32_t n : {4096, 16384}) count("causal", n, 20.0, ansan::MaskPolicy::causal());

  std::printf(
      "| mask | n | L | visible pairs | computed pairs | visible / computed | causal / computed "
      "| wgmma pairs: tensor_sm90 / tensor_sm90_ws | K+V tile bytes read |\n"
      "|---|---|---|---|---|---|---|---|---|\n");
  for (const Counted& c : shapes) {
    const ansan::cuda::PrefillWork& w = c.w;
    std::printf("| %s | %d | %g | %.4g | %.4g | %.3f | %.2f | %.4g / %.4g | %.3g GB |\n", c.mask,
                c.n, c.mean_segment, w.visible_pairs, w.computed_pairs(),
                w.visible_pairs / w.computed_pairs(), w.causal_pairs / w.computed_pairs(),
                w.warpgroup_pairs(false), w.warpgroup_pairs(true), kv_tile_bytes(w) / 1e9);
  }
  std::printf("per head; bytes for all %d query heads (K/V rows are read once per query head)\n",
              kHeadsQ);

  // Where tensor_sm90 multiplies pairs no row sees, as fractions of all it multiplies.
  std::printf(
      "\n| mask | n | L | tensor_sm90 pairs | visible | tile padding | retained keys a row "
      "does not see | band keys a row does not see |\n|---|---|---|---|---|---|---|---|\n");
  for (const Counted& c : shapes) {
    if (std::string(c.mask) != "anllm") continue;  // causal masks nothing but the diagonal tiles
    const ansan::cuda::PrefillWork& w = c.w;
    const double all = w.warpgroup_pairs(false);
    std::printf("| %s | %d | %g | %.4g | %.3f | %.3f | %.3f | %.3f |\n", c.mask, c.n,
                c.mean_segment, all, w.visible_pairs / all, w.padding_pairs / all,
                w.retained_masked_pairs / all, w.local_masked_pairs / all);
  }
  return 0;
}

}  // namespace bench_attention

int main(int argc, char** argv) {
  std::string dump_dir;
  std::int32_t n = 4096;
  double mean_segment = 20;
  bool tensors = false;
  int block = 128;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--dump=", 0) == 0) dump_dir = arg.substr(7);
    else if (arg.rfind("--n=", 0) == 0) n = std::stoi(arg.substr(4));
    else if (arg.rfind("--L=", 0) == 0) mean_segment = std::stod(arg.substr(4));
    else if (arg.rfind("--block=", 0) == 0) block = std::stoi(arg.substr(8));
    else if (arg == "--tensors") tensors = true;
    else if (arg == "--work")
      return bench_attention::work();
  }
  if (!dump_dir.empty()) return bench_attention::dump(dump_dir, n, mean_segment, tensors, block);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
