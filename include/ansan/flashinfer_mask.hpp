// ansan/flashinfer_mask.hpp - the mask as FlashInfer's packed custom mask.
//
// FlashInfer's batch prefill kernels take, per request, the (qo_len, kv_len) boolean mask
// flattened row-major and packed one bit per element, little bit order: element e of a
// request is bit (e % 8) of byte (e / 8) of that request's bytes. Every request starts on a
// byte boundary (its last byte is zero-padded), and mask_indptr[b] is the byte offset of
// request b. This is exactly what flashinfer.quantization.segment_packbits(custom_mask,
// indptr, bitorder="little") returns, and what plan(custom_mask=...) builds internally; the
// kernel reads bit (q * kv_len + k) of maybe_custom_mask + maybe_mask_indptr[b].
//
// Prefill of a ragged batch: request b is sequence b, qo_len = kv_len = its length.
//
//   sequence 0: n = 3, AnLLM, anchor at 1      rows 100 110 011 -> elements e0..e8
//   packed bytes  0b10011001 0b00000001        (e0 is bit 0 of byte 0, e8 bit 0 of byte 1)
//   mask_indptr   [0, 2, ...]
//
// The caller-buffer form validates everything (sizes included) before writing any byte.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "ansan/detail/mask_rows.hpp"
#include "ansan/detail/npy.hpp"
#include "ansan/error.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"
#include "ansan/span.hpp"

namespace ansan {

// mask_indptr for a layout: (B+1) byte offsets, request b taking ceil(n_b^2 / 8) bytes.
// Throws if the total exceeds int32 (FlashInfer's indptr type).
inline std::vector<std::int32_t> flashinfer_mask_indptr(const AnchorLayout& layout) {
  const char* fn = "flashinfer_mask_indptr";
  detail::validate_mask_layout(layout, fn);
  std::vector<std::int32_t> indptr(std::size_t(layout.batch()) + 1, 0);
  std::int64_t bytes = 0;
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    const std::int64_t n = layout.seq_len(b);
    bytes += (n * n + 7) / 8;
    if (bytes > std::numeric_limits<std::int32_t>::max())
      require(false, fn, "packed mask size", detail::concat(bytes, " bytes after sequence ", b),
              "at most 2^31 - 1 bytes (int32 mask_indptr)");
    indptr[std::size_t(b) + 1] = std::int32_t(bytes);
  }
  return indptr;
}

// Writes the packed mask into caller buffers: packed_mask (mask_indptr[B] bytes) and
// mask_indptr (B+1).
inline void flashinfer_packed_mask(const AnchorLayout& layout, const MaskPolicy& policy,
                                   span<std::uint8_t> packed_mask,        // (mask_indptr[B])
                                   span<std::int32_t> mask_indptr) {      // (B+1)
  const char* fn = "flashinfer_packed_mask";
  validate_policy(policy, fn);
  const std::vector<std::int32_t> indptr = flashinfer_mask_indptr(layout);
  require(mask_indptr.size() == indptr.size(), fn, "mask_indptr.size()", mask_indptr.size(),
          detail::concat("B+1 = ", indptr.size()));
  require(packed_mask.size() == std::size_t(indptr.back()), fn, "packed_mask.size()",
          packed_mask.size(), detail::concat(indptr.back(), " bytes (sum of ceil(n^2 / 8))"));
  for (std::size_t b = 0; b < indptr.size(); ++b) mask_indptr[b] = indptr[b];
  for (std::int32_t b = 0; b < layout.batch(); ++b) {
    std::uint8_t* bytes = packed_mask.data() + indptr[std::size_t(b)];
    for (std::int32_t k = indptr[std::size_t(b)]; k < indptr[std::size_t(b) + 1]; ++k)
      packed_mask[std::size_t(k)] = 0;
    const std::int32_t n = layout.seq_len(b);
    for (std::int32_t i = 0; i < n; ++i) {
      const QueryInfo q = layout.query(b, i);
      for (std::int32_t j = 0; j < n; ++j)
        if (visible(policy, q, layout.key(b, j))) {
          const std::int64_t e = std::int64_t(i) * n + j;  // row-major element index
          bytes[e / 8] = std::uint8_t(bytes[e / 8] | (1u << (e % 8)));
        }
    }
  }
}

struct FlashInferMask {
  std::vector<std::uint8_t> packed_mask;   // (mask_indptr[B]) bytes
  std::vector<std::int32_t> mask_indptr;   // (B+1) byte offsets
  std::vector<std::int32_t> qo_indptr;     // (B+1) = cu_seqlens, for plan()
  std::vector<std::int32_t> kv_indptr;     // (B+1) = cu_seqlens, for plan()
};

inline FlashInferMask flashinfer_packed_mask(const AnchorLayout& layout, const MaskPolicy& policy) {
  FlashInferMask m;
  m.mask_indptr = flashinfer_mask_indptr(layout);
  m.packed_mask.resize(std::size_t(m.mask_indptr.back()));
  flashinfer_packed_mask(layout, policy, m.packed_mask, m.mask_indptr);
  m.qo_indptr = m.kv_indptr = layout.cu_seqlens;
  return m;
}

// Writes packed_mask.npy (uint8), mask_indptr.npy, qo_indptr.npy and kv_indptr.npy (int32)
// into `directory` (created if missing).
inline void save_flashinfer_mask(const FlashInferMask& m, const std::string& directory) {
  namespace fs = std::filesystem;
  fs::create_directories(directory);
  const auto path = [&](const char* name) { return (fs::path(directory) / name).string(); };
  const std::int64_t offsets = std::int64_t(m.mask_indptr.size());
  detail::write_npy(path("packed_mask.npy"), m.packed_mask.data(),
                    {std::int64_t(m.packed_mask.size())});
  detail::write_npy(path("mask_indptr.npy"), m.mask_indptr.data(), {offsets});
  detail::write_npy(path("qo_indptr.npy"), m.qo_indptr.data(), {offsets});
  detail::write_npy(path("kv_indptr.npy"), m.kv_indptr.data(), {offsets});
}

}  // namespace ansan
