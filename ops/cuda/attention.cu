// Fused scaled-dot-product attention on CUDA: forward with an online softmax, backward in two
// passes (dQ; then dK and dV), the contract of ops/cpu/attention.h (prefix keys always visible,
// causal on own keys j <= i, masked keys ignored, a query with no visible key gets zeros, lse
// +inf and zero gradients). f32, f64, and bf16/f16 stored but computed in f32.
//
// Why fused: PS3's high-res stage has 2560 queries over 729 + 2560 keys in 16 heads; the
// composed path (cuBLAS QK^T, softmax, PV) materialises that [Nq, Nk] score matrix (539 MB in
// f32 per image) and reads it three times. Here scores live only in registers, one tile of 32
// keys at a time, so memory is O(N) and the only global traffic is Q, K, V, O once per pass.
//
// Layout of the work (simple on purpose, a readable reference the tests check against the CPU):
//   - a block = kRows warps = kRows rows (query rows in the forward and dQ passes, key rows in
//     the dK/dV pass) of one (batch, head); the other operand is streamed through shared memory
//     in tiles of kTile rows, shared by the block's warps;
//   - inside a warp, lane L owns key (or query) L of the tile for the scores, then the warp
//     accumulates its output row with lane L owning dims L, L + 32, ... (NL of them);
//   - every output row is written by one warp in a fixed order: no atomics, so results are
//     deterministic run to run.
// It uses CUDA cores, not tensor cores: a tensor-core (mma) version is the next step for speed
// (docs/cuda.md); this one is the memory-safe, checked baseline.
#include <algorithm>

#include "ops/cpu/attention.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";
constexpr int kWarp = 32;
constexpr int kRows = 8;   // warps (rows) per block
constexpr int kTile = 32;  // streamed rows per tile: one per lane
constexpr int kMaxHeadDim = 256;
constexpr unsigned kFull = 0xffffffffu;

// std::min/max are host functions without --expt-relaxed-constexpr; these work on both sides.
template <class X>
__host__ __device__ inline X min_of(X a, X b) {
  return b < a ? b : a;
}
template <class X>
__host__ __device__ inline X max_of(X a, X b) {
  return a < b ? b : a;
}

