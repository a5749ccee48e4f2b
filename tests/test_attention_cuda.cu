// The CUDA attention kernels (ansan/cuda/attention.cuh) against the float64 reference
// (reference_attention<double> on float64 copies of the same inputs), on fresh random inputs:
// every kernel (simt, tensor, decode) that supports a case runs it; every policy, GQA/MQA,
// head dims, ragged batches with empty sequences and n = 1, the edge layouts, chunked prefill,
// decode over compacted caches with slack rows (maybe_k_seq_start), strided (HND) views.
// Outputs and lse are poisoned with NaN before each run, so an unwritten element fails.
// Tolerance: relative error < 1e-5 for float (simt), < 1e-2 for fp16/bf16.
// "sanitizer: ..." cases are small and deterministic, for compute-sanitizer (tests/gpu/check.sh).
#include "support/gpu_main.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ansan/cuda/attention.cuh"
#include "ansan/reference_attention.hpp"
#include "support/random_layouts.hpp"

// A named namespace, not `using namespace ansan` at global scope: nvcc's generated stubs for
// the CUB kernels name ::cuda::std, which ansan::cuda would make ambiguous.
namespace attention_cuda_test {
using namespace ansan;
using ansan::cuda::AttentionKernel;

namespace {

// --- device buffers ---------------------------------------------------------------------
template <class U>
struct DeviceBuffer {
  U* ptr = nullptr;
  std::size_t count = 0;
  explicit DeviceBuffer(std::size_t n) : count(n) {
    ANSAN_CUDA_THROW(cudaMalloc(&ptr, std::max<std::size_t>(n, 1) * sizeof(U)));
  }
  explicit DeviceBuffer(const std::vector<U>& host) : DeviceBuffer(host.size()) {
    if (count) ANSAN_CUDA_THROW(cudaMemcpy(ptr, host.data(), count * sizeof(U), cudaMemcpyHostToDevice));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  void poison() { ANSAN_CUDA_THROW(cudaMemset(ptr, 0xff, std::max<std::size_t>(count, 1) * sizeof(U))); }  // NaN
  std::vector<U> to_host() const {
    std::vector<U> host(count);
    if (count) ANSAN_CUDA_THROW(cudaMemcpy(host.data(), ptr, count * sizeof(U), cudaMemcpyDeviceToHost));
    return host;
  }
};

// --- one problem: metadata, storage and views, on the host --------------------------------
struct Shape {
  int heads_q = 4, heads_kv = 2, dim = 64;
  bool kv_head_major = false;  // K, V stored (heads, rows, dim), passed as a strided view
  int q_row_pad = 0;           // extra elements after each q head row (a strided q view)
  bool with_lse = true;
};

struct Problem {
  std::string what;
  MaskPolicy policy;
  Shape shape;
  std::int32_t batch = 0;
  std::vector<std::int32_t> cu_q{0}, cu_k{0}, q_pos, q_seg_start, k_pos, k_start;
  std::vector<std::uint8_t> q_anchor, k_anchor;
  std::int32_t k_rows = 0;  // key rows allocated (>= cu_k.back() with slack)
  bool uses_k_start = false;
  std::int32_t total_q() const { return cu_q.back(); }
};

// Prefill: every sequence of the layout attends to itself.
Problem prefill_problem(const AnchorLayout& L, const MaskPolicy& p, const Shape& s, std::string what) {
  Problem pr{std::move(what), p, s, L.batch()};
  pr.cu_q = pr.cu_k = L.cu_seqlens;
  pr.q_pos = pr.k_pos = L.pos;
  pr.q_seg_start = L.seg_start;
  pr.q_anchor = pr.k_anchor = L.is_anchor;
  pr.k_rows = std::int32_t(L.total_tokens());
  return pr;
}

// Chunked prefill: sequence b's queries are its tokens [start_b, n_b), its keys all n_b tokens.
Problem chunked_problem(std::mt19937& rng, const AnchorLayout& L, const MaskPolicy& p, const Shape& s) {
  Problem pr{"chunked prefill", p, s, L.batch()};
  pr.cu_k = L.cu_seqlens;
  pr.k_pos = L.pos;
  pr.k_anchor = L.is_anchor;
  pr.k_rows = std::int32_t(L.total_tokens());
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    const std::int32_t n = L.seq_len(b);
    const std::int32_t start = std::uniform_int_distribution<std::int32_t>(0, n)(rng);
    for (std::int32_t i = start; i < n; ++i) {
      const std::size_t t = std::size_t(L.cu_seqlens[std::size_t(b)] + i);
      pr.q_pos.push_back(i), pr.q_seg_start.push_back(L.seg_start[t]), pr.q_anchor.push_back(L.is_anchor[t]);
    }
    pr.cu_q.push_back(pr.cu_q.back() + n - start);
  }
  return pr;
}

// Decode over a compacted cache: the last m_b tokens of each sequence query a cache reduced
// at position c_b (SPEC section 3: keys before c_b kept iff still_visible), then holding
// every token from c_b on; sequences start after random slack rows (maybe_k_seq_start).
Problem decode_problem(std::mt19937& rng, const AnchorLayout& L, const MaskPolicy& p, const Shape& s,
                       int max_rows) {
  Problem pr{"decode over a compacted cache", p, s, L.batch()};
  pr.uses_k_start = true;
  std::uniform_int_distribution<int> slack(0, 5);
  for (std::int32_t b = 0; b < L.batch(); ++b) {
    const std::int32_t n = L.seq_len(b), base = L.cu_seqlens[std::size_t(b)];
    const std::int32_t m = std::min<std::int32_t>(n, std::uniform_int_distribution<int>(1, max_rows)(rng));
    const std::int32_t c = std::uniform_int_distribution<std::int32_t>(0, n - m)(rng);
    std::int32_t open_start = 0;  // one past the last anchor before c
    for (std::int32_t j = 0; j < c; ++j)
      if (L.is_anchor[std::size_t(base + j)]) open_start = j + 1;
    pr.k_rows += slack(rng);
    pr.k_start.push_back(pr.k_rows);
    std::int32_t keys = 0;
    for (std::int32_t j = 0; j < n; ++j) {
      const KeyInfo key{j, L.is_anchor[std::size_t(base + j)] != 0};
      if (j >= c || still_visible(p, key, c, open_start)) {
        pr.k_pos.resize(std::size_t(pr.k_rows + keys) + 1, -1);
        pr.k_anchor.resize(std::size_t(pr.k_rows + keys) + 1, 0);
        pr.k_pos[std::size_t(pr.k_rows + keys)] = j;
        pr.k_anchor[std::size_t(pr.k_rows + keys)] = L.is_anchor[std::size_t(base + j)];
        ++keys;
      }
    }
    pr.k_rows += keys;
    pr.cu_k.push_back(pr.cu_k.back() + keys);
    for (std::int32_t i = n - m; i < n; ++i) {
      pr.q_pos.push_back(i), pr.q_seg_start.push_back(L.seg_start[std::size_t(base + i)]);
      pr.q_anchor.push_back(L.is_anchor[std::size_t(base + i)]);
    }
    pr.cu_q.push_back(pr.cu_q.back() + m);
  }
  pr.k_rows += slack(rng);
  pr.k_pos.resize(std::size_t(pr.k_rows), -1);  // slack rows: metadata the kernels must not read
  pr.k_anchor.resize(std::size_t(pr.k_rows), 0);
  return pr;
}

template <class T>
T round_to(float x) {
  return from_float<T>(x);
}

// Storage of one tensor and the view the kernels see, for T and for the float64 copy.
struct Storage {
  index_t elements;
  index_t shape[3], stride[3];
};
Storage q_storage(const Problem& pr) {
  const Shape& s = pr.shape;
  const index_t row = s.dim + s.q_row_pad;
  return {index_t(pr.total_q()) * s.heads_q * row, {pr.total_q(), s.heads_q, s.dim}, {s.heads_q * row, row, 1}};
}
Storage kv_storage(const Problem& pr) {
  const Shape& s = pr.shape;
  const index_t elements = index_t(pr.k_rows) * s.heads_kv * s.dim;
  if (s.kv_head_major) return {elements, {pr.k_rows, s.heads_kv, s.dim}, {s.dim, index_t(pr.k_rows) * s.dim, 1}};
  return {elements, {pr.k_rows, s.heads_kv, s.dim}, {s.heads_kv * s.dim, s.dim, 1}};
}
template <class U>
TensorView<U, 3> view_of(U* data, const Storage& st) {
  TensorView<U, 3> v;
  v.data = data;
  for (int d = 0; d < 3; ++d) v.shape[d] = st.shape[d], v.stride[d] = st.stride[d];
  return v;
}

template <class U, class T>
AttentionArgs<U> args_of(const Problem& pr, const U* q, const U* k, const U* v, U* out, float* lse,
                         const std::int32_t* cu_q, const std::int32_t* cu_k, const std::int32_t* q_pos,
                         const std::int32_t* q_seg, const std::uint8_t* q_anchor, const std::int32_t* k_pos,
                         const std::uint8_t* k_anchor, const std::int32_t* k_start) {
  AttentionArgs<U> a;
  a.q = view_of(q, q_storage(pr));
  a.k = view_of(k, kv_storage(pr));
  a.v = view_of(v, kv_storage(pr));
  a.out = make_view(out, pr.total_q(), pr.shape.heads_q, pr.shape.dim);
  a.lse = make_view(lse, pr.shape.heads_q, pr.total_q());
  if (!lse) a.lse.data = nullptr;
  a.batch = pr.batch;
  a.cu_seqlens_q = cu_q, a.cu_seqlens_k = cu_k;
  a.q_pos = q_pos, a.q_seg_start = q_seg, a.q_is_anchor = q_anchor;
  a.k_pos = k_pos, a.k_is_anchor = k_anchor, a.maybe_k_seq_start = pr.uses_k_start ? k_start : nullptr;
  a.policy = pr.policy;
  a.softmax_scale = 1.f / std::sqrt(float(pr.shape.dim));
  return a;
}

// The device-side copy of a problem's inputs; run() poisons the outputs and launches.
template <class T>
struct DeviceProblem {
  const Problem& pr;
  std::vector<T> q, k, v;  // host copies of the inputs, in storage order
  DeviceBuffer<T> d_q, d_k, d_v, d_out;
  DeviceBuffer<float> d_lse;
  DeviceBuffer<std::int32_t> d_cu_q, d_cu_k, d_q_pos, d_q_seg, d_k_pos, d_k_start;
  DeviceBuffer<std::uint8_t> d_q_anchor, d_k_anchor;

