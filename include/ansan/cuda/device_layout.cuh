// ansan/cuda/device_layout.cuh - an anchor layout that lives on the GPU and owns its memory.
//
// The host convenience over the device builders of ansan/cuda/layout.cuh: it checks every
// argument, allocates the arrays and the temporary storage, builds, and hands out a
// LayoutView of device pointers for the kernels. Bad input gets the same
// std::invalid_argument as the host builders (ansan/layout.hpp), raised before any output
// is allocated or written; a failed CUDA call throws ansan::cuda_error.
//
// How input that lives in device memory is checked: the check_*() kernels of layout.cuh
// record the first fault on the device; this class copies back that one word (a stream
// synchronisation), and only on a fault copies the few offending values to word the message.
// So a build costs two synchronisations (the check, and reading the anchor count back) and
// never a host copy of the tokens. Every from_*() returns once the layout is complete.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "ansan/cuda/detail/device_buffer.cuh"
#include "ansan/cuda/detail/layout_steps.hpp"
#include "ansan/cuda/layout.cuh"
#include "ansan/cuda_check.hpp"
#include "ansan/error.hpp"
#include "ansan/layout.hpp"

namespace ansan::cuda {

namespace detail {

// Throws std::invalid_argument if `ptr` is pageable host memory, which a kernel cannot read
// (device, managed and mapped pinned memory pass); null is allowed only for an empty array.
inline void require_device_pointer(const void* ptr, std::int64_t count, const char* function,
                                   const char* argument) {
  if (count == 0 && ptr == nullptr) return;
  require(ptr != nullptr, function, argument, "null", "a device pointer");
  cudaPointerAttributes attributes{};
  ANSAN_CUDA_THROW(cudaPointerGetAttributes(&attributes, ptr));
  require(attributes.type != cudaMemoryTypeUnregistered, function, argument,
          "a pageable host pointer", "a pointer a kernel can read (device memory)");
}

template <class T>
std::vector<T> copy_to_host(const T* d_src, std::size_t count, cudaStream_t stream) {
  std::vector<T> host(count);
  if (count > 0) {
    ANSAN_CUDA_THROW(
        cudaMemcpyAsync(host.data(), d_src, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
    ANSAN_CUDA_THROW(cudaStreamSynchronize(stream));
  }
  return host;
}

template <class T>
T copy_one_to_host(const T* d_src, std::int64_t index, cudaStream_t stream) {
  return copy_to_host(d_src + index, 1, stream)[0];
}

// The inputs a fault may point into (those a builder does not take stay null).
struct CheckedInputs {
  const std::int32_t* d_cu_seqlens = nullptr;  // (B+1)
  std::int32_t batch = 0;
  std::int64_t total_tokens = 0;
  const std::int32_t* d_tokens = nullptr;  // (total_tokens)
  std::int32_t vocab_size = 0;
  const std::int32_t* d_anchor_pos = nullptr;  // (total_anchors)
  const std::int32_t* d_cu_anchors = nullptr;  // (B+1)
  std::int64_t total_anchors = 0;
};

// Waits for a check_*() and, on a fault, throws the message the host builder would throw.
inline void throw_on_fault(const unsigned long long* d_fault, const CheckedInputs& in,
                           const char* function, cudaStream_t stream) {
  const std::uint64_t key = copy_one_to_host(d_fault, 0, stream);
  if (key == no_fault) return;
  const std::int64_t index = fault_index(key);
  const std::size_t offsets = std::size_t(in.batch) + 1;
  switch (fault_kind(key)) {
    case LayoutFaultKind::cu_seqlens:  // the host validator words it
      validate_cu_seqlens(copy_to_host(in.d_cu_seqlens, offsets, stream), in.total_tokens,
                          function);
      break;
    case LayoutFaultKind::cu_anchors:
      validate_cu_seqlens(copy_to_host(in.d_cu_anchors, offsets, stream), in.total_anchors,
                          function, "cu_anchors");
      break;
    case LayoutFaultKind::token_id:
      require(false, function, ansan::detail::concat("tokens[", index, "]").c_str(),
              copy_one_to_host(in.d_tokens, index, stream),
              ansan::detail::concat("an id in [0, ", in.vocab_size, ")"));
      break;
    case LayoutFaultKind::anchor_pos: {
      const auto cu_seqlens = copy_to_host(in.d_cu_seqlens, offsets, stream);
      const auto cu_anchors = copy_to_host(in.d_cu_anchors, offsets, stream);
      const std::int32_t b = sequence_of(cu_anchors.data(), in.batch, index);
      const std::int32_t lo =
          index > cu_anchors[b] ? copy_one_to_host(in.d_anchor_pos, index - 1, stream) + 1 : 0;
      require(false, function, ansan::detail::concat("anchor_pos[", index, "]").c_str(),
              copy_one_to_host(in.d_anchor_pos, index, stream),
              ansan::detail::concat("a position in [", lo, ", ", cu_seqlens[b + 1] - cu_seqlens[b],
                                    ") of sequence ", b, " (strictly increasing)"));
      break;
    }
  }
  throw std::logic_error(ansan::detail::concat("ansan::", function,
                                               ": the device check reported fault ", key,
                                               " that the host check does not confirm"));
}

inline void require_sizes(const char* function, std::int32_t batch, std::int64_t total_tokens) {
  constexpr std::int64_t max_tokens = std::numeric_limits<std::int32_t>::max();
  require(batch >= 0, function, "batch", batch, ">= 0");
  require(total_tokens >= 0 && total_tokens <= max_tokens, function, "total_tokens", total_tokens,
          ansan::detail::concat("a count in [0, ", max_tokens, "] (int32 offsets)"));
}

}  // namespace detail

class DeviceLayout {
 public:
  DeviceLayout() = default;

  // EP / AC selection from device token ids (ansan::build_layout on the host).
  //   d_tokens (total_tokens), d_cu_seqlens (B+1): device memory
  static DeviceLayout from_tokens(const std::int32_t* d_tokens, std::int64_t total_tokens,
                                  const std::int32_t* d_cu_seqlens, std::int32_t batch,
                                  const AnchorSelector& selector, std::int32_t vocab_size,
                                  cudaStream_t stream = nullptr) {
    const char* fn = "cuda::DeviceLayout::from_tokens";
    require(vocab_size > 0, fn, "vocab_size", vocab_size, "> 0");
    detail::require_sizes(fn, batch, total_tokens);
    detail::require_device_pointer(d_tokens, total_tokens, fn, "d_tokens");
    detail::require_device_pointer(d_cu_seqlens, std::int64_t(batch) + 1, fn, "d_cu_seqlens");
    std::vector<std::uint8_t> id_is_anchor(std::size_t(vocab_size), 0);  // (vocab_size)
    for (std::size_t s = 0; s < selector.anchor_ids.size(); ++s) {
      const std::int32_t id = selector.anchor_ids[s];
      require(id >= 0 && id < vocab_size, fn,
              ansan::detail::concat("selector.anchor_ids[", s, "]").c_str(), id,
              ansan::detail::concat("an id in [0, ", vocab_size, ")"));
      id_is_anchor[std::size_t(id)] = 1;
    }
    detail::DeviceBuffer<unsigned long long> fault(1);
    ANSAN_CUDA_THROW(check_layout_tokens(d_tokens, total_tokens, vocab_size, d_cu_seqlens, batch,
                                         fault.data(), stream));
    detail::CheckedInputs in;
    in.d_cu_seqlens = d_cu_seqlens;
    in.batch = batch;
    in.total_tokens = total_tokens;
    in.d_tokens = d_tokens;
    in.vocab_size = vocab_size;
    detail::throw_on_fault(fault.data(), in, fn, stream);

    DeviceLayout layout(d_cu_seqlens, batch, total_tokens, stream);
    detail::DeviceBuffer<std::uint8_t> d_id_is_anchor(id_is_anchor.size());  // (vocab_size)
    ANSAN_CUDA_THROW(cudaMemcpyAsync(d_id_is_anchor.data(), id_is_anchor.data(),
                                     id_is_anchor.size(), cudaMemcpyHostToDevice, stream));
    layout.build(stream, [&](void* d_temp, std::size_t& temp_bytes) {
      return build_layout(d_temp, temp_bytes, d_tokens, total_tokens, d_id_is_anchor.data(),
                          vocab_size, layout.cu_seqlens_.data(), batch, layout.buffers(), stream);
    });
    return layout;
  }

  // Anchors as one flag byte per token (ansan::build_layout_from_flags on the host).
  //   d_flags (total_tokens), d_cu_seqlens (B+1): device memory
  static DeviceLayout from_flags(const std::uint8_t* d_flags, std::int64_t total_tokens,
                                 const std::int32_t* d_cu_seqlens, std::int32_t batch,
                                 cudaStream_t stream = nullptr) {
    const char* fn = "cuda::DeviceLayout::from_flags";
    detail::require_sizes(fn, batch, total_tokens);
    detail::require_device_pointer(d_flags, total_tokens, fn, "d_flags");
    detail::require_device_pointer(d_cu_seqlens, std::int64_t(batch) + 1, fn, "d_cu_seqlens");
    detail::DeviceBuffer<unsigned long long> fault(1);
    ANSAN_CUDA_THROW(check_layout_flags(total_tokens, d_cu_seqlens, batch, fault.data(), stream));
    detail::CheckedInputs in;
    in.d_cu_seqlens = d_cu_seqlens;
    in.batch = batch;
    in.total_tokens = total_tokens;
    detail::throw_on_fault(fault.data(), in, fn, stream);

    DeviceLayout layout(d_cu_seqlens, batch, total_tokens, stream);
    layout.build(stream, [&](void* d_temp, std::size_t& temp_bytes) {
      return build_layout_from_flags(d_temp, temp_bytes, d_flags, total_tokens,
                                     layout.cu_seqlens_.data(), batch, layout.buffers(), stream);
    });
    return layout;
  }

  // Anchors as sequence-local positions (ansan::build_layout_from_positions on the host); the
  // token count is d_cu_seqlens[batch], read back from the device.
  //   d_anchor_pos (total_anchors), d_cu_anchors (B+1), d_cu_seqlens (B+1): device memory
  static DeviceLayout from_positions(const std::int32_t* d_anchor_pos, std::int64_t total_anchors,
                                     const std::int32_t* d_cu_anchors,
                                     const std::int32_t* d_cu_seqlens, std::int32_t batch,
                                     cudaStream_t stream = nullptr) {
    const char* fn = "cuda::DeviceLayout::from_positions";
    require(batch >= 0, fn, "batch", batch, ">= 0");
    require(total_anchors >= 0 && total_anchors <= std::numeric_limits<std::int32_t>::max(), fn,
            "total_anchors", total_anchors, "a count in [0, 2^31) (int32 offsets)");
    detail::require_device_pointer(d_anchor_pos, total_anchors, fn, "d_anchor_pos");
    detail::require_device_pointer(d_cu_anchors, std::int64_t(batch) + 1, fn, "d_cu_anchors");
    detail::require_device_pointer(d_cu_seqlens, std::int64_t(batch) + 1, fn, "d_cu_seqlens");
    const std::int64_t total_tokens = detail::copy_one_to_host(d_cu_seqlens, batch, stream);
    detail::DeviceBuffer<unsigned long long> fault(1);
    ANSAN_CUDA_THROW(check_layout_positions(d_anchor_pos, total_anchors, d_cu_anchors, d_cu_seqlens,
                                            batch, total_tokens, fault.data(), stream));
    detail::CheckedInputs in;
    in.d_cu_seqlens = d_cu_seqlens;
    in.batch = batch;
    in.total_tokens = total_tokens;
    in.d_anchor_pos = d_anchor_pos;
    in.d_cu_anchors = d_cu_anchors;
    in.total_anchors = total_anchors;
    detail::throw_on_fault(fault.data(), in, fn, stream);

    DeviceLayout layout(d_cu_seqlens, batch, total_tokens, stream);
    layout.build(stream, [&](void* d_temp, std::size_t& temp_bytes) {
      return build_layout_from_positions(d_temp, temp_bytes, d_anchor_pos, total_anchors,
                                         d_cu_anchors, layout.cu_seqlens_.data(), batch,
                                         total_tokens, layout.buffers(), stream);
    });
    return layout;
  }

  // A copy of a host layout (one built by ansan/layout.hpp), for kernels that take a view.
  static DeviceLayout upload(const AnchorLayout& host, cudaStream_t stream = nullptr) {
    const char* fn = "cuda::DeviceLayout::upload";
    detail::require_sizes(fn, host.batch(), host.total_tokens());
    const std::size_t n = std::size_t(host.total_tokens());
    require(host.pos.size() == n && host.seg.size() == n && host.seg_start.size() == n, fn,
            "host.pos/seg/seg_start sizes", host.pos.size(),
            ansan::detail::concat("the token count ", n));
    require(host.cu_anchors.size() == host.cu_seqlens.size(), fn, "host.cu_anchors.size()",
            host.cu_anchors.size(), host.cu_seqlens.size());
    require(std::int64_t(host.anchor_pos.size()) == host.cu_anchors.back(), fn,
            "host.anchor_pos.size()", host.anchor_pos.size(), host.cu_anchors.back());
    DeviceLayout layout(nullptr, host.batch(), host.total_tokens(), stream);
    layout.total_anchors_ = std::int64_t(host.anchor_pos.size());
    const auto put = [&](auto* d_dst, const auto& src) {
      if (!src.empty())
        ANSAN_CUDA_THROW(cudaMemcpyAsync(d_dst, src.data(), src.size() * sizeof(src[0]),
                                         cudaMemcpyHostToDevice, stream));
    };
    put(layout.cu_seqlens_.data(), host.cu_seqlens);
    put(layout.pos_.data(), host.pos);
    put(layout.is_anchor_.data(), host.is_anchor);
    put(layout.seg_.data(), host.seg);
    put(layout.seg_start_.data(), host.seg_start);
    put(layout.cu_anchors_.data(), host.cu_anchors);
    put(layout.anchor_pos_.data(), host.anchor_pos);
    ANSAN_CUDA_THROW(cudaStreamSynchronize(stream));  // `host` may go away after we return
    return layout;
  }

  // Device pointers for kernels; valid while this object lives.
  LayoutView view() const {
    return {cu_seqlens_.data(), pos_.data(),        is_anchor_.data(),  seg_.data(),
            seg_start_.data(),  cu_anchors_.data(), anchor_pos_.data(), batch_,
            total_tokens_};
  }

  // Everything copied back, in the host builders' format.
  AnchorLayout to_host(cudaStream_t stream = nullptr) const {
    const auto n = std::size_t(total_tokens_), offsets = std::size_t(batch_) + 1;
    AnchorLayout host;
    host.cu_seqlens = detail::copy_to_host(cu_seqlens_.data(), offsets, stream);
    host.pos = detail::copy_to_host(pos_.data(), n, stream);
    host.is_anchor = detail::copy_to_host(is_anchor_.data(), n, stream);
    host.seg = detail::copy_to_host(seg_.data(), n, stream);
    host.seg_start = detail::copy_to_host(seg_start_.data(), n, stream);
    host.cu_anchors = detail::copy_to_host(cu_anchors_.data(), offsets, stream);
    host.anchor_pos = detail::copy_to_host(anchor_pos_.data(), std::size_t(total_anchors_), stream);
    return host;
  }

  std::int32_t batch() const { return batch_; }
  std::int64_t total_tokens() const { return total_tokens_; }
  std::int64_t total_anchors() const { return total_anchors_; }

 private:
  // Allocates every array (and copies cu_seqlens in, if given, so the view owns its offsets).
  DeviceLayout(const std::int32_t* d_cu_seqlens, std::int32_t batch, std::int64_t total_tokens,
               cudaStream_t stream)
      : batch_(batch),
        total_tokens_(total_tokens),
        cu_seqlens_(std::size_t(batch) + 1),
        pos_(std::size_t(total_tokens)),
        is_anchor_(std::size_t(total_tokens)),
        seg_(std::size_t(total_tokens)),
        seg_start_(std::size_t(total_tokens)),
        cu_anchors_(std::size_t(batch) + 1),
        anchor_pos_(std::size_t(total_tokens)) {
    if (d_cu_seqlens != nullptr)
      ANSAN_CUDA_THROW(cudaMemcpyAsync(cu_seqlens_.data(), d_cu_seqlens, cu_seqlens_.bytes(),
                                       cudaMemcpyDeviceToDevice, stream));
  }

  LayoutBuffers buffers() {
    return {pos_.data(),       is_anchor_.data(),  seg_.data(),
            seg_start_.data(), cu_anchors_.data(), anchor_pos_.data()};
  }

  // CUB's protocol: ask for the temporary storage, allocate it, run; then read the anchor
  // count back, which also waits for the build before the storage is freed.
  template <class Build>
  void build(cudaStream_t stream, Build run) {
    std::size_t temp_bytes = 0;
    ANSAN_CUDA_THROW(run(nullptr, temp_bytes));
    detail::DeviceBuffer<unsigned char> temp(temp_bytes > 0 ? temp_bytes : 1);
    ANSAN_CUDA_THROW(run(temp.data(), temp_bytes));
    total_anchors_ = detail::copy_one_to_host(cu_anchors_.data(), batch_, stream);
  }

  std::int32_t batch_ = 0;
  std::int64_t total_tokens_ = 0;
  std::int64_t total_anchors_ = 0;
  detail::DeviceBuffer<std::int32_t> cu_seqlens_;  // (B+1)
  detail::DeviceBuffer<std::int32_t> pos_;         // (total_tokens)
  detail::DeviceBuffer<std::uint8_t> is_anchor_;   // (total_tokens)
  detail::DeviceBuffer<std::int32_t> seg_;         // (total_tokens)
  detail::DeviceBuffer<std::int32_t> seg_start_;   // (total_tokens)
  detail::DeviceBuffer<std::int32_t> cu_anchors_;  // (B+1)
  detail::DeviceBuffer<std::int32_t> anchor_pos_;  // (total_tokens) room, total_anchors used
};

}  // namespace ansan::cuda
