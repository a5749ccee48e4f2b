// ansan/flex_block_mask.hpp - the mask as PyTorch FlexAttention's BlockMask arrays.
//
// FlexAttention cuts the (Q_LEN, KV_LEN) score matrix into square blocks and, per row of
// query blocks, lists the key blocks to visit: "partial" ones (some pairs visible, mask_mod
// applied per element) and "full" ones (every pair visible, mask_mod skipped). This header
// computes those lists from an AnchorLayout, as
// torch.nn.attention.flex_attention.BlockMask.from_kv_blocks takes them:
//
//   kv_num_blocks       int32 (B, H, num_q_blocks)                 partial blocks per row
//   kv_indices          int32 (B, H, num_q_blocks, num_kv_blocks)  their indices first
//   full_kv_num_blocks  int32 (B, H, num_q_blocks)                 full blocks per row
//   full_kv_indices     int32 (B, H, num_q_blocks, num_kv_blocks)  their indices first
//
// Each index row lists the counted blocks in ascending order, then every other block index in
// ascending order: a permutation of [0, num_kv_blocks), which is what create_block_mask()
// itself produces (a stable descending argsort of the block flags), so the arrays can be
// compared with torch.equal. A block is full iff all block_size^2 pairs inside it are
// visible; a block that reaches past the sequence end is never full (create_block_mask pads
// the mask with False to a whole number of blocks). H = 1: the mask is the same for every head.
//
// Two ways to map a ragged batch (FlexBatching):
//   packed  B = 1, Q_LEN = KV_LEN = total tokens: the batch as one packed sequence, pairs of
//           different sequences masked (FlexAttention's document-masking convention).
//   padded  B = batch, Q_LEN = KV_LEN = the longest sequence: sequence b right-padded.
//
// Cost: O(#blocks on or below the diagonal * block_size) via per-row visible intervals
// (detail/mask_rows.hpp), not O(n^2). save_flex_block_mask() writes the arrays and the
// per-token inputs of the matching mask_mod as .npy files (docs/masks.md shows the script).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ansan/detail/mask_rows.hpp"
#include "ansan/detail/npy.hpp"
#include "ansan/error.hpp"
#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