  static std::vector<T> random(std::mt19937& rng, index_t n) {
    std::uniform_real_distribution<float> value(-1.f, 1.f);
    std::vector<T> x(static_cast<std::size_t>(n));
    for (auto& e : x) e = round_to<T>(value(rng));
    return x;
  }
  DeviceProblem(std::mt19937& rng, const Problem& p)
      : pr(p), q(random(rng, q_storage(p).elements)), k(random(rng, kv_storage(p).elements)),
        v(random(rng, kv_storage(p).elements)), d_q(q), d_k(k), d_v(v),
        d_out(std::size_t(p.total_q()) * p.shape.heads_q * p.shape.dim),
        d_lse(std::size_t(p.total_q()) * p.shape.heads_q), d_cu_q(p.cu_q), d_cu_k(p.cu_k), d_q_pos(p.q_pos),
        d_q_seg(p.q_seg_start), d_k_pos(p.k_pos), d_k_start(p.k_start), d_q_anchor(p.q_anchor),
        d_k_anchor(p.k_anchor) {}

  AttentionArgs<T> args() {
    return args_of<T, T>(pr, d_q.ptr, d_k.ptr, d_v.ptr, d_out.ptr, pr.shape.with_lse ? d_lse.ptr : nullptr,
                         d_cu_q.ptr, d_cu_k.ptr, d_q_pos.ptr, d_q_seg.ptr, d_q_anchor.ptr, d_k_pos.ptr,
                         d_k_anchor.ptr, d_k_start.ptr);
  }
};

struct Reference {
  std::vector<double> out;  // (total_q, heads_q, dim)
  std::vector<float> lse;   // (heads_q, total_q)
};

template <class T>
Reference reference_of(const DeviceProblem<T>& dp) {
  const Problem& pr = dp.pr;
  const auto widen = [](const std::vector<T>& x) {
    std::vector<double> w(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) w[i] = double(to_float(x[i]));
    return w;
  };
  const std::vector<double> q = widen(dp.q), k = widen(dp.k), v = widen(dp.v);
  Reference ref{std::vector<double>(std::size_t(pr.total_q()) * pr.shape.heads_q * pr.shape.dim),
                std::vector<float>(std::size_t(pr.total_q()) * pr.shape.heads_q)};
  const auto a = args_of<double, T>(pr, q.data(), k.data(), v.data(), ref.out.data(), ref.lse.data(), pr.cu_q.data(),
                                    pr.cu_k.data(), pr.q_pos.data(), pr.q_seg_start.data(), pr.q_anchor.data(),
                                    pr.k_pos.data(), pr.k_anchor.data(), pr.k_start.data());
  reference_attention<double>(a);
  return ref;
}

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

// Runs `kernel` on the problem (unless the caller already did, after poisoning) and compares
// with the reference; reports the worst element.
template <class T>
void check_kernel(DeviceProblem<T>& dp, const Reference& ref, AttentionKernel kernel, bool launch = true) {
  const Problem& pr = dp.pr;
  if (launch) {
    dp.d_out.poison();
    dp.d_lse.poison();
    ansan::cuda::attention(dp.args(), 0, kernel);
  }
  ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  const std::vector<T> out = dp.d_out.to_host();
  const std::vector<float> lse = dp.d_lse.to_host();
  const int H = pr.shape.heads_q, D = pr.shape.dim;
  double worst = 0.0;
  std::string where = "none";
  std::int32_t seq = 0;
  for (std::int32_t t = 0; t < pr.total_q(); ++t) {
    while (pr.cu_q[std::size_t(seq) + 1] <= t) ++seq;
    for (int h = 0; h < H; ++h) {
      const std::size_t row = (std::size_t(t) * H + h) * D;
      double row_scale = 1e-3;
      for (int d = 0; d < D; ++d) row_scale = std::max(row_scale, std::abs(ref.out[row + d]));
      for (int d = 0; d < D; ++d) {
        const double got = double(to_float(out[row + d])), want = ref.out[row + d];
        const double err = std::isfinite(got) ? std::abs(got - want) / row_scale : INFINITY;
        if (err > worst || !(err == err)) {
          worst = err;
          std::ostringstream os;
          os << "out(t=" << t << ", h=" << h << ", d=" << d << ") in sequence " << seq << " (pos " << pr.q_pos[std::size_t(t)]
             << "): got " << got << ", want " << want;
          where = os.str();
        }
      }
      if (!pr.shape.with_lse) continue;
      const float want = ref.lse[std::size_t(h) * pr.total_q() + t], got = lse[std::size_t(h) * pr.total_q() + t];
      const double err = std::isinf(want) ? (got == want ? 0.0 : INFINITY)
                                          : (std::isfinite(got) ? std::abs(double(got) - want) / std::max(1.0, std::abs(double(want))) : INFINITY);
      if (err > worst) {
        worst = err;
        std::ostringstream os;
        os << "lse(h=" << h << ", t=" << t << ") in sequence " << seq << ": got " << got << ", want " << want;
        where = os.str();
      }
    }
  }
  INFO(ansan::cuda::kernel_name(kernel), " ", dtype_name<T>(), " policy ", policy_name(pr.policy), ", ", pr.what,
       ": B=", pr.batch, " total_q=", pr.total_q(), " key rows=", pr.k_rows, " heads ", pr.shape.heads_q, "/",
       pr.shape.heads_kv, " D=", D, pr.shape.kv_head_major ? " HND" : "", pr.shape.q_row_pad ? " padded-q" : "",
       "; worst relative error ", worst, " at ", where);
  CHECK(worst < tolerance<T>());
}

// Every kernel that supports the problem (or the listed ones).
template <class T>
void check_all(std::mt19937& rng, const Problem& pr,
               std::vector<AttentionKernel> kernels = {AttentionKernel::simt, AttentionKernel::tensor,
                                                       AttentionKernel::decode}) {
  DeviceProblem<T> dp(rng, pr);
  const Reference ref = reference_of(dp);
  for (AttentionKernel k : kernels)
    if (ansan::cuda::detail::supports(k, dp.args())) check_kernel(dp, ref, k);
}

Shape shape(int heads_q, int heads_kv, int dim) {
  Shape s;
  s.heads_q = heads_q, s.heads_kv = heads_kv, s.dim = dim;
  return s;
}

AnchorLayout edge_batch() {  // every edge layout as one ragged batch
  std::vector<std::uint8_t> flags;
  std::vector<std::int32_t> cu{0};
  for (const auto& f : test::edge_flags()) {
    flags.insert(flags.end(), f.begin(), f.end());
    cu.push_back(cu.back() + std::int32_t(f.size()));
  }
  return build_layout_from_flags(flags, cu);
}

template <class T>
void prefill_sweep(std::uint32_t seed, const std::vector<int>& dims, int trials) {
  std::mt19937 rng(seed);
  const int heads[][2] = {{4, 4}, {4, 2}, {6, 1}};  // MHA, GQA, MQA
  int i = 0;
  for (const MaskPolicy& p : test::all_policies()) {
    for (int dim : dims) {
      check_all<T>(rng, prefill_problem(edge_batch(), p, shape(4, 2, dim), "edge layouts"));
      for (int trial = 0; trial < trials; ++trial, ++i) {
        const AnchorLayout L = test::random_layout(rng, 1 + i % 4, i % 3 == 0 ? 300 : 90, 2.0 + i % 25);
        check_all<T>(rng, prefill_problem(L, p, shape(heads[i % 3][0], heads[i % 3][1], dim), "random prefill"));
      }
    }
  }
}

}  // namespace

// First, the smallest case each kernel can get wrong: one 64-token sequence, one head, one
// tile. If this fails for a kernel and simt passes, look at that kernel's fragment or lane
// arithmetic before its tile walk.
TEST_CASE("smoke: one sequence of 64 tokens, one head, every kernel and policy") {
  std::mt19937 rng(7);
  const std::vector<std::uint8_t> flags = test::random_flags(rng, 64, 6.0);
  const AnchorLayout L = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 64});
  for (const MaskPolicy& p : test::all_policies()) {
    check_all<bf16>(rng, prefill_problem(L, p, shape(1, 1, 64), "smoke"));
    check_all<float>(rng, prefill_problem(L, p, shape(1, 1, 64), "smoke"));
  }
}

