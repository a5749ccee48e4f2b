// ansan/cuda/detail/device_buffer.cuh - an owning device allocation for the host conveniences.
//
// The device APIs never allocate (CUB's protocol); the classes that do hold their memory in
// a DeviceBuffer, so a throw half-way through a build frees what was allocated.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "ansan/cuda_check.hpp"

namespace ansan::cuda::detail {

struct CudaFree {
  void operator()(void* p) const noexcept { (void)cudaFree(p); }  // nothing to do on failure
};

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    void* p = nullptr;
    if (count > 0) ANSAN_CUDA_THROW(cudaMalloc(&p, count * sizeof(T)));
    data_.reset(p);
  }

  T* data() const { return static_cast<T*>(data_.get()); }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }

 private:
  std::unique_ptr<void, CudaFree> data_;
  std::size_t count_ = 0;
};

}  // namespace ansan::cuda::detail
