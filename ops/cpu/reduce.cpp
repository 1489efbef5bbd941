#include "ops/cpu/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "autograd/thread_pool.h"
#include "ops/cpu/isa.h"

namespace hd::cpu {
namespace {

// Sum of x[outer, :, inner] into out[outer, inner] with accumulator type A. Columns (inner > 1)
// are accumulated row by row so the loads stay contiguous and vectorise.
template <class T, class O, class A>
void sum_kernel(const T* x, O* out, int64_t outer, int64_t n, int64_t inner) {
  using Tr = ElementTraits<T>;
  if (inner == 1 && outer == 1) {
    // One long reduction: fixed 8192-element blocks (independent of thread count), then an
    // ordered sum of the block partials.
    constexpr int64_t kBlock = 8192;
    int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<A> partial(size_t(std::max<int64_t>(blocks, 1)), A(0));
    parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        A acc = A(0);
        for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i)
          acc += A(Tr::load(x[i]));
        partial[size_t(b)] = acc;
      }
    });
    A acc = A(0);
    for (A p : partial) acc += p;
    out[0] = ElementTraits<O>::store(static_cast<typename ElementTraits<O>::compute>(acc));
    return;
  }
  if (inner == 1) {
    parallel_for(
        0, outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)),
        [&](int64_t o0, int64_t o1) {
          for (int64_t o = o0; o < o1; ++o) {
            const T* row = x + o * n;
            A acc = A(0);
            for (int64_t i = 0; i < n; ++i) acc += A(Tr::load(row[i]));
            out[o] = ElementTraits<O>::store(static_cast<typename ElementTraits<O>::compute>(acc));
          }
        });
    return;
  }
  // Split over (outer, column block) so a single outer still uses every thread; when that
  // gives few tasks (a bias gradient: one outer, a few column blocks, thousands of rows), the
  // rows too, in fixed 1024-row slices whose partials are added in slice order. Every cut
  // depends on the shape only, so the sum does not depend on the thread count.
  constexpr int64_t kCols = 256, kSliceRows = 1024, kFewTasks = 8;
  const int64_t col_blocks = (inner + kCols - 1) / kCols;
  const int64_t slices =
      outer * col_blocks < kFewTasks ? std::max<int64_t>((n + kSliceRows - 1) / kSliceRows, 1) : 1;
  const int64_t slice_rows = (n + slices - 1) / slices;
  std::vector<A> partial(size_t(slices > 1 ? outer * slices * inner : 0));
  parallel_for(0, outer * col_blocks * slices, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> acc(kCols);
    run_vectorised([&] {  // [Note: AVX-512 kernels]
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t sl = t % slices, ob = t / slices;
        const int64_t o = ob / col_blocks, c0 = (ob % col_blocks) * kCols;
        const int64_t w = std::min(kCols, inner - c0);
        const int64_t i0 = sl * slice_rows, i1 = std::min(n, i0 + slice_rows);
        std::fill(acc.begin(), acc.begin() + w, A(0));
        const T* base = x + o * n * inner + c0;
        for (int64_t i = i0; i < i1; ++i) {
          const T* row = base + i * inner;
          for (int64_t j = 0; j < w; ++j) acc[size_t(j)] += A(Tr::load(row[j]));
        }
        if (slices > 1) {
          std::copy(acc.begin(), acc.begin() + w, partial.begin() + (o * slices + sl) * inner + c0);
          continue;
        }
        O* dst = out + o * inner + c0;
        for (int64_t j = 0; j < w; ++j)
          dst[j] = ElementTraits<O>::store(
              static_cast<typename ElementTraits<O>::compute>(acc[size_t(j)]));
      }
    });
  });
  if (slices == 1) return;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < inner; ++j) {
      A total = A(0);
      for (int64_t sl = 0; sl < slices; ++sl)
        total += partial[size_t((o * slices + sl) * inner + j)];
      out[o * inner + j] =
          ElementTraits<O>::store(static_cast<typename ElementTraits<O>::compute>(total));
    }
  }
}

template <class T>
void extreme_kernel(bool is_max, const T* x, T* out, int64_t* idx, int64_t outer, int64_t n,
                    int64_t inner) {
  using Tr = ElementTraits<T>;
  using C = typename Tr::compute;
  parallel_for(0, outer * inner, 1024, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      int64_t o = p / inner, j = p % inner;
      const T* col = x + o * n * inner + j;
      C best = Tr::load(col[0]);
      int64_t best_i = 0;
      for (int64_t i = 1; i < n; ++i) {
        C v = Tr::load(col[i * inner]);
        if (best != best) break;  // NaN wins and stays
        bool better = is_max ? (v > best) : (v < best);
        if (better || v != v) {
          best = v;
          best_i = i;
        }
      }
      out[p] = Tr::store(best);
      if (idx) idx[p] = best_i;
    }
  });
}

template <class T>
void logsumexp_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner) {
  using Tr = ElementTraits<T>;
  using C = typename Tr::compute;
  parallel_for(0, outer * inner, 256, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      int64_t o = p / inner, j = p % inner;
      const T* col = x + o * n * inner + j;
      C m = -std::numeric_limits<C>::infinity();
      for (int64_t i = 0; i < n; ++i) m = std::max(m, C(Tr::load(col[i * inner])));
      if (!std::isfinite(m)) {
        out[p] = Tr::store(m);
        continue;
      }
      double acc = 0;
      for (int64_t i = 0; i < n; ++i) acc += std::exp(double(Tr::load(col[i * inner])) - double(m));
      out[p] = Tr::store(C(double(m) + std::log(acc)));
    }
  });
}

}  // namespace

void reduce_dim(ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                Tensor& out, Tensor* indices) {
  HD_CHECK(x.is_contiguous() && out.is_contiguous(), "reduce: expects contiguous tensors");
  visit_dtype(x.dtype(), "reduce", [&]<class T>() {
    const T* px = x.data<T>();
    using C = typename ElementTraits<T>::compute;
    if (kind == ReduceKind::sum) {
      if constexpr (std::is_floating_point_v<C>) {
        // 16-bit inputs accumulate in f32 (far below their own rounding, and 2x the lanes of
        // double), as PyTorch's bf16 sums do; f32 and f64 in double.
        using Acc = std::conditional_t<sizeof(T) == 2, float, double>;
        sum_kernel<T, T, Acc>(px, out.data<T>(), outer, n, inner);
      } else {
        sum_kernel<T, int64_t, int64_t>(px, out.data<int64_t>(), outer, n, inner);
      }
      return;
    }
    if constexpr (std::is_same_v<T, bool>) {
      throw Error("reduce: max/min/logsumexp are not defined for bool tensors");
    } else {
      HD_CHECK(n > 0, "reduce: cannot take max/min/logsumexp over an empty dimension");
      if (kind == ReduceKind::logsumexp) {
        if constexpr (std::is_floating_point_v<C>) {
          logsumexp_kernel<T>(px, out.data<T>(), outer, n, inner);
          return;
        }
        throw Error("logsumexp: needs a floating-point tensor");
      }
      extreme_kernel<T>(kind == ReduceKind::max, px, out.data<T>(),
                        indices ? indices->data<int64_t>() : nullptr, outer, n, inner);
    }
  });
}

}  // namespace hd::cpu
