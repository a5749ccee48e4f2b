// ansan/cuda/attention.cuh - fused anchor attention on CUDA: prefill, chunked prefill and
// decode over ragged batches, for every mask policy (SPEC.md sections 2, 4 and 5).
//
//   std::size_t bytes = 0;
//   ansan::cuda::attention_forward(nullptr, bytes, args, stream);   // size query
//   ansan::cuda::attention_forward(d_temp, bytes, args, stream);    // run
// or, for a batch whose layout serves many calls (every layer of a model), the same in two steps,
// planned once and run per layer (FlashInfer's plan / run):
//   ansan::cuda::AttentionPlan<bf16> plan;
//   ansan::cuda::attention_plan(nullptr, bytes, args, plan, stream);  // size query
//   ansan::cuda::attention_plan(d_temp, bytes, args, plan, stream);   // the layout's tables
//   for (layer ...) ansan::cuda::attention_run(plan, args_of(layer), stream);  // one launch each
// or, allocating and validating everything on the host:
//   ansan::cuda::attention(args, stream);
// or the plan / run pair with that validation, once per batch, and owning its temp storage:
//   const ansan::cuda::PlannedAttention<bf16> attend(args, stream);
//   for (layer ...) attend(args_of(layer), stream);
//
// All pointers in `args` are device pointers; their meaning is attention_args.hpp's (sequence-
// local positions, keys sorted by position, maybe_k_seq_start for a cache with slack, lse
// (heads_q, total_q) in natural log, a row that sees nothing gets O = 0 and lse = -inf).
// Key rows of different sequences must not overlap.
//
// Five kernels (docs/cuda_attention.md), chosen once per plan by AttentionKernel::automatic:
//   decode_tensor  fp16/bf16, head_dim 64/128/256, at most 4 query rows per sequence on
//                  average: split-KV over the cache on mma.sync, splits merged by log-sum-exp;
//   decode         the same on fp32 FMAs: the readable decode, and the fallback where a device
//                  cannot give decode_tensor a block's shared memory (136 KiB at head_dim 256);
//   tensor         fp16/bf16, head_dim 64/128/256: FlashAttention-2 style prefill on mma.sync
//                  (sm_80+);
//   tensor_sm90    fp16/bf16, head_dim 64/128: the same prefill on Hopper's warpgroup MMA
//                  (wgmma); needs sm_90a code in the program (CMAKE_CUDA_ARCHITECTURES 90a)
//                  and a compute capability 9.0 device, where it is the prefill picked;
//   simt           float/fp16/bf16, head_dim 1..256, any 16-bit aligned view: the readable
//                  prefill.
// and one asked for by name only, until a GPU run shows it faster than tensor_sm90:
//   tensor_sm90_ws the Hopper prefill warp-specialized (a producer warpgroup feeding two
//                  consumer warpgroups through shared-memory barriers; persistent blocks);
//                  tensor_sm90's requirements, and an even heads_q / heads_kv (its consumers
//                  are two query heads of one KV head).
// The vector kernels need 16-byte aligned rows (data pointers, and token/head strides that are
// multiples of 8 elements); other views fall back to simt.
//
// Status: tested on an H100 (sm_90 build; docs/gpu_check.md), and on the CPU through the kernel
// emulator (docs/emulator.md); the sm_80 build has not run on an Ampere GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/cuda/detail/attention_decode.cuh"
#include "ansan/cuda/detail/attention_decode_mma.cuh"
#include "ansan/cuda/detail/attention_mma_sm80.cuh"
#include "ansan/cuda/detail/attention_mma_sm90.cuh"
#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/attention_plan.cuh"
#include "ansan/cuda/detail/attention_simt.cuh"
#include "ansan/cuda/detail/attention_ws_sm90.cuh"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda/device_layout.cuh"  // detail::require_device_pointer, detail::copy_to_host
#include "ansan/cuda_check.hpp"
#include "ansan/dtype.hpp"
#include "ansan/error.hpp"

