// ansan/config.hpp - compiler and platform switches shared by every header.
//
// ANSAN_HOST_DEVICE marks code that must run on both sides (the mask predicate, index
// arithmetic). Under nvcc it is `__host__ __device__`; under a plain C++ compiler it is
// empty, so the same functions are unit-tested on a machine without a GPU.
#pragma once

#if defined(__CUDACC__)
#define ANSAN_HOST_DEVICE __host__ __device__ __forceinline__
#define ANSAN_DEVICE __device__ __forceinline__
#else
#define ANSAN_HOST_DEVICE inline
#define ANSAN_DEVICE inline
#endif

// CUDA's fp16/bf16 types are used wherever the toolkit headers can be found, also from a
// host-only translation unit; otherwise ansan defines storage-only stand-ins (dtype.hpp).
#if defined(__CUDACC__) || (defined(__has_include) && __has_include(<cuda_bf16.h>) && !defined(ANSAN_NO_CUDA_TYPES))
#define ANSAN_HAS_CUDA_TYPES 1
#else
#define ANSAN_HAS_CUDA_TYPES 0
#endif

#include <cstdint>

namespace ansan {
using index_t = std::int64_t;  // element offsets and strides: 64-bit, tensors can exceed 2^31
}  // namespace ansan
