#include "ops/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "autograd/thread_pool.h"
#include "ops/cpu/copy_bytes.h"
#include "ops/cpu/isa.h"
#include "ops/cpu/strided_loop.h"
#include "ops/cpu/vec_math.h"

namespace hd::cpu {

Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape s(shape.size(), 0);
  int64_t off = int64_t(shape.size()) - t.dim();
  HD_CHECK(off >= 0, "broadcast: ", t.str(), " has more dims than target shape ", shape);
  for (int64_t d = 0; d < t.dim(); ++d) {
    int64_t size = t.shape()[d];
    HD_CHECK(size == shape[off + d] || size == 1, "broadcast: cannot broadcast ", t.shape(), " to ",
             shape);
    s[off + d] = size == 1 ? 0 : t.strides()[d];
  }
  return s;
}

namespace {

// Inline everything the row body calls (the op's lambda, vexp, verf): GCC otherwise keeps large
// lambdas such as the GELU gradient out of line, and a call per element stops vectorisation.
#define HD_FLATTEN __attribute__((flatten))

// Floating-point maps run their rows at the CPU's widest vectors (for_each_row_vectorised,
// [Note: AVX-512 kernels] in ops/cpu/isa.h), short and strided rows included. Integer and bool
// maps keep the baseline only: they are rare in a training step, and an AVX-512 copy of every
// such instantiation would only lengthen the build.
template <class T>
constexpr bool kFloatingElement =
    std::is_floating_point_v<T> || std::is_same_v<T, bf16_t> || std::is_same_v<T, f16_t>;
template <size_t N, class O, class I, class Body>
void for_each_map_row(const Shape& shape, const std::array<Shape, N>& strides, Body&& body) {
  if constexpr (kFloatingElement<O> || kFloatingElement<I>) {
    for_each_row_vectorised<N>(shape, strides, body);
  } else {
    for_each_row<N>(shape, strides, body);
  }
}

template <class O, class I, class F>
void map1(const Tensor& x, Tensor& out, F f) {
  O* po = static_cast<O*>(out.raw_data());
  const I* px = static_cast<const I*>(x.raw_data());
  auto row = [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> s) HD_FLATTEN {
    O* o = po + off[0];
    const I* a = px + off[1];
    if (s[0] == 1 && s[1] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(a[i]);
    } else if (s[0] == 1 && s[1] != 0) {
      // An input read across its layout: copied as it is into a block first (see map2).
      constexpr int64_t kBlock = 256;
      I ab[kBlock];
      for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
        const int64_t m = std::min(kBlock, n - i0);
        for (int64_t i = 0; i < m; ++i) ab[i] = a[(i0 + i) * s[1]];
        for (int64_t i = 0; i < m; ++i) o[i0 + i] = f(ab[i]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * s[0]] = f(a[i * s[1]]);
    }
  };
  for_each_map_row<2, O, I>(out.shape(), {out.strides(), broadcast_strides(x, out.shape())}, row);
}

template <class O, class A, class B, class F>
void map2(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  O* po = static_cast<O*>(out.raw_data());
  const A* pa = static_cast<const A*>(a.raw_data());
  const B* pb = static_cast<const B*>(b.raw_data());
  for_each_map_row<3, O, A>(
      out.shape(),
      {out.strides(), broadcast_strides(a, out.shape()), broadcast_strides(b, out.shape())},
      [&](std::array<int64_t, 3> off, int64_t n, std::array<int64_t, 3> s) HD_FLATTEN {
        O* o = po + off[0];
        const A* x = pa + off[1];
        const B* y = pb + off[2];
        if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
          for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
        } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {
          const B yv = y[0];
          for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
        } else if (s[0] == 1 && s[1] == 0 && s[2] == 1) {
          const A xv = x[0];
          for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
        } else if (s[0] == 1) {
          // An input read across its layout (an NCHW gradient added to an NHWC one): its values
          // are first copied as they are into a small contiguous block, so the map itself runs
          // on vectors (vector gathers, what GCC would emit instead, are slower than scalar).
          constexpr int64_t kBlock = 256;
          A xb[kBlock];
          B yb[kBlock];
          for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
            const int64_t m = std::min(kBlock, n - i0);
            const A* xs = x + i0 * s[1];
            const B* ys = y + i0 * s[2];
            if (s[1] != 1) {
              for (int64_t i = 0; i < m; ++i) xb[i] = xs[i * s[1]];
              xs = xb;
            }
            if (s[2] != 1) {
              for (int64_t i = 0; i < m; ++i) yb[i] = ys[i * s[2]];
              ys = yb;
            }
            for (int64_t i = 0; i < m; ++i) o[i0 + i] = f(xs[i], ys[i]);
          }
        } else {
          for (int64_t i = 0; i < n; ++i) o[i * s[0]] = f(x[i * s[1]], y[i * s[2]]);
        }
      });
}

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;