TEST_CASE("simt float32 equals the float64 reference: every policy, ragged batches, edge layouts") {
  prefill_sweep<float>(101, {64, 40, 256}, 2);
}

TEST_CASE("fp16 and bf16 prefill, every kernel: every policy, GQA/MQA, head dims 64 and 128") {
  prefill_sweep<bf16>(202, {64, 128}, 3);
  prefill_sweep<half>(203, {64, 128}, 2);
}

TEST_CASE("odd head dims and unaligned views fall back to simt and stay exact") {
  std::mt19937 rng(303);
  for (const MaskPolicy& p : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 3, 70, 6.0);
    check_all<bf16>(rng, prefill_problem(L, p, shape(4, 2, 72), "head_dim 72"));
    Shape padded = shape(2, 1, 64);
    padded.q_row_pad = 3;  // q rows not 16-byte aligned: only simt may take it
    check_all<bf16>(rng, prefill_problem(L, p, padded, "q head stride 67"));
  }
}

TEST_CASE("strided views: head-major K/V and padded q rows, without lse") {
  std::mt19937 rng(404);
  for (const MaskPolicy& p : test::all_policies()) {
    const AnchorLayout L = test::random_layout(rng, 3, 150, 9.0);
    Shape s = shape(8, 2, 128);
    s.kv_head_major = true;
    s.q_row_pad = 8;
    s.with_lse = false;
    check_all<bf16>(rng, prefill_problem(L, p, s, "HND K/V, q head stride 136"));
    check_all<float>(rng, prefill_problem(L, p, s, "HND K/V, q head stride 136"));
  }
}

