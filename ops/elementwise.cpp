#include "ops/elementwise.h"

#include <limits>

#include "autograd/node.h"
#include "ops/cpu/elementwise.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/reduce.h"

namespace hd {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    HD_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b,
             " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

const char* unary_name(UnaryOp op) {
  static const char* names[] = {
      "neg", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "gelu", "gelu_tanh",
      "silu", "abs", "sign", "softplus", "log1p", "reciprocal", "square", "sin", "cos",
      "logical_not", "add_scalar", "mul_scalar", "pow_scalar", "rsub_scalar", "clamp", "eq",
      "ne", "lt", "le", "gt", "ge"};
  return names[int(op)];
}

const char* binary_name(BinaryOp op) {
  static const char* names[] = {
      "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
      "logical_and", "logical_or", "relu_backward", "gelu_backward", "gelu_tanh_backward",
      "silu_backward", "sigmoid_backward", "tanh_backward", "softplus_backward"};
  return names[int(op)];
}

bool is_float_only(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: case UnaryOp::abs: case UnaryOp::sign: case UnaryOp::square:
    case UnaryOp::add_scalar: case UnaryOp::mul_scalar: case UnaryOp::rsub_scalar:
    case UnaryOp::clamp: case UnaryOp::logical_not:
      return false;
    default:
      return !produces_bool(op);
  }
}

// Which saved tensor a unary gradient needs: the input, the output, or nothing.
enum class Needs { none, input, output };
Needs unary_needs(UnaryOp op) {
  switch (op) {
    case UnaryOp::exp: case UnaryOp::sqrt: case UnaryOp::rsqrt: case UnaryOp::tanh:
    case UnaryOp::sigmoid: case UnaryOp::reciprocal:
      return Needs::output;
    case UnaryOp::neg: case UnaryOp::add_scalar: case UnaryOp::mul_scalar:
    case UnaryOp::rsub_scalar: case UnaryOp::sign:
      return Needs::none;
    default:
      return Needs::input;
  }
}

