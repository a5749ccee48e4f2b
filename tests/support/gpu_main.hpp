// tests/support/gpu_main.hpp - main() for GPU test binaries.
//
// Include in exactly one .cu test file instead of defining DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN.
// Without a usable device the binary prints why and exits 77, which CTest reports as
// skipped (SKIP_RETURN_CODE), never as passed. Listing test cases works without a device so
// that doctest_discover_tests can register each case at build time.
#pragma once

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

#include "ansan/cuda_check.hpp"

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    listing |= std::strstr(argv[i], "list-test") != nullptr || std::strcmp(argv[i], "-ltc") == 0;
  if (!listing && !ansan::cuda_device_available()) {
    std::printf("SKIPPED: no CUDA device is available on this machine\n");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
