// The tensor-core kernel's data movement, simulated on the host (cuda/detail/mma_layout.hpp):
// fragment ownership against the PTX ISA's m16n8k16 tables, ldmatrix.x4 (plain and .trans)
// from the swizzled shared tiles against the fragments the MMA expects, bank-conflict-free
// ldmatrix phases, and the whole S = Q K^T, O = P V data flow against a plain matmul.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <array>
#include <random>
#include <set>
#include <vector>

#include "ansan/cuda/detail/mma_layout.hpp"

using namespace ansan::cuda::detail;

namespace {

// The PTX ISA's tables, in the ISA's own words (groupID = lane >> 2, threadID_in_group = lane % 4).
RowCol isa_a(int lane, int i) {
  const int group = lane >> 2, tig = lane % 4;
  const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
  const int col = i < 4 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
  return {row, col};
}
RowCol isa_b(int lane, int i) {  // (k row, n col)
  const int group = lane >> 2, tig = lane % 4;
  return {i < 2 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8, group};
}
RowCol isa_c(int lane, int i) {
  const int group = lane >> 2, tig = lane % 4;
  return {i < 2 ? group : group + 8, tig * 2 + (i & 1)};
}

// A row-major (rows, dim) tile of 16-bit values, stored swizzled as the kernel stores it.
struct SharedTile {
  int rows, dim;
  std::vector<float> logical;  // (rows, dim)
  std::vector<float> stored;   // swizzled
  SharedTile(std::mt19937& rng, int r, int d) : rows(r), dim(d), logical(std::size_t(r * d)), stored(std::size_t(r * d), -999.f) {
    std::uniform_int_distribution<int> value(-3, 3);  // small integers: sums are exact in float
    for (int row = 0; row < rows; ++row)
      for (int col = 0; col < dim; ++col) {
        const float x = float(value(rng));
        logical[std::size_t(row * dim + col)] = x;
        stored[std::size_t(swizzled_offset(row, col, dim))] = x;
      }
  }
  float at(int row, int col) const { return logical[std::size_t(row * dim + col)]; }
};

// ldmatrix.x4 per the ISA: lanes 8j..8j+7 give the 8 row addresses of matrix j; register j of
// lane l gets elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix j, or with .trans
// (2(l%4), l/4) and (2(l%4)+1, l/4). Returns regs[lane][j][element].
using Regs = std::array<std::array<std::array<float, 2>, 4>, 32>;
Regs ldmatrix_x4(const SharedTile& tile, const std::array<int, 32>& offsets, bool trans) {
  Regs regs{};
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < 4; ++j)
      for (int e = 0; e < 2; ++e) {
        const int row = trans ? 2 * (lane % 4) + e : lane / 4;
        const int col = trans ? lane / 4 : 2 * (lane % 4) + e;
        regs[std::size_t(lane)][std::size_t(j)][std::size_t(e)] =
            tile.stored[std::size_t(offsets[std::size_t(8 * j + row)] + col)];
      }
  return regs;
}

template <class Address>
std::array<int, 32> offsets_of(const SharedTile& tile, Address address) {
  std::array<int, 32> offsets{};
  for (int lane = 0; lane < 32; ++lane) {
    const RowCol at = address(lane);
    CHECK(at.col % 8 == 0);  // ldmatrix rows are 16-byte aligned chunks
    offsets[std::size_t(lane)] = swizzled_offset(at.row, at.col, tile.dim);
  }
  return offsets;
}

// One ldmatrix phase is 8 lanes; it is conflict-free iff their 16-byte chunks fall in 8
// different groups of 4 banks.
void check_conflict_free(const std::array<int, 32>& offsets) {
  for (int phase = 0; phase < 4; ++phase) {
    std::set<int> bank_groups;
    for (int l = 8 * phase; l < 8 * phase + 8; ++l) bank_groups.insert((offsets[std::size_t(l)] * 2 / 16) % 8);
    CHECK(bank_groups.size() == 8);
  }
}