template <class C>
C gelu_erf(C x) {
  return C(0.5) * x * (C(1) + verf(x * C(kInvSqrt2)));
}
template <class C>
C gelu_tanh(C x) {
  return C(0.5) * x * (C(1) + vtanh(C(kSqrt2OverPi) * (x + C(0.044715) * x * x * x)));
}

// Runs the unary op `op` for storage type T (compute type C). Float-only ops are rejected for
// integer types by the frontend; here they are simply not instantiated.
template <class T>
void unary_typed(UnaryOp op, const Tensor& x, Tensor& out, UnaryParams p) {
  using Tr = ElementTraits<T>;
  using C = typename Tr::compute;
  auto apply = [&](auto f) { map1<T, T>(x, out, [f](T v) { return Tr::store(f(Tr::load(v))); }); };
  auto compare = [&](auto f) { map1<bool, T>(x, out, [f](T v) { return f(Tr::load(v)); }); };
  const C a = C(p.a), b = C(p.b);
  switch (op) {
    case UnaryOp::neg:
      return apply([](C v) { return C(-v); });
    case UnaryOp::abs:
      return apply([](C v) { return v < C(0) ? C(-v) : v; });
    case UnaryOp::sign:
      return apply([](C v) { return C((v > C(0)) - (v < C(0))); });
    case UnaryOp::square:
      return apply([](C v) { return C(v * v); });
    case UnaryOp::add_scalar:
      return apply([a](C v) { return C(v + a); });
    case UnaryOp::mul_scalar:
      return apply([a](C v) { return C(v * a); });
    case UnaryOp::rsub_scalar:
      return apply([a](C v) { return C(a - v); });
    case UnaryOp::clamp:
      return apply([a, b](C v) { return v < a ? a : (v > b ? b : v); });
    case UnaryOp::eq_scalar:
      return compare([a](C v) { return v == a; });
    case UnaryOp::ne_scalar:
      return compare([a](C v) { return v != a; });
    case UnaryOp::lt_scalar:
      return compare([a](C v) { return v < a; });
    case UnaryOp::le_scalar:
      return compare([a](C v) { return v <= a; });
    case UnaryOp::gt_scalar:
      return compare([a](C v) { return v > a; });
    case UnaryOp::ge_scalar:
      return compare([a](C v) { return v >= a; });
    case UnaryOp::logical_not:
      return compare([](C v) { return v == C(0); });
    default:
      break;
  }
  if constexpr (std::is_floating_point_v<C>) {
    switch (op) {
      case UnaryOp::exp:
        return apply([](C v) { return vexp(v); });
      case UnaryOp::log:
        return apply([](C v) { return std::log(v); });
      case UnaryOp::sqrt:
        return apply([](C v) { return std::sqrt(v); });
      case UnaryOp::rsqrt:
        return apply([](C v) { return C(1) / std::sqrt(v); });
      case UnaryOp::tanh:
        return apply([](C v) { return std::tanh(v); });
      case UnaryOp::sigmoid:
        return apply([](C v) { return vsigmoid(v); });
      case UnaryOp::relu:
        return apply([](C v) { return v > C(0) ? v : C(0); });
      case UnaryOp::gelu_erf:
        return apply([](C v) { return gelu_erf(v); });
      case UnaryOp::gelu_tanh:
        return apply([](C v) { return gelu_tanh(v); });
      case UnaryOp::silu:
        return apply([](C v) { return v * vsigmoid(v); });
      case UnaryOp::softplus:  // log(1 + e^x), stable for large |x|
        return apply([](C v) { return (v > C(0) ? v : C(0)) + std::log1p(vexp(-std::abs(v))); });
      case UnaryOp::log1p:
        return apply([](C v) { return std::log1p(v); });
      case UnaryOp::reciprocal:
        return apply([](C v) { return C(1) / v; });
      case UnaryOp::sin:
        return apply([](C v) { return std::sin(v); });
      case UnaryOp::cos:
        return apply([](C v) { return std::cos(v); });
      case UnaryOp::pow_scalar:
        if (a == C(2)) return apply([](C v) { return v * v; });
        if (a == C(0.5)) return apply([](C v) { return std::sqrt(v); });
        return apply([a](C v) { return std::pow(v, a); });
      default:
        break;
    }
  }
  throw Error(detail::concat("unary op ", int(op), ": not supported for dtype ",
                             dtype_name(dtype_of<T>())));
}

