// tests/emulator/runtime.hpp - the CUDA runtime calls ansan and its tests make, defined over host
// memory, for kernel_emulator.hpp (which includes this file; one translation unit per program).
//
// "Device memory" is host memory from cudaMalloc, tracked by address range, so the checks a real
// runtime makes still fail here: cudaMemcpy whose kind does not match where the pointers live,
// cudaMemset of a host pointer, and cudaPointerGetAttributes reports pageable host memory as
// unregistered (the library's "is this a device pointer" validation). Allocations are exact-size,
// so AddressSanitizer sees a kernel that reads past the end of a buffer. Everything is
// synchronous: streams are tokens, and a kernel has finished when its launch returns.
//
// Except while a stream is captured into a CUDA graph (cudaStreamBeginCapture, global mode):
// then the launches and async copies and memsets on that stream are recorded, not run, and
// cudaGraphLaunch runs them in order. As on a GPU, a call that would synchronise or allocate
// during a capture (cudaMalloc, cudaFree, cudaMemcpy, cudaMemset, a stream or device
// synchronisation) fails (here always with cudaErrorStreamCaptureUnsupported) and invalidates
// the capture, so code meant to be captured is tested for that.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <utility>
#include <vector>

// The graph types the CUDA headers only declare: the work a capture recorded, in order.
struct CUgraph_st {
  std::vector<std::function<cudaError_t()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<cudaError_t()>> work;
};

namespace ansan::emulator {

struct Device {
  int multiprocessors = 132;                       // an H100 SXM, for the decode split heuristic
  int shared_memory_per_block_optin = 227 * 1024;  // an H100; sm_86 / sm_89 allow 99 KiB
  int compute_capability = 90;                     // major * 10 + minor: an H100
};
inline Device& device() {
  static Device properties;
  return properties;
}

namespace detail {

// Live cudaMalloc allocations: base address -> bytes.
inline std::map<std::uintptr_t, std::size_t>& allocations() {
  static std::map<std::uintptr_t, std::size_t> live;
  return live;
}

// Whether [ptr, ptr + bytes) lies inside one allocation.
inline bool is_device(const void* ptr, std::size_t bytes) {
  const auto address = reinterpret_cast<std::uintptr_t>(ptr);
  auto& live = allocations();
  auto it = live.upper_bound(address);
  if (it == live.begin()) return false;
  --it;
  return address + bytes <= it->first + it->second &&
         (bytes > 0 || address < it->first + it->second);
}

inline cudaError_t& last_error() {
  static cudaError_t error = cudaSuccess;
  return error;
}
inline cudaError_t record(cudaError_t status) {
  if (status != cudaSuccess) last_error() = status;
  return status;
}

// The capture in progress, if any (one at a time: what ansan's tests need).
struct Capture {
  bool active = false;
  cudaStream_t stream = nullptr;
  bool invalidated = false;
  std::vector<std::function<cudaError_t()>> work;
};
inline Capture& capture() {
  static Capture state;
  return state;
}
// Stream-ordered work: recorded if `stream` is being captured, run now otherwise.
inline cudaError_t run_or_record(cudaStream_t stream, std::function<cudaError_t()> work) {
  Capture& c = capture();
  if (c.active && stream == c.stream) {
    c.work.push_back(std::move(work));
    return cudaSuccess;
  }
  return work();
}
// A call a capture does not allow: it fails and the capture is invalidated.
inline bool refused_by_capture() {
  Capture& c = capture();
  if (!c.active) return false;
  c.invalidated = true;
  record(cudaErrorStreamCaptureUnsupported);
  return true;
}

inline bool copy_kind_matches(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind) {
  if (count == 0) return true;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      return is_device(dst, count) && !is_device(src, 1);
    case cudaMemcpyDeviceToHost:
      return is_device(src, count) && !is_device(dst, 1);
    case cudaMemcpyDeviceToDevice:
      return is_device(src, count) && is_device(dst, count);
    case cudaMemcpyHostToHost:
      return !is_device(src, 1) && !is_device(dst, 1);
    default:
      return true;  // cudaMemcpyDefault: the runtime works it out
  }
}

}  // namespace detail
}  // namespace ansan::emulator

extern "C" {

cudaError_t cudaMalloc(void** ptr, std::size_t size) {
  using namespace ansan::emulator::detail;
  if (refused_by_capture()) return cudaErrorStreamCaptureUnsupported;
  if (!ptr) return record(cudaErrorInvalidValue);
  void* memory = nullptr;
  if (posix_memalign(&memory, 256, size > 0 ? size : 1) != 0)
    return record(cudaErrorMemoryAllocation);
  allocations()[reinterpret_cast<std::uintptr_t>(memory)] = size > 0 ? size : 1;
  *ptr = memory;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  using namespace ansan::emulator::detail;
  if (refused_by_capture()) return cudaErrorStreamCaptureUnsupported;
  if (!ptr) return cudaSuccess;
  const auto it = allocations().find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == allocations().end()) return record(cudaErrorInvalidValue);
  allocations().erase(it);
  std::free(ptr);
  return cudaSuccess;
}