TEST_CASE("chunked prefill: query rows at positions p..n-1 over the whole prefix") {
  std::mt19937 rng(505);
  for (const MaskPolicy& p : test::all_policies())
    for (int trial = 0; trial < 3; ++trial) {
      const AnchorLayout L = test::random_layout(rng, 4, 200, 3.0 + 7 * trial);
      check_all<bf16>(rng, chunked_problem(rng, L, p, shape(8, 2, 64)));
      check_all<half>(rng, chunked_problem(rng, L, p, shape(4, 4, 128)));
      check_all<float>(rng, chunked_problem(rng, L, p, shape(2, 1, 32)));
    }
}

TEST_CASE("decode over compacted caches with slack rows: split-KV and merge, every policy") {
  std::mt19937 rng(606);
  for (const MaskPolicy& p : test::all_policies()) {
    for (int trial = 0; trial < 4; ++trial) {
      const AnchorLayout L = test::random_layout(rng, 1 + 5 * trial, trial == 3 ? 3000 : 400, 4.0 + 6 * trial);
      check_all<bf16>(rng, decode_problem(rng, L, p, shape(32, 8, 128), 1));
      check_all<half>(rng, decode_problem(rng, L, p, shape(8, 1, 64), 3));   // MQA, a few rows
      check_all<float>(rng, decode_problem(rng, L, p, shape(4, 2, 64), 2));
    }
    check_all<bf16>(rng, decode_problem(rng, edge_batch(), p, shape(4, 2, 64), 2));
  }
}

