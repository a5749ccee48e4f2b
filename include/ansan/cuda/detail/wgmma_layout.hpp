// ansan/cuda/detail/wgmma_layout.hpp - where the Hopper prefill kernel (attention_mma_sm90.cuh)
// keeps its Q, K and V tiles in shared memory, and the wgmma matrix descriptors that point the
// tensor cores at them, as plain index arithmetic.
//
// Not CUDA-only: tests/emulator/test_kernel_emulator.cpp runs wgmma through the emulator
// (tests/emulator/sm90_instructions.hpp, which reads descriptors as the PTX ISA describes them,
// without this file) on tiles stored here, and checks the products against a plain matmul.
//
// A tile of `rows` rows (tokens) by Dim columns (head dims) of 16-bit elements is Dim / 64
// column blocks of rows x 64 elements, each row 128 bytes, with the 128-byte swizzle: the
// 16-byte chunk c of row r sits at chunk c ^ (r % 8). Blocks start on 1024-byte boundaries, so
// the swizzle (address bits 4-6 XOR bits 7-9) lines up with the rows.
//
//   column block 0            column block 1              (Dim = 128)
//   row 0: chunks 0 1 2 .. 7  row 0: chunks 0 1 .. 7
//   row 1: chunks 1 0 3 .. 6  ...
//
// PTX ISA, "Shared Memory Matrix Layout", canonical layouts with 128-byte swizzle for 16-bit
// elements (T = 8 elements = 16 bytes; offsets in elements):
//   K-major   ((8, m), (T, 2k)) : ((8T, SBO), (1, T))         Q and K: rows are M (queries) or
//                                                             N (keys), columns are K (head dims)
//   MN-major  ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO))  V: rows are K (keys), columns are
//                                                             N (head dims); imm-trans-b = 1
// Here SBO is 8 rows (1024 bytes) in both, and LBO (MN-major only; K-major ignores it) is one
// column block (rows x 128 bytes). One wgmma reads 16 columns of a K-major tile (32 bytes of
// each row: a k-step's start address moves 32 bytes within the block, the block's swizzle
// still applies) or 16 rows of an MN-major one (2048 bytes further per k-step).
#pragma once

#include <cstdint>

#include "ansan/config.hpp"

namespace ansan::cuda::detail {

constexpr int kSwizzleBytes = 128;  // one row of a column block
constexpr int kSwizzleAtom = 1024;  // 8 rows: the swizzle's period, and the alignment of a block
constexpr int kBlockColumns = 64;   // 16-bit elements per row of a column block

// Element offset of (row, col) in a tile of `rows` rows.
ANSAN_HOST_DEVICE int sw128_offset(int row, int col, int rows) {
  return (col / kBlockColumns) * rows * kBlockColumns + row * kBlockColumns +
         ((col % kBlockColumns) ^ ((row & 7) << 3));
}

// The 64-bit wgmma matrix descriptor: start address, leading and stride byte offsets (each
// stored >> 4 in 14 bits), base offset 0 (blocks are 1024-aligned), swizzle mode 1 (128 bytes).
ANSAN_HOST_DEVICE std::uint64_t wgmma_descriptor(std::uint32_t smem_address,
                                                 std::uint32_t leading_bytes,
                                                 std::uint32_t stride_bytes) {
  const auto field = [](std::uint32_t bytes) { return std::uint64_t((bytes & 0x3ffffu) >> 4); };
  return field(smem_address) | field(leading_bytes) << 16 | field(stride_bytes) << 32 |
         std::uint64_t(1) << 62;
}
// A descriptor moved `bytes` further (a multiple of 16): the start address is the low field,
// and a tile never reaches the field's 256 KiB limit, so an add does it.
ANSAN_HOST_DEVICE std::uint64_t advance_descriptor(std::uint64_t descriptor, std::uint32_t bytes) {
  return descriptor + (bytes >> 4);
}

// K-major tile (Q or K) of `rows` rows: the descriptor of its first k-step and the byte offset
// of k-step ks (head dims 16 ks .. 16 ks + 15).
ANSAN_HOST_DEVICE std::uint64_t k_major_descriptor(std::uint32_t smem_address) {
  return wgmma_descriptor(smem_address, 16, kSwizzleAtom);  // LBO unused: "assumed 1" (16 bytes)
}
ANSAN_HOST_DEVICE std::uint32_t k_major_step_bytes(int ks, int rows) {
  return std::uint32_t((ks / 4) * rows * kSwizzleBytes + (ks % 4) * 32);
}

// MN-major tile (V) of `rows` keys: the descriptor of its first k-step and the byte offset of
// k-step kk (keys 16 kk .. 16 kk + 15).
ANSAN_HOST_DEVICE std::uint64_t mn_major_descriptor(std::uint32_t smem_address, int rows) {
  return wgmma_descriptor(smem_address, std::uint32_t(rows * kSwizzleBytes), kSwizzleAtom);
}
ANSAN_HOST_DEVICE std::uint32_t mn_major_step_bytes(int kk) {
  return std::uint32_t(kk * 16 * kSwizzleBytes);
}

}  // namespace ansan::cuda::detail