namespace ansan::emulator::detail {
inline cudaError_t copy(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind) {
  if (!copy_kind_matches(dst, src, count, kind)) return record(cudaErrorInvalidValue);
  if (count > 0) std::memmove(dst, src, count);
  return cudaSuccess;
}
inline cudaError_t fill(void* ptr, int value, std::size_t count) {
  if (count > 0 && !is_device(ptr, count)) return record(cudaErrorInvalidValue);
  if (count > 0) std::memset(ptr, value, count);
  return cudaSuccess;
}
}  // namespace ansan::emulator::detail

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind) {
  using namespace ansan::emulator::detail;
  if (refused_by_capture()) return cudaErrorStreamCaptureUnsupported;
  return copy(dst, src, count, kind);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  using namespace ansan::emulator::detail;
  return run_or_record(stream, [=] { return copy(dst, src, count, kind); });
}

// `height` rows of `width` bytes, rows `spitch` / `dpitch` bytes apart.
cudaError_t cudaMemcpy2DAsync(void* dst, std::size_t dpitch, const void* src, std::size_t spitch,
                              std::size_t width, std::size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  using namespace ansan::emulator::detail;
  if (width > dpitch || width > spitch) return record(cudaErrorInvalidPitchValue);
  return run_or_record(stream, [=] {
    for (std::size_t row = 0; row < height; ++row) {
      const cudaError_t status = copy(static_cast<char*>(dst) + row * dpitch,
                                      static_cast<const char*>(src) + row * spitch, width, kind);
      if (status != cudaSuccess) return status;
    }
    return cudaSuccess;
  });
}

cudaError_t cudaMemset(void* ptr, int value, std::size_t count) {
  using namespace ansan::emulator::detail;
  if (refused_by_capture()) return cudaErrorStreamCaptureUnsupported;
  return fill(ptr, value, count);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t count, cudaStream_t stream) {
  using namespace ansan::emulator::detail;
  return run_or_record(stream, [=] { return fill(ptr, value, count); });
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  using namespace ansan::emulator::detail;
  if (!attributes) return record(cudaErrorInvalidValue);
  *attributes = cudaPointerAttributes{};
  if (is_device(ptr, 0)) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else {
    attributes->type = cudaMemoryTypeUnregistered;
  }
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  using namespace ansan::emulator::detail;
  const cudaError_t error = last_error();
  last_error() = cudaSuccess;
  return error;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  using namespace ansan::emulator::detail;
  if (device != 0) return record(cudaErrorInvalidDevice);
  switch (attribute) {
    case cudaDevAttrMultiProcessorCount:
      *value = ansan::emulator::device().multiprocessors;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = ansan::emulator::device().shared_memory_per_block_optin;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = ansan::emulator::device().compute_capability / 10;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = ansan::emulator::device().compute_capability % 10;
      return cudaSuccess;
    default:
      return record(cudaErrorInvalidValue);
  }
}
cudaError_t cudaDeviceSynchronize(void) {
  using namespace ansan::emulator::detail;
  return refused_by_capture() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  using namespace ansan::emulator::detail;
  return refused_by_capture() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  static char tokens[64];
  static std::size_t next = 0;
  *stream = reinterpret_cast<cudaStream_t>(&tokens[next++ % std::size(tokens)]);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }

// Capture in global mode only (what the tests ask for), never of the legacy default stream,
// which a GPU refuses too.
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  using namespace ansan::emulator::detail;
  if (stream == nullptr) return record(cudaErrorStreamCaptureUnsupported);
  if (mode != cudaStreamCaptureModeGlobal) return record(cudaErrorInvalidValue);
  if (capture().active) return record(cudaErrorIllegalState);
  capture() = Capture{true, stream, false, {}};
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  using namespace ansan::emulator::detail;
  Capture& c = capture();
  if (!c.active || stream != c.stream || !graph) return record(cudaErrorIllegalState);
  const bool invalidated = c.invalidated;
  *graph = invalidated ? nullptr : new CUgraph_st{std::move(c.work)};
  c = Capture{};
  return invalidated ? record(cudaErrorStreamCaptureInvalidated) : cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  using namespace ansan::emulator::detail;
  if (!exec || !graph) return record(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}
// Runs the recorded work in order (on the stream it is launched on: synchronously, here).
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  using namespace ansan::emulator::detail;
  if (!exec) return record(cudaErrorInvalidValue);
  return run_or_record(stream, [exec] {
    for (const auto& work : exec->work) {
      const cudaError_t status = work();
      if (status != cudaSuccess) return status;
    }
    return cudaSuccess;
  });
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    default:
      return "cudaError (emulated runtime)";
  }
}
const char* cudaGetErrorString(cudaError_t error) { return cudaGetErrorName(error); }

}  // extern "C"
