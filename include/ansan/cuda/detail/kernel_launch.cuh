// ansan/cuda/detail/kernel_launch.cuh - how every ansan kernel gets its launch resources: the
// launch shape, the block's dynamic shared memory, and one checked launch.
//
// These are the only places the kernels touch the CUDA launch machinery, so a host build can
// stand in for them: tests/emulator/kernel_emulator.hpp defines ANSAN_KERNEL_EMULATION and its
// own launch_kernel / dynamic_shared_memory, and then runs the very same kernel bodies on the
// CPU (tests/emulator/).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "ansan/config.hpp"
#include "ansan/cuda_check.hpp"

namespace ansan::cuda::detail {

struct LaunchShape {
  dim3 grid, block;
  std::size_t dynamic_smem_bytes;
};

// A block's static and dynamic shared memory together may pass 48 KiB only after the kernel's
// dynamic limit is raised (the tensor kernel at head_dim 128: 48 KiB dynamic plus its static
// tables). Raising it to exactly a launch's size is always valid and applies to the current
// device, so every launch that uses dynamic shared memory does (tests/kernel_resources.cu
// checks this rule against what ptxas reports for each kernel).
constexpr std::size_t kSharedMemoryWithoutOptIn = 48 * 1024;
constexpr bool raises_shared_memory_limit(std::size_t dynamic_smem_bytes) {
  return dynamic_smem_bytes > 0;
}

#if !defined(ANSAN_KERNEL_EMULATION)

// The block's dynamic shared memory (the launch's third <<<>>> argument), 16-byte aligned.
template <class T>
ANSAN_DEVICE T* dynamic_shared_memory() {
  extern __shared__ __align__(16) unsigned char ansan_dynamic_smem[];
  return reinterpret_cast<T*>(ansan_dynamic_smem);
}

// Launches `kernel` and returns the launch status, raising its shared-memory limit first where
// raises_shared_memory_limit says so.
template <class... Params, class... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), const LaunchShape& shape, cudaStream_t stream,
                          const Args&... args) {
  if (raises_shared_memory_limit(shape.dynamic_smem_bytes))
    ANSAN_CUDA_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(shape.dynamic_smem_bytes)));
  kernel<<<shape.grid, shape.block, shape.dynamic_smem_bytes, stream>>>(args...);
  return cudaGetLastError();
}

#endif  // !ANSAN_KERNEL_EMULATION

}  // namespace ansan::cuda::detail