TEST_CASE("long sequences: many retained and local tiles per query tile") {
  std::mt19937 rng(707);
  for (const MaskPolicy& p : {MaskPolicy::anllm(), MaskPolicy::sepllm(4, 64), MaskPolicy::causal()}) {
    const std::vector<std::uint8_t> flags = test::random_flags(rng, 2500, 20.0);
    const AnchorLayout longest = build_layout_from_flags(flags, std::vector<std::int32_t>{0, 2500});
    check_all<bf16>(rng, prefill_problem(longest, p, shape(2, 1, 128), "n = 2500"),
                    {AttentionKernel::simt, AttentionKernel::tensor});
  }
}

TEST_CASE("rows that see no key get O = 0 and lse = -inf, on every kernel") {
  std::mt19937 rng(808);
  // Queries at positions 10, 11 over a cache holding only positions 0..3: a window of 2 sees none.
  Problem pr{"no visible key", MaskPolicy::sliding_window(2), shape(4, 2, 64), 2};
  pr.cu_q = {0, 2, 3};
  pr.q_pos = {10, 11, 0}, pr.q_seg_start = {0, 0, 0}, pr.q_anchor = {0, 0, 0};
  pr.cu_k = {0, 4, 4};  // the second sequence has an empty cache
  pr.k_pos = {0, 1, 2, 3}, pr.k_anchor = {1, 0, 1, 0};
  pr.k_rows = 4;
  check_all<bf16>(rng, pr);
  check_all<float>(rng, pr);
}

