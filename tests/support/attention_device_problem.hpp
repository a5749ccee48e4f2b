// tests/support/attention_device_problem.hpp - one attention problem (attention_problems.hpp)
// with fresh random inputs, copied to the device, for the CUDA attention tests: the GPU test and
// the emulated ones (docs/emulator.md). Every CUDA call checked (throws).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "ansan/attention_args.hpp"
#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda_check.hpp"
#include "support/attention_problems.hpp"
#include "support/device_copies.hpp"

namespace ansan::test {

// Fills a device buffer with 0xff bytes: NaN for float, fp16 and bf16, so an unwritten output
// fails.
template <class E>
void poison(const ansan::cuda::detail::DeviceBuffer<E>& d) {
  if (d.size() > 0) ANSAN_CUDA_THROW(cudaMemset(d.data(), 0xff, d.bytes()));
}

// Whether `d` still holds poison()'s bytes, every one: nothing wrote to it.
template <class E>
bool still_poisoned(const ansan::cuda::detail::DeviceBuffer<E>& d) {
  const std::vector<E> host = to_host(d);
  const auto* bytes = reinterpret_cast<const unsigned char*>(host.data());
  return std::all_of(bytes, bytes + d.bytes(), [](unsigned char b) { return b == 0xff; });
}

template <class T>
struct DeviceProblem {
  template <class E>
  using Buffer = ansan::cuda::detail::DeviceBuffer<E>;

  // A device copy of `host` with room for at least one element: tensors with no elements (no
  // heads, no tokens) still get a non-null pointer, as attention() requires.
  template <class E>
  static Buffer<E> upload(const std::vector<E>& host) {
    if (!host.empty()) return to_device(host);
    return Buffer<E>(1);
  }

  const AttentionProblem& pr;
  std::vector<T> q, k, v;  // host copies of the inputs, in storage order
  Buffer<T> d_q, d_k, d_v, d_out;
  Buffer<float> d_lse;
  Buffer<std::int32_t> d_cu_q, d_cu_k, d_q_pos, d_q_seg, d_k_pos, d_k_start;
  Buffer<std::uint8_t> d_q_anchor, d_k_anchor;

  DeviceProblem(std::mt19937& rng, const AttentionProblem& p)
      : pr(p),
        q(random_values<T>(rng, q_storage(p).elements)),
        k(random_values<T>(rng, kv_storage(p).elements)),
        v(random_values<T>(rng, kv_storage(p).elements)),
        d_q(upload(q)),
        d_k(upload(k)),
        d_v(upload(v)),
        d_out(std::max<std::size_t>(
            std::size_t(p.total_q()) * std::size_t(p.shape.heads_q) * std::size_t(p.shape.dim), 1)),
        d_lse(std::max<std::size_t>(std::size_t(p.total_q()) * std::size_t(p.shape.heads_q), 1)),
        d_cu_q(to_device(p.cu_q)),
        d_cu_k(to_device(p.cu_k)),
        d_q_pos(to_device(p.q_pos)),
        d_q_seg(to_device(p.q_seg_start)),
        d_k_pos(to_device(p.k_pos)),
        d_k_start(to_device(p.k_start)),
        d_q_anchor(to_device(p.q_anchor)),
        d_k_anchor(to_device(p.k_anchor)) {}

  AttentionArgs<T> args() const {
    return args_of<T>(pr, d_q.data(), d_k.data(), d_v.data(), d_out.data(),
                      pr.shape.with_lse ? d_lse.data() : nullptr, d_cu_q.data(), d_cu_k.data(),
                      d_q_pos.data(), d_q_seg.data(), d_q_anchor.data(), d_k_pos.data(),
                      d_k_anchor.data(), d_k_start.data());
  }
  void poison_outputs() const {
    poison(d_out);
    poison(d_lse);
  }
  Reference reference() const { return reference_of(pr, q, k, v); }
  // The outputs on the device against `ref`, after all queued work has finished.
  Comparison compare_with(const Reference& ref) const {
    return compare(pr, ref, to_host(d_out), to_host(d_lse));
  }
};

}  // namespace ansan::test
