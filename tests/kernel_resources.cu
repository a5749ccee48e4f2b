// kernel_resources.cu - what ptxas reports for every attention kernel, checked on the host
// against the shared memory each launcher asks for. No GPU needed.
//
// CMake compiles this file twice. With ANSAN_PTXAS_INSTANCES (tests/ptxas_report.cmake, nvcc
// -Xptxas -v for every architecture built), it instantiates attention_forward for float, half
// and bf16, and ptxas's report of each kernel (registers, spills, static shared memory) is
// written to ANSAN_PTXAS_REPORT. Without it, it is the doctest binary that reads that report.
//
// Why: the first H100 run found the tensor kernel at head_dim 128 (48 KiB dynamic + 928 B
// static) failing to launch, because the launcher opted into more than 48 KiB only when the
// dynamic part alone passed it. Static sizes exist only in the compiled kernel, so the emulator
// could not see it; this test can.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ansan/cuda/attention.cuh"

#if defined(ANSAN_PTXAS_INSTANCES)

template <class T>
cudaError_t instantiate(void* temp, std::size_t& bytes, const ansan::AttentionArgs<T>& args) {
  return ansan::cuda::attention_forward(temp, bytes, args);
}
template cudaError_t instantiate<float>(void*, std::size_t&, const ansan::AttentionArgs<float>&);
template cudaError_t instantiate<__half>(void*, std::size_t&, const ansan::AttentionArgs<__half>&);
template cudaError_t instantiate<__nv_bfloat16>(void*, std::size_t&,
                                                const ansan::AttentionArgs<__nv_bfloat16>&);

#else

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace detail = ansan::cuda::detail;

// One kernel as ptxas compiled it for one architecture.
struct CompiledKernel {
  std::string kind;   // tensor, tensor_sm90, tensor_sm90_ws, decode, decode_mma, simt
  std::string dtype;  // float, half, bf16
  int dim = 0;        // Dim or MaxDim
  int arch = 0;       // 80, 90, ... (sm_90a: 90)
  int registers = 0;
  int spill_bytes = 0;
  std::size_t static_smem = 0;
};

std::vector<CompiledKernel> read_report(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read the ptxas report ", path);
  const std::regex entry(
      R"(Compiling entry function '.*attention_(tensor_sm90_ws|tensor_sm90|tensor|decode_mma|decode|simt)_kernelI(f|6__half|13__nv_bfloat16)Li(\d+)E.*' for 'sm_(\d+)a?')");
  const std::regex spill(R"((\d+) bytes spill stores)");
  const std::regex used(R"(Used (\d+) registers)");
  const std::regex smem(R"((\d+) bytes smem)");
  const std::map<std::string, std::string> dtype_names{
      {"f", "float"}, {"6__half", "half"}, {"13__nv_bfloat16", "bf16"}};
  std::vector<CompiledKernel> kernels;
  bool open = false;  // an attention kernel's entry was seen and its "Used" line not yet
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, entry)) {
      kernels.push_back({m[1], dtype_names.at(m[2]), std::stoi(m[3]), std::stoi(m[4])});
      open = true;
    } else if (line.find("Compiling entry function") != std::string::npos) {
      open = false;  // some other kernel
    } else if (open && std::regex_search(line, m, spill)) {
      kernels.back().spill_bytes = std::stoi(m[1]);
    } else if (open && std::regex_search(line, m, used)) {
      kernels.back().registers = std::stoi(m[1]);
      if (std::regex_search(line, m, smem)) kernels.back().static_smem = std::stoul(m[1]);
      open = false;
    }
  }
  return kernels;
}

// The dynamic shared memory its launcher passes (detail::launch_attention_*).
std::size_t dynamic_smem(const CompiledKernel& k) {
  using bf16 = __nv_bfloat16;  // tensor and decode tiles depend only on the 2-byte size
  const auto by_dim = [&](auto traits_of_64, auto traits_of_128, auto traits_of_256) {
    return k.dim == 64 ? traits_of_64 : k.dim == 128 ? traits_of_128 : traits_of_256;
  };
  if (k.kind == "tensor")
    return by_dim(detail::TensorTraits<bf16, 64>::smem_bytes(),
                  detail::TensorTraits<bf16, 128>::smem_bytes(),
                  detail::TensorTraits<bf16, 256>::smem_bytes());
  if (k.kind == "tensor_sm90")
    return k.dim == 64 ? detail::WarpgroupTraits<bf16, 64>::smem_bytes()
                       : detail::WarpgroupTraits<bf16, 128>::smem_bytes();
  if (k.kind == "tensor_sm90_ws")
    return k.dim == 64 ? detail::WarpSpecializedTraits<bf16, 64>::smem_bytes()
                       : detail::WarpSpecializedTraits<bf16, 128>::smem_bytes();
  if (k.kind == "decode")
    return by_dim(detail::DecodeTraits<bf16, 64>::smem_bytes(),
                  detail::DecodeTraits<bf16, 128>::smem_bytes(),
                  detail::DecodeTraits<bf16, 256>::smem_bytes());
  if (k.kind == "decode_mma")
    return by_dim(detail::DecodeMmaTraits<bf16, 64>::smem_bytes(),
                  detail::DecodeMmaTraits<bf16, 128>::smem_bytes(),
                  detail::DecodeMmaTraits<bf16, 256>::smem_bytes());
  return by_dim(detail::SimtTraits<64>::smem_bytes(), detail::SimtTraits<128>::smem_bytes(),
                detail::SimtTraits<256>::smem_bytes());
}

