// tests/support/device_copies.hpp - host <-> device copies of whole vectors for the GPU tests,
// into and out of ansan::cuda::detail::DeviceBuffer; every CUDA call checked (throws).
#pragma once

#include <cstddef>
#include <vector>

#include <cuda_runtime_api.h>

#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda_check.hpp"

namespace ansan::test {

// A device copy of `host`.
template <class E>
ansan::cuda::detail::DeviceBuffer<E> to_device(const std::vector<E>& host) {
  ansan::cuda::detail::DeviceBuffer<E> d(host.size());
  if (!host.empty())
    ANSAN_CUDA_THROW(
        cudaMemcpy(d.data(), host.data(), host.size() * sizeof(E), cudaMemcpyHostToDevice));
  return d;
}

// The first n elements at device pointer d, after all work queued on the device has finished.
template <class E>
std::vector<E> to_host(const E* d, std::size_t n) {
  std::vector<E> host(n);
  ANSAN_CUDA_THROW(cudaDeviceSynchronize());
  if (n) ANSAN_CUDA_THROW(cudaMemcpy(host.data(), d, n * sizeof(E), cudaMemcpyDeviceToHost));
  return host;
}

// All of buffer d, after all work queued on the device has finished.
template <class E>
std::vector<E> to_host(const ansan::cuda::detail::DeviceBuffer<E>& d) {
  return to_host(d.data(), d.size());
}

}  // namespace ansan::test
