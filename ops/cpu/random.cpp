#include "ops/cpu/random.h"

#include <cmath>

#include "autograd/thread_pool.h"

namespace hd::cpu {
namespace {
constexpr double kTwoPi = 6.283185307179586476925;

// Value of element i (uniform in [0,1)): f32 takes one word, f64 two.
template <class C>
C uniform_at(const Generator& gen, uint64_t first, int64_t i) {
  if constexpr (sizeof(C) == 4) {
    auto w = gen.block(first + uint64_t(i) / 4);
    return uniform01_f32(w[i % 4]);
  } else {
    auto w = gen.block(first + uint64_t(i) / 2);
    int k = int(i % 2) * 2;
    return C(uniform01_f64(w[k], w[k + 1]));
  }
}

// Box-Muller, one output per element (the cosine branch) so element i stands alone.
template <class C>
C normal_at(const Generator& gen, uint64_t first, int64_t i) {
  double u1, u2;
  if constexpr (sizeof(C) == 4) {
    auto w = gen.block(first + uint64_t(i) / 2);
    int k = int(i % 2) * 2;
    u1 = 1.0 - double(uniform01_f32(w[k]));
    u2 = double(uniform01_f32(w[k + 1]));
  } else {
    auto w = gen.block(first + uint64_t(i));
    u1 = 1.0 - uniform01_f64(w[0], w[1]);
    u2 = uniform01_f64(w[2], w[3]);
  }
  return C(std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
}

template <class F>
void fill_with(Tensor& t, const char* op, F value_at) {
  visit_dtype(t.dtype(), op, [&]<class T>() {
    using Tr = ElementTraits<T>;
    using C = typename Tr::compute;
    if constexpr (std::is_floating_point_v<C>) {
      T* p = t.data<T>();
      parallel_for(0, t.numel(), 4096, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = Tr::store(value_at.template operator()<C>(i));
      });
    } else {
      throw Error(detail::concat(op, ": needs a floating-point tensor, got ", t.str()));
    }
  });
}
}  // namespace

void fill_uniform(Tensor& t, double lo, double hi, const Generator& gen, uint64_t first) {
  fill_with(t, "uniform", [&]<class C>(int64_t i) {
    return C(lo + (hi - lo) * double(uniform_at<C>(gen, first, i)));
  });
}

void fill_normal(Tensor& t, double mean, double stddev, const Generator& gen, uint64_t first) {
  fill_with(t, "normal", [&]<class C>(int64_t i) {
    return C(mean + stddev * double(normal_at<C>(gen, first, i)));
  });
}

}  // namespace hd::cpu
