#include "ops/cpu/index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "autograd/thread_pool.h"

namespace hd::cpu {
namespace {

// Column blocks for the [outer, *, inner] kernels: wide enough to vectorise, small enough that a
// single outer still splits over the pool.
constexpr int64_t kInnerBlock = 256;

template <class T>
using Compute = typename ElementTraits<T>::compute;

// The positions of `shape` with dim `dim` removed ("columns"): each column is a line along dim.
// Returns the element offset of column c for a tensor with `strides` (dim's stride excluded).
struct Columns {
  Shape sizes;                 // shape without dim
  std::vector<Shape> strides;  // per operand, without dim
  int64_t count = 1;

  void offsets(int64_t c, int64_t* out) const {
    for (size_t k = 0; k < strides.size(); ++k) out[k] = 0;
    for (size_t d = sizes.size(); d-- > 0;) {
      int64_t i = c % sizes[d];
      c /= sizes[d];
      for (size_t k = 0; k < strides.size(); ++k) out[k] += i * strides[k][d];
    }
  }
};

Columns make_columns(const Shape& shape, int64_t dim, const std::vector<Shape>& strides) {
  Columns cols;
  cols.strides.resize(strides.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    if (int64_t(d) == dim) continue;
    cols.sizes.push_back(shape[d]);
    cols.count *= shape[d];
    for (size_t k = 0; k < strides.size(); ++k) cols.strides[k].push_back(strides[k][d]);
  }
  return cols;
}

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(work_per_item, 1));
}

}  // namespace

void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const int64_t* idx,
                  int64_t k, Tensor& out) {
  size_t row_bytes = size_t(inner) * dtype_size(x.dtype());
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  // A pure copy: each output row comes from one input row, any split is race-free.
  parallel_for(0, outer * k, grain_for(inner), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t o = r / k, j = r % k;
      std::memcpy(dst + size_t(r) * row_bytes, src + size_t(o * n + idx[j]) * row_bytes, row_bytes);
    }
  });
}

void index_add(Tensor& out, int64_t outer, int64_t n, int64_t inner, const int64_t* idx, int64_t k,
               const Tensor& src) {
  visit_dtype(out.dtype(), "index_add", [&]<class T>() {
    using Tr = ElementTraits<T>;
    T* o = out.data<T>();
    const T* s = src.data<T>();
    int64_t blocks = (inner + kInnerBlock - 1) / kInnerBlock;
    // Split over (outer, column block); the k rows are added in index order inside a task.
    parallel_for(0, outer * blocks, grain_for(k * kInnerBlock), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int64_t oi = t / blocks, c0 = (t % blocks) * kInnerBlock;
        int64_t c1 = std::min(inner, c0 + kInnerBlock);
        for (int64_t j = 0; j < k; ++j) {
          T* orow = o + (oi * n + idx[j]) * inner;
          const T* srow = s + (oi * k + j) * inner;
          for (int64_t c = c0; c < c1; ++c) {
            orow[c] = Tr::store(Compute<T>(Tr::load(orow[c]) + Tr::load(srow[c])));
          }
        }
      }
    });
  });
}

void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out) {
  Columns cols = make_columns(index.shape(), dim, {x.strides(), index.strides(), out.strides()});
  int64_t len = index.shape()[size_t(dim)];
  int64_t xs = x.stride(dim), is = index.stride(dim), os = out.stride(dim);
  const int64_t* ip = index.data<int64_t>();
  visit_dtype(x.dtype(), "gather", [&]<class T>() {
    const T* xp = x.data<T>();
    T* op = out.data<T>();
    parallel_for(0, cols.count, grain_for(len), [&](int64_t c0, int64_t c1) {
      int64_t off[3];
      for (int64_t c = c0; c < c1; ++c) {
        cols.offsets(c, off);
        for (int64_t j = 0; j < len; ++j)
          op[off[2] + j * os] = xp[off[0] + ip[off[1] + j * is] * xs];
      }
    });
  });
}

void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  Columns cols = make_columns(index.shape(), dim, {out.strides(), index.strides(), src.strides()});
  int64_t len = index.shape()[size_t(dim)];
  int64_t os = out.stride(dim), is = index.stride(dim), ss = src.stride(dim);
  const int64_t* ip = index.data<int64_t>();
  visit_dtype(out.dtype(), "scatter_add", [&]<class T>() {
    using Tr = ElementTraits<T>;
    T* op = out.data<T>();
    const T* sp = src.data<T>();
    // A column only writes output elements of its own column (all coordinates but dim agree),
    // so columns run in parallel and each sums its line in index order.
    parallel_for(0, cols.count, grain_for(len), [&](int64_t c0, int64_t c1) {
      int64_t off[3];
      for (int64_t c = c0; c < c1; ++c) {
        cols.offsets(c, off);
        for (int64_t j = 0; j < len; ++j) {
          T& dst = op[off[0] + ip[off[1] + j * is] * os];
          dst = Tr::store(Compute<T>(Tr::load(dst) + Tr::load(sp[off[2] + j * ss])));
        }
      }
    });
  });
}

void topk(const Tensor& x, int64_t rows, int64_t n, int64_t k, Tensor& values, Tensor& indices) {
  visit_dtype(x.dtype(), "topk", [&]<class T>() {
    using Tr = ElementTraits<T>;
    const T* xp = x.data<T>();
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
    parallel_for(0, rows, grain_for(n), [&](int64_t r0, int64_t r1) {
      std::vector<int64_t> order(static_cast<size_t>(n));
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = xp + r * n;
        std::iota(order.begin(), order.end(), int64_t(0));
        // A strict total order (NaN largest, then value, then lower index), so the chosen set
        // and its order are fully determined even with ties.
        auto before = [&](int64_t a, int64_t b) {
          auto va = Tr::load(row[a]), vb = Tr::load(row[b]);
          bool na = va != va, nb = vb != vb;
          if (na != nb) return na;
          if (!na && va != vb) return va > vb;
          return a < b;
        };
        std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
        for (int64_t j = 0; j < k; ++j) {
          vp[r * k + j] = row[order[size_t(j)]];
          ip[r * k + j] = order[size_t(j)];
        }
      }
    });
  });
}

}  // namespace hd::cpu