template <class A>
__device__ A warp_sum(A v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
template <class A>
__device__ A warp_max(A v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const A w = __shfl_xor_sync(kFull, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// A [B, H, N, D] operand with a unit last stride (strides in elements).
template <class T>
struct Operand {
  const T* data = nullptr;
  int64_t sb = 0, sh = 0, sn = 0;
  __device__ const T* row(int b, int h, int64_t n) const { return data + b * sb + h * sh + n * sn; }
};

template <class T>
Operand<T> operand(const Tensor& t) {
  if (!t.defined()) return {};
  return {static_cast<const T*>(t.raw_data()), t.stride(0), t.stride(1), t.stride(2)};
}

template <class T>
struct Params {
  using A = typename Elem<T>::compute;
  Operand<T> q, k, v, pk, pv;  // pk/pv unused when Np == 0
  const bool* mask = nullptr;  // [B, Np + Nk] or null
  int B = 0, H = 0, Dh = 0, Dv = 0;
  int64_t Nq = 0, Nk = 0, Np = 0;
  A scale = 1;
  bool causal = false;

  __device__ int64_t Nt() const { return Np + Nk; }
  // Key j of [prefix ; own].
  __device__ const T* key(int b, int h, int64_t j) const {
    return j < Np ? pk.row(b, h, j) : k.row(b, h, j - Np);
  }
  __device__ const T* value(int b, int h, int64_t j) const {
    return j < Np ? pv.row(b, h, j) : v.row(b, h, j - Np);
  }
  __device__ bool visible(int b, int64_t i, int64_t j) const {
    if (mask && !mask[int64_t(b) * Nt() + j]) return false;
    return !causal || j < Np || j - Np <= i;
  }
};

// Stages rows [r0, r0 + kTile) of a row source into shared memory (ld = D + 1 so lane L reading
// row L, dim d hits bank (L (D + 1) + d) mod 32: conflict-free for even D); rows past `n` are 0.
template <class T, class A, class RowFn>
__device__ void stage_tile(A* dst, int D, int64_t r0, int64_t n, RowFn row) {
  const int ld = D + 1;
  for (int idx = threadIdx.x; idx < kTile * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    dst[r * ld + d] = r0 + r < n ? A(Elem<T>::load(row(r0 + r)[d])) : A(0);
  }
}

template <class A>
__device__ A dot(const A* x, const A* y, int D) {
  A s = 0;
  for (int d = 0; d < D; ++d) s += x[d] * y[d];
  return s;
}

// ---- forward ----------------------------------------------------------------------------------

// grid (B H, ceil(Nq / kRows)); out contiguous [B, H, Nq, Dv]; lse [B, H, Nq] in A.
template <class T, int NL>
__global__ void forward_kernel(Params<T> p, T* out, typename Elem<T>::compute* lse) {
  using A = typename Elem<T>::compute;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* Ks = reinterpret_cast<A*>(smem_raw);  // [kTile][Dh + 1]
  A* Vs = Ks + kTile * (p.Dh + 1);         // [kTile][Dv + 1]
  A* Qs = Vs + kTile * (p.Dv + 1);         // [kRows][Dh]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int b = blockIdx.x / p.H, h = blockIdx.x % p.H;
  const int64_t i0 = int64_t(blockIdx.y) * kRows, i = i0 + warp;
  const bool active = i < p.Nq;
  A* q = Qs + warp * p.Dh;
  if (active)
    for (int d = lane; d < p.Dh; d += kWarp) q[d] = Elem<T>::load(p.q.row(b, h, i)[d]);
  const int64_t Nt = p.Nt();
  // Causal: own keys past the block's last query are invisible to all of its warps.
  const int64_t end = p.causal ? min_of(Nt, p.Np + min_of(i0 + kRows, p.Nq)) : Nt;
  A m = A(-INFINITY), l = 0, acc[NL];
  for (int t = 0; t < NL; ++t) acc[t] = 0;
  for (int64_t t0 = 0; t0 < end; t0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and q is written before first use)
    stage_tile<T>(Ks, p.Dh, t0, Nt, [&](int64_t j) { return p.key(b, h, j); });
    stage_tile<T>(Vs, p.Dv, t0, Nt, [&](int64_t j) { return p.value(b, h, j); });
    __syncthreads();
    if (!active) continue;
    const int64_t j = t0 + lane;
    const bool vis = j < Nt && p.visible(b, i, j);
    const A s = vis ? dot(q, Ks + lane * (p.Dh + 1), p.Dh) * p.scale : A(-INFINITY);
    const A m_new = max_of(m, warp_max(s));
    if (m_new == A(-INFINITY)) continue;  // nothing visible yet
    const A pj = vis ? m_exp(s - m_new) : A(0);
    const A corr = m_exp(m - m_new);  // 0 while m is -inf
    l = l * corr + warp_sum(pj);
    for (int t = 0; t < NL; ++t) acc[t] *= corr;
    const int n_here = int(min_of<int64_t>(kTile, Nt - t0));
    for (int jj = 0; jj < n_here; ++jj) {
      const A w = __shfl_sync(kFull, pj, jj);
      if (w == A(0)) continue;  // warp-uniform: w is the same on every lane
      const A* vr = Vs + jj * (p.Dv + 1);
      for (int t = 0; t < NL; ++t) {
        const int d = lane + t * kWarp;
        if (d < p.Dv) acc[t] += w * vr[d];
      }
    }
    m = m_new;
  }
  if (!active) return;
  const int64_t row = (int64_t(b) * p.H + h) * p.Nq + i;
  const A inv = l > A(0) ? A(1) / l : A(0);  // no visible key: zeros
  for (int t = 0; t < NL; ++t) {
    const int d = lane + t * kWarp;
    if (d < p.Dv) out[row * p.Dv + d] = Elem<T>::store(acc[t] * inv);
  }
  if (lane == 0) lse[row] = l > A(0) ? m + m_log(l) : A(INFINITY);
}

// ---- backward ---------------------------------------------------------------------------------

// delta[row] = sum_d dO[row, d] O[row, d] (FlashAttention-2's D): one warp per row.
template <class T>
__global__ void delta_kernel(Params<T> p, Operand<T> grad_out, const T* out,
                             typename Elem<T>::compute* delta) {
  using A = typename Elem<T>::compute;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kRows + threadIdx.x / kWarp;
  if (row >= int64_t(p.B) * p.H * p.Nq) return;
  const int64_t i = row % p.Nq, bh = row / p.Nq;
  const int b = int(bh / p.H), h = int(bh % p.H);
  const T* g = grad_out.row(b, h, i);
  A s = 0;
  for (int d = lane; d < p.Dv; d += kWarp)
    s += A(Elem<T>::load(g[d])) * A(Elem<T>::load(out[row * p.Dv + d]));
  s = warp_sum(s);
  if (lane == 0) delta[row] = s;
}

// dQ_i = scale sum_j P_ij (dO_i . V_j - D_i) K_j. grid (B H, ceil(Nq / kRows)).
template <class T, int NL>
__global__ void dq_kernel(Params<T> p, Operand<T> grad_out, const typename Elem<T>::compute* lse,
                          const typename Elem<T>::compute* delta, T* dq) {
  using A = typename Elem<T>::compute;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* Ks = reinterpret_cast<A*>(smem_raw);  // [kTile][Dh + 1]
  A* Vs = Ks + kTile * (p.Dh + 1);         // [kTile][Dv + 1]
  A* Qs = Vs + kTile * (p.Dv + 1);         // [kRows][Dh]
  A* Gs = Qs + kRows * p.Dh;               // [kRows][Dv]: dO rows
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int b = blockIdx.x / p.H, h = blockIdx.x % p.H;
  const int64_t i0 = int64_t(blockIdx.y) * kRows, i = i0 + warp;
  const bool active = i < p.Nq;
  const int64_t row = (int64_t(b) * p.H + h) * p.Nq + i;
  A* q = Qs + warp * p.Dh;
  A* g = Gs + warp * p.Dv;
  A lse_i = 0, delta_i = 0;
  if (active) {
    for (int d = lane; d < p.Dh; d += kWarp) q[d] = Elem<T>::load(p.q.row(b, h, i)[d]);
    for (int d = lane; d < p.Dv; d += kWarp) g[d] = Elem<T>::load(grad_out.row(b, h, i)[d]);
    lse_i = lse[row];
    delta_i = delta[row];
  }
  const int64_t Nt = p.Nt();
  const int64_t end = p.causal ? min_of(Nt, p.Np + min_of(i0 + kRows, p.Nq)) : Nt;
  A acc[NL];
  for (int t = 0; t < NL; ++t) acc[t] = 0;
  for (int64_t t0 = 0; t0 < end; t0 += kTile) {
    __syncthreads();
    stage_tile<T>(Ks, p.Dh, t0, Nt, [&](int64_t j) { return p.key(b, h, j); });
    stage_tile<T>(Vs, p.Dv, t0, Nt, [&](int64_t j) { return p.value(b, h, j); });
    __syncthreads();
    if (!active) continue;
    const int64_t j = t0 + lane;
    A ds = 0;
    if (j < Nt && p.visible(b, i, j)) {
      const A s = dot(q, Ks + lane * (p.Dh + 1), p.Dh) * p.scale;
      const A pj = m_exp(s - lse_i);
      ds = pj * (dot(g, Vs + lane * (p.Dv + 1), p.Dv) - delta_i);
    }
    const int n_here = int(min_of<int64_t>(kTile, Nt - t0));
    for (int jj = 0; jj < n_here; ++jj) {
      const A w = __shfl_sync(kFull, ds, jj);
      if (w == A(0)) continue;
      const A* kr = Ks + jj * (p.Dh + 1);
      for (int t = 0; t < NL; ++t) {
        const int d = lane + t * kWarp;
        if (d < p.Dh) acc[t] += w * kr[d];
      }
    }
  }
  if (!active) return;
  for (int t = 0; t < NL; ++t) {
    const int d = lane + t * kWarp;
    if (d < p.Dh) dq[row * p.Dh + d] = Elem<T>::store(acc[t] * p.scale);
  }
}

// dV_j = sum_i P_ij dO_i and dK_j = scale sum_i P_ij (dO_i . V_j - D_i) Q_i, one warp per key
// row j of [prefix ; own]; the queries stream through shared memory. grid (B H, ceil(Nt/kRows)).
template <class T, int NL>
__global__ void dkv_kernel(Params<T> p, Operand<T> grad_out, const typename Elem<T>::compute* lse,
                           const typename Elem<T>::compute* delta, T* dk, T* dv, T* dpk, T* dpv) {
  using A = typename Elem<T>::compute;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* Qs = reinterpret_cast<A*>(smem_raw);  // [kTile][Dh + 1]
  A* Gs = Qs + kTile * (p.Dh + 1);         // [kTile][Dv + 1]: dO rows
  A* Ls = Gs + kTile * (p.Dv + 1);         // [kTile]: lse of the tile's queries
  A* Ds = Ls + kTile;                      // [kTile]: delta
  A* Kw = Ds + kTile;                      // [kRows][Dh]
  A* Vw = Kw + kRows * p.Dh;               // [kRows][Dv]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int b = blockIdx.x / p.H, h = blockIdx.x % p.H;
  const int64_t Nt = p.Nt();
  const int64_t j0 = int64_t(blockIdx.y) * kRows, j = j0 + warp;
  const bool active = j < Nt;
  A* kj = Kw + warp * p.Dh;
  A* vj = Vw + warp * p.Dv;
  if (active) {
    for (int d = lane; d < p.Dh; d += kWarp) kj[d] = Elem<T>::load(p.key(b, h, j)[d]);
    for (int d = lane; d < p.Dv; d += kWarp) vj[d] = Elem<T>::load(p.value(b, h, j)[d]);
  }
  const int64_t bh_row = (int64_t(b) * p.H + h) * p.Nq;
  // Causal: own key j is seen by queries i >= j - Np only; the block's first key bounds them all.
  const int64_t start = p.causal && j0 >= p.Np ? j0 - p.Np : 0;
  A acc_k[NL], acc_v[NL];
  for (int t = 0; t < NL; ++t) acc_k[t] = acc_v[t] = 0;
  for (int64_t t0 = start; t0 < p.Nq; t0 += kTile) {
    __syncthreads();
    stage_tile<T>(Qs, p.Dh, t0, p.Nq, [&](int64_t i) { return p.q.row(b, h, i); });
    stage_tile<T>(Gs, p.Dv, t0, p.Nq, [&](int64_t i) { return grad_out.row(b, h, i); });
    if (threadIdx.x < kTile) {
      const int64_t i = t0 + threadIdx.x;
      Ls[threadIdx.x] = i < p.Nq ? lse[bh_row + i] : A(INFINITY);
      Ds[threadIdx.x] = i < p.Nq ? delta[bh_row + i] : A(0);
    }
    __syncthreads();
    if (!active) continue;
    const int64_t i = t0 + lane;
    A pij = 0, ds = 0;
    if (i < p.Nq && p.visible(b, i, j)) {
      const A s = dot(Qs + lane * (p.Dh + 1), kj, p.Dh) * p.scale;
      pij = m_exp(s - Ls[lane]);
      ds = pij * (dot(Gs + lane * (p.Dv + 1), vj, p.Dv) - Ds[lane]);
    }
    const int n_here = int(min_of<int64_t>(kTile, p.Nq - t0));
    for (int ii = 0; ii < n_here; ++ii) {
      const A wp = __shfl_sync(kFull, pij, ii), wd = __shfl_sync(kFull, ds, ii);
      if (wp == A(0) && wd == A(0)) continue;
      const A* gr = Gs + ii * (p.Dv + 1);
      const A* qr = Qs + ii * (p.Dh + 1);
      for (int t = 0; t < NL; ++t) {
        const int d = lane + t * kWarp;
        if (d < p.Dv) acc_v[t] += wp * gr[d];
        if (d < p.Dh) acc_k[t] += wd * qr[d];
      }
    }
  }
  if (!active) return;
  const bool prefix = j < p.Np;
  const int64_t n_rows = prefix ? p.Np : p.Nk, r = prefix ? j : j - p.Np;
  const int64_t base = (int64_t(b) * p.H + h) * n_rows + r;
  T* out_k = prefix ? dpk : dk;
  T* out_v = prefix ? dpv : dv;
  for (int t = 0; t < NL; ++t) {
    const int d = lane + t * kWarp;
    if (d < p.Dh) out_k[base * p.Dh + d] = Elem<T>::store(acc_k[t] * p.scale);
    if (d < p.Dv) out_v[base * p.Dv + d] = Elem<T>::store(acc_v[t]);
  }
}

// ---- host side --------------------------------------------------------------------------------

void check_operand(const Tensor& t, const char* what) {
  if (!t.defined()) return;
  HD_CHECK(t.device().type == DeviceType::cuda, kOp, ": CUDA kernel got a ", t.device().str(),
           " tensor for ", what);
  HD_CHECK(t.dim() == 4 && (t.stride(3) == 1 || t.size(3) == 1), kOp, ": ", what,
           " needs a unit stride in the last dim, got ", t.str());
}

void check_contiguous(const Tensor& t, const char* what) {
  HD_CHECK(t.device().type == DeviceType::cuda && t.is_contiguous(), kOp, ": ", what,
           " must be a contiguous CUDA tensor, got ", t.str());
}

template <class T>
Params<T> make_params(const cpu::AttentionArgs& a) {
  Params<T> p;
  p.q = operand<T>(a.q);
  p.k = operand<T>(a.k);
  p.v = operand<T>(a.v);
  p.pk = operand<T>(a.prefix_k);
  p.pv = operand<T>(a.prefix_v);
  p.mask = a.key_mask.defined() ? static_cast<const bool*>(a.key_mask.raw_data()) : nullptr;
  p.B = int(a.q.size(0));
  p.H = int(a.q.size(1));
  p.Nq = a.q.size(2);
  p.Dh = int(a.q.size(3));
  p.Nk = a.k.size(2);
  p.Dv = int(a.v.size(3));
  p.Np = a.prefix_k.defined() ? a.prefix_k.size(2) : 0;
  p.scale = typename Params<T>::A(a.scale);
  p.causal = a.causal;
  return p;
}

void check_args(const cpu::AttentionArgs& a) {
  check_operand(a.q, "q");
  check_operand(a.k, "k");
  check_operand(a.v, "v");
  check_operand(a.prefix_k, "prefix_k");
  check_operand(a.prefix_v, "prefix_v");
  if (a.key_mask.defined()) check_contiguous(a.key_mask, "key_mask");
  const int64_t D = std::max(a.q.size(3), a.v.size(3));
  HD_CHECK(D <= kMaxHeadDim, kOp, ": the CUDA kernel takes head dims up to ", kMaxHeadDim,
           ", got q ", a.q.shape(), " v ", a.v.shape());
  HD_CHECK(a.q.size(0) * a.q.size(1) < (int64_t(1) << 31), kOp, ": batch x heads too large, q ",
           a.q.shape());
  // Rows go to grid.y (at most 65535 blocks of kRows rows).
  const int64_t keys = a.k.size(2) + (a.prefix_k.defined() ? a.prefix_k.size(2) : 0);
  HD_CHECK(std::max(a.q.size(2), keys) <= int64_t(65535) * kRows, kOp,
           ": the CUDA kernel takes up to ", int64_t(65535) * kRows, " queries and keys, got q ",
           a.q.shape(), " with ", keys, " keys");
}

// Lanes per row dim: the smallest of 1, 2, 4, 8 (x 32 dims) covering max(Dh, Dv).
template <class F>
void with_lanes(int64_t D, F&& f) {
  if (D <= 32) return f.template operator()<1>();
  if (D <= 64) return f.template operator()<2>();
  if (D <= 128) return f.template operator()<4>();
  return f.template operator()<8>();
}

// Kernels that need more than the default 48 KiB of shared memory must opt in (per kernel).
template <class K>
void allow_shared(K kernel, size_t bytes, const Tensor& q) {
  if (bytes <= 48 * 1024) return;
  const cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess)
    throw_cuda_error(e, "cudaFuncSetAttribute",
                     detail::concat(kOp, ": ", bytes, " bytes of shared memory for q ", q.str()));
}

}  // namespace