// mma.m16n8k16 per the ISA: gather A and B from the lanes' fragments with the ISA tables,
// multiply, scatter into the C fragments (accumulating).
void mma_sim(std::array<std::array<float, 4>, 32>& c, const std::array<std::array<float, 8>, 32>& a,
             const std::array<std::array<float, 4>, 32>& b) {
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) A[isa_a(lane, i).row][isa_a(lane, i).col] = a[std::size_t(lane)][std::size_t(i)];
    for (int i = 0; i < 4; ++i) B[isa_b(lane, i).row][isa_b(lane, i).col] = b[std::size_t(lane)][std::size_t(i)];
  }
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      const RowCol rc = isa_c(lane, i);
      float dot = 0.f;
      for (int k = 0; k < 16; ++k) dot += A[rc.row][k] * B[k][rc.col];
      c[std::size_t(lane)][std::size_t(i)] += dot;
    }
}

}  // namespace

TEST_CASE("fragment ownership matches the PTX ISA tables and covers each matrix once") {
  std::set<std::pair<int, int>> a_seen, b_seen, c_seen;
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      const RowCol ours = mma_a_element(lane, i), isa = isa_a(lane, i);
      CHECK((ours.row == isa.row && ours.col == isa.col));
      a_seen.insert({ours.row, ours.col});
    }
    for (int i = 0; i < 4; ++i) {
      const RowCol b = mma_b_element(lane, i), c = mma_c_element(lane, i);
      CHECK((b.row == isa_b(lane, i).row && b.col == isa_b(lane, i).col));
      CHECK((c.row == isa_c(lane, i).row && c.col == isa_c(lane, i).col));
      b_seen.insert({b.row, b.col});
      c_seen.insert({c.row, c.col});
    }
  }
  CHECK(a_seen.size() == 256);  // 16 x 16
  CHECK(b_seen.size() == 128);  // 16 x 8
  CHECK(c_seen.size() == 128);  // 16 x 8
  // spot values from the ISA figures: lane 5 holds a0 = (1, 2) and a7 = (9, 11)
  CHECK(mma_a_element(5, 0).row == 1);
  CHECK(mma_a_element(5, 0).col == 2);
  CHECK(mma_a_element(5, 7).row == 9);
  CHECK(mma_a_element(5, 7).col == 11);
}

TEST_CASE("the S accumulator of two key n-tiles is the A fragment of P V") {
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 8; ++i) {
      const RowCol a = mma_a_element(lane, i);
      const RowCol c = mma_c_element(lane, p_c_element_of_a_element(i));
      CHECK(a.row == c.row);
      CHECK(a.col == 8 * p_tile_of_a_element(i) + c.col);
    }
}

TEST_CASE("swizzle: a bijection within each row, and every ldmatrix phase is conflict-free") {
  for (const int dim : {64, 128}) {
    for (int row = 0; row < 64; ++row) {
      std::set<int> offsets;
      for (int col = 0; col < dim; ++col) {
        const int off = swizzled_offset(row, col, dim);
        CHECK((off >= row * dim && off < (row + 1) * dim));
        offsets.insert(off);
      }
      CHECK(int(offsets.size()) == dim);
    }
    std::mt19937 rng(1);
    const SharedTile tile(rng, 64, dim);
    for (int ks = 0; ks < dim / 16; ++ks) {
      for (int warp = 0; warp < 4; ++warp)
        check_conflict_free(offsets_of(tile, [&](int lane) {
          RowCol at = ldmatrix_a_address(lane, ks);
          at.row += 16 * warp;
          return at;
        }));
      for (int np = 0; np < 4; ++np)
        check_conflict_free(offsets_of(tile, [&](int lane) { return ldmatrix_k_address(lane, np, ks); }));
    }
    for (int kk = 0; kk < 4; ++kk)
      for (int dp = 0; dp < dim / 16; ++dp)
        check_conflict_free(offsets_of(tile, [&](int lane) { return ldmatrix_v_address(lane, kk, dp); }));
  }
}

