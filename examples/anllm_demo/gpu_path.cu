// gpu_path.cu - anllm/gpu_path.hpp's GPU runs on the CudaAttention backend (compiled only with
// CUDA). Ran on an H100 (sm_90 build) in tests/gpu/check.sh.
#include "anllm/gpu_path.hpp"

#include "anllm/cuda_backend.cuh"
#include "ansan/cuda_check.hpp"

namespace anllm {

bool gpu_available() { return ansan::cuda_device_available(); }

RunResult run_text_gpu(const Weights& w, const Tokenizer& tok,
                       const std::vector<std::int32_t>& prompt, const RunOptions& opt) {
  return run_text(w, tok, prompt, opt, CudaAttention{});
}

Matrix forward_masked_gpu(const Weights& w, const std::vector<std::int32_t>& ids,
                          const ansan::AnchorLayout& layout, const ansan::MaskPolicy& policy) {
  CudaAttention gpu;
  return forward_masked(w, ids, layout, policy, gpu);
}

}  // namespace anllm