void attention_forward(const cpu::AttentionArgs& a, Tensor& out, Tensor& lse) {
  check_args(a);
  check_contiguous(out, "out");
  check_contiguous(lse, "lse");
  const int64_t B = a.q.size(0), H = a.q.size(1), Nq = a.q.size(2);
  if (B * H * Nq == 0) return;
  DeviceGuard guard(a.q.device().index);
  visit_floating(a.q.dtype(), kOp, [&]<class T>() {
    using A = typename Elem<T>::compute;
    HD_CHECK(lse.dtype() == dtype_of<A>(), kOp, ": lse must be ", dtype_name(dtype_of<A>()),
             ", got ", lse.str());
    const Params<T> p = make_params<T>(a);
    const size_t smem = sizeof(A) * (kTile * (p.Dh + 1) + kTile * (p.Dv + 1) + kRows * p.Dh);
    const dim3 grid(unsigned(B * H), unsigned((Nq + kRows - 1) / kRows));
    with_lanes(std::max(p.Dh, p.Dv), [&]<int NL>() {
      allow_shared(forward_kernel<T, NL>, smem, a.q);
      forward_kernel<T, NL><<<grid, kRows * kWarp, smem, stream_of(a.q)>>>(
          p, static_cast<T*>(out.raw_data()), static_cast<A*>(lse.raw_data()));
    });
    check_launch(kOp, a.q);
  });
}

