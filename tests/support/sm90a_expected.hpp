// tests/support/sm90a_expected.hpp - whether the Hopper-only code (wgmma, sm_90a) must run in
// this test binary: a compute capability 9.0 device, and a build with sm_90a code
// (tests/CMakeLists.txt defines ANSAN_TEST_SM90A when CMAKE_CUDA_ARCHITECTURES has 90a; the
// kernel emulator always has it). Elsewhere such code is an empty kernel, and a test reports
// that rather than passing.
#pragma once

#include <cuda_runtime.h>

namespace ansan::test {

inline bool sm90a_expected() {
#if defined(ANSAN_KERNEL_EMULATION) || defined(ANSAN_TEST_SM90A)
  int device = 0, major = 0, minor = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
         cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess &&
         major == 9 && minor == 0;
#else
  return false;
#endif
}

}  // namespace ansan::test
