#include "ops/rope.h"

#include <cmath>
#include <vector>

#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd {

RopeTables rope_tables(int64_t positions, int64_t head_dim, double base, DType dtype) {
  HD_CHECK(positions >= 0, "rope_tables: positions must be >= 0, got ", positions);
  HD_CHECK(head_dim > 0 && head_dim % 2 == 0,
           "rope_tables: head_dim must be even and positive, got ", head_dim);
  HD_CHECK(base > 0, "rope_tables: base must be positive, got ", base);
  HD_CHECK(is_floating(dtype), "rope_tables: dtype must be floating, got ", dtype_name(dtype));
  // Angles in f64, then converted: f32 products p * inv_freq lose ~1e-4 rad at p ~ 1000.
  const int64_t half = head_dim / 2;
  std::vector<double> c(size_t(positions * head_dim)), s(c.size());
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = std::pow(base, -2.0 * double(i) / double(head_dim));
    for (int64_t p = 0; p < positions; ++p) {
      const double angle = double(p) * inv_freq;
      const double ca = std::cos(angle), sa = std::sin(angle);
      for (int64_t j : {i, i + half}) {
        c[size_t(p * head_dim + j)] = ca;
        s[size_t(p * head_dim + j)] = sa;
      }
    }
  }
  return {from_vector<double>(c, {positions, head_dim}, dtype),
          from_vector<double>(s, {positions, head_dim}, dtype)};
}

Tensor apply_rope(const Tensor& x, const RopeTables& tables) {
  HD_CHECK(x.defined() && tables.cos.defined() && tables.sin.defined(),
           "apply_rope: x and both tables must be defined");
  HD_CHECK(x.dim() >= 2, "apply_rope: x must be [..., N, Dh], got ", x.str());
  const int64_t n = x.size(-2), dh = x.size(-1);
  HD_CHECK(dh % 2 == 0, "apply_rope: head dim must be even, got x ", x.shape());
  HD_CHECK(tables.cos.dim() == 2 && tables.cos.shape() == tables.sin.shape() &&
               tables.cos.size(1) == dh && tables.cos.size(0) >= n,
           "apply_rope: tables cos ", tables.cos.shape(), " / sin ", tables.sin.shape(),
           " do not cover x ", x.shape(), " (need [>= ", n, ", ", dh, "])");
  check_same_dtype("apply_rope", x, tables.cos);
  // Tables built for the longest sequence serve shorter ones: take the first n positions.
  Tensor c = narrow(tables.cos, 0, 0, n), s = narrow(tables.sin, 0, 0, n);
  const int64_t half = dh / 2;
  Tensor rotated = cat({neg(narrow(x, -1, half, half)), narrow(x, -1, 0, half)}, -1);
  return add(mul(x, c), mul(rotated, s));
}

}  // namespace hd
