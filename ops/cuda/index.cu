// CUDA kernels of the indexing family (contract of ops/cpu/index.h; index values were validated
// by the frontend). Every kernel that adds into its output gives each thread a set of output
// elements no other thread touches and adds that set's contributions in index order, exactly as
// the CPU does: no atomics, so results are deterministic and equal the CPU's for f32/f64 sums
// done in the same order. The price is less parallelism for index_add (one thread per output
// column); it is correct first, and the embedding gradient is not a hot spot of a ViT step.
#include "ops/cpu/index.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

template <class T>
__global__ void index_select_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner,
                                    const int64_t* idx, int64_t k) {
  int64_t total = outer * k * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t c = p % inner, r = p / inner;
    int64_t o = r / k, j = r % k;
    out[p] = x[(o * n + idx[j]) * inner + c];
  }
}

// One thread per (o, c): adds the k source rows in index order.
template <class T>
__global__ void index_add_kernel(T* out, const T* src, int64_t outer, int64_t n, int64_t inner,
                                 const int64_t* idx, int64_t k) {
  using C = typename Elem<T>::compute;
  int64_t total = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t o = p / inner, c = p % inner;
    for (int64_t j = 0; j < k; ++j) {
      T& dst = out[(o * n + idx[j]) * inner + c];
      dst = Elem<T>::store(C(Elem<T>::load(dst) + Elem<T>::load(src[(o * k + j) * inner + c])));
    }
  }
}

// Columns: positions of the index's shape with `dim` removed; operand k's offset of column c.
struct Columns {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[3][kMaxDims] = {};
  int64_t count = 1;
  __device__ void offsets(int64_t c, int64_t (&off)[3]) const {
    off[0] = off[1] = off[2] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t i = c % sizes[d];
      c /= sizes[d];
      for (int q = 0; q < 3; ++q) off[q] += i * strides[q][d];
    }
  }
};

Columns make_columns(const char* op, const Shape& shape, int64_t dim, const Shape* s0,
                     const Shape* s1, const Shape* s2) {
  HD_CHECK(shape.size() <= size_t(kMaxDims) + 1, op, ": CUDA kernel supports up to ", kMaxDims + 1,
           " dims, got ", shape);
  Columns cols;
  const Shape* st[3] = {s0, s1, s2};
  for (size_t d = 0; d < shape.size(); ++d) {
    if (int64_t(d) == dim) continue;
    cols.sizes[cols.ndim] = shape[d];
    for (int q = 0; q < 3; ++q) cols.strides[q][cols.ndim] = (*st[q])[d];
    cols.count *= shape[d];
    ++cols.ndim;
  }
  return cols;
}

// off: x, index, out
template <class T>
__global__ void gather_kernel(const T* x, const int64_t* ip, T* op, Columns cols, int64_t len,
                              int64_t xs, int64_t is, int64_t os) {
  int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols.count; c += step) {
    int64_t off[3];
    cols.offsets(c, off);
    for (int64_t j = 0; j < len; ++j) op[off[2] + j * os] = x[off[0] + ip[off[1] + j * is] * xs];
  }
}

// off: out, index, src. A column writes only output elements of its own column.
template <class T>
__global__ void scatter_add_kernel(T* op, const int64_t* ip, const T* sp, Columns cols, int64_t len,
                                   int64_t os, int64_t is, int64_t ss) {
  using C = typename Elem<T>::compute;
  int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols.count; c += step) {
    int64_t off[3];
    cols.offsets(c, off);
    for (int64_t j = 0; j < len; ++j) {
      T& dst = op[off[0] + ip[off[1] + j * is] * os];
      dst = Elem<T>::store(C(Elem<T>::load(dst) + Elem<T>::load(sp[off[2] + j * ss])));
    }
  }
}

