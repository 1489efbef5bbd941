// Shared pieces of the CUDA kernels: device-side load/store of every dtype (bf16/f16 are
// storage formats computed in f32, as on the CPU), strided geometry for up to 4 operands, the
// launch configuration and the post-launch check.
//
// Why a geometry struct instead of one kernel per layout: every elementwise op (copy, cast,
// unary, binary, where, fill) goes through one grid-stride loop over the output's elements,
// with each operand's element offset computed from the coalesced shape and its strides (0 on
// broadcast dims). Dims that are contiguous for every operand are merged first, so the common
// case (contiguous tensors) is a 1-D loop with no index division.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "autograd/dtype.h"
#include "autograd/tensor.h"
#include "ops/cuda/runtime.h"

namespace hd::cuda {

// --- element load/store -------------------------------------------------------------------

template <class T>
struct Elem {
  using compute = T;
  __device__ static T load(T v) { return v; }
  __device__ static T store(T v) { return v; }
};
template <>
struct Elem<bf16_t> {
  using compute = float;
  __device__ static float load(bf16_t v) { return __uint_as_float(uint32_t(v.bits) << 16); }
  // Round to nearest even, NaN kept quiet: bit-identical to hd::float_to_bf16 on the host.
  __device__ static bf16_t store(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return bf16_t{uint16_t(u >> 16)};
  }
};
template <>
struct Elem<f16_t> {
  using compute = float;
  __device__ static float load(f16_t v) { return __half2float(__ushort_as_half(v.bits)); }
  __device__ static f16_t store(float f) { return f16_t{__half_as_ushort(__float2half_rn(f))}; }
};

// Math in the compute type: one overload per precision, so one template serves f32 (expf, ...)
// and f64 (exp, ...).
#define HD_MATH1(name, f32, f64)            \
  __device__ inline float name(float v) {   \
    return f32(v);                          \
  }                                         \
  __device__ inline double name(double v) { \
    return f64(v);                          \
  }
HD_MATH1(m_exp, expf, exp)
HD_MATH1(m_log, logf, log)
HD_MATH1(m_sqrt, sqrtf, sqrt)
HD_MATH1(m_tanh, tanhf, tanh)
HD_MATH1(m_erf, erff, erf)
HD_MATH1(m_log1p, log1pf, log1p)
HD_MATH1(m_sin, sinf, sin)
HD_MATH1(m_cos, cosf, cos)
HD_MATH1(m_fabs, fabsf, fabs)
#undef HD_MATH1

// --- geometry -----------------------------------------------------------------------------

constexpr int kMaxDims = 8;

template <int N>
struct Geometry {
  int ndim = 0;  // 0 = a single element
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
};

// Strides of `t` seen from `shape` (right-aligned; size-1 or missing dims get stride 0).
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape s(shape.size(), 0);
  size_t lead = shape.size() - t.shape().size();
  for (size_t d = 0; d < t.shape().size(); ++d) {
    if (t.shape()[d] != 1) s[lead + d] = t.strides()[d];
  }
  return s;
}

// Drops size-1 dims and merges neighbours that are contiguous for every operand.
template <int N>
Geometry<N> make_geometry(const Shape& shape, const std::array<Shape, N>& strides, const char* op) {
  Geometry<N> g;
  int64_t sizes[64];
  int64_t st[N][64];
  int nd = 0;
  HD_CHECK(shape.size() <= 64, op, ": too many dims: ", shape);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    sizes[nd] = shape[d];
    for (int k = 0; k < N; ++k) st[k][nd] = strides[size_t(k)][d];
    ++nd;
  }
  // Merge dim d-1 into d (scanning from the innermost) when every operand allows it.
  int out = 0;
  int64_t msizes[64];
  int64_t mst[N][64];
  for (int d = 0; d < nd; ++d) {
    bool merge = out > 0;
    for (int k = 0; merge && k < N; ++k) merge = mst[k][out - 1] == st[k][d] * sizes[d];
    if (merge) {
      msizes[out - 1] *= sizes[d];
      for (int k = 0; k < N; ++k) mst[k][out - 1] = st[k][d];
    } else {
      msizes[out] = sizes[d];
      for (int k = 0; k < N; ++k) mst[k][out] = st[k][d];
      ++out;
    }
  }
  HD_CHECK(out <= kMaxDims, op, ": CUDA elementwise kernels take at most ", kMaxDims,
           " non-mergeable dims, got shape ", shape);
  g.ndim = out;
  for (int d = 0; d < out; ++d) {
    g.sizes[d] = msizes[d];
    for (int k = 0; k < N; ++k) g.strides[k][d] = mst[k][d];
  }
  return g;
}

// Element offsets (in elements) of linear output index i for every operand.
template <int N>
__device__ inline void offsets(const Geometry<N>& g, int64_t i, int64_t (&off)[N]) {
  for (int k = 0; k < N; ++k) off[k] = 0;
  if (g.ndim == 1) {
    for (int k = 0; k < N; ++k) off[k] = i * g.strides[k][0];
    return;
  }
  for (int d = g.ndim - 1; d >= 0; --d) {
    int64_t idx = i % g.sizes[d];
    i /= g.sizes[d];
    for (int k = 0; k < N; ++k) off[k] += idx * g.strides[k][d];
  }
}

// F::operator()(const int64_t (&off)[N]) is called once per element.
template <int N, class F>
__global__ void strided_kernel(int64_t n, Geometry<N> g, F f) {
  int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[N];
    offsets(g, i, off);
    f(off);
  }
}

// --- launching ----------------------------------------------------------------------------

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  return unsigned(blocks < 1 ? 1
                             : (blocks > (1 << 20) ? (1 << 20) : blocks));  // grid-stride beyond
}

inline cudaStream_t stream_of(const Tensor& t) {
  return current_stream(t.device().index).handle();
}

// Checks the launch that was just enqueued (bad config, missing kernel image for this arch).
inline void check_launch(const char* op, const Tensor& t) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_cuda_error(e, "kernel launch", detail::concat(op, " on ", t.str()));
}

template <int N, class F>
void launch_strided(const char* op, const Tensor& out, const Geometry<N>& g, int64_t n, F f) {
  if (n == 0) return;
  DeviceGuard guard(out.device().index);
  strided_kernel<N, F><<<grid_for(n), kThreads, 0, stream_of(out)>>>(n, g, f);
  check_launch(op, out);
}

// visit over the floating dtypes (bf16/f16 computed in f32); others throw naming the op.
template <class F>
decltype(auto) visit_floating(DType t, const char* op, F&& fn) {
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

// Block-wide sum / max over blockDim.x (a power of two <= kThreads) values; every thread gets
// the result. buf has kThreads slots; the trailing sync lets the caller reuse it at once.
template <class A>
__device__ A block_sum(A v, A* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  A r = buf[0];
  __syncthreads();
  return r;
}
template <class A>
__device__ A block_max(A v, A* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) {
      A o = buf[threadIdx.x + s];
      buf[threadIdx.x] = (buf[threadIdx.x] < o || o != o) ? o : buf[threadIdx.x];  // NaN wins
    }
    __syncthreads();
  }
  A r = buf[0];
  __syncthreads();
  return r;
}

}  // namespace hd::cuda
