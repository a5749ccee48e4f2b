// The packaging tests' CUDA consumer: builds the same layout on the device through
// ansan::cuda and compares it with the host one. Exits 77 (skipped) without a device, after
// compiling and linking, which is what the packaging test checks on a machine without one.
#include <cstdio>
#include <string>
#include <vector>

#include "ansan/cuda/device_layout.cuh"
#include "ansan/cuda_check.hpp"
#include "ansan/layout.hpp"

int main() {
  if (!ansan::cuda_device_available()) {
    std::printf("ansan CUDA consumer: built; no CUDA device to run it on\n");
    return 77;
  }
  const std::string text = "Hi. Yo";
  const std::vector<std::int32_t> tokens(text.begin(), text.end());  // (6)
  const std::vector<std::int32_t> cu_seqlens{0, std::int32_t(tokens.size())};  // (2)
  const auto selector = ansan::AnchorSelector::endpoint({'.'});
  std::int32_t* d_tokens = nullptr;      // (6)
  std::int32_t* d_cu_seqlens = nullptr;  // (2)
  ANSAN_CUDA_THROW(cudaMalloc(&d_tokens, tokens.size() * sizeof(std::int32_t)));
  ANSAN_CUDA_THROW(cudaMalloc(&d_cu_seqlens, cu_seqlens.size() * sizeof(std::int32_t)));
  ANSAN_CUDA_THROW(cudaMemcpy(d_tokens, tokens.data(), tokens.size() * sizeof(std::int32_t),
                              cudaMemcpyHostToDevice));
  ANSAN_CUDA_THROW(cudaMemcpy(d_cu_seqlens, cu_seqlens.data(),
                              cu_seqlens.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  const ansan::AnchorLayout device =
      ansan::cuda::DeviceLayout::from_tokens(d_tokens, 6, d_cu_seqlens, 1, selector, 256)
          .to_host();
  const ansan::AnchorLayout host = ansan::build_layout(tokens, cu_seqlens, selector, 256);
  ANSAN_CUDA_THROW(cudaFree(d_tokens));
  ANSAN_CUDA_THROW(cudaFree(d_cu_seqlens));
  const bool ok = device.seg_start == host.seg_start && device.anchor_pos == host.anchor_pos;
  std::printf("ansan CUDA consumer: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