// Top-k by rank: one thread per (row, element) counts the elements ordered before it (NaN
// largest, then larger value, then lower index: a strict total order, so ranks are distinct)
// and writes itself to slot `rank` if rank < k. O(n^2) per row, fully parallel, no sorting.
template <class T>
__global__ void topk_kernel(const T* x, T* values, int64_t* indices, int64_t rows, int64_t n,
                            int64_t k) {
  using C = typename Elem<T>::compute;
  int64_t total = rows * n, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t r = p / n, a = p % n;
    const T* row = x + r * n;
    C va = Elem<T>::load(row[a]);
    bool na = va != va;
    int64_t rank = 0;
    for (int64_t b = 0; b < n && rank < k; ++b) {
      if (b == a) continue;
      C vb = Elem<T>::load(row[b]);
      bool nb = vb != vb;
      bool b_first = (na != nb) ? nb : ((!nb && vb != va) ? (vb > va) : (b < a));
      rank += b_first ? 1 : 0;
    }
    if (rank < k) {
      values[r * k + rank] = row[a];
      indices[r * k + rank] = a;
    }
  }
}

}  // namespace

void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const int64_t* idx,
                  int64_t k, Tensor& out) {
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  DeviceGuard guard(x.device().index);
  visit_dtype(x.dtype(), "index_select", [&]<class T>() {
    index_select_kernel<T><<<grid_for(total), kThreads, 0, stream_of(x)>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), outer, n, inner, idx,
        k);
  });
  check_launch("index_select", x);
}

void index_add(Tensor& out, int64_t outer, int64_t n, int64_t inner, const int64_t* idx, int64_t k,
               const Tensor& src) {
  if (outer * inner == 0 || k == 0) return;
  DeviceGuard guard(out.device().index);
  visit_dtype(out.dtype(), "index_add", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      throw Error("index_add: not defined for bool tensors");
    } else {
      index_add_kernel<T><<<grid_for(outer * inner), kThreads, 0, stream_of(out)>>>(
          static_cast<T*>(out.raw_data()), static_cast<const T*>(src.raw_data()), outer, n, inner,
          idx, k);
    }
  });
  check_launch("index_add", out);
}

void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out) {
  Columns cols =
      make_columns("gather", index.shape(), dim, &x.strides(), &index.strides(), &out.strides());
  const int64_t len = index.shape()[size_t(dim)];
  if (cols.count == 0 || len == 0) return;
  DeviceGuard guard(x.device().index);
  visit_dtype(x.dtype(), "gather", [&]<class T>() {
    gather_kernel<T><<<grid_for(cols.count), kThreads, 0, stream_of(x)>>>(
        static_cast<const T*>(x.raw_data()), static_cast<const int64_t*>(index.raw_data()),
        static_cast<T*>(out.raw_data()), cols, len, x.stride(dim), index.stride(dim),
        out.stride(dim));
  });
  check_launch("gather", x);
}

void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  Columns cols = make_columns("scatter_add", index.shape(), dim, &out.strides(), &index.strides(),
                              &src.strides());
  const int64_t len = index.shape()[size_t(dim)];
  if (cols.count == 0 || len == 0) return;
  DeviceGuard guard(out.device().index);
  visit_dtype(out.dtype(), "scatter_add", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      throw Error("scatter_add: not defined for bool tensors");
    } else {
      scatter_add_kernel<T><<<grid_for(cols.count), kThreads, 0, stream_of(out)>>>(
          static_cast<T*>(out.raw_data()), static_cast<const int64_t*>(index.raw_data()),
          static_cast<const T*>(src.raw_data()), cols, len, out.stride(dim), index.stride(dim),
          src.stride(dim));
    }
  });
  check_launch("scatter_add", out);
}

void topk(const Tensor& x, int64_t rows, int64_t n, int64_t k, Tensor& values, Tensor& indices) {
  HD_CHECK(x.is_contiguous() && values.is_contiguous() && indices.is_contiguous(),
           "topk: CUDA kernel expects contiguous tensors, got ", x.str());
  if (rows * n == 0 || k == 0) return;
  DeviceGuard guard(x.device().index);
  visit_dtype(x.dtype(), "topk", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      throw Error("topk: not defined for bool tensors");
    } else {
      topk_kernel<T><<<grid_for(rows * n), kThreads, 0, stream_of(x)>>>(
          static_cast<const T*>(x.raw_data()), static_cast<T*>(values.raw_data()),
          static_cast<int64_t*>(indices.raw_data()), rows, n, k);
    }
  });
  check_launch("topk", x);
}

}  // namespace hd::cuda