namespace ansan::cuda {

enum class AttentionKernel : std::uint8_t {
  automatic,
  simt,
  tensor,
  decode,
  decode_tensor,
  tensor_sm90,
  tensor_sm90_ws
};

inline const char* kernel_name(AttentionKernel k) {
  switch (k) {
    case AttentionKernel::simt: return "simt";
    case AttentionKernel::tensor: return "tensor";
    case AttentionKernel::decode: return "decode";
    case AttentionKernel::decode_tensor:
      return "decode_tensor";
    case AttentionKernel::tensor_sm90:
      return "tensor_sm90";
    case AttentionKernel::tensor_sm90_ws:
      return "tensor_sm90_ws";
    default: return "automatic";
  }
}

namespace detail {

template <class T>
constexpr bool is_16bit_v = std::is_same_v<T, half> || std::is_same_v<T, bf16>;

template <class T, class U, int Rank>
bool rows_aligned_16(const TensorView<U, Rank>& view) {
  constexpr index_t vec = 16 / index_t(sizeof(T));
  return reinterpret_cast<std::uintptr_t>(view.data) % 16 == 0 && view.stride[0] % vec == 0 &&
         view.stride[1] % vec == 0;
}

template <class T>
bool vector_rows_ok(const AttentionArgs<T>& a) {
  const index_t d = a.head_dim();
  return is_16bit_v<T> && (d == 64 || d == 128 || d == 256) && rows_aligned_16<T>(a.q) &&
         rows_aligned_16<T>(a.k) && rows_aligned_16<T>(a.v) && rows_aligned_16<T>(a.out);
}

// Whether the current device gives a decode_tensor block at `a`'s head_dim its shared memory:
// at 256 it takes 136 KiB, more than sm_86 and sm_89 allow a block (99 KiB); the kernel's
// static tables add under 1 KiB (tests/kernel_resources.cu reports them).
template <class T>
bool decode_tensor_fits_device(const AttentionArgs<T>& a) {
  if constexpr (!is_16bit_v<T>) {
    return false;
  } else {
    if (a.head_dim() != 256) return true;  // 68 KiB at 128: within every sm_80+ GPU's limit
    int device = 0, optin = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
            cudaSuccess)
      return false;
    return DecodeMmaTraits<T, 256>::smem_bytes() + 1024 <= std::size_t(optin);
  }
}

// Whether the current device is a Hopper (compute capability 9.0) and this program holds the
// Hopper prefill's sm_90a code for it.
template <class T>
bool tensor_sm90_runs_on_device() {
  if constexpr (!is_16bit_v<T>) {
    return false;
  } else {
    int device = 0, major = 0, minor = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
      return false;
    return major == 9 && minor == 0 && tensor_sm90_compiled<T>();
  }
}

// Whether `kernel` can run `a`; automatic resolves to the fastest that can.
template <class T>
bool supports(AttentionKernel kernel, const AttentionArgs<T>& a) {
  switch (kernel) {
    case AttentionKernel::simt: return a.head_dim() >= 1 && a.head_dim() <= 256;
    case AttentionKernel::tensor: return vector_rows_ok(a);
    case AttentionKernel::decode:
      return vector_rows_ok(a) && a.batch <= 65535;  // grid.z
    case AttentionKernel::decode_tensor:
      return vector_rows_ok(a) && a.batch <= 65535 && decode_tensor_fits_device(a);
    case AttentionKernel::tensor_sm90:
      return vector_rows_ok(a) && a.head_dim() <= 128 && tensor_sm90_runs_on_device<T>();
    case AttentionKernel::tensor_sm90_ws:  // compiled in the same passes as tensor_sm90
      return vector_rows_ok(a) && a.head_dim() <= 128 && a.heads_kv() > 0 &&
             a.heads_q() % (2 * a.heads_kv()) == 0 && tensor_sm90_runs_on_device<T>();
    default: return true;
  }
}

}  // namespace detail