TEST_CASE("empty batches and empty query sets run no kernel and write nothing") {
  std::mt19937 rng(909);
  const AnchorLayout L = build_layout_from_flags(std::vector<std::uint8_t>{}, std::vector<std::int32_t>{0, 0, 0});
  Problem pr = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "two empty sequences");
  DeviceProblem<bf16> dp(rng, pr);
  for (AttentionKernel k : {AttentionKernel::simt, AttentionKernel::tensor, AttentionKernel::decode})
    CHECK_NOTHROW(ansan::cuda::attention(dp.args(), 0, k));
  // q with no heads (heads_q = 0 passes heads_q % heads_kv == 0): nothing to launch either
  Problem no_heads = prefill_problem(test::random_layout(rng, 2, 20, 4.0), MaskPolicy::anllm(), shape(0, 2, 64),
                                     "no query heads");
  DeviceProblem<bf16> dh(rng, no_heads);
  for (AttentionKernel k : {AttentionKernel::simt, AttentionKernel::tensor, AttentionKernel::decode})
    CHECK_NOTHROW(ansan::cuda::attention(dh.args(), 0, k));
}

TEST_CASE("kernel choice: decode for a few rows per sequence, tensor for prefill, simt otherwise") {
  std::mt19937 rng(1010);
  const AnchorLayout L = test::random_layout(rng, 4, 100, 5.0);
  Problem prefill = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "prefill");
  DeviceProblem<bf16> dp(rng, prefill);
  if (L.total_tokens() > 16) CHECK(ansan::cuda::choose_kernel(dp.args()) == AttentionKernel::tensor);
  Problem decode = decode_problem(rng, L, MaskPolicy::anllm(), shape(4, 2, 128), 1);
  DeviceProblem<bf16> dd(rng, decode);
  CHECK(ansan::cuda::choose_kernel(dd.args()) == AttentionKernel::decode);
  DeviceProblem<float> df(rng, prefill);
  CHECK(ansan::cuda::choose_kernel(df.args()) == AttentionKernel::simt);
}

