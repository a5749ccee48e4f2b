// ansan/cuda/detail/device_algorithms.cuh - the device-wide CUB algorithms ansan uses, behind
// one seam: exclusive scans (sum and max) and the selection of flagged indices. Each follows
// CUB's temp-storage protocol (null d_temp_storage: set temp_storage_bytes and return) and
// returns CUB's status.
//
// Keeping CUB to this one header lets tests/emulator/kernel_emulator.hpp supply host versions,
// so every CUDA path of the library also runs on a machine without a GPU.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#if !defined(ANSAN_KERNEL_EMULATION)
#include <thrust/iterator/counting_iterator.h>

#include <cub/device/device_scan.cuh>
#include <cub/device/device_select.cuh>
#include <cuda/functional>
#endif

namespace ansan::cuda::detail {

#if !defined(ANSAN_KERNEL_EMULATION)

// d_out[i] = sum of d_in[0 .. i); in place when d_in == d_out.
template <class T>
cudaError_t exclusive_sum(void* d_temp_storage, std::size_t& temp_storage_bytes, const T* d_in,
                          T* d_out, std::int32_t items, cudaStream_t stream) {
  return cub::DeviceScan::ExclusiveSum(d_temp_storage, temp_storage_bytes, d_in, d_out, items,
                                       stream);
}

// d_out[i] = max(initial, d_in[0 .. i)); in place when d_in == d_out.
template <class T>
cudaError_t exclusive_max(void* d_temp_storage, std::size_t& temp_storage_bytes, const T* d_in,
                          T* d_out, T initial, std::int32_t items, cudaStream_t stream) {
  return cub::DeviceScan::ExclusiveScan(d_temp_storage, temp_storage_bytes, d_in, d_out,
                                        ::cuda::maximum<>{}, initial, items, stream);
}

// d_selected <-- the ascending indices i in [0, items) with d_flags[i] != 0; *d_num_selected <--
// their count.
inline cudaError_t select_flagged_indices(void* d_temp_storage, std::size_t& temp_storage_bytes,
                                          const std::uint8_t* d_flags, std::int32_t* d_selected,
                                          std::int32_t* d_num_selected, std::int64_t items,
                                          cudaStream_t stream) {
  return cub::DeviceSelect::Flagged(d_temp_storage, temp_storage_bytes,
                                    thrust::counting_iterator<std::int32_t>(0), d_flags, d_selected,
                                    d_num_selected, items, stream);
}

#endif  // !ANSAN_KERNEL_EMULATION

}  // namespace ansan::cuda::detail