// The kernel attention_forward runs for `a` when asked for `requested`.
template <class T>
AttentionKernel choose_kernel(const AttentionArgs<T>& a,
                              AttentionKernel requested = AttentionKernel::automatic) {
  if (requested != AttentionKernel::automatic) return requested;
  if (detail::vector_rows_ok(a)) {
    const bool few_rows = a.total_q() <= 4 * index_t(a.batch);
    // decode_tensor: 1.6-1.8x the FMA decode on an H100 at every head dim (docs/benchmarks.md)
    if (few_rows && detail::supports(AttentionKernel::decode_tensor, a))
      return AttentionKernel::decode_tensor;
    if (few_rows && detail::supports(AttentionKernel::decode, a)) return AttentionKernel::decode;
    // tensor_sm90: 1.10-1.40x the mma.sync prefill on an H100 (docs/benchmarks.md)
    if (detail::supports(AttentionKernel::tensor_sm90, a)) return AttentionKernel::tensor_sm90;
    return AttentionKernel::tensor;
  }
  return AttentionKernel::simt;
}

// What attention_run needs besides Q, K and V, built by attention_plan from one batch's
// metadata: the kernel chosen and, in the caller's temp storage, the tables it reads (the
// query-tile table, the retained-key list and each query row's key bounds; for decode, the
// split count and the partial results' buffers). A plain value: it stays valid while that temp
// storage and the metadata arrays it was built from are unchanged, and serves every call whose
// arguments share that metadata (same pointers, sizes, heads, head_dim and policy), whatever
// their Q, K, V, outputs and strides. A prefill's runs only read its tables; a split decode's
// runs write their partial results into its temp storage, so they must not overlap (one stream).
template <class T>
struct AttentionPlan {
  AttentionKernel kernel = AttentionKernel::automatic;  // the kernel run; automatic: not built
  detail::AttentionParams<T> built{};  // the arguments it was built from, with its tables

  // The first argument of `a` the plan was not built for, named as in AttentionArgs, or
  // nullptr when attention_run can use the plan for `a`.
  const char* mismatch(const AttentionArgs<T>& a) const {
    if (kernel == AttentionKernel::automatic) return "plan (not built by attention_plan)";
    const detail::AttentionParams<T> p = detail::make_params(a);
    const detail::AttentionParams<T>& b = built;
    if (p.batch != b.batch) return "batch";
    if (p.total_q != b.total_q) return "q.shape[0] (total_q)";
    if (p.total_k != b.total_k) return "k.shape[0] (total_k)";
    if (p.heads_q != b.heads_q) return "q.shape[1] (heads_q)";
    if (p.heads_kv != b.heads_kv) return "k.shape[1] (heads_kv)";
    if (p.head_dim != b.head_dim) return "q.shape[2] (head_dim)";
    if (p.policy != b.policy) return "policy";
    if (p.cu_seqlens_q != b.cu_seqlens_q) return "cu_seqlens_q";
    if (p.cu_seqlens_k != b.cu_seqlens_k) return "cu_seqlens_k";
    if (p.maybe_k_seq_start != b.maybe_k_seq_start) return "maybe_k_seq_start";
    if (p.q_pos != b.q_pos) return "q_pos";
    if (p.q_seg_start != b.q_seg_start) return "q_seg_start";
    if (p.q_is_anchor != b.q_is_anchor) return "q_is_anchor";
    if (p.k_pos != b.k_pos) return "k_pos";
    if (p.k_is_anchor != b.k_is_anchor) return "k_is_anchor";
    // Only the views can have changed what the kernel supports: their alignment.
    if (kernel != AttentionKernel::simt && !detail::vector_rows_ok(a))
      return "q, k, v or out (rows 16-byte aligned, as the planned kernel needs)";
    return nullptr;
  }
};