template <class T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  using Tr = ElementTraits<T>;
  using C = typename Tr::compute;
  auto apply = [&](auto f) {
    map2<T, T, T>(a, b, out, [f](T x, T y) { return Tr::store(f(Tr::load(x), Tr::load(y))); });
  };
  auto compare = [&](auto f) {
    map2<bool, T, T>(a, b, out, [f](T x, T y) { return f(Tr::load(x), Tr::load(y)); });
  };
  switch (op) {
    case BinaryOp::add:
      return apply([](C x, C y) { return C(x + y); });
    case BinaryOp::sub:
      return apply([](C x, C y) { return C(x - y); });
    case BinaryOp::mul:
      return apply([](C x, C y) { return C(x * y); });
    case BinaryOp::div:
      return apply([](C x, C y) { return C(x / y); });
    case BinaryOp::maximum:
      return apply([](C x, C y) { return x != x ? x : (x > y ? x : y); });
    case BinaryOp::minimum:
      return apply([](C x, C y) { return x != x ? x : (x < y ? x : y); });
    case BinaryOp::eq:
      return compare([](C x, C y) { return x == y; });
    case BinaryOp::ne:
      return compare([](C x, C y) { return x != y; });
    case BinaryOp::lt:
      return compare([](C x, C y) { return x < y; });
    case BinaryOp::le:
      return compare([](C x, C y) { return x <= y; });
    case BinaryOp::gt:
      return compare([](C x, C y) { return x > y; });
    case BinaryOp::ge:
      return compare([](C x, C y) { return x >= y; });
    case BinaryOp::logical_and:
      return compare([](C x, C y) { return x != C(0) && y != C(0); });
    case BinaryOp::logical_or:
      return compare([](C x, C y) { return x != C(0) || y != C(0); });
    default:
      break;
  }
  if constexpr (std::is_floating_point_v<C>) {
    switch (op) {
      case BinaryOp::pow:
        return apply([](C x, C y) { return std::pow(x, y); });
      case BinaryOp::relu_backward:
        return apply([](C g, C x) { return x > C(0) ? g : C(0); });
      case BinaryOp::gelu_erf_backward:
        return apply([](C g, C x) {
          C cdf = C(0.5) * (C(1) + verf(x * C(kInvSqrt2)));
          C pdf = C(kInvSqrt2Pi) * vexp(C(-0.5) * x * x);
          return g * (cdf + x * pdf);
        });
      case BinaryOp::gelu_tanh_backward:
        return apply([](C g, C x) {
          C inner = C(kSqrt2OverPi) * (x + C(0.044715) * x * x * x);
          C t = vtanh(inner);
          C dinner = C(kSqrt2OverPi) * (C(1) + C(3 * 0.044715) * x * x);
          return g * (C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * dinner);
        });
      case BinaryOp::silu_backward:
        return apply([](C g, C x) {
          C s = vsigmoid(x);
          return g * s * (C(1) + x * (C(1) - s));
        });
      case BinaryOp::sigmoid_backward:
        return apply([](C g, C y) { return g * y * (C(1) - y); });
      case BinaryOp::tanh_backward:
        return apply([](C g, C y) { return g * (C(1) - y * y); });
      case BinaryOp::softplus_backward:
        return apply([](C g, C x) { return g * vsigmoid(x); });
      default:
        break;
    }
  }
  throw Error(detail::concat("binary op ", int(op), ": not supported for dtype ",
                             dtype_name(dtype_of<T>())));
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, Tensor& out, UnaryParams p) {
  visit_dtype(x.dtype(), "unary", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      HD_CHECK(op == UnaryOp::logical_not, "unary op ", int(op), ": not supported for bool");
      map1<bool, bool>(x, out, [](bool v) { return !v; });
    } else {
      unary_typed<T>(op, x, out, p);
    }
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  visit_dtype(a.dtype(), "binary", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      switch (op) {
        case BinaryOp::logical_and:
          return map2<bool, bool, bool>(a, b, out, std::logical_and<>());
        case BinaryOp::logical_or:
          return map2<bool, bool, bool>(a, b, out, std::logical_or<>());
        case BinaryOp::eq:
          return map2<bool, bool, bool>(a, b, out, std::equal_to<>());
        case BinaryOp::ne:
          return map2<bool, bool, bool>(a, b, out, std::not_equal_to<>());
        default:
          throw Error(detail::concat("binary op ", int(op), ": not supported for bool"));
      }
    } else {
      binary_typed<T>(op, a, b, out);
    }
  });
}

