// A strided N-operand loop: the one piece of machinery every elementwise CPU kernel shares.
//
// Given a shape and each operand's strides (in elements; 0 along broadcast dims), dims are
// coalesced where every operand is contiguous across them, and the body is called once per
// innermost row with each operand's element offset and inner stride. Rows are split over the
// thread pool when the tensor is large enough to pay for it.
//
// for_each_row_vectorised runs each thread's chunk of rows through run_vectorised (isa.h): the
// AVX-512 instantiation inlines the row loop and the body, so a short row costs no call and no
// ISA branch. That is what strided operands need: a gradient slice read as rows of 64 of 256, a
// head view's rows of 16, a per-channel scale broadcast over rows of 32 (the PS3 demo's bf16
// step, where such maps ran 3-6x slower per element than contiguous ones when each row was
// dispatched on its own and rows under 64 values were not vectorised at all).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "autograd/tensor.h"
#include "autograd/thread_pool.h"
#include "ops/cpu/isa.h"

namespace hd::cpu {

#define HD_VEC_ROWS_INLINE inline __attribute__((always_inline))

// Strides of `t` as seen from `shape` (t broadcast to shape: missing/size-1 dims get stride 0).
Shape broadcast_strides(const Tensor& t, const Shape& shape);

template <size_t N>
struct RowSpec {
  Shape sizes;                   // coalesced outer sizes (may be empty)
  std::array<Shape, N> strides;  // outer strides per operand
  int64_t inner = 1;             // innermost row length
  std::array<int64_t, N> inner_stride{};
};

template <size_t N>
RowSpec<N> make_rows(const Shape& shape, const std::array<Shape, N>& strides) {
  // Drop size-1 dims, then merge dim i into i+1 when all operands are contiguous across them.
  std::vector<int64_t> sizes;
  std::array<std::vector<int64_t>, N> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    sizes.push_back(shape[d]);
    for (size_t k = 0; k < N; ++k) st[k].push_back(strides[k][d]);
  }
  for (size_t d = sizes.size(); d-- > 1;) {
    bool mergeable = true;
    for (size_t k = 0; k < N; ++k) mergeable &= st[k][d - 1] == st[k][d] * sizes[d];
    if (!mergeable) continue;
    sizes[d - 1] *= sizes[d];
    sizes.erase(sizes.begin() + d);
    for (size_t k = 0; k < N; ++k) {
      st[k][d - 1] = st[k][d];
      st[k].erase(st[k].begin() + d);
    }
  }
  RowSpec<N> spec;
  if (sizes.empty()) {
    spec.inner = 1;
    return spec;
  }
  spec.inner = sizes.back();
  for (size_t k = 0; k < N; ++k) spec.inner_stride[k] = st[k].back();
  sizes.pop_back();
  spec.sizes = sizes;
  for (size_t k = 0; k < N; ++k) {
    st[k].pop_back();
    spec.strides[k] = st[k];
  }
  return spec;
}

namespace strided_loop_detail {

template <bool Vectorise, class F>
HD_VEC_ROWS_INLINE void run_chunk(F&& chunk) {
  if constexpr (Vectorise) {
    run_vectorised(chunk);
  } else {
    chunk();
  }
}

template <size_t N, bool Vectorise, class Body>
void for_each_row_impl(const Shape& shape, const std::array<Shape, N>& strides, Body& body,
                       int64_t min_parallel_elements) {
  if (shape_numel(shape) == 0) return;
  RowSpec<N> spec = make_rows<N>(shape, strides);
  int64_t rows = shape_numel(spec.sizes);
  // Each operand's offset is carried from row to row (one add per operand per row, a reset of
  // the dims that wrap) rather than recomputed from every index: with short rows, such as a
  // patch gather's k elements, recomputing was most of a copy's time.
  auto run = [&](int64_t r0, int64_t r1) {
    const size_t nd = spec.sizes.size();
    std::vector<int64_t> idx(nd);
    std::array<int64_t, N> off{};
    int64_t rem = r0;
    for (size_t d = nd; d-- > 0;) {
      idx[d] = rem % spec.sizes[d];
      rem /= spec.sizes[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx[d] * spec.strides[k][d];
    }
    for (int64_t r = r0; r < r1; ++r) {
      body(off, spec.inner, spec.inner_stride);
      for (size_t d = nd; d-- > 0;) {
        if (++idx[d] < spec.sizes[d]) {
          for (size_t k = 0; k < N; ++k) off[k] += spec.strides[k][d];
          break;
        }
        idx[d] = 0;
        for (size_t k = 0; k < N; ++k) off[k] -= (spec.sizes[d] - 1) * spec.strides[k][d];
      }
    }
  };
  int64_t total = rows * spec.inner;
  if (total >= min_parallel_elements && rows > 1) {
    int64_t grain = std::max<int64_t>(1, min_parallel_elements / std::max<int64_t>(spec.inner, 1));
    parallel_for(0, rows, grain,
                 [&](int64_t r0, int64_t r1) { run_chunk<Vectorise>([&] { run(r0, r1); }); });
  } else if (total >= min_parallel_elements && rows == 1 && spec.inner > 1) {
    // One long row: split it.
    parallel_for(0, spec.inner, min_parallel_elements, [&](int64_t b, int64_t e) {
      std::array<int64_t, N> off{};
      for (size_t k = 0; k < N; ++k) off[k] = b * spec.inner_stride[k];
      run_chunk<Vectorise>([&] { body(off, e - b, spec.inner_stride); });
    });
  } else {
    run_chunk<Vectorise>([&] { run(0, rows); });
  }
}

}  // namespace strided_loop_detail

// body(std::array<int64_t,N> offsets, int64_t n, std::array<int64_t,N> inner_strides)
template <size_t N, class Body>
void for_each_row(const Shape& shape, const std::array<Shape, N>& strides, Body&& body,
                  int64_t min_parallel_elements = 32768) {
  strided_loop_detail::for_each_row_impl<N, false>(shape, strides, body, min_parallel_elements);
}

// The same, each thread's rows compiled for the widest vector ISA (see the note at the top).
template <size_t N, class Body>
void for_each_row_vectorised(const Shape& shape, const std::array<Shape, N>& strides, Body&& body,
                             int64_t min_parallel_elements = 32768) {
  strided_loop_detail::for_each_row_impl<N, true>(shape, strides, body, min_parallel_elements);
}

}  // namespace hd::cpu
