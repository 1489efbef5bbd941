// fold_lanes (vec_math.h) for sixteen rows at once: each row's lane accumulators folded in
// fold_lanes' order (lane k with lane k + half, halving), the sixteen results in one vector.
//
// Why: a norm over short rows (the PS3 demo's 32 and 64 channels) spent most of its time in
// each row's fold, log2(16) shuffle-and-add steps in a dependent chain per row and per sum.
// Folding sixteen rows together is a transpose by pairs of vectors: every step combines two
// vectors with two shuffles and one add and halves the partials per row, so the whole fold of
// sixteen rows is 15 adds where row by row it was 16 chains of 4. The adds are the ones
// fold_lanes does, so a row's sum has the same bits either way, at any vector width: written
// with GCC's generic vectors, the same code is the AVX-512 and the AVX2 instantiation.
#pragma once

#include <cstdint>

namespace hd::cpu {

using f32x16 = float __attribute__((vector_size(64)));
using f32x8 = float __attribute__((vector_size(32)));

// Eight vectors, vector i holding rows 2i and 2i + 1 as eight partials each (lanes 0-7, 8-15)
// -> lane r = row r's partials folded (half = 4, 2, 1).
// (Results go through a reference: a 64-byte vector returned by value is an ABI question in the
// AVX2 instantiation, which GCC warns about even where the call is inlined.)
inline __attribute__((always_inline)) void fold_row_pairs(const f32x16 (&p)[8], f32x16& out) {
  f32x16 c[4], d[2];
  for (int j = 0; j < 4; ++j) {  // half = 4: rows 4j .. 4j + 3, four partials each
    const f32x16 a = p[2 * j], b = p[2 * j + 1];
    c[j] =
        __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
        __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  }
  for (int m = 0; m < 2; ++m) {  // half = 2: rows 8m .. 8m + 7, two partials each
    const f32x16 a = c[2 * m], b = c[2 * m + 1];
    d[m] =
        __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
        __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  }
  // half = 1: lane r = row r.
  out = __builtin_shufflevector(d[0], d[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                30) +
        __builtin_shufflevector(d[0], d[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                31);
}

// Sixteen rows' sixteen lane accumulators -> lane r = fold_lanes(acc[r]).
inline __attribute__((always_inline)) void fold_rows16(const f32x16 (&acc)[16], f32x16& out) {
  f32x16 p[8];
  for (int i = 0; i < 8; ++i) {  // half = 8
    const f32x16 a = acc[2 * i], b = acc[2 * i + 1];
    p[i] =
        __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
        __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
  fold_row_pairs(p, out);
}

// Sixteen rows' eight lane accumulators, two rows per vector (row 2i in lanes 0-7 of acc[i],
// row 2i + 1 in lanes 8-15) -> lane r = fold_lanes of row r's eight.
inline __attribute__((always_inline)) void fold_rows8(const f32x16 (&acc)[8], f32x16& out) {
  fold_row_pairs(acc, out);
}

}  // namespace hd::cpu