TEST_CASE("swizzle: chunk c of row r at chunk c ^ (r % 8); SwizzledLane steps equal it") {
  for (const int dim : {64, 128, 256})
    for (int row = 0; row < 64; ++row)
      for (int col = 0; col < dim; ++col)
        REQUIRE(swizzled_offset(row, col, dim) ==
                row * dim + ((col / 8) ^ (row % 8)) * 8 + col % 8);
  // Each operand's lane part with the kernels' steps: rows by 16 (tiles) or 16 warp, columns by
  // 16 (k-steps, head-dim pairs).
  using Address = RowCol (*)(int lane, int row_step, int col_step);
  const Address operands[] = {
      [](int lane, int r, int c) {
        return RowCol{ldmatrix_a_address(lane, c).row + 16 * r, ldmatrix_a_address(lane, c).col};
      },
      [](int lane, int r, int c) { return ldmatrix_k_address(lane, r, c); },
      [](int lane, int r, int c) { return ldmatrix_v_address(lane, r, c); }};
  for (const Address address : operands)
    for (const int dim : {64, 128, 256})
      for (int lane = 0; lane < 32; ++lane) {
        const SwizzledLane at = swizzled_lane(address(lane, 0, 0), dim);
        for (int r = 0; r < 4; ++r)
          for (int c = 0; c < dim / 16; ++c) {
            const RowCol rc = address(lane, r, c);
            REQUIRE(at.at(16 * r, 16 * c, dim) == swizzled_offset(rc.row, rc.col, dim));
          }
      }
}

TEST_CASE("ldmatrix from the swizzled tiles hands every lane the fragment the MMA expects") {
  std::mt19937 rng(2);
  for (const int dim : {64, 128}) {
    const SharedTile q(rng, 64, dim), k(rng, 64, dim), v(rng, 64, dim);
    for (int ks = 0; ks < dim / 16; ++ks) {
      for (int warp = 0; warp < 4; ++warp) {  // A from Q: rows 16 warp .. +15, dims 16 ks .. +15
        const Regs r = ldmatrix_x4(q, offsets_of(q, [&](int lane) {
          RowCol at = ldmatrix_a_address(lane, ks);
          at.row += 16 * warp;
          return at;
        }), false);
        for (int lane = 0; lane < 32; ++lane)
          for (int i = 0; i < 8; ++i) {
            const RowCol e = mma_a_element(lane, i);
            CHECK(r[std::size_t(lane)][std::size_t(i / 2)][std::size_t(i % 2)] == q.at(16 * warp + e.row, 16 * ks + e.col));
          }
      }
      for (int np = 0; np < 4; ++np) {  // B = K^T: n = key, k = head dim
        const Regs r = ldmatrix_x4(k, offsets_of(k, [&](int lane) { return ldmatrix_k_address(lane, np, ks); }), false);
        for (int lane = 0; lane < 32; ++lane)
          for (int half = 0; half < 2; ++half)  // n-tiles 2np and 2np+1
            for (int i = 0; i < 4; ++i) {
              const RowCol e = mma_b_element(lane, i);
              CHECK(r[std::size_t(lane)][std::size_t(2 * half + i / 2)][std::size_t(i % 2)] ==
                    k.at(16 * np + 8 * half + e.col, 16 * ks + e.row));
            }
      }
    }
    for (int kk = 0; kk < 4; ++kk)
      for (int dp = 0; dp < dim / 16; ++dp) {  // B = V: k = key, n = head dim, via .trans
        const Regs r = ldmatrix_x4(v, offsets_of(v, [&](int lane) { return ldmatrix_v_address(lane, kk, dp); }), true);
        for (int lane = 0; lane < 32; ++lane)
          for (int half = 0; half < 2; ++half)
            for (int i = 0; i < 4; ++i) {
              const RowCol e = mma_b_element(lane, i);
              CHECK(r[std::size_t(lane)][std::size_t(2 * half + i / 2)][std::size_t(i % 2)] ==
                    v.at(16 * kk + e.row, 16 * dp + 8 * half + e.col));
            }
      }
  }
}

