// ansan/cuda/detail/mma_layout.hpp - who holds what in the tensor-core kernel: the m16n8k16
// fragment layouts of the PTX ISA, the per-lane ldmatrix addresses, and the shared-memory
// swizzle, as plain index arithmetic.
//
// Not CUDA-only (no intrinsics): tests/test_mma_layout.cpp simulates ldmatrix and mma on the
// host with these functions and checks them against the ISA's tables and a plain matmul; the
// kernel (attention_mma_sm80.cuh) uses the same functions, so what the host test proves is
// what the device computes.
//
// PTX ISA, "Matrix Fragments for mma.m16n8k16" (16-bit A/B, f32 C), with
// group = lane / 4 and quad = lane % 4:
//   A 16x16 (row)  element i of 8:  row = group + 8 * ((i / 2) % 2),  col = 2 * quad + i % 2 + 8 * (i / 4)
//   B 16x8  (col)  element i of 4:  k   = 2 * quad + i % 2 + 8 * (i / 2), n = group
//   C 16x8  f32    element i of 4:  row = group + 8 * (i / 2),       col = 2 * quad + i % 2
// Element pairs (2j, 2j+1) share one 32-bit register.
//
// "ldmatrix" (.m8n8 .x4 .b16): lanes 8j..8j+7 give the row addresses of matrix j; register j
// of lane l receives row l/4, columns 2*(l%4), +1 of matrix j (with .trans: rows 2*(l%4), +1,
// column l/4, i.e. the transposed matrix).
#pragma once

#include <cstdint>

#include "ansan/config.hpp"

namespace ansan::cuda::detail {

struct RowCol {
  int row, col;
};

// Fragment ownership: lane `lane`, element `i` (two per 32-bit register).
ANSAN_HOST_DEVICE RowCol mma_a_element(int lane, int i) {  // A: 16 x 16, i in [0, 8)
  return {lane / 4 + 8 * ((i / 2) % 2), 2 * (lane % 4) + i % 2 + 8 * (i / 4)};
}
ANSAN_HOST_DEVICE RowCol mma_b_element(int lane, int i) {  // B: 16 (k) x 8 (n), i in [0, 4)
  return {2 * (lane % 4) + i % 2 + 8 * (i / 2), lane / 4};
}
ANSAN_HOST_DEVICE RowCol mma_c_element(int lane, int i) {  // C: 16 x 8, i in [0, 4)
  return {lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2};
}

// Shared tiles are rows of head_dim 16-bit elements, stored as 16-byte chunks of 8. Chunk c of
// row r lives at chunk c ^ (r % 8): the 8 rows one ldmatrix phase reads then hit 8 different
// bank groups instead of one. Returns the element offset of (row, col) in such a tile (the XOR
// flips bits 3-5 of col, i.e. the low three bits of its chunk).
ANSAN_HOST_DEVICE int swizzled_offset(int row, int col, int row_elements) {
  return row * row_elements + (col ^ ((row & 7) << 3));
}

// swizzled_offset(lane.row + row_step, lane.col + col_step) split into a part computed once per
// lane and a step that costs one XOR and one add (the row step folds into the instruction's
// immediate offset when it is a compile-time constant). Exact when row_step is a multiple of 8
// (same row % 8) and col_step a multiple of 16 above a lane column in [0, 16) (disjoint bits).
struct SwizzledLane {
  int row_offset;  // lane.row * row_elements
  int col_xor;     // lane.col ^ ((lane.row & 7) << 3)
  ANSAN_HOST_DEVICE int at(int row_step, int col_step, int row_elements) const {
    return row_offset + row_step * row_elements + (col_step ^ col_xor);
  }
};
ANSAN_HOST_DEVICE SwizzledLane swizzled_lane(RowCol lane, int row_elements) {
  return {lane.row * row_elements, lane.col ^ ((lane.row & 7) << 3)};
}

// The (row, col) of the 8-element row segment lane `lane` points ldmatrix.x4 at, for the three
// operands of the kernel. Tiles are row-major: Q and K (rows = tokens, cols = head dims) and
// V (rows = keys, cols = head dims).
//
// A operand from Q, rows [0, 16) of the warp, k-step `ks` (head dims 16ks .. 16ks+15):
// matrices (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15)
// are registers a0..a3.
ANSAN_HOST_DEVICE RowCol ldmatrix_a_address(int lane, int ks) {
  return {lane % 16, 16 * ks + 8 * (lane / 16)};
}
// B operand for S = Q K^T from K, keys 16np .. 16np+15 (two n-tiles), k-step ks: registers
// {b0, b1} of n-tile 2np come from matrices 0, 1; those of n-tile 2np+1 from matrices 2, 3.
ANSAN_HOST_DEVICE RowCol ldmatrix_k_address(int lane, int np, int ks) {
  return {16 * np + 8 * (lane / 16) + lane % 8, 16 * ks + 8 * ((lane / 8) % 2)};
}
// B operand for O = P V from V with .trans, keys 16kk .. 16kk+15 (the k-step), head dims
// 16dp .. 16dp+15 (two n-tiles): {b0, b1} of n-tile 2dp from matrices 0, 1, of 2dp+1 from 2, 3.
ANSAN_HOST_DEVICE RowCol ldmatrix_v_address(int lane, int kk, int dp) {
  return {16 * kk + 8 * ((lane / 8) % 2) + lane % 8, 16 * dp + 8 * (lane / 16)};
}

// The accumulator of S for keys 16kk..16kk+15 (n-tiles 2kk and 2kk+1, 4 floats each) is the A
// operand of P V for k-step kk: A element i comes from n-tile 2kk + i/4, C element i % 4.
ANSAN_HOST_DEVICE int p_tile_of_a_element(int i) { return i / 4; }
ANSAN_HOST_DEVICE int p_c_element_of_a_element(int i) { return i % 4; }

}  // namespace ansan::cuda::detail