struct UnaryBackward final : Node {
  UnaryOp op;
  UnaryParams p;
  SavedTensor saved;
  UnaryBackward(UnaryOp op, UnaryParams p) : op(op), p(p) {}
  std::string name() const override { return std::string(unary_name(op)) + "Backward"; }
  void release_saved() override { saved.reset(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    Tensor s = saved.unpack(*this);
    switch (op) {
      case UnaryOp::neg: return {neg(g)};
      case UnaryOp::exp: return {mul(g, s)};
      case UnaryOp::log: return {div(g, s)};
      case UnaryOp::sqrt: return {div(mul(g, 0.5), s)};
      case UnaryOp::rsqrt: return {mul(g, mul(pow(s, 3.0), -0.5))};
      case UnaryOp::tanh: return {binary_op(BinaryOp::tanh_backward, g, s)};
      case UnaryOp::sigmoid: return {binary_op(BinaryOp::sigmoid_backward, g, s)};
      case UnaryOp::relu: return {binary_op(BinaryOp::relu_backward, g, s)};
      case UnaryOp::gelu_erf: return {binary_op(BinaryOp::gelu_erf_backward, g, s)};
      case UnaryOp::gelu_tanh: return {binary_op(BinaryOp::gelu_tanh_backward, g, s)};
      case UnaryOp::silu: return {binary_op(BinaryOp::silu_backward, g, s)};
      case UnaryOp::softplus: return {binary_op(BinaryOp::softplus_backward, g, s)};
      case UnaryOp::abs: return {mul(g, sign(s))};
      case UnaryOp::sign: return {zeros_like(g)};
      case UnaryOp::log1p: return {div(g, add(s, 1.0))};
      case UnaryOp::reciprocal: return {neg(mul(g, square(s)))};
      case UnaryOp::square: return {mul(g, mul(s, 2.0))};
      case UnaryOp::sin: return {mul(g, cos(s))};
      case UnaryOp::cos: return {neg(mul(g, sin(s)))};
      case UnaryOp::add_scalar: return {g};
      case UnaryOp::mul_scalar: return {mul(g, p.a)};
      case UnaryOp::rsub_scalar: return {neg(g)};
      case UnaryOp::pow_scalar:
        return {p.a == 2.0 ? mul(g, mul(s, 2.0)) : mul(g, mul(pow(s, p.a - 1.0), p.a))};
      case UnaryOp::clamp: {
        Tensor inside = logical_and(ge(s, p.a), le(s, p.b));
        return {where(inside, g, 0.0)};
      }
      default:
        throw Error(detail::concat(name(), ": op has no gradient"));
    }
  }
};

Tensor unary_with_grad(UnaryOp op, const Tensor& x, UnaryParams p = {}) {
  Tensor out = unary_op(op, x, p);
  if (auto node = make_grad_node<UnaryBackward>({&x}, op, p)) {
    Needs needs = unary_needs(op);
    if (needs == Needs::input) node->saved = SavedTensor(x);
    if (needs == Needs::output) node->saved = SavedTensor(out.detach());
    set_history(out, node);
  }
  return out;
}

struct BinaryBackward final : Node {
  BinaryOp op;
  Shape a_shape, b_shape;
  SavedTensor a, b, out;
  explicit BinaryBackward(BinaryOp op) : op(op) {}
  std::string name() const override { return std::string(binary_name(op)) + "Backward"; }
  void release_saved() override {
    a.reset();
    b.reset();
    out.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    bool need_a = needs_input_grad(0), need_b = needs_input_grad(1);
    Tensor ga, gb;
    switch (op) {
      case BinaryOp::add:
        ga = g;
        gb = g;
        break;
      case BinaryOp::sub:
        ga = g;
        if (need_b) gb = neg(g);
        break;
      case BinaryOp::mul:
        if (need_a) ga = mul(g, b.unpack(*this));
        if (need_b) gb = mul(g, a.unpack(*this));
        break;
      case BinaryOp::div: {
        Tensor bv = b.unpack(*this);
        if (need_a) ga = div(g, bv);
        if (need_b) gb = neg(div(mul(g, out.unpack(*this)), bv));
        break;
      }
      case BinaryOp::pow: {
        Tensor av = a.unpack(*this), bv = b.unpack(*this);
        if (need_a) ga = mul(g, mul(bv, pow(av, sub(bv, ones_like(bv)))));
        if (need_b) gb = mul(g, mul(out.unpack(*this), log(av)));
        break;
      }
      case BinaryOp::maximum:
      case BinaryOp::minimum: {
        // Ties split the gradient evenly, as PyTorch does.
        Tensor av = a.unpack(*this), bv = b.unpack(*this);
        Tensor a_wins = op == BinaryOp::maximum ? gt(av, bv) : lt(av, bv);
        Tensor tie = eq(av, bv);
        Tensor half = mul(g, 0.5);
        if (need_a) ga = where(a_wins, g, where(tie, half, 0.0));
        if (need_b) gb = where(a_wins, zeros_like(g), where(tie, half, g));
        break;
      }
      default:
        throw Error(detail::concat(name(), ": op has no gradient"));
    }
    return {need_a && ga.defined() ? sum_to(ga, a_shape) : Tensor(),
            need_b && gb.defined() ? sum_to(gb, b_shape) : Tensor()};
  }
};

Tensor binary_with_grad(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = binary_op(op, a, b);
  if (auto node = make_grad_node<BinaryBackward>({&a, &b}, op)) {
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    bool need_a = a.requires_grad(), need_b = b.requires_grad();
    switch (op) {
      case BinaryOp::mul:
        if (need_a) node->b = SavedTensor(b);
        if (need_b) node->a = SavedTensor(a);
        break;
      case BinaryOp::div:
        node->b = SavedTensor(b);
        if (need_b) node->out = SavedTensor(out.detach());
        break;
      case BinaryOp::pow:
        node->a = SavedTensor(a);
        node->b = SavedTensor(b);
        if (need_b) node->out = SavedTensor(out.detach());
        break;
      case BinaryOp::maximum:
      case BinaryOp::minimum:
        node->a = SavedTensor(a);
        node->b = SavedTensor(b);
        break;
      default:
        break;
    }
    set_history(out, node);
  }
  return out;
}

void check_inplace(const char* op, const Tensor& t) {
  HD_CHECK(!(GradMode::enabled() && t.requires_grad()), op, ": in-place update of ", t.str(),
           (t.name().empty() ? "" : " '" + t.name() + "'"),
           ", which requires grad, while grad mode is on; use hd::NoGradGuard or an "
           "out-of-place op");
}

}  // namespace

Tensor unary_op(UnaryOp op, const Tensor& x, UnaryParams p) {
  HD_CHECK(!is_float_only(op) || is_floating(x.dtype()), unary_name(op),
           ": expects a floating-point tensor, got ", x.str());
  Tensor out = Tensor::empty(x.shape(), produces_bool(op) ? DType::boolean : x.dtype(), x.device());
  dispatch(x, unary_name(op), [&] { cpu::unary(op, x, out, p); },
           HD_CUDA_KERNEL(cuda::unary(op, x, out, p)));
  return out;
}

