// Fused AdamW over one flat, contiguous shard (param, grad, exp_avg, exp_avg_sq of one dtype):
// one read and one write per state element per step, the same update and operation order as
// ops/cpu/adamw.cpp (PyTorch's), so CPU and GPU optimizers agree to rounding.
#include "ops/cpu/adamw.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

template <class T>
struct AdamWConsts {
  T decay, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps;
};

template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, int64_t n, AdamWConsts<T> c) {
  int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    T pi = p[i] * c.decay;
    T gi = g[i];
    T mi = m[i] + c.one_minus_b1 * (gi - m[i]);
    T vi = c.b2 * v[i] + c.one_minus_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - c.step_size * mi / (sqrt(vi) / c.bc2_sqrt + c.eps);
  }
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const cpu::AdamWStep& s) {
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&param, &grad, &exp_avg, &exp_avg_sq}) {
    HD_CHECK(t->is_contiguous() && t->dtype() == param.dtype() && t->device() == param.device() &&
                 t->numel() == param.numel(),
             "adamw_step: param/grad/state must be contiguous, same dtype, device and size: ",
             param.str(), " vs ", t->str());
  }
  visit_float(param.dtype(), "adamw_step", [&]<class T>() {
    AdamWConsts<T> c;
    c.decay = T(1.0 - s.lr * s.weight_decay);
    c.b2 = T(s.beta2);
    c.one_minus_b1 = T(1.0 - s.beta1);
    c.one_minus_b2 = T(1.0 - s.beta2);
    c.step_size = T(s.lr / (1.0 - std::pow(s.beta1, double(s.step))));
    c.bc2_sqrt = T(std::sqrt(1.0 - std::pow(s.beta2, double(s.step))));
    c.eps = T(s.eps);
    const int64_t n = param.numel();
    if (n == 0) return;
    DeviceGuard guard(param.device().index);
    adamw_kernel<T><<<grid_for(n), kThreads, 0, stream_of(param)>>>(
        param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(), n, c);
    check_launch("adamw_step", param);
  });
}

}  // namespace hd::cuda