TEST_CASE("simulated warp: S = Q K^T and O = P V through fragments equal plain matmuls") {
  std::mt19937 rng(3);
  for (const int dim : {64, 128}) {
    const SharedTile q(rng, 64, dim), k(rng, 64, dim), v(rng, 64, dim);
    const int warp = 2;
    // S (16 rows, 64 keys): 8 n-tiles of C fragments, exactly as the kernel loops
    std::vector<std::array<std::array<float, 4>, 32>> s(8);
    for (int ks = 0; ks < dim / 16; ++ks) {
      const Regs qa = ldmatrix_x4(q, offsets_of(q, [&](int lane) {
        RowCol at = ldmatrix_a_address(lane, ks);
        at.row += 16 * warp;
        return at;
      }), false);
      std::array<std::array<float, 8>, 32> a{};
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 8; ++i) a[std::size_t(lane)][std::size_t(i)] = qa[std::size_t(lane)][std::size_t(i / 2)][std::size_t(i % 2)];
      for (int np = 0; np < 4; ++np) {
        const Regs kb = ldmatrix_x4(k, offsets_of(k, [&](int lane) { return ldmatrix_k_address(lane, np, ks); }), false);
        for (int half = 0; half < 2; ++half) {
          std::array<std::array<float, 4>, 32> b{};
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < 4; ++i) b[std::size_t(lane)][std::size_t(i)] = kb[std::size_t(lane)][std::size_t(2 * half + i / 2)][std::size_t(i % 2)];
          mma_sim(s[std::size_t(2 * np + half)], a, b);
        }
      }
    }
    float S[16][64];
    for (int nt = 0; nt < 8; ++nt)
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 4; ++i) {
          const RowCol e = mma_c_element(lane, i);
          S[e.row][8 * nt + e.col] = s[std::size_t(nt)][std::size_t(lane)][std::size_t(i)];
        }
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 64; ++c) {
        float dot = 0.f;
        for (int d = 0; d < dim; ++d) dot += q.at(16 * warp + r, d) * k.at(c, d);
        CHECK(S[r][c] == dot);
      }

    // O (16 rows, dim) += P V with P = the S accumulator reused as A fragments
    std::vector<std::array<std::array<float, 4>, 32>> o(std::size_t(dim / 8));
    for (int kk = 0; kk < 4; ++kk) {
      std::array<std::array<float, 8>, 32> a{};
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 8; ++i)
          a[std::size_t(lane)][std::size_t(i)] =
              s[std::size_t(2 * kk + p_tile_of_a_element(i))][std::size_t(lane)][std::size_t(p_c_element_of_a_element(i))];
      for (int dp = 0; dp < dim / 16; ++dp) {
        const Regs vb = ldmatrix_x4(v, offsets_of(v, [&](int lane) { return ldmatrix_v_address(lane, kk, dp); }), true);
        for (int half = 0; half < 2; ++half) {
          std::array<std::array<float, 4>, 32> b{};
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < 4; ++i) b[std::size_t(lane)][std::size_t(i)] = vb[std::size_t(lane)][std::size_t(2 * half + i / 2)][std::size_t(i % 2)];
          mma_sim(o[std::size_t(2 * dp + half)], a, b);
        }
      }
    }
    for (int dt = 0; dt < dim / 8; ++dt)
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 4; ++i) {
          const RowCol e = mma_c_element(lane, i);
          float expected = 0.f;
          for (int c = 0; c < 64; ++c) expected += S[e.row][c] * v.at(c, 8 * dt + e.col);
          CHECK(o[std::size_t(dt)][std::size_t(lane)][std::size_t(i)] == expected);
        }
  }
}