namespace ansan {

enum class FlexBatching : std::uint8_t { packed, padded };

struct FlexBlockMask {
  FlexBatching batching = FlexBatching::packed;
  MaskPolicy policy;
  std::int32_t block_size = 0;     // Q_BLOCK_SIZE = KV_BLOCK_SIZE
  std::int32_t batch = 0;          // B
  std::int32_t heads = 1;          // H
  std::int32_t seq_len = 0;        // Q_LEN = KV_LEN
  std::int32_t num_q_blocks = 0;   // ceil(seq_len / block_size)
  std::int32_t num_kv_blocks = 0;  // the same: queries and keys are one sequence
  std::vector<std::int32_t> kv_num_blocks;       // (B, H, num_q_blocks)
  std::vector<std::int32_t> kv_indices;          // (B, H, num_q_blocks, num_kv_blocks)
  std::vector<std::int32_t> full_kv_num_blocks;  // (B, H, num_q_blocks)
  std::vector<std::int32_t> full_kv_indices;     // (B, H, num_q_blocks, num_kv_blocks)
};

namespace detail {
// Writes one row of block indices: the flagged ones ascending, then the rest ascending.
inline std::int32_t write_ordered(const std::vector<std::uint8_t>& flagged, std::int32_t* indices) {
  std::int32_t count = 0, slot = 0;
  for (std::int32_t k = 0; k < std::int32_t(flagged.size()); ++k)
    if (flagged[std::size_t(k)]) indices[slot++] = k, ++count;
  for (std::int32_t k = 0; k < std::int32_t(flagged.size()); ++k)
    if (!flagged[std::size_t(k)]) indices[slot++] = k;
  return count;
}
}  // namespace detail

inline FlexBlockMask flex_block_mask(const AnchorLayout& layout, const MaskPolicy& policy,
                                     std::int32_t block_size,
                                     FlexBatching batching = FlexBatching::packed) {
  const char* fn = "flex_block_mask";
  validate_policy(policy, fn);
  require(block_size > 0, fn, "block_size", block_size, "> 0");
  require(batching == FlexBatching::packed || batching == FlexBatching::padded, fn, "batching",
          int(batching), "FlexBatching::packed or FlexBatching::padded");
  detail::validate_mask_layout(layout, fn);

  FlexBlockMask m;
  m.batching = batching;
  m.policy = policy;
  m.block_size = block_size;
  const bool packed = batching == FlexBatching::packed;
  m.batch = packed ? 1 : layout.batch();
  std::int32_t longest = 0;
  for (std::int32_t b = 0; b < layout.batch(); ++b) longest = std::max(longest, layout.seq_len(b));
  m.seq_len = packed ? std::int32_t(layout.total_tokens()) : longest;
  m.num_q_blocks = m.num_kv_blocks =
      std::int32_t((std::int64_t(m.seq_len) + block_size - 1) / block_size);
  const std::size_t rows = std::size_t(m.batch) * std::size_t(m.num_q_blocks);
  m.kv_num_blocks.assign(rows, 0);
  m.full_kv_num_blocks.assign(rows, 0);
  m.kv_indices.assign(rows * std::size_t(m.num_kv_blocks), 0);
  m.full_kv_indices.assign(rows * std::size_t(m.num_kv_blocks), 0);

  const std::vector<detail::PackedRow> packed_rows = detail::packed_rows(layout, policy);
  const std::vector<std::int32_t> prefix = detail::retained_prefix(layout, policy);
  const std::int64_t block_pairs = std::int64_t(block_size) * block_size;
  std::vector<std::uint8_t> partial(std::size_t(m.num_kv_blocks)), full(partial.size());
  for (std::int32_t frame = 0; frame < m.batch; ++frame) {
    // Frame coordinate x is packed token `base + x` for x < valid; beyond that, padding.
    const std::int32_t base = packed ? 0 : layout.cu_seqlens[frame];
    const std::int32_t valid = packed ? m.seq_len : layout.seq_len(frame);
    for (std::int32_t qb = 0; qb < m.num_q_blocks; ++qb) {
      std::fill(partial.begin(), partial.end(), 0);
      std::fill(full.begin(), full.end(), 0);
      // 64-bit: block_size may be as large as int32 allows.
      const auto r0 = std::int32_t(std::min<std::int64_t>(std::int64_t(qb) * block_size, valid));
      const auto r1 = std::int32_t(std::min<std::int64_t>(std::int64_t(r0) + block_size, valid));
      for (std::int32_t kb = 0; kb <= qb; ++kb) {  // keys above the diagonal are never visible
        const auto c0 = std::int32_t(std::min<std::int64_t>(std::int64_t(kb) * block_size, valid));
        const auto c1 = std::int32_t(std::min<std::int64_t>(std::int64_t(c0) + block_size, valid));
        const std::int64_t seen =
            detail::count_block(packed_rows, prefix, base + r0, base + r1, base + c0, base + c1);
        full[std::size_t(kb)] = seen == block_pairs;
        partial[std::size_t(kb)] = seen > 0 && seen < block_pairs;
      }
      const std::size_t row = std::size_t(frame) * std::size_t(m.num_q_blocks) + std::size_t(qb);
      const std::size_t slot = row * std::size_t(m.num_kv_blocks);
      m.kv_num_blocks[row] = detail::write_ordered(partial, m.kv_indices.data() + slot);
      m.full_kv_num_blocks[row] = detail::write_ordered(full, m.full_kv_indices.data() + slot);
    }
  }
  return m;
}

// Writes into `directory` (created if missing) the BlockMask arrays and the per-token inputs
// of the mask_mod that must agree with them, all as .npy (docs/masks.md, "FlexAttention"):
//   kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices   int32, shapes as above
//   doc        int32 (B, seq_len)  sequence index of each frame position, -1 on padding
//   pos        int32 (B, seq_len)  sequence-local position (0 on padding)
//   seg_start  int32 (B, seq_len)  sequence-local segment start (0 on padding)
//   is_anchor  bool  (B, seq_len)
//   meta.json  block_size, seq_len, batching and the policy's fields
inline void save_flex_block_mask(const FlexBlockMask& m, const AnchorLayout& layout,
                                 const std::string& directory) {
  const char* fn = "save_flex_block_mask";
  detail::validate_mask_layout(layout, fn);
  const bool packed = m.batching == FlexBatching::packed;
  const std::int64_t expect_len = packed ? layout.total_tokens() : [&] {
    std::int32_t longest = 0;
    for (std::int32_t b = 0; b < layout.batch(); ++b) longest = std::max(longest, layout.seq_len(b));
    return std::int64_t(longest);
  }();
  require(m.batch == (packed ? 1 : layout.batch()) && m.seq_len == expect_len, fn,
          "layout", detail::concat("a batch of ", layout.batch(), " sequences"),
          detail::concat("the layout the mask was built from (B = ", m.batch,
                         ", seq_len = ", m.seq_len, ")"));
  const std::size_t frame_tokens = std::size_t(m.batch) * std::size_t(m.seq_len);
  std::vector<std::int32_t> doc(frame_tokens, -1), pos(frame_tokens, 0), seg_start(frame_tokens, 0);
  std::vector<std::uint8_t> is_anchor(frame_tokens, 0);
  for (std::int32_t b = 0; b < layout.batch(); ++b)
    for (std::int32_t i = 0; i < layout.seq_len(b); ++i) {
      const std::size_t t = std::size_t(layout.cu_seqlens[b] + i);
      const std::size_t x = packed ? t : std::size_t(b) * std::size_t(m.seq_len) + std::size_t(i);
      doc[x] = b;
      pos[x] = i;
      seg_start[x] = layout.seg_start[t];
      is_anchor[x] = layout.is_anchor[t] != 0;
    }

  namespace fs = std::filesystem;
  fs::create_directories(directory);
  const auto path = [&](const char* name) { return (fs::path(directory) / name).string(); };
  const std::vector<std::int64_t> rows{m.batch, m.heads, m.num_q_blocks};
  const std::vector<std::int64_t> blocks{m.batch, m.heads, m.num_q_blocks, m.num_kv_blocks};
  const std::vector<std::int64_t> tokens{m.batch, m.seq_len};
  detail::write_npy(path("kv_num_blocks.npy"), m.kv_num_blocks.data(), rows);
  detail::write_npy(path("kv_indices.npy"), m.kv_indices.data(), blocks);
  detail::write_npy(path("full_kv_num_blocks.npy"), m.full_kv_num_blocks.data(), rows);
  detail::write_npy(path("full_kv_indices.npy"), m.full_kv_indices.data(), blocks);
  detail::write_npy(path("doc.npy"), doc.data(), tokens);
  detail::write_npy(path("pos.npy"), pos.data(), tokens);
  detail::write_npy(path("seg_start.npy"), seg_start.data(), tokens);
  detail::write_npy_flags(path("is_anchor.npy"), is_anchor.data(), tokens);

  static const char* local_names[] = {"causal", "segment", "window", "segment_and_window"};
  const MaskPolicy& p = m.policy;
  std::ofstream meta(path("meta.json"));
  meta << "{\"block_size\": " << m.block_size << ", \"seq_len\": " << m.seq_len
       << ", \"batching\": \"" << (packed ? "packed" : "padded") << "\", \"policy\": {\"name\": \""
       << policy_name(p) << "\", \"local\": \"" << local_names[int(p.local)]
       << "\", \"window\": " << p.window
       << ", \"retain_anchors\": " << (p.retain_anchors ? "true" : "false")
       << ", \"sinks\": " << p.sinks << ", \"retained_rows\": \""
       << (p.retained_rows == RetainedRows::all ? "all" : "non_anchor") << "\"}}\n";
  if (!meta) throw std::runtime_error(detail::concat("ansan::", fn, ": cannot write ", path("meta.json")));
}

}  // namespace ansan
