// anllm/gpu_path.hpp - the demo's GPU runs, callable from plain C++ (main.cpp).
//
// Declared here, defined in gpu_path.cu, which CMake compiles only when ansan is built with
// CUDA (ANSAN_WITH_CUDA; the demo then defines ANLLM_DEMO_WITH_CUDA=1). They are run_text and
// forward_masked on the CudaAttention backend (cuda_backend.cuh): attention and the KV cache
// on the GPU, everything else on the CPU.
#pragma once

#include <cstdint>
#include <vector>

#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "generate.hpp"
#include "tokenizer.hpp"
#include "weights.hpp"

namespace anllm {

// True when a CUDA device can run ansan's kernels; never throws.
bool gpu_available();
RunResult run_text_gpu(const Weights& w, const Tokenizer& tok,
                       const std::vector<std::int32_t>& prompt, const RunOptions& opt);
Matrix forward_masked_gpu(const Weights& w, const std::vector<std::int32_t>& ids,
                          const ansan::AnchorLayout& layout, const ansan::MaskPolicy& policy);

}  // namespace anllm