TEST_CASE("bad input throws std::invalid_argument before anything is written") {
  std::mt19937 rng(1111);
  const AnchorLayout L = test::random_layout(rng, 2, 50, 5.0);
  Problem pr = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "bad input");
  DeviceProblem<bf16> dp(rng, pr);
  const auto untouched = [&] {
    const auto out = dp.d_out.to_host();
    for (const bf16 x : out)
      if (!std::isnan(to_float(x))) return false;
    return true;
  };
  const auto expect_throw = [&](AttentionArgs<bf16> a, const char* needle, AttentionKernel k = AttentionKernel::automatic) {
    dp.d_out.poison();
    try {
      ansan::cuda::attention(a, 0, k);
      FAIL("no exception for ", needle);
    } catch (const std::invalid_argument& e) {
      INFO("message: ", e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
    CHECK(untouched());
  };
  {
    std::vector<bf16> host_q(dp.q);
    auto a = dp.args();
    a.q.data = host_q.data();  // a host pointer
    expect_throw(a, "q.data");
  }
  {
    std::vector<std::int32_t> host_pos(pr.k_pos);
    auto a = dp.args();
    a.k_pos = host_pos.data();
    expect_throw(a, "k_pos");
  }
  {
    auto a = dp.args();
    a.k.shape[2] = 32;
    a.v.shape[2] = 32;
    expect_throw(a, "k.shape[2]");
  }
  {
    auto a = dp.args();
    a.softmax_scale = 0.f;
    expect_throw(a, "softmax_scale");
  }
  {
    auto a = dp.args();
    a.q.stride[1] = 67, a.q.shape[0] = 1;  // misaligned rows: the tensor kernel cannot take them
    a.out.shape[0] = 1;
    a.lse.data = nullptr;
    std::vector<std::int32_t> cu{0, 1, 1};
    DeviceBuffer<std::int32_t> d_cu(cu);
    a.cu_seqlens_q = d_cu.ptr;
    expect_throw(a, "kernel", AttentionKernel::tensor);
  }
  {
    DeviceBuffer<std::int32_t> bad_cu(std::vector<std::int32_t>{0, 7, 3});  // decreasing offsets
    auto a = dp.args();
    a.cu_seqlens_q = bad_cu.ptr;
    expect_throw(a, "cu_seqlens_q");
  }
  {
    std::vector<std::int32_t> unsorted(pr.k_pos);
    if (unsorted.size() >= 2) std::swap(unsorted[0], unsorted[1]);
    DeviceBuffer<std::int32_t> d_unsorted(unsorted);
    auto a = dp.args();
    a.k_pos = d_unsorted.ptr;
    if (L.seq_len(0) >= 2) expect_throw(a, "k_pos");
  }
  {
    auto a = dp.args();
    a.q.shape[2] = a.k.shape[2] = a.v.shape[2] = a.out.shape[2] = 320;  // head_dim beyond 256
    expect_throw(a, "head_dim");
  }
}

TEST_CASE("attention_forward follows CUB's temp-storage protocol") {
  std::mt19937 rng(1212);
  const AnchorLayout L = test::random_layout(rng, 3, 120, 8.0);
  Problem pr = prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "forward protocol");
  DeviceProblem<bf16> dp(rng, pr);
  const Reference ref = reference_of(dp);
  for (AttentionKernel k : {AttentionKernel::simt, AttentionKernel::tensor, AttentionKernel::decode}) {
    std::size_t bytes = 0;
    REQUIRE(ansan::cuda::attention_forward(nullptr, bytes, dp.args(), 0, k) == cudaSuccess);
    CHECK(bytes >= 1);
    DeviceBuffer<char> temp(bytes);
    std::size_t too_small = bytes - 1;
    CHECK(ansan::cuda::attention_forward(temp.ptr, too_small, dp.args(), 0, k) == cudaErrorInvalidValue);
    dp.d_out.poison();
    dp.d_lse.poison();
    REQUIRE(ansan::cuda::attention_forward(temp.ptr, bytes, dp.args(), 0, k) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    check_kernel(dp, ref, k, false);  // what attention_forward wrote
    check_kernel(dp, ref, k);         // and the host convenience agrees
  }
}

// Small and deterministic: run under compute-sanitizer by tests/gpu/check.sh.
TEST_CASE("sanitizer: simt") {
  std::mt19937 rng(1);
  const AnchorLayout L = test::random_layout(rng, 3, 40, 5.0);
  check_all<bf16>(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 64), "sanitizer"), {AttentionKernel::simt});
}
TEST_CASE("sanitizer: tensor") {
  std::mt19937 rng(2);
  const AnchorLayout L = test::random_layout(rng, 3, 150, 5.0);
  check_all<bf16>(rng, prefill_problem(L, MaskPolicy::anllm(), shape(4, 2, 128), "sanitizer"), {AttentionKernel::tensor});
}
TEST_CASE("sanitizer: decode") {
  std::mt19937 rng(3);
  const AnchorLayout L = test::random_layout(rng, 4, 300, 5.0);
  check_all<bf16>(rng, decode_problem(rng, L, MaskPolicy::anllm(), shape(8, 2, 128), 2), {AttentionKernel::decode});
}

}  // namespace attention_cuda_test
