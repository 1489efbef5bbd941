#include "ops/cpu/adamw.h"

#include <cmath>

#include "autograd/thread_pool.h"
#include "ops/cpu/isa.h"

namespace hd::cpu {

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWStep& s) {
  visit_float(param.dtype(), "adamw_step", [&]<class T>() {
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* m = exp_avg.data<T>();
    T* v = exp_avg_sq.data<T>();
    const T decay = T(1.0 - s.lr * s.weight_decay);
    const T b2 = T(s.beta2), one_minus_b1 = T(1.0 - s.beta1), one_minus_b2 = T(1.0 - s.beta2);
    const T step_size = T(s.lr / (1.0 - std::pow(s.beta1, double(s.step))));
    const T bc2_sqrt = T(std::sqrt(1.0 - std::pow(s.beta2, double(s.step))));
    const T eps = T(s.eps);
    parallel_for(0, param.numel(), 16384, [&](int64_t b, int64_t e) {
      run_vectorised([&] {  // [Note: AVX-512 kernels]
        for (int64_t i = b; i < e; ++i) {
          T pi = p[i] * decay;
          T gi = g[i];
          T mi = m[i] + one_minus_b1 * (gi - m[i]);
          T vi = b2 * v[i] + one_minus_b2 * gi * gi;
          m[i] = mi;
          v[i] = vi;
          p[i] = pi - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
        }
      });
    });
  });
}

}  // namespace hd::cpu
