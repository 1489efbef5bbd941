// CUDA copies, casts, fills and elementwise math with broadcasting and arbitrary strides.
//
// One generic grid-stride kernel (common.cuh: strided_kernel) serves every op: the functor
// below reads its operands at the offsets the geometry gives and switches on the op at run
// time. The switch is uniform across a warp, so it costs a few instructions per element, and it
// keeps this file to one kernel instantiation per (dtype, output dtype) instead of one per op
// (compile time is CI's budget). Semantics follow ops/cpu/elementwise.cpp exactly: bf16/f16 are
// computed in f32, integer ops in their own type, NaN propagation of maximum/minimum as on the CPU.
#include <type_traits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

__device__ inline float m_pow(float a, float b) {
  return powf(a, b);
}
__device__ inline double m_pow(double a, double b) {
  return pow(a, b);
}

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;

template <class C>
__device__ C sigmoid(C x) {
  return C(1) / (C(1) + m_exp(-x));
}

bool unary_float_only(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg:
    case UnaryOp::abs:
    case UnaryOp::sign:
    case UnaryOp::square:
    case UnaryOp::add_scalar:
    case UnaryOp::mul_scalar:
    case UnaryOp::rsub_scalar:
    case UnaryOp::clamp:
      return false;
    default:
      return !produces_bool(op);
  }
}
bool binary_float_only(BinaryOp op) {
  return op == BinaryOp::pow || op >= BinaryOp::relu_backward;
}

template <class C>
__device__ C unary_value(UnaryOp op, C v, C a, C b) {
  switch (op) {
    case UnaryOp::neg:
      return C(-v);
    case UnaryOp::abs:
      return v < C(0) ? C(-v) : v;
    case UnaryOp::sign:
      return C((v > C(0)) - (v < C(0)));
    case UnaryOp::square:
      return C(v * v);
    case UnaryOp::add_scalar:
      return C(v + a);
    case UnaryOp::mul_scalar:
      return C(v * a);
    case UnaryOp::rsub_scalar:
      return C(a - v);
    case UnaryOp::clamp:
      return v < a ? a : (v > b ? b : v);
    default:
      break;
  }
  if constexpr (std::is_floating_point_v<C>) {
    switch (op) {
      case UnaryOp::exp:
        return m_exp(v);
      case UnaryOp::log:
        return m_log(v);
      case UnaryOp::sqrt:
        return m_sqrt(v);
      case UnaryOp::rsqrt:
        return C(1) / m_sqrt(v);
      case UnaryOp::tanh:
        return m_tanh(v);
      case UnaryOp::sigmoid:
        return sigmoid(v);
      case UnaryOp::relu:
        return v > C(0) ? v : C(0);
      case UnaryOp::gelu_erf:
        return C(0.5) * v * (C(1) + m_erf(v * C(kInvSqrt2)));
      case UnaryOp::gelu_tanh:
        return C(0.5) * v * (C(1) + m_tanh(C(kSqrt2OverPi) * (v + C(0.044715) * v * v * v)));
      case UnaryOp::silu:
        return v * sigmoid(v);
      case UnaryOp::softplus:
        return (v > C(0) ? v : C(0)) + m_log1p(m_exp(-m_fabs(v)));
      case UnaryOp::log1p:
        return m_log1p(v);
      case UnaryOp::reciprocal:
        return C(1) / v;
      case UnaryOp::sin:
        return m_sin(v);
      case UnaryOp::cos:
        return m_cos(v);
      case UnaryOp::pow_scalar:
        if (a == C(2)) return v * v;
        if (a == C(0.5)) return m_sqrt(v);
        return m_pow(v, a);
      default:
        break;
    }
  }
  return v;  // not reached: the host rejects (op, dtype) pairs the CPU rejects
}

template <class C>
__device__ bool unary_compare(UnaryOp op, C v, C a) {
  switch (op) {
    case UnaryOp::eq_scalar:
      return v == a;
    case UnaryOp::ne_scalar:
      return v != a;
    case UnaryOp::lt_scalar:
      return v < a;
    case UnaryOp::le_scalar:
      return v <= a;
    case UnaryOp::gt_scalar:
      return v > a;
    case UnaryOp::ge_scalar:
      return v >= a;
    case UnaryOp::logical_not:
      return v == C(0);
    default:
      return false;
  }
}