// The most shared memory one block may opt into (CUDA C++ Programming Guide, the table of
// technical specifications per compute capability); 0 for an architecture not listed here.
std::size_t opt_in_limit(int arch) {
  switch (arch) {
    case 80:
    case 87:
      return 163 * 1024;
    case 86:
    case 89:
    case 120:
      return 99 * 1024;
    case 90:
    case 100:
      return 227 * 1024;
    default:
      return 0;
  }
}

const std::vector<CompiledKernel>& kernels() {
  static const std::vector<CompiledKernel> all = read_report(ANSAN_PTXAS_REPORT);
  return all;
}

}  // namespace

TEST_CASE("ptxas reported every attention kernel, for every architecture built") {
  std::map<int, int> per_arch;
  for (const CompiledKernel& k : kernels()) ++per_arch[k.arch];
  REQUIRE_FALSE(per_arch.empty());
  // tensor, decode and decode_mma: {half, bf16} x {64, 128, 256}; tensor_sm90 and
  // tensor_sm90_ws: {half, bf16} x {64, 128} (an empty body outside sm_90a); simt: {float,
  // half, bf16} x {64, 128, 256}
  for (const auto& arch_count : per_arch)
    CHECK_MESSAGE(arch_count.second == 6 + 4 + 4 + 6 + 6 + 9, "sm_", arch_count.first);
  for (const CompiledKernel& k : kernels()) CHECK(k.registers > 0);
}

TEST_CASE("every launch may use the shared memory it asks for") {
  for (const CompiledKernel& k : kernels()) {
    if (k.kind == "tensor_sm90_ws" && k.arch != 90) continue;  // launched on a Hopper only
    const std::size_t dynamic = dynamic_smem(k), total = k.static_smem + dynamic;
    INFO(k.kind, " ", k.dtype, " dim ", k.dim, " sm_", k.arch, ": ", k.static_smem, " B static + ",
         dynamic, " B dynamic");
    if (total > detail::kSharedMemoryWithoutOptIn)
      CHECK(detail::raises_shared_memory_limit(dynamic));
    REQUIRE_MESSAGE(opt_in_limit(k.arch) > 0, "add sm_", k.arch, "'s limit to opt_in_limit()");
    CHECK(total <= opt_in_limit(k.arch));
  }
}

TEST_CASE("the register budgets the kernels are designed around") {
  for (const CompiledKernel& k : kernels()) {
    MESSAGE(k.kind, " ", k.dtype, " dim ", k.dim, " sm_", k.arch, ": ", k.registers, " registers, ",
            k.spill_bytes, " B spilled, ", k.static_smem, " B static + ", dynamic_smem(k),
            " B dynamic shared");
    // Three 128-thread blocks per SM at head_dim 128 (TensorTraits::kMinBlocksPerSM).
    if ((k.kind == "tensor" || k.kind == "tensor_sm90") && k.dim == 128)
      CHECK_MESSAGE(k.registers * 128 * 3 <= 65536, k.kind, " ", k.dtype, " sm_", k.arch);
    // tensor_sm90_ws moves registers from its producer to its consumers (setmaxnreg) within a
    // pool of 384 threads x 168 registers: with fewer, the consumers' request would never be
    // granted. Its body exists only in the sm_90a pass, where it has static shared memory.
    if (k.kind == "tensor_sm90_ws" && k.static_smem > 0) {
      CHECK_MESSAGE(k.registers == 168, k.dtype, " dim ", k.dim, ": ", k.registers);
      CHECK_MESSAGE(k.spill_bytes == 0, k.dtype, " dim ", k.dim, ": ", k.spill_bytes);
    }
    CHECK_MESSAGE(k.registers <= 255, k.kind, " dim ", k.dim, " sm_", k.arch);
  }
}

// ptxas serialises wgmma, or adds fences and waits of its own, where registers an MMA in flight
// uses are touched outside the kernel's fences, or are copied at a branch's join ("(C7511)
// Potential Performance Loss", C7514, C7517, C7519): then tensor_sm90_ws's softmax no longer
// overlaps its P V. Correct, but slow.
TEST_CASE("ptxas left every wgmma pipeline as written") {
  std::ifstream in(ANSAN_PTXAS_REPORT);
  REQUIRE(in.good());
  const std::regex advice(R"(\((C751[0-9])\).*function '[^']*attention_)");
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) CHECK_MESSAGE(!std::regex_search(line, m, advice), line);
}

#endif  // ANSAN_PTXAS_INSTANCES
