// Fused cosine similarity: see similarity.h.
#include "ops/cpu/similarity.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/strided_loop.h"
#include "ops/cpu/vec_math.h"

namespace hd::cpu {
namespace {

constexpr int64_t kLanes = 16;

// Leading shape (every dim but the last) and each operand's leading strides.
Shape leading(const Shape& s) {
  return Shape(s.begin(), s.end() - 1);
}
Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) st[d - 1] = st[d] * shape[d];
  return st;
}

// Rows per parallel chunk: ~32k values.
int64_t min_rows(int64_t C) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1));
}

}  // namespace

void cosine_forward(const Tensor& a, const Tensor& b, double eps, Tensor& out, Tensor& stats) {
  const int64_t C = a.size(-1);
  const Shape lead = leading(a.shape());
  visit_floating_storage(a.dtype(), "cosine_similarity", [&]<class E>() {
    using T = typename ElementTraits<E>::compute;
    const E* pa = a.data<E>();
    const E* pb = b.data<E>();
    E* po = out.data<E>();
    T* ps = stats.data<T>();
    const T eps2 = T(eps) * T(eps);
    for_each_row_vectorised<3>(
        lead, {contiguous_strides(lead), leading(a.strides()), leading(b.strides())},
        [&](std::array<int64_t, 3> off, int64_t n, std::array<int64_t, 3> s) {
          for (int64_t i = 0; i < n; ++i) {
            const int64_t r = off[0] + i * s[0];
            const E* x = pa + off[1] + i * s[1];
            const E* y = pb + off[2] + i * s[2];
            T s12[kLanes] = {}, s1[kLanes] = {}, s2[kLanes] = {};
            int64_t j = 0;
            for (; j + kLanes <= C; j += kLanes) {
              for (int64_t k = 0; k < kLanes; ++k) {
                const T u = ElementTraits<E>::load(x[j + k]), v = ElementTraits<E>::load(y[j + k]);
                s12[k] = std::fma(u, v, s12[k]);
                s1[k] = std::fma(u, u, s1[k]);
                s2[k] = std::fma(v, v, s2[k]);
              }
            }
            T w12 = fold_lanes(s12), w1 = fold_lanes(s1), w2 = fold_lanes(s2);
            for (; j < C; ++j) {
              const T u = ElementTraits<E>::load(x[j]), v = ElementTraits<E>::load(y[j]);
              w12 = std::fma(u, v, w12);
              w1 = std::fma(u, u, w1);
              w2 = std::fma(v, v, w2);
            }
            po[r] = ElementTraits<E>::store(w12 / std::sqrt(std::max(w1 * w2, eps2)));
            ps[3 * r] = w12;
            ps[3 * r + 1] = w1;
            ps[3 * r + 2] = w2;
          }
        },
        min_rows(C));
  });
}

void cosine_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& stats,
                     double eps, Tensor& ga, Tensor& gb) {
  const int64_t C = a.size(-1);
  const Shape lead = leading(a.shape());
  visit_floating_storage(a.dtype(), "cosine_similarity", [&]<class E>() {
    using T = typename ElementTraits<E>::compute;
    const E* pa = a.data<E>();
    const E* pb = b.data<E>();
    const E* pg = g.data<E>();
    const T* ps = stats.data<T>();
    E* pga = ga.data<E>();
    E* pgb = gb.data<E>();
    const T eps2 = T(eps) * T(eps);
    for_each_row_vectorised<4>(
        lead,
        {contiguous_strides(lead), leading(a.strides()), leading(b.strides()),
         broadcast_strides(g, lead)},
        [&](std::array<int64_t, 4> off, int64_t n, std::array<int64_t, 4> s) {
          for (int64_t i = 0; i < n; ++i) {
            const int64_t r = off[0] + i * s[0];
            const E* x = pa + off[1] + i * s[1];
            const E* y = pb + off[2] + i * s[2];
            const T w12 = ps[3 * r], w1 = ps[3 * r + 1], w2 = ps[3 * r + 2];
            const T n2 = w1 * w2;
            const T norm = std::sqrt(std::max(n2, eps2));
            const T cos = w12 / norm;
            const T scale = ElementTraits<E>::load(pg[off[3] + i * s[3]]) / norm;
            const bool unclamped = n2 > eps2;
            const T ka = unclamped ? cos * (w2 / norm) : T(0);
            const T kb = unclamped ? cos * (w1 / norm) : T(0);
            E* dx = pga + r * C;
            E* dy = pgb + r * C;
            for (int64_t j = 0; j < C; ++j) {
              const T u = ElementTraits<E>::load(x[j]), v = ElementTraits<E>::load(y[j]);
              dx[j] = ElementTraits<E>::store(scale * (v - ka * u));
              dy[j] = ElementTraits<E>::store(scale * (u - kb * v));
            }
          }
        },
        min_rows(C));
  });
}

}  // namespace hd::cpu