// CUB protocol: with d_temp_storage null, sets temp_storage_bytes (always >= 1) and returns.
// Otherwise fills `plan` for `args` and builds its tables on `stream` (up to three small
// launches for a prefill, none for decode); attention_run calls on another stream must wait
// for them. Returns the first failing CUDA status; an unsupported (kernel, shape) pair or too
// small a temp block returns cudaErrorInvalidValue. Arguments are not validated here
// (attention() does that).
template <class T>
cudaError_t attention_plan(void* d_temp_storage, std::size_t& temp_storage_bytes,
                           const AttentionArgs<T>& args, AttentionPlan<T>& plan,
                           cudaStream_t stream = 0,
                           AttentionKernel kernel = AttentionKernel::automatic) {
  static_assert(std::is_same_v<T, float> || detail::is_16bit_v<T>, "float, half or bf16");
  using namespace detail;
  const AttentionKernel path = choose_kernel(args, kernel);
  if (!supports(path, args) || args.heads_q() > 65535) return cudaErrorInvalidValue;
  AttentionParams<T> p = make_params(args);

  // Pass 1 carves sizes only; pass 2 (real base) carves the same layout and fills it.
  int multiprocessors = 1;
  const bool split_kv = path == AttentionKernel::decode || path == AttentionKernel::decode_tensor;
  if (split_kv) {
    int device = 0;
    ANSAN_CUDA_RETURN(cudaGetDevice(&device));
    ANSAN_CUDA_RETURN(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
    p.splits = decode_splits(p.batch, p.heads_kv, p.total_k, multiprocessors);
  }
  const bool tensor = path == AttentionKernel::tensor || path == AttentionKernel::tensor_sm90 ||
                      path == AttentionKernel::tensor_sm90_ws;
  const std::int32_t tile_rows = tensor ? kTensorRows : kSimtRows;
  const bool empty = p.total_q == 0 || p.batch == 0 || p.heads_q == 0;  // no output: no tables
  const auto carve = [&](TempCarver& temp) -> cudaError_t {
    temp.take<char>(1);
    if (empty) return cudaSuccess;
    if (split_kv) {
      if (p.splits == 1) return cudaSuccess;  // the kernel writes out and lse itself
      p.partial_out = temp.take<float>(std::size_t(p.splits) * std::size_t(p.total_q) *
                                       std::size_t(p.heads_q) * std::size_t(p.head_dim));
      p.partial_lse = temp.take<float>(std::size_t(p.splits) * std::size_t(p.heads_q) *
                                       std::size_t(p.total_q));
      return cudaSuccess;
    }
    return build_plan(temp, p, tile_rows, stream);
  };
  TempCarver sizes(nullptr);
  ANSAN_CUDA_RETURN(carve(sizes));
  if (!d_temp_storage) {
    temp_storage_bytes = sizes.bytes();
    return cudaSuccess;
  }
  if (temp_storage_bytes < sizes.bytes()) return cudaErrorInvalidValue;
  TempCarver temp(d_temp_storage);
  ANSAN_CUDA_RETURN(carve(temp));
  plan.kernel = path;
  plan.built = p;
  return cudaSuccess;
}

// Launches the planned kernel on `args` (one launch; a split decode adds its merge). Returns
// cudaErrorInvalidValue, launching nothing, when plan.mismatch(args) names an argument the plan
// was not built for; otherwise the launch's status. Arguments are not validated here. It only
// launches (no synchronisation, allocation or host copy), so a CUDA graph can capture it.
template <class T>
cudaError_t attention_run(const AttentionPlan<T>& plan, const AttentionArgs<T>& args,
                          cudaStream_t stream = 0) {
  using namespace detail;
  if (plan.mismatch(args)) return cudaErrorInvalidValue;
  AttentionParams<T> p = make_params(args);
  if (p.total_q == 0 || p.batch == 0 || p.heads_q == 0) return cudaSuccess;  // no output
  const AttentionParams<T>& tables = plan.built;
  p.tile_prefix = tables.tile_prefix, p.retained_prefix = tables.retained_prefix;
  p.retained_rows = tables.retained_rows, p.row_keys = tables.row_keys;
  p.partial_out = tables.partial_out, p.partial_lse = tables.partial_lse;
  p.splits = tables.splits;
  switch (plan.kernel) {
    case AttentionKernel::decode: return launch_attention_decode(p, stream);
    case AttentionKernel::decode_tensor:
      return launch_attention_decode_mma(p, stream);
    case AttentionKernel::tensor: return launch_attention_tensor(p, stream);
    case AttentionKernel::tensor_sm90:
      return launch_attention_tensor_sm90(p, stream);
    case AttentionKernel::tensor_sm90_ws:
      return launch_attention_tensor_sm90_ws(p, stream);
    default: return launch_attention_simt(p, stream);
  }
}

// attention_plan then attention_run, with attention_plan's temp-storage protocol: with
// d_temp_storage null, sets temp_storage_bytes (always >= 1) and returns; otherwise runs on
// `stream` and returns the first failing CUDA status (cudaErrorInvalidValue for an unsupported
// (kernel, shape) pair or too small a temp block). Arguments are not validated here
// (attention() does that); nothing is synchronised.
template <class T>
cudaError_t attention_forward(void* d_temp_storage, std::size_t& temp_storage_bytes,
                              const AttentionArgs<T>& args, cudaStream_t stream = 0,
                              AttentionKernel kernel = AttentionKernel::automatic) {
  AttentionPlan<T> plan;
  ANSAN_CUDA_RETURN(
      attention_plan(d_temp_storage, temp_storage_bytes, args, plan, stream, kernel));
  if (!d_temp_storage) return cudaSuccess;
  return attention_run(plan, args, stream);
}

namespace detail {

// What attention() checks of the tensors, reading no device memory: shapes, head_dim, heads,
// the device pointers and element alignment of q, k, v, out and lse.
template <class T>
void validate_tensors(const AttentionArgs<T>& args, const char* fn) {
  validate_attention_shapes(args, fn);
  require(args.head_dim() >= 1 && args.head_dim() <= 256, fn, "q.shape[2] (head_dim)",
          args.head_dim(), "1..256");
  require(args.heads_q() <= 65535, fn, "q.shape[1] (heads_q)", args.heads_q(), "<= 65535");
  struct Tensor {
    const void* ptr;
    index_t count;
    const char* name;
  };
  const Tensor tensors[] = {{args.q.data, args.q.numel(), "q.data"},
                            {args.k.data, args.k.numel(), "k.data"},
                            {args.v.data, args.v.numel(), "v.data"},
                            {args.out.data, args.out.numel(), "out.data"}};
  for (const Tensor& t : tensors) {
    require_device_pointer(t.ptr, t.count, fn, t.name);
    require(reinterpret_cast<std::uintptr_t>(t.ptr) % sizeof(T) == 0, fn, t.name, "misaligned",
            ansan::detail::concat("aligned to ", sizeof(T), " bytes (", dtype_name<T>(), ")"));
  }
  if (args.lse.data) require_device_pointer(args.lse.data, args.lse.numel(), fn, "lse.data");
  require(reinterpret_cast<std::uintptr_t>(args.lse.data) % sizeof(float) == 0, fn, "lse.data",
          "misaligned", "aligned to 4 bytes");
}

// What attention() checks of the metadata: device pointers, then (offsets and positions are read
// on the device without bounds checks) host copies of the offsets and positions, which
// synchronises `stream`.
template <class T>
void validate_metadata(const AttentionArgs<T>& args, cudaStream_t stream, const char* fn) {
  const index_t offsets = index_t(args.batch) + 1, total_q = args.total_q(),
                total_k = args.total_k();
  struct Array {
    const void* ptr;
    index_t count;
    const char* name;
  };
  const Array arrays[] = {{args.cu_seqlens_q, offsets, "cu_seqlens_q"},
                          {args.cu_seqlens_k, offsets, "cu_seqlens_k"},
                          {args.q_pos, total_q, "q_pos"},
                          {args.q_seg_start, total_q, "q_seg_start"},
                          {args.q_is_anchor, total_q, "q_is_anchor"},
                          {args.k_pos, total_k, "k_pos"},
                          {args.k_is_anchor, total_k, "k_is_anchor"}};
  for (const Array& a : arrays) require_device_pointer(a.ptr, a.count, fn, a.name);
  if (args.maybe_k_seq_start)
    require_device_pointer(args.maybe_k_seq_start, offsets - 1, fn, "maybe_k_seq_start");

  AttentionArgs<T> host = args;
  const auto cu_q = copy_to_host(args.cu_seqlens_q, std::size_t(offsets), stream);
  const auto cu_k = copy_to_host(args.cu_seqlens_k, std::size_t(offsets), stream);
  const auto k_start = copy_to_host(args.maybe_k_seq_start,
                                    args.maybe_k_seq_start ? std::size_t(offsets) - 1 : 0, stream);
  const auto q_pos = copy_to_host(args.q_pos, std::size_t(total_q), stream);
  const auto q_seg_start = copy_to_host(args.q_seg_start, std::size_t(total_q), stream);
  const auto k_pos = copy_to_host(args.k_pos, std::size_t(total_k), stream);
  host.cu_seqlens_q = cu_q.data(), host.cu_seqlens_k = cu_k.data();
  host.maybe_k_seq_start = args.maybe_k_seq_start ? k_start.data() : nullptr;
  host.q_pos = q_pos.data(), host.q_seg_start = q_seg_start.data(), host.k_pos = k_pos.data();
  validate_attention_metadata(host, fn);
}

// Everything attention() checks: the tensors, that `kernel` takes them, the metadata.
template <class T>
void validate_call(const AttentionArgs<T>& args, AttentionKernel kernel, cudaStream_t stream,
                   const char* fn) {
  validate_tensors(args, fn);
  require(supports(choose_kernel(args, kernel), args), fn, "kernel", kernel_name(kernel),
          "a kernel that supports this dtype, head_dim and alignment, and whose shared memory the "
          "device allows (docs/cuda_attention.md, Which kernel runs)");
  validate_metadata(args, stream, fn);
}

}  // namespace detail

// Validates everything, then runs attention_forward with temp storage allocated on `stream`.
// Throws std::invalid_argument (naming the argument, the value seen and the value expected)
// before any output is written, and ansan::cuda_error for a failed CUDA call. Validation
// copies the metadata (offsets, positions) to the host and synchronises `stream` (also at the
// end, before the temp storage is freed); call attention_forward (or attention_plan and
// attention_run) directly to avoid that, or PlannedAttention to do it once for many calls.
template <class T>
void attention(const AttentionArgs<T>& args, cudaStream_t stream = 0,
               AttentionKernel kernel = AttentionKernel::automatic) {
  detail::validate_call(args, kernel, stream, "cuda::attention");
  std::size_t bytes = 0;
  ANSAN_CUDA_THROW(attention_forward<T>(nullptr, bytes, args, stream, kernel));
  const detail::DeviceBuffer<char> temp(bytes);
  ANSAN_CUDA_THROW(attention_forward<T>(temp.data(), bytes, args, stream, kernel));
  ANSAN_CUDA_THROW(cudaStreamSynchronize(stream));  // temp is freed on return
}

// attention_plan and attention_run with attention()'s checks, for a batch whose calls (the
// layers of a model) share its metadata. The constructor validates everything, as attention()
// does (the metadata through a host copy, which synchronises `stream`), and plans into temp
// storage it owns. Each call then checks only what can differ from call to call (the tensors'
// shapes, pointers and alignment: no device reads, no synchronisation) and that the plan fits
// them, and launches. Both throw std::invalid_argument naming the argument, before anything is
// written, and ansan::cuda_error for a failed CUDA call.
template <class T>
class PlannedAttention {
 public:
  explicit PlannedAttention(const AttentionArgs<T>& args, cudaStream_t stream = 0,
                            AttentionKernel kernel = AttentionKernel::automatic) {
    detail::validate_call(args, kernel, stream, "cuda::PlannedAttention");
    std::size_t bytes = 0;
    ANSAN_CUDA_THROW(attention_plan(nullptr, bytes, args, plan_, stream, kernel));
    temp_ = detail::DeviceBuffer<char>(bytes);
    ANSAN_CUDA_THROW(attention_plan(temp_.data(), bytes, args, plan_, stream, kernel));
  }

  // Runs on `stream` (ordered after the constructor's stream where they differ: the caller's
  // to arrange); nothing is synchronised.
  void operator()(const AttentionArgs<T>& args, cudaStream_t stream = 0) const {
    const char* fn = "cuda::PlannedAttention";
    detail::validate_tensors(args, fn);
    if (const char* argument = plan_.mismatch(args))
      fail(fn, argument, "not what the plan was built for",
           "the plan's metadata arrays, sizes, heads, head_dim and policy, and rows its kernel "
           "takes (attention_plan)");
    ANSAN_CUDA_THROW(attention_run(plan_, args, stream));
  }

  const AttentionPlan<T>& plan() const { return plan_; }

 private:
  detail::DeviceBuffer<char> temp_;
  AttentionPlan<T> plan_;
};

}  // namespace ansan::cuda