template <class C>
__device__ C binary_value(BinaryOp op, C x, C y) {
  switch (op) {
    case BinaryOp::add:
      return C(x + y);
    case BinaryOp::sub:
      return C(x - y);
    case BinaryOp::mul:
      return C(x * y);
    case BinaryOp::div:
      return C(x / y);
    case BinaryOp::maximum:
      return x != x ? x : (x > y ? x : y);
    case BinaryOp::minimum:
      return x != x ? x : (x < y ? x : y);
    default:
      break;
  }
  if constexpr (std::is_floating_point_v<C>) {
    const C g = x;  // gradient helpers: x = incoming gradient, y = forward input or output
    switch (op) {
      case BinaryOp::pow:
        return m_pow(x, y);
      case BinaryOp::relu_backward:
        return y > C(0) ? g : C(0);
      case BinaryOp::gelu_erf_backward: {
        C cdf = C(0.5) * (C(1) + m_erf(y * C(kInvSqrt2)));
        C pdf = C(kInvSqrt2Pi) * m_exp(C(-0.5) * y * y);
        return g * (cdf + y * pdf);
      }
      case BinaryOp::gelu_tanh_backward: {
        C inner = C(kSqrt2OverPi) * (y + C(0.044715) * y * y * y);
        C t = m_tanh(inner);
        C dinner = C(kSqrt2OverPi) * (C(1) + C(3 * 0.044715) * y * y);
        return g * (C(0.5) * (C(1) + t) + C(0.5) * y * (C(1) - t * t) * dinner);
      }
      case BinaryOp::silu_backward: {
        C s = sigmoid(y);
        return g * s * (C(1) + y * (C(1) - s));
      }
      case BinaryOp::sigmoid_backward:
        return g * y * (C(1) - y);
      case BinaryOp::tanh_backward:
        return g * (C(1) - y * y);
      case BinaryOp::softplus_backward:
        return g * sigmoid(y);
      default:
        break;
    }
  }
  return x;  // not reached (host checks)
}

template <class C>
__device__ bool binary_compare(BinaryOp op, C x, C y) {
  switch (op) {
    case BinaryOp::eq:
      return x == y;
    case BinaryOp::ne:
      return x != y;
    case BinaryOp::lt:
      return x < y;
    case BinaryOp::le:
      return x <= y;
    case BinaryOp::gt:
      return x > y;
    case BinaryOp::ge:
      return x >= y;
    case BinaryOp::logical_and:
      return x != C(0) && y != C(0);
    case BinaryOp::logical_or:
      return x != C(0) || y != C(0);
    default:
      return false;
  }
}

// --- functors (operand 0 is always the output) ----------------------------------------------

template <class O, class I>
struct CopyF {
  O* out;
  const I* in;
  __device__ void operator()(const int64_t (&off)[2]) const {
    if constexpr (std::is_same_v<O, I>) {
      out[off[0]] = in[off[1]];
    } else {
      out[off[0]] =
          Elem<O>::store(static_cast<typename Elem<O>::compute>(Elem<I>::load(in[off[1]])));
    }
  }
};

template <class T>
struct FillF {
  T* out;
  T value;
  __device__ void operator()(const int64_t (&off)[1]) const { out[off[0]] = value; }
};

template <class T, class O>
struct UnaryF {
  using C = typename Elem<T>::compute;
  const T* x;
  O* out;
  UnaryOp op;
  C a, b;
  __device__ void operator()(const int64_t (&off)[2]) const {
    C v = Elem<T>::load(x[off[1]]);
    if constexpr (std::is_same_v<O, bool>) {
      out[off[0]] = unary_compare(op, v, a);
    } else {
      out[off[0]] = Elem<T>::store(unary_value(op, v, a, b));
    }
  }
};

template <class T, class O>
struct BinaryF {
  using C = typename Elem<T>::compute;
  const T* a;
  const T* b;
  O* out;
  BinaryOp op;
  __device__ void operator()(const int64_t (&off)[3]) const {
    C x = Elem<T>::load(a[off[1]]), y = Elem<T>::load(b[off[2]]);
    if constexpr (std::is_same_v<O, bool>) {
      out[off[0]] = binary_compare(op, x, y);
    } else {
      out[off[0]] = Elem<T>::store(binary_value(op, x, y));
    }
  }
};

template <class T>
struct WhereF {
  T* out;
  const bool* cond;
  const T* a;
  const T* b;
  __device__ void operator()(const int64_t (&off)[4]) const {
    out[off[0]] = cond[off[1]] ? a[off[2]] : b[off[3]];
  }
};

void check_cuda_tensors(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    HD_CHECK(t->device().type == DeviceType::cuda, op, ": CUDA kernel got a tensor on ",
             t->device().str(), " (", t->str(), ")");
  }
}

}  // namespace

void copy(const Tensor& src, Tensor& dst) {
  check_cuda_tensors("copy", {&src, &dst});
  HD_CHECK(src.device() == dst.device(), "copy: tensors on ", src.device().str(), " and ",
           dst.device().str(), " (use hd::to(x, device) to move between devices)");
  const Shape& shape = dst.shape();
  auto g = make_geometry<2>(shape, {dst.strides(), broadcast_strides(src, shape)}, "copy");
  visit_dtype(dst.dtype(), "copy", [&]<class O>() {
    visit_dtype(src.dtype(), "copy", [&]<class I>() {
      launch_strided(
          "copy", dst, g, dst.numel(),
          CopyF<O, I>{static_cast<O*>(dst.raw_data()), static_cast<const I*>(src.raw_data())});
    });
  });
}

