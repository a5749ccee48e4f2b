// ansan/cuda_check.hpp - checking every CUDA call and launch.
//
// Device-side APIs follow CUB: they return cudaError_t and stop at the first failure
// (ANSAN_CUDA_RETURN). Host conveniences that own their allocations throw ansan::cuda_error
// instead (ANSAN_CUDA_THROW). After a kernel launch, ANSAN_CUDA_RETURN(cudaGetLastError())
// catches bad launch configurations.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace ansan {

class cuda_error : public std::runtime_error {
 public:
  cuda_error(cudaError_t code, const char* what_failed, const char* file, int line)
      : std::runtime_error(std::string("ansan: ") + what_failed + " failed at " + file + ":" +
                           std::to_string(line) + ": " + cudaGetErrorName(code) + " (" +
                           cudaGetErrorString(code) + ")"),
        code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

// True when at least one CUDA device can run our kernels; never throws.
inline bool cuda_device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return count > 0;
}

}  // namespace ansan

#define ANSAN_CUDA_RETURN(call)                  \
  do {                                           \
    const cudaError_t ansan_status_ = (call);    \
    if (ansan_status_ != cudaSuccess) return ansan_status_; \
  } while (0)

#define ANSAN_CUDA_THROW(call)                                                     \
  do {                                                                             \
    const cudaError_t ansan_status_ = (call);                                      \
    if (ansan_status_ != cudaSuccess)                                              \
      throw ::ansan::cuda_error(ansan_status_, #call, __FILE__, __LINE__);         \
  } while (0)