Tensor binary_op(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  check_same_device(name, {&a, &b});
  check_same_dtype(name, a, b);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, produces_bool(op) ? DType::boolean : a.dtype(), a.device());
  dispatch(a, name, [&] { cpu::binary(op, a, b, out); },
           HD_CUDA_KERNEL(cuda::binary(op, a, b, out)));
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) { return binary_with_grad(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_with_grad(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_with_grad(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_with_grad(BinaryOp::div, a, b); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary_with_grad(BinaryOp::pow, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) {
  return binary_with_grad(BinaryOp::maximum, a, b);
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return binary_with_grad(BinaryOp::minimum, a, b);
}
Tensor eq(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::ge, a, b); }
Tensor logical_and(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::logical_and, a, b);
}
Tensor logical_or(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::logical_or, a, b);
}

namespace {
struct WhereBackward final : Node {
  SavedTensor cond;
  Shape a_shape, b_shape;
  std::string name() const override { return "WhereBackward"; }
  void release_saved() override { cond.reset(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor c = cond.unpack(*this);
    const Tensor& g = grads[0];
    Tensor zero = zeros({}, g.dtype(), g.device());
    return {needs_input_grad(0) ? sum_to(where(c, g, zero), a_shape) : Tensor(),
            needs_input_grad(1) ? sum_to(where(c, zero, g), b_shape) : Tensor()};
  }
};
}  // namespace

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_device("where", {&cond, &a, &b});
  check_same_dtype("where", a, b);
  HD_CHECK(cond.dtype() == DType::boolean, "where: condition must be bool, got ", cond.str());
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(),
                                 "where");
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  dispatch(a, "where", [&] { cpu::where(cond, a, b, out); },
           HD_CUDA_KERNEL(cuda::where(cond, a, b, out)));
  if (auto node = make_grad_node<WhereBackward>({&a, &b})) {
    node->cond = SavedTensor(cond);
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    set_history(out, node);
  }
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, double b) {
  return where(cond, a, full({}, b, a.dtype(), a.device()));
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  return where(mask, full({}, value, x.dtype(), x.device()), x);
}

Tensor add(const Tensor& a, double s) { return unary_with_grad(UnaryOp::add_scalar, a, {s}); }
Tensor sub(const Tensor& a, double s) { return unary_with_grad(UnaryOp::add_scalar, a, {-s}); }
Tensor rsub(const Tensor& a, double s) { return unary_with_grad(UnaryOp::rsub_scalar, a, {s}); }
Tensor mul(const Tensor& a, double s) { return unary_with_grad(UnaryOp::mul_scalar, a, {s}); }
Tensor div(const Tensor& a, double s) { return unary_with_grad(UnaryOp::mul_scalar, a, {1.0 / s}); }
Tensor pow(const Tensor& a, double e) { return unary_with_grad(UnaryOp::pow_scalar, a, {e}); }
Tensor clamp(const Tensor& x, double lo, double hi) {
  HD_CHECK(lo <= hi, "clamp: lower bound ", lo, " is above upper bound ", hi);
  return unary_with_grad(UnaryOp::clamp, x, {lo, hi});
}
Tensor clamp_min(const Tensor& x, double lo) {
  return unary_with_grad(UnaryOp::clamp, x, {lo, std::numeric_limits<double>::infinity()});
}
Tensor clamp_max(const Tensor& x, double hi) {
  return unary_with_grad(UnaryOp::clamp, x, {-std::numeric_limits<double>::infinity(), hi});
}
Tensor eq(const Tensor& a, double s) { return unary_op(UnaryOp::eq_scalar, a, {s}); }
Tensor ne(const Tensor& a, double s) { return unary_op(UnaryOp::ne_scalar, a, {s}); }
Tensor lt(const Tensor& a, double s) { return unary_op(UnaryOp::lt_scalar, a, {s}); }
Tensor le(const Tensor& a, double s) { return unary_op(UnaryOp::le_scalar, a, {s}); }
Tensor gt(const Tensor& a, double s) { return unary_op(UnaryOp::gt_scalar, a, {s}); }
Tensor ge(const Tensor& a, double s) { return unary_op(UnaryOp::ge_scalar, a, {s}); }