void fill(Tensor& dst, double value) {
  check_cuda_tensors("fill", {&dst});
  auto g = make_geometry<1>(dst.shape(), {dst.strides()}, "fill");
  visit_dtype(dst.dtype(), "fill", [&]<class T>() {
    using Tr = ElementTraits<T>;
    const T v = Tr::store(static_cast<typename Tr::compute>(value));  // host rounding = CPU's
    launch_strided("fill", dst, g, dst.numel(), FillF<T>{static_cast<T*>(dst.raw_data()), v});
  });
}

void unary(UnaryOp op, const Tensor& x, Tensor& out, UnaryParams p) {
  check_cuda_tensors("unary", {&x, &out});
  HD_CHECK(x.shape() == out.shape(), "unary op ", int(op), ": shape ", x.shape(), " vs output ",
           out.shape());
  auto g = make_geometry<2>(out.shape(), {out.strides(), x.strides()}, "unary");
  const bool to_bool = produces_bool(op);
  visit_dtype(x.dtype(), "unary", [&]<class T>() {
    using C = typename Elem<T>::compute;
    if constexpr (std::is_same_v<T, bool>) {
      HD_CHECK(op == UnaryOp::logical_not, "unary op ", int(op), ": not supported for bool");
    } else if constexpr (!std::is_floating_point_v<C>) {
      HD_CHECK(!unary_float_only(op), "unary op ", int(op), ": not supported for dtype ",
               dtype_name(dtype_of<T>()));
    }
    const T* px = static_cast<const T*>(x.raw_data());
    if (to_bool) {
      HD_CHECK(out.dtype() == DType::boolean, "unary op ", int(op), ": output must be bool");
      launch_strided("unary", out, g, out.numel(),
                     UnaryF<T, bool>{px, static_cast<bool*>(out.raw_data()), op, C(p.a), C(p.b)});
    } else if constexpr (!std::is_same_v<T, bool>) {
      HD_CHECK(out.dtype() == x.dtype(), "unary op ", int(op), ": output dtype mismatch");
      launch_strided("unary", out, g, out.numel(),
                     UnaryF<T, T>{px, static_cast<T*>(out.raw_data()), op, C(p.a), C(p.b)});
    }
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  check_cuda_tensors("binary", {&a, &b, &out});
  HD_CHECK(a.dtype() == b.dtype(), "binary op ", int(op), ": dtype mismatch ", a.str(), " vs ",
           b.str());
  const Shape& shape = out.shape();
  auto g = make_geometry<3>(
      shape, {out.strides(), broadcast_strides(a, shape), broadcast_strides(b, shape)}, "binary");
  visit_dtype(a.dtype(), "binary", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      HD_CHECK(op == BinaryOp::logical_and || op == BinaryOp::logical_or || op == BinaryOp::eq ||
                   op == BinaryOp::ne,
               "binary op ", int(op), ": not supported for bool");
    } else if constexpr (!std::is_floating_point_v<typename Elem<T>::compute>) {
      HD_CHECK(!binary_float_only(op), "binary op ", int(op), ": not supported for dtype ",
               dtype_name(dtype_of<T>()));
    }
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    if (produces_bool(op)) {
      HD_CHECK(out.dtype() == DType::boolean, "binary op ", int(op), ": output must be bool");
      launch_strided("binary", out, g, out.numel(),
                     BinaryF<T, bool>{pa, pb, static_cast<bool*>(out.raw_data()), op});
    } else if constexpr (!std::is_same_v<T, bool>) {
      HD_CHECK(out.dtype() == a.dtype(), "binary op ", int(op), ": output dtype mismatch");
      launch_strided("binary", out, g, out.numel(),
                     BinaryF<T, T>{pa, pb, static_cast<T*>(out.raw_data()), op});
    }
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  check_cuda_tensors("where", {&cond, &a, &b, &out});
  HD_CHECK(cond.dtype() == DType::boolean, "where: condition must be bool, got ", cond.str());
  const Shape& shape = out.shape();
  auto g = make_geometry<4>(shape,
                            {out.strides(), broadcast_strides(cond, shape),
                             broadcast_strides(a, shape), broadcast_strides(b, shape)},
                            "where");
  visit_dtype(out.dtype(), "where", [&]<class T>() {
    launch_strided(
        "where", out, g, out.numel(),
        WhereF<T>{static_cast<T*>(out.raw_data()), static_cast<const bool*>(cond.raw_data()),
                  static_cast<const T*>(a.raw_data()), static_cast<const T*>(b.raw_data())});
  });
}

}  // namespace hd::cuda