void attention_backward(const cpu::AttentionArgs& a, const Tensor& out, const Tensor& lse,
                        const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                        Tensor& dprefix_k, Tensor& dprefix_v) {
  check_args(a);
  check_operand(grad_out, "grad_out");
  for (const auto& [t, what] : std::initializer_list<std::pair<const Tensor*, const char*>>{
           {&out, "out"}, {&lse, "lse"}, {&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}})
    check_contiguous(*t, what);
  if (a.prefix_k.defined()) {
    check_contiguous(dprefix_k, "dprefix_k");
    check_contiguous(dprefix_v, "dprefix_v");
  }
  const int64_t B = a.q.size(0), H = a.q.size(1), Nq = a.q.size(2);
  const int64_t Nt = a.k.size(2) + (a.prefix_k.defined() ? a.prefix_k.size(2) : 0);
  if (B * H == 0) return;
  DeviceGuard guard(a.q.device().index);
  visit_floating(a.q.dtype(), kOp, [&]<class T>() {
    using A = typename Elem<T>::compute;
    const Params<T> p = make_params<T>(a);
    const Operand<T> g = operand<T>(grad_out);
    const cudaStream_t stream = stream_of(a.q);
    // delta in the compute type, stream-ordered like every other buffer of the allocator.
    Tensor delta = Tensor::empty({std::max<int64_t>(1, B * H * Nq)}, dtype_of<A>(), a.q.device());
    A* pdelta = static_cast<A*>(delta.raw_data());
    const A* plse = static_cast<const A*>(lse.raw_data());
    T* pdpk = dprefix_k.defined() ? static_cast<T*>(dprefix_k.raw_data()) : nullptr;
    T* pdpv = dprefix_v.defined() ? static_cast<T*>(dprefix_v.raw_data()) : nullptr;
    if (Nq > 0) {
      delta_kernel<T><<<unsigned((B * H * Nq + kRows - 1) / kRows), kRows * kWarp, 0, stream>>>(
          p, g, static_cast<const T*>(out.raw_data()), pdelta);
      check_launch(kOp, a.q);
    }
    with_lanes(std::max(p.Dh, p.Dv), [&]<int NL>() {
      if (Nq > 0) {
        const size_t smem =
            sizeof(A) * (kTile * (p.Dh + 1) + kTile * (p.Dv + 1) + kRows * (p.Dh + p.Dv));
        allow_shared(dq_kernel<T, NL>, smem, a.q);
        dq_kernel<T, NL><<<dim3(unsigned(B * H), unsigned((Nq + kRows - 1) / kRows)), kRows * kWarp,
                           smem, stream>>>(p, g, plse, pdelta, static_cast<T*>(dq.raw_data()));
        check_launch(kOp, a.q);
      }
      if (Nt > 0) {
        const size_t smem = sizeof(A) * (kTile * (p.Dh + 1) + kTile * (p.Dv + 1) + 2 * kTile +
                                         kRows * (p.Dh + p.Dv));
        allow_shared(dkv_kernel<T, NL>, smem, a.q);
        dkv_kernel<T, NL>
            <<<dim3(unsigned(B * H), unsigned((Nt + kRows - 1) / kRows)), kRows * kWarp, smem,
               stream>>>(p, g, plse, pdelta, static_cast<T*>(dk.raw_data()),
                         static_cast<T*>(dv.raw_data()), pdpk, pdpv);
        check_launch(kOp, a.q);
      }
    });
  });
}

}  // namespace hd::cuda