namespace {
// A strided copy: rows of unit stride in both go to unit_row(o, a, n) (a byte copy, a vector
// rounding), other rows convert element by element.
template <class O, class I, class UnitRow, class Element>
void copy_rows(const Tensor& src, Tensor& dst, UnitRow unit_row, Element element) {
  O* po = static_cast<O*>(dst.raw_data());
  const I* ps = static_cast<const I*>(src.raw_data());
  for_each_row<2>(dst.shape(), {dst.strides(), broadcast_strides(src, dst.shape())},
                  [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> s) {
                    O* o = po + off[0];
                    const I* a = ps + off[1];
                    if (s[0] == 1 && s[1] == 1) {
                      unit_row(o, a, n);
                    } else {
                      for (int64_t i = 0; i < n; ++i) o[i * s[0]] = element(a[i * s[1]]);
                    }
                  });
}
}  // namespace

void copy(const Tensor& src, Tensor& dst) {
  visit_dtype(dst.dtype(), "copy", [&]<class O>() {
    visit_dtype(src.dtype(), "copy", [&]<class I>() {
      using TrO = ElementTraits<O>;
      using TrI = ElementTraits<I>;
      if constexpr (std::is_same_v<O, I>) {
        // Rows of unit stride are byte copies, also the short rows of a patch gather.
        copy_rows<O, I>(
            src, dst, [](O* o, const I* a, int64_t n) { copy_bytes(o, a, size_t(n) * sizeof(O)); },
            [](I v) { return v; });
        return;
      }
      if constexpr (std::is_same_v<O, bf16_t> && std::is_same_v<I, float>) {
        if (src.is_contiguous() && dst.is_contiguous() && src.shape() == dst.shape()) {
          // The f32 -> bf16 rounding of a whole tensor (a bf16 step's casts): one instruction
          // per 16 values where the CPU has one (ops/cpu/isa.h).
          const float* ps = src.data<float>();
          bf16_t* pd = dst.data<bf16_t>();
          parallel_for(0, src.numel(), 16384,
                       [&](int64_t b, int64_t e) { round_to_bf16(ps + b, pd + b, e - b); });
          return;
        }
        // Strided: rows of unit stride round the same way, however short (the gather of a
        // patch convolution from an f32 image, ops/conv.cpp).
        copy_rows<O, I>(
            src, dst, [](O* o, const I* a, int64_t n) { round_to_bf16(a, o, n); },
            [](I v) { return float_to_bf16(v); });
        return;
      }
      if constexpr (!std::is_same_v<O, I>) {
        map1<O, I>(src, dst, [](I v) {
          return TrO::store(static_cast<typename TrO::compute>(TrI::load(v)));
        });
      }
    });
  });
}

void fill(Tensor& dst, double value) {
  visit_dtype(dst.dtype(), "fill", [&]<class T>() {
    using Tr = ElementTraits<T>;
    const T v = Tr::store(static_cast<typename Tr::compute>(value));
    T* p = static_cast<T*>(dst.raw_data());
    // Unit-stride rows (every zeros() and full()) as one memset or fill_n: the strided loop
    // stored one element at a time (a zero bf16 gradient of PS3's [72900, 64] position table
    // took ~1 ms per step).
    const bool zero_bits = [&] {
      unsigned char bytes[sizeof(T)];
      std::memcpy(bytes, &v, sizeof(T));
      for (unsigned char b : bytes)
        if (b != 0) return false;
      return true;
    }();
    for_each_row<1>(dst.shape(), {dst.strides()},
                    [&](std::array<int64_t, 1> off, int64_t n, std::array<int64_t, 1> s) {
                      if (s[0] != 1) {
                        for (int64_t i = 0; i < n; ++i) p[off[0] + i * s[0]] = v;
                      } else if (zero_bits) {
                        std::memset(p + off[0], 0, size_t(n) * sizeof(T));
                      } else {
                        std::fill_n(p + off[0], n, v);
                      }
                    });
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  visit_dtype(out.dtype(), "where", [&]<class T>() {
    T* po = static_cast<T*>(out.raw_data());
    const bool* pc = static_cast<const bool*>(cond.raw_data());
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    const Shape& shape = out.shape();
    for_each_row<4>(shape,
                    {out.strides(), broadcast_strides(cond, shape), broadcast_strides(a, shape),
                     broadcast_strides(b, shape)},
                    [&](std::array<int64_t, 4> off, int64_t n, std::array<int64_t, 4> s) {
                      for (int64_t i = 0; i < n; ++i)
                        po[off[0] + i * s[0]] =
                            pc[off[1] + i * s[1]] ? pa[off[2] + i * s[2]] : pb[off[3] + i * s[3]];
                    });
  });
}

}  // namespace hd::cpu