Tensor neg(const Tensor& x) { return unary_with_grad(UnaryOp::neg, x); }
Tensor exp(const Tensor& x) { return unary_with_grad(UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary_with_grad(UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary_with_grad(UnaryOp::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_with_grad(UnaryOp::rsqrt, x); }
Tensor tanh(const Tensor& x) { return unary_with_grad(UnaryOp::tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary_with_grad(UnaryOp::sigmoid, x); }
Tensor relu(const Tensor& x) { return unary_with_grad(UnaryOp::relu, x); }
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return unary_with_grad(approx == GeluApprox::tanh ? UnaryOp::gelu_tanh : UnaryOp::gelu_erf, x);
}
Tensor silu(const Tensor& x) { return unary_with_grad(UnaryOp::silu, x); }
Tensor abs(const Tensor& x) { return unary_with_grad(UnaryOp::abs, x); }
Tensor sign(const Tensor& x) { return unary_with_grad(UnaryOp::sign, x); }
Tensor softplus(const Tensor& x) { return unary_with_grad(UnaryOp::softplus, x); }
Tensor log_sigmoid(const Tensor& x) { return neg(softplus(neg(x))); }
Tensor log1p(const Tensor& x) { return unary_with_grad(UnaryOp::log1p, x); }
Tensor square(const Tensor& x) { return unary_with_grad(UnaryOp::square, x); }
Tensor reciprocal(const Tensor& x) { return unary_with_grad(UnaryOp::reciprocal, x); }
Tensor sin(const Tensor& x) { return unary_with_grad(UnaryOp::sin, x); }
Tensor cos(const Tensor& x) { return unary_with_grad(UnaryOp::cos, x); }
Tensor logical_not(const Tensor& x) { return unary_op(UnaryOp::logical_not, x); }

Tensor& add_(Tensor& a, const Tensor& b) {
  check_inplace("add_", a);
  check_same_dtype("add_", a, b);
  dispatch(a, "add_", [&] { cpu::binary(BinaryOp::add, a, b, a); },
           HD_CUDA_KERNEL(cuda::binary(BinaryOp::add, a, b, a)));
  a.bump_version();
  return a;
}
Tensor& sub_(Tensor& a, const Tensor& b) {
  check_inplace("sub_", a);
  check_same_dtype("sub_", a, b);
  dispatch(a, "sub_", [&] { cpu::binary(BinaryOp::sub, a, b, a); },
           HD_CUDA_KERNEL(cuda::binary(BinaryOp::sub, a, b, a)));
  a.bump_version();
  return a;
}
Tensor& mul_(Tensor& a, const Tensor& b) {
  check_inplace("mul_", a);
  check_same_dtype("mul_", a, b);
  dispatch(a, "mul_", [&] { cpu::binary(BinaryOp::mul, a, b, a); },
           HD_CUDA_KERNEL(cuda::binary(BinaryOp::mul, a, b, a)));
  a.bump_version();
  return a;
}
Tensor& mul_(Tensor& a, double s) {
  check_inplace("mul_", a);
  dispatch(a, "mul_", [&] { cpu::unary(UnaryOp::mul_scalar, a, a, {s}); },
           HD_CUDA_KERNEL(cuda::unary(UnaryOp::mul_scalar, a, a, {s})));
  a.bump_version();
  return a;
}
Tensor& add_(Tensor& a, double s) {
  check_inplace("add_", a);
  dispatch(a, "add_", [&] { cpu::unary(UnaryOp::add_scalar, a, a, {s}); },
           HD_CUDA_KERNEL(cuda::unary(UnaryOp::add_scalar, a, a, {s})));
  a.bump_version();
  return a;
}
Tensor& copy_(Tensor& dst, const Tensor& src) {
  check_inplace("copy_", dst);
  check_same_device("copy_", {&dst, &src});
  broadcast_shapes(dst.shape(), src.shape(), "copy_");
  dispatch(dst, "copy_", [&] { cpu::copy(src, dst); },
           HD_CUDA_KERNEL(cuda::copy(src, dst)));
  dst.bump_version();
  return dst;
}
Tensor& fill_(Tensor& t, double value) {
  check_inplace("fill_", t);
  dispatch(t, "fill_", [&] { cpu::fill(t, value); },
           HD_CUDA_KERNEL(cuda::fill(t, value)));
  t.bump_version();
  return t;
}
Tensor& zero_(Tensor& t) { return fill_(t, 0.0); }

}  // namespace hd
