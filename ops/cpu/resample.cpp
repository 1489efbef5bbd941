#include "ops/cpu/resample.h"

#include <algorithm>

#include "autograd/thread_pool.h"

namespace hd::cpu {

void adaptive_max_pool2d(const Tensor& x, int64_t planes, int64_t h, int64_t w, int64_t oh,
                         int64_t ow, Tensor& values, Tensor& indices) {
  visit_float(x.dtype(), "adaptive_max_pool2d", [&]<class T>() {
    const T* xp = x.data<T>();
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
    int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(h * w, 1));
    parallel_for(0, planes, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* plane = xp + p * h * w;
        for (int64_t oy = 0; oy < oh; ++oy) {
          int64_t y0 = oy * h / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
          for (int64_t ox = 0; ox < ow; ++ox) {
            int64_t x0 = ox * w / ow, x1 = ((ox + 1) * w + ow - 1) / ow;
            int64_t best = y0 * w + x0;
            T bv = plane[best];
            for (int64_t y = y0; y < y1; ++y) {
              for (int64_t xx = x0; xx < x1; ++xx) {
                T v = plane[y * w + xx];
                if (v > bv || (v != v && bv == bv)) {
                  bv = v;
                  best = y * w + xx;
                }
              }
            }
            vp[(p * oh + oy) * ow + ox] = bv;
            ip[(p * oh + oy) * ow + ox] = best;
          }
        }
      }
    });
  });
}

}  // namespace hd::cpu
