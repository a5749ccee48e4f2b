// tests/emulator/device_algorithms.hpp - host versions of ansan/cuda/detail/device_algorithms.cuh
// (the CUB scans and selection), for kernel_emulator.hpp (which includes this file).
//
// They keep CUB's contract as the library relies on it: the temp-storage protocol (a size query
// with null d_temp_storage; a run with less than that fails), in-place scans, and every pointer
// in device memory (runtime.hpp's allocations).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "emulator/runtime.hpp"

namespace ansan::cuda::detail {

namespace emulated {

constexpr std::size_t kScanTempBytes = 512;  // what the size query reports

inline cudaError_t check_run(
    const void* d_temp_storage, std::size_t temp_storage_bytes,
    std::initializer_list<std::pair<const void*, std::size_t>> device_ranges) {
  if (temp_storage_bytes < kScanTempBytes ||
      !::ansan::emulator::detail::is_device(d_temp_storage, temp_storage_bytes))
    return cudaErrorInvalidValue;
  for (const auto& [ptr, bytes] : device_ranges)
    if (bytes > 0 && !::ansan::emulator::detail::is_device(ptr, bytes))
      return cudaErrorInvalidValue;
  return cudaSuccess;
}

template <class T, class Combine>
cudaError_t exclusive_scan(void* d_temp_storage, std::size_t& temp_storage_bytes, const T* d_in,
                           T* d_out, T initial, std::int64_t items, Combine combine) {
  if (!d_temp_storage) {
    temp_storage_bytes = kScanTempBytes;
    return cudaSuccess;
  }
  const std::size_t bytes = std::size_t(items) * sizeof(T);
  if (const cudaError_t status =
          check_run(d_temp_storage, temp_storage_bytes, {{d_in, bytes}, {d_out, bytes}}))
    return status;
  const std::vector<T> in(d_in, d_in + items);  // d_in may be d_out
  T running = initial;
  for (std::int64_t i = 0; i < items; ++i) {
    d_out[i] = running;
    running = combine(running, in[std::size_t(i)]);
  }
  return cudaSuccess;
}

}  // namespace emulated

template <class T>
cudaError_t exclusive_sum(void* d_temp_storage, std::size_t& temp_storage_bytes, const T* d_in,
                          T* d_out, std::int32_t items, cudaStream_t) {
  return emulated::exclusive_scan(d_temp_storage, temp_storage_bytes, d_in, d_out, T(0), items,
                                  [](T a, T b) { return T(a + b); });
}

template <class T>
cudaError_t exclusive_max(void* d_temp_storage, std::size_t& temp_storage_bytes, const T* d_in,
                          T* d_out, T initial, std::int32_t items, cudaStream_t) {
  return emulated::exclusive_scan(d_temp_storage, temp_storage_bytes, d_in, d_out, initial, items,
                                  [](T a, T b) { return a > b ? a : b; });
}

inline cudaError_t select_flagged_indices(void* d_temp_storage, std::size_t& temp_storage_bytes,
                                          const std::uint8_t* d_flags, std::int32_t* d_selected,
                                          std::int32_t* d_num_selected, std::int64_t items,
                                          cudaStream_t) {
  if (!d_temp_storage) {
    temp_storage_bytes = emulated::kScanTempBytes;
    return cudaSuccess;
  }
  if (const cudaError_t status = emulated::check_run(
          d_temp_storage, temp_storage_bytes,
          {{d_flags, std::size_t(items)}, {d_num_selected, sizeof(std::int32_t)}}))
    return status;
  std::int32_t selected = 0;
  for (std::int64_t i = 0; i < items; ++i)
    if (d_flags[i]) {
      if (!::ansan::emulator::detail::is_device(d_selected + selected, sizeof(std::int32_t)))
        return cudaErrorInvalidValue;
      d_selected[selected++] = std::int32_t(i);
    }
  *d_num_selected = selected;
  return cudaSuccess;
}

}  // namespace ansan::cuda::detail
