// The elementwise operations every backend implements. Backward helpers (relu_backward, ...)
// are ops too, like ggml's *_BACK ops: gradient formulas call them through the frontend, so a
// backend that implements this list gets every elementwise gradient.
#pragma once

namespace hd {

enum class UnaryOp {
  neg, exp, log, sqrt, rsqrt, tanh, sigmoid, relu, gelu_erf, gelu_tanh, silu, abs, sign,
  softplus, log1p, reciprocal, square, sin, cos, logical_not,
  // with parameters (UnaryParams a, b):
  add_scalar,   // x + a
  mul_scalar,   // x * a
  pow_scalar,   // x ^ a
  rsub_scalar,  // a - x
  clamp,        // min(max(x, a), b)
  eq_scalar, ne_scalar, lt_scalar, le_scalar, gt_scalar, ge_scalar,  // x ? a -> bool
};

struct UnaryParams {
  double a = 0, b = 0;
};

enum class BinaryOp {
  add, sub, mul, div, pow, maximum, minimum,
  eq, ne, lt, le, gt, ge,  // -> bool
  logical_and, logical_or,  // bool x bool -> bool
  // gradient helpers: a = incoming gradient, b = forward input x (or output y where noted)
  relu_backward,       // a * (x > 0)
  gelu_erf_backward,   // a * (Phi(x) + x phi(x))
  gelu_tanh_backward,  // a * d/dx gelu_tanh(x)
  silu_backward,       // a * s (1 + x (1 - s)), s = sigmoid(x)
  sigmoid_backward,    // a * y (1 - y), b = y
  tanh_backward,       // a * (1 - y^2), b = y
  softplus_backward,   // a * sigmoid(x)
};

inline bool produces_bool(UnaryOp op) { return op >= UnaryOp::eq_scalar || op == UnaryOp::logical_not; }
inline bool produces_bool(BinaryOp op) {
  return op >= BinaryOp::eq && op <= BinaryOp::logical_or;
}

}  // namespace hd
