// Element types. Compute kernels work in f32/f64; bf16/f16 are storage formats that kernels
// convert to f32 on load and round back on store (round-to-nearest-even), as GPUs do.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "autograd/error.h"

namespace hd {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, boolean };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}
inline bool is_integral(DType t) {
  return t == DType::i32 || t == DType::i64 || t == DType::boolean;
}

// Storage wrappers for the 16-bit float formats: distinct types so templates can dispatch.
struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

inline float bf16_to_float(bf16_t v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bf16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{uint16_t(u >> 16)};
}
float f16_to_float(f16_t v);
f16_t float_to_f16(float f);

// Conversions used by every kernel's load/store: T -> compute type and back.
template <class T>
struct ElementTraits {
  using compute = T;
  static compute load(T v) { return v; }
  static T store(compute v) { return v; }
};
template <>
struct ElementTraits<bf16_t> {
  using compute = float;
  static float load(bf16_t v) { return bf16_to_float(v); }
  static bf16_t store(float v) { return float_to_bf16(v); }
};
template <>
struct ElementTraits<f16_t> {
  using compute = float;
  static float load(f16_t v) { return f16_to_float(v); }
  static f16_t store(float v) { return float_to_f16(v); }
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
template <>
constexpr DType dtype_of<bf16_t>() {
  return DType::bf16;
}
template <>
constexpr DType dtype_of<f16_t>() {
  return DType::f16;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
constexpr DType dtype_of<bool>() {
  return DType::boolean;
}

// visit_dtype(t, op_name, fn): calls fn.template operator()<T>() with T the C++ type of t.
template <class F>
decltype(auto) visit_dtype(DType t, const char* op, F&& fn) {
  switch (t) {
    case DType::f32:
      return fn.template operator()<float>();
    case DType::f64:
      return fn.template operator()<double>();
    case DType::bf16:
      return fn.template operator()<bf16_t>();
    case DType::f16:
      return fn.template operator()<f16_t>();
    case DType::i32:
      return fn.template operator()<int32_t>();
    case DType::i64:
      return fn.template operator()<int64_t>();
    case DType::boolean:
      return fn.template operator()<bool>();
  }
  throw Error(detail::concat(op, ": unknown dtype"));
}

// visit_float(t, op, fn): as visit_dtype but only for f32/f64 (the compute kernels); other
// dtypes throw naming the op, so callers convert first.
template <class F>
decltype(auto) visit_float(DType t, const char* op, F&& fn) {
  switch (t) {
    case DType::f32:
      return fn.template operator()<float>();
    case DType::f64:
      return fn.template operator()<double>();
    default:
      throw Error(detail::concat(op, ": expected a f32 or f64 tensor, got ", dtype_name(t)));
  }
}

// visit_floating_storage(t, op, fn): the floating storage types (f32, f64, bf16, f16), for kernels
// that read 16-bit storage in place and compute in ElementTraits<T>::compute; others throw naming
// the op.
template <class F>
decltype(auto) visit_floating_storage(DType t, const char* op, F&& fn) {
  switch (t) {
    case DType::f32:
      return fn.template operator()<float>();
    case DType::f64:
      return fn.template operator()<double>();
    case DType::bf16:
      return fn.template operator()<bf16_t>();
    case DType::f16:
      return fn.template operator()<f16_t>();
    default:
      throw Error(detail::concat(op, ": expected a floating-point tensor, got ", dtype_name(t)));
  }
}

}  // namespace hd
