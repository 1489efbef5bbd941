#include "ops/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "autograd/thread_pool.h"
#include "ops/cpu/attention_dpbf16.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/isa.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/cpu/vec_math.h"

namespace hd::cpu {
namespace {

// E is the operands' element type (f32, f64, or bf16 read in place), T the compute type of the
// scores, softmax statistics and accumulators (f32 for bf16). The tile products go through the
// cpu::gemm overload for the pair of operand types (ops/cpu/gemm.h), so the same code runs the
// bf16 products on oneDNN where the CPU has them.
template <class E>
using Compute = typename ElementTraits<E>::compute;

// A [B, H, N, D] operand with a unit last stride: matrix (b, h) starts at base + b*sb + h*sh
// and its rows are ld apart, so permuted views (q/k/v sliced out of one qkv projection) feed
// BLAS directly instead of being copied.
template <class E>
struct Operand {
  const E* base = nullptr;
  int64_t sb = 0, sh = 0, ld = 1;
  Operand() = default;
  explicit Operand(const Tensor& t) : base(t.data<E>()), sb(t.stride(0)), sh(t.stride(1)) {
    ld = t.size(2) > 1 ? t.stride(2) : std::max<int64_t>(t.size(3), 1);
  }
  const E* at(int64_t b, int64_t h) const { return base + b * sb + h * sh; }
};

// The output [B, H, N, D] with a unit last stride, written row by row: contiguous, or heads-last
// ([B, N, H, D] memory, what the frontend allocates on the CPU so that merging the heads back
// into [B, N, H * D] is a view, not a copy).
template <class E>
struct OutputRows {
  E* base = nullptr;
  int64_t sb = 0, sh = 0, ld = 1;
  explicit OutputRows(Tensor& t) : base(t.data<E>()), sb(t.stride(0)), sh(t.stride(1)) {
    ld = t.size(2) > 1 ? t.stride(2) : std::max<int64_t>(t.size(3), 1);
  }
  E* at(int64_t b, int64_t h) const { return base + b * sb + h * sh; }
};

// One run of keys: the prefix (always visible) or the own keys (causal if asked). Key tiles
// never straddle the two, so the prefix needs no concatenation.
template <class E>
struct Segment {
  using T = Compute<E>;
  Operand<E> k, v;
  E* dk = nullptr;  // contiguous [B, H, n, Dh] / [B, H, n, Dv] gradients (backward only)
  E* dv = nullptr;
  int64_t n = 0, mask_offset = 0;
  bool causal = false;
};

template <class E>
struct Problem {
  using T = Compute<E>;
  Operand<E> q;
  Segment<E> seg[2];
  int nseg = 0;
  const bool* mask = nullptr;  // [B, mask_ld] or null
  int64_t mask_ld = 0;
  int64_t B = 0, H = 0, Nq = 0, Dh = 0, Dv = 0, bq = 64, bk = 256;
  T scale = 1;
  // bf16 operands on oneDNN: the f32 probability and dS tiles enter their products rounded to
  // bf16, once per tile, as bf16 attention kernels do. Elsewhere the products take them in f32.
  bool round_tiles = false;

  Problem(const AttentionArgs& a, Tensor* dk, Tensor* dv, Tensor* dpk, Tensor* dpv)
      : q(a.q),
        B(a.q.size(0)),
        H(a.q.size(1)),
        Nq(a.q.size(2)),
        Dh(a.q.size(3)),
        Dv(a.v.size(3)),
        scale(T(a.scale)) {
    if constexpr (std::is_same_v<E, bf16_t>) round_tiles = onednn::capability().bf16_matmul;
    bq = a.blocks.q > 0 ? a.blocks.q : round_tiles ? 128 : 64;
    bk = a.blocks.k > 0 ? a.blocks.k : round_tiles ? 768 : 256;
    int64_t np = a.prefix_k.defined() ? a.prefix_k.size(2) : 0;
    if (np > 0) {
      seg[nseg++] = {Operand<E>(a.prefix_k),
                     Operand<E>(a.prefix_v),
                     dpk ? dpk->data<E>() : nullptr,
                     dpv ? dpv->data<E>() : nullptr,
                     np,
                     0,
                     false};
    }
    seg[nseg++] = {Operand<E>(a.k),
                   Operand<E>(a.v),
                   dk ? dk->data<E>() : nullptr,
                   dv ? dv->data<E>() : nullptr,
                   a.k.size(2),
                   np,
                   a.causal};
    if (a.key_mask.defined()) {
      mask = a.key_mask.data<bool>();
      mask_ld = a.key_mask.size(1);
    }
  }
  // A causal own-key tile [j0, j0 + nk) is invisible to every query in [i0, i0 + nq).
  static bool skipped(const Segment<E>& s, int64_t i0, int64_t nq, int64_t j0) {
    return s.causal && j0 > i0 + nq - 1;
  }
};

constexpr int kLanes = 16;  // independent accumulators so GCC vectorises max/sum reductions
constexpr double kInf = std::numeric_limits<double>::infinity();

template <class T>
T row_max(const T* x, int64_t n) {
  T acc[kLanes];
  std::fill(acc, acc + kLanes, T(-kInf));
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] = x[c + l] > acc[l] ? x[c + l] : acc[l];
  }
  T m = T(-kInf);
  for (int l = 0; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;
  for (; c < n; ++c) m = x[c] > m ? x[c] : m;
  return m;
}

// A row of a tile rounded to bf16 while it is in L1 (no-op without a bf16 twin).
template <class T>
void round_row(const T* row, bf16_t* twin, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (twin) round_to_bf16(row, twin, n);
  }
}

// Outputs in the operand type: f32/f64 outputs are their own accumulators; bf16 ones are
// accumulated in an f32 scratch block and rounded once at the end (no f32 output tensors, and
// no separate cast of them afterwards).
template <class E, class T>
T* accumulator(E* out, T* scratch) {
  if constexpr (std::is_same_v<E, T>) {
    return out;
  } else {
    return scratch;
  }
}
template <class E, class T>
void store_accumulated(const T* acc, E* out, int64_t n) {
  if constexpr (!std::is_same_v<E, T>) {
    static_assert(std::is_same_v<E, bf16_t> && std::is_same_v<T, float>);
    round_to_bf16(acc, out, n);
  }
}

// x <- exp(x - shift) (and twin <- x rounded to bf16, when given); returns the sum, always in
// the same order (deterministic). The rounding is a second pass over the row, still in L1:
// fused into the exponentials' loop it cost more than apart (0.59 vs 0.36 + 0.09 ns per value
// with AVX-512 on a Zen 4 EPYC), and apart it can use the CPU's bf16 conversion instruction.
template <class T>
T exp_shift_sum(T* x, bf16_t* twin, int64_t n, T shift) {
  T acc[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T e = vexp(x[c + l] - shift);
      x[c + l] = e;
      acc[l] += e;
    }
  }
  T s = fold_lanes(acc);
  for (; c < n; ++c) {
    x[c] = vexp(x[c] - shift);
    s += x[c];
  }
  round_row(x, twin, n);
  return s;
}

// C = alpha op(A) op(B) + beta C where A is an f32 tile (probabilities, dS): its bf16 rounding
// A16 where the problem rounds tiles, else A itself.
template <class E, class T>
void tile_product(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  const bf16_t* A16, int64_t lda, const E* B, int64_t ldb, T beta, T* C,
                  int64_t ldc) {
  if constexpr (std::is_same_v<E, bf16_t>) {
    if (A16) {
      gemm(ta, tb, M, N, K, alpha, A16, lda, B, ldb, beta, C, ldc);
      return;
    }
  }
  gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Sets masked scores of an [nq, nk] tile to -inf: keys whose mask entry is false (keymask
// points at the tile's first key, or is null) and, for causal tiles, own keys after the query.
template <class T>
void mask_tile(T* S, int64_t nq, int64_t nk, const bool* keymask, bool causal, int64_t i0,
               int64_t j0) {
  const T ninf = T(-kInf);
  if (keymask && !std::all_of(keymask, keymask + nk, [](bool b) { return b; })) {
    for (int64_t r = 0; r < nq; ++r) {
      T* row = S + r * nk;
      for (int64_t c = 0; c < nk; ++c) row[c] = keymask[c] ? row[c] : ninf;
    }
  }
  if (causal) {
    for (int64_t r = 0; r < nq; ++r) {
      int64_t first = std::max<int64_t>(i0 + r - j0 + 1, 0);  // first hidden column
      if (first < nk) std::fill(S + r * nk + first, S + (r + 1) * nk, ninf);
    }
  }
}

// Rows [i0, i0 + nq) of matrix bh: one pass over all key tiles with an online softmax.
// P16: the bf16 twin of the probability tile S where the problem rounds tiles, else null.
// O_scratch: an nq x Dv accumulator, used where the output rows cannot be their own (bf16
// outputs, or rows not Dv apart).
template <class E, class T = Compute<E>>
void forward_rows(const Problem<E>& p, int64_t bh, int64_t i0, int64_t nq, T* S, bf16_t* P16, T* m,
                  T* l, T* O_scratch, const OutputRows<E>& out, T* lse) {
  const int64_t b = bh / p.H, h = bh % p.H;
  const E* Q = p.q.at(b, h) + i0 * p.q.ld;
  E* out_rows = out.at(b, h) + i0 * out.ld;
  T* O = out.ld == p.Dv ? accumulator(out_rows, O_scratch) : O_scratch;
  std::fill(m, m + nq, T(-kInf));
  std::fill(l, l + nq, T(0));
  std::fill(O, O + nq * p.Dv, T(0));
  for (int s = 0; s < p.nseg; ++s) {
    const Segment<E>& sg = p.seg[s];
    const E* K = sg.k.at(b, h);
    const E* V = sg.v.at(b, h);
    for (int64_t j0 = 0; j0 < sg.n && !Problem<E>::skipped(sg, i0, nq, j0); j0 += p.bk) {
      const int64_t nk = std::min(p.bk, sg.n - j0);
      gemm(false, true, nq, nk, p.Dh, p.scale, Q, p.q.ld, K + j0 * sg.k.ld, sg.k.ld, T(0), S, nk);
      mask_tile(S, nq, nk, p.mask ? p.mask + b * p.mask_ld + sg.mask_offset + j0 : nullptr,
                sg.causal, i0, j0);
      run_vectorised([&] {  // at the CPU's widest vectors ([Note: AVX-512 kernels])
        for (int64_t r = 0; r < nq; ++r) {
          T* row = S + r * nk;
          const T mnew = std::max(m[r], row_max(row, nk));
          if (mnew == T(-kInf)) {  // nothing visible to this row yet: contributes nothing
            std::fill(row, row + nk, T(0));
            round_row(row, P16 ? P16 + r * nk : nullptr, nk);
            continue;
          }
          const T alpha = vexp(m[r] - mnew);  // 0 on the first visible tile (m = -inf)
          l[r] = l[r] * alpha + exp_shift_sum(row, P16 ? P16 + r * nk : nullptr, nk, mnew);
          m[r] = mnew;
          if (alpha != T(1)) {
            T* o = O + r * p.Dv;
            for (int64_t c = 0; c < p.Dv; ++c) o[c] *= alpha;
          }
        }
      });
      tile_product(false, false, nq, p.Dv, nk, T(1), S, P16, nk, V + j0 * sg.v.ld, sg.v.ld, T(1), O,
                   p.Dv);
    }
  }
  T* L = lse + bh * p.Nq + i0;
  for (int64_t r = 0; r < nq; ++r) {
    T* o = O + r * p.Dv;
    if (l[r] == T(0)) {
      // No visible key: zeros, and L = +inf so backward recomputes P = exp(S - L) = 0.
      std::fill(o, o + p.Dv, T(0));
      L[r] = T(kInf);
      continue;
    }
    const T inv = T(1) / l[r];
    for (int64_t c = 0; c < p.Dv; ++c) o[c] *= inv;
    L[r] = m[r] + std::log(l[r]);
  }
  if (out.ld == p.Dv) {
    store_accumulated(O, out_rows, nq * p.Dv);
  } else {
    for (int64_t r = 0; r < nq; ++r) {
      if constexpr (std::is_same_v<E, T>) {
        std::copy(O + r * p.Dv, O + (r + 1) * p.Dv, out_rows + r * out.ld);
      } else {
        store_accumulated(O + r * p.Dv, out_rows + r * out.ld, p.Dv);
      }
    }
  }
}

// Scratch from the tensor allocator (so memory stats see it), one per pool chunk.
template <class T>
Tensor scratch(int64_t n) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, dtype_of<T>());
}

}  // namespace

namespace {
// fn.template operator()<E>() for the operand types the kernels take: f32, f64, bf16.
template <class F>
void visit_operands(DType dt, const char* op, F&& fn) {
  if (dt == DType::bf16) {
    fn.template operator()<bf16_t>();
    return;
  }
  visit_float(dt, op, [&]<class E>() { fn.template operator()<E>(); });
}
}  // namespace

void attention_forward(const AttentionArgs& args, Tensor& out, Tensor& lse) {
  if (attention_dpbf16_applies(args.q.dtype(), args.q.size(3), args.v.size(3), args.blocks)) {
    attention_dpbf16_forward(args, out, lse);
    return;
  }
  visit_operands(args.q.dtype(), "scaled_dot_product_attention", [&]<class E>() {
    using T = Compute<E>;
    const Problem<E> p(args, nullptr, nullptr, nullptr, nullptr);
    const int64_t qblocks = (p.Nq + p.bq - 1) / p.bq;
    const OutputRows<E> po(out);
    T* pl = lse.data<T>();
    const bool scratch_out = !std::is_same_v<E, T> || po.ld != p.Dv;
    // Tasks are (batch*head, query tile): each output row is produced by exactly one task.
    parallel_for(0, p.B * p.H * qblocks, 1, [&](int64_t lo, int64_t hi) {
      Tensor ws = scratch<T>(p.bq * p.bk + 2 * p.bq + (scratch_out ? p.bq * p.Dv : 0));
      Tensor ws16 = p.round_tiles ? scratch<bf16_t>(p.bq * p.bk) : Tensor();
      T* S = ws.data<T>();
      T* m = S + p.bq * p.bk;
      T* l = m + p.bq;
      T* O_scratch = scratch_out ? l + p.bq : nullptr;
      bf16_t* P16 = p.round_tiles ? ws16.data<bf16_t>() : nullptr;
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t bh = t / qblocks, i0 = (t % qblocks) * p.bq;
        forward_rows(p, bh, i0, std::min(p.bq, p.Nq - i0), S, P16, m, l, O_scratch, po, pl);
      }
    });
  });
}

namespace {

template <class E>
struct Grads {
  using T = Compute<E>;
  Operand<E> dout;
  const T* lse = nullptr;
  const T* delta = nullptr;  // D = rowsum(dO * O), [B*H, Nq]
  E* dq = nullptr;
};

// Where one pass accumulates: dq for rows [i0, i0 + nq) of the matrix, dk / dv for the key
// tile's rows (each null when the pass does not compute it). Rows are Dh / Dv apart.
template <class T>
struct Accumulators {
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
};

// A task's tiles: scores / probabilities and dP / dS in the compute type, and their bf16 twins
// where the problem rounds tiles (else null).
template <class T>
struct Tiles {
  T* S = nullptr;
  T* dP = nullptr;
  bf16_t* P16 = nullptr;
  bf16_t* dS16 = nullptr;
};

// One (key tile, query tile) pair of FlashAttention-2's backward. P is recomputed from the saved
// logsumexp; dS = P * (dP - D) * scale. acc says which gradients this pass accumulates (the
// split scheme runs dq and dk/dv in separate passes, in the same order).
template <class E, class T = Compute<E>>
void backward_tile(const Problem<E>& p, const Grads<E>& g, int64_t bh, const Segment<E>& sg,
                   int64_t j0, int64_t nk, int64_t i0, int64_t nq, const Tiles<T>& w,
                   const Accumulators<T>& acc) {
  const bool do_dq = acc.dq != nullptr, do_dkv = acc.dk != nullptr;
  T* S = w.S;
  T* dP = w.dP;
  bf16_t* P16 = do_dkv ? w.P16 : nullptr;
  const int64_t b = bh / p.H, h = bh % p.H;
  const E* Q = p.q.at(b, h) + i0 * p.q.ld;
  const E* K = sg.k.at(b, h) + j0 * sg.k.ld;
  const E* V = sg.v.at(b, h) + j0 * sg.v.ld;
  const E* dO = g.dout.at(b, h) + i0 * g.dout.ld;
  const T* L = g.lse + bh * p.Nq + i0;
  const T* D = g.delta + bh * p.Nq + i0;
  gemm(false, true, nq, nk, p.Dh, p.scale, Q, p.q.ld, K, sg.k.ld, T(0), S, nk);
  mask_tile(S, nq, nk, p.mask ? p.mask + b * p.mask_ld + sg.mask_offset + j0 : nullptr, sg.causal,
            i0, j0);
  run_vectorised([&] {
    for (int64_t r = 0; r < nq; ++r) {
      T* row = S + r * nk;
      const T lr = L[r];
      for (int64_t c = 0; c < nk; ++c) row[c] = vexp(row[c] - lr);  // masked / empty rows -> 0
      round_row(row, P16 ? P16 + r * nk : nullptr, nk);
    }
  });
  if (do_dkv) {
    tile_product(true, false, nk, p.Dv, nq, T(1), S, P16, nk, dO, g.dout.ld, T(1), acc.dv, p.Dv);
  }
  gemm(false, true, nq, nk, p.Dv, T(1), dO, g.dout.ld, V, sg.v.ld, T(0), dP, nk);
  run_vectorised([&] {
    for (int64_t r = 0; r < nq; ++r) {
      const T* pr = S + r * nk;
      T* row = dP + r * nk;
      const T dr = D[r];
      for (int64_t c = 0; c < nk; ++c) row[c] = pr[c] * (row[c] - dr) * p.scale;
      round_row(row, w.dS16 ? w.dS16 + r * nk : nullptr, nk);
    }
  });
  if (do_dq) {
    tile_product(false, false, nq, p.Dh, nk, T(1), dP, w.dS16, nk, K, sg.k.ld, T(1), acc.dq, p.Dh);
  }
  if (do_dkv) {
    tile_product(true, false, nk, p.Dh, nq, T(1), dP, w.dS16, nk, Q, p.q.ld, T(1), acc.dk, p.Dh);
  }
}

// A key tile's dk / dv accumulators, zeroed: the outputs' rows themselves, or (bf16 outputs)
// the workspace's f32 blocks.
template <class E, class T = Compute<E>>
Accumulators<T> key_accumulators(const Problem<E>& p, const Segment<E>& sg, int64_t bh, int64_t j0,
                                 int64_t nk, T* dk_scratch, T* dv_scratch) {
  Accumulators<T> a;
  a.dk = accumulator(sg.dk + (bh * sg.n + j0) * p.Dh, dk_scratch);
  a.dv = accumulator(sg.dv + (bh * sg.n + j0) * p.Dv, dv_scratch);
  std::fill_n(a.dk, nk * p.Dh, T(0));
  std::fill_n(a.dv, nk * p.Dv, T(0));
  return a;
}
template <class E, class T = Compute<E>>
void store_key_grads(const Problem<E>& p, const Segment<E>& sg, int64_t bh, int64_t j0, int64_t nk,
                     const Accumulators<T>& a) {
  store_accumulated(a.dk, sg.dk + (bh * sg.n + j0) * p.Dh, nk * p.Dh);
  store_accumulated(a.dv, sg.dv + (bh * sg.n + j0) * p.Dv, nk * p.Dv);
}

}  // namespace

bool attention_backward_writes_views(const AttentionArgs& args) {
  return attention_dpbf16_applies(args.q.dtype(), args.q.size(3), args.v.size(3), args.blocks);
}

void attention_backward(const AttentionArgs& args, const Tensor& out, const Tensor& lse,
                        const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                        Tensor& dprefix_k, Tensor& dprefix_v) {
  if (attention_backward_writes_views(args)) {
    attention_dpbf16_backward(args, out, lse, grad_out, dq, dk, dv, dprefix_k, dprefix_v);
    return;
  }
  for (const Tensor* t : {&dq, &dk, &dv, &dprefix_k, &dprefix_v}) {
    HD_CHECK(!t->defined() || t->is_contiguous(),
             "scaled_dot_product_attention backward: this kernel writes contiguous gradients, got ",
             t->str());
  }
  visit_operands(args.q.dtype(), "scaled_dot_product_attention backward", [&]<class E>() {
    using T = Compute<E>;
    const bool has_prefix = args.prefix_k.defined();
    const Problem<E> p(args, &dk, &dv, has_prefix ? &dprefix_k : nullptr,
                       has_prefix ? &dprefix_v : nullptr);
    const int64_t BH = p.B * p.H, qblocks = (p.Nq + p.bq - 1) / p.bq;
    Grads<E> g;
    g.dout = Operand<E>(grad_out);
    g.lse = lse.data<T>();
    g.dq = dq.data<E>();

    // D = rowsum(dO * O) per query row (FlashAttention-2's trick to avoid storing P).
    Tensor delta = Tensor::empty({BH, p.Nq}, dtype_of<T>());
    T* pd = delta.data<T>();
    const Operand<E> po(out);
    parallel_for(0, BH, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t bh = lo; bh < hi; ++bh) {
        const E* dO = g.dout.at(bh / p.H, bh % p.H);
        for (int64_t i = 0; i < p.Nq; ++i) {
          const E* o = po.at(bh / p.H, bh % p.H) + i * po.ld;
          const E* d = dO + i * g.dout.ld;
          T s = 0;
          for (int64_t c = 0; c < p.Dv; ++c) {
            s += ElementTraits<E>::load(o[c]) * ElementTraits<E>::load(d[c]);
          }
          pd[bh * p.Nq + i] = s;
        }
      }
    });
    g.delta = pd;

    // Key tiles of one matrix, in the fixed (segment, tile) order every scheme uses.
    std::vector<std::pair<int, int64_t>> ktiles;
    for (int s = 0; s < p.nseg; ++s) {
      for (int64_t j0 = 0; j0 < p.seg[s].n; j0 += p.bk) ktiles.emplace_back(s, j0);
    }
    const int64_t nkt = int64_t(ktiles.size());
    auto key_tile = [&](int64_t kt, const Segment<E>*& sg, int64_t& j0, int64_t& nk) {
      sg = &p.seg[ktiles[size_t(kt)].first];
      j0 = ktiles[size_t(kt)].second;
      nk = std::min(p.bk, sg->n - j0);
    };
    const int64_t tile_elems = p.bq * p.bk;
    // One per pool chunk: the f32 tiles and, where tiles are rounded, their bf16 twins; for
    // bf16 outputs, f32 accumulators of dq rows (dq_rows of them) and of one key tile's dk, dv.
    constexpr bool kScratchOut = !std::is_same_v<E, T>;
    struct Workspace {
      Tensor f32, b16;
      Tiles<T> tiles;
      T* dq = nullptr;
      T* dk = nullptr;
      T* dv = nullptr;
      Workspace(const Problem<E>& p, int64_t n, int64_t dq_rows)
          : f32(scratch<T>(2 * n + (kScratchOut ? dq_rows * p.Dh + p.bk * (p.Dh + p.Dv) : 0))) {
        tiles.S = f32.data<T>();
        tiles.dP = tiles.S + n;
        if (kScratchOut) {
          dq = tiles.dP + n;
          dk = dq + dq_rows * p.Dh;
          dv = dk + p.bk * p.Dh;
        }
        if (p.round_tiles) {
          b16 = scratch<bf16_t>(2 * n);
          tiles.P16 = b16.data<bf16_t>();
          tiles.dS16 = tiles.P16 + n;
        }
      }
    };
    // The dq accumulator of rows [i0, i0 + nq) of matrix bh, zeroed.
    auto dq_accumulator = [&](const Workspace& ws, int64_t bh, int64_t i0, int64_t nq) {
      T* a = accumulator(g.dq + (bh * p.Nq + i0) * p.Dh, ws.dq);
      std::fill_n(a, nq * p.Dh, T(0));
      return a;
    };

    // Fused scheme: one task per matrix does dQ, dK and dV (5 GEMMs per tile pair). When there
    // are fewer matrices than threads, the split scheme runs dK/dV tasks per key tile and dQ
    // tasks per query tile (7 GEMMs per pair, but all threads busy). Both accumulate every
    // gradient in the same order, so they give bit-identical results.
    int split = args.blocks.split;
    if (split < 0) split = BH < cpu_thread_pool().num_threads() ? 1 : 0;
    if (!split) {
      parallel_for(0, BH, 1, [&](int64_t lo, int64_t hi) {
        Workspace ws(p, tile_elems, p.Nq);
        for (int64_t bh = lo; bh < hi; ++bh) {
          T* dq_all = dq_accumulator(ws, bh, 0, p.Nq);
          for (int64_t kt = 0; kt < nkt; ++kt) {
            const Segment<E>* sg;
            int64_t j0, nk;
            key_tile(kt, sg, j0, nk);
            Accumulators<T> acc = key_accumulators(p, *sg, bh, j0, nk, ws.dk, ws.dv);
            for (int64_t i0 = 0; i0 < p.Nq; i0 += p.bq) {
              const int64_t nq = std::min(p.bq, p.Nq - i0);
              if (Problem<E>::skipped(*sg, i0, nq, j0)) continue;
              acc.dq = dq_all + i0 * p.Dh;
              backward_tile(p, g, bh, *sg, j0, nk, i0, nq, ws.tiles, acc);
            }
            store_key_grads(p, *sg, bh, j0, nk, acc);
          }
          store_accumulated(dq_all, g.dq + bh * p.Nq * p.Dh, p.Nq * p.Dh);
        }
      });
      return;
    }
    parallel_for(0, BH * nkt, 1, [&](int64_t lo, int64_t hi) {
      Workspace ws(p, tile_elems, 0);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t bh = t / nkt;
        const Segment<E>* sg;
        int64_t j0, nk;
        key_tile(t % nkt, sg, j0, nk);
        const Accumulators<T> acc = key_accumulators(p, *sg, bh, j0, nk, ws.dk, ws.dv);
        for (int64_t i0 = 0; i0 < p.Nq; i0 += p.bq) {
          const int64_t nq = std::min(p.bq, p.Nq - i0);
          if (Problem<E>::skipped(*sg, i0, nq, j0)) continue;
          backward_tile(p, g, bh, *sg, j0, nk, i0, nq, ws.tiles, acc);
        }
        store_key_grads(p, *sg, bh, j0, nk, acc);
      }
    });
    parallel_for(0, BH * qblocks, 1, [&](int64_t lo, int64_t hi) {
      Workspace ws(p, tile_elems, p.bq);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t bh = t / qblocks, i0 = (t % qblocks) * p.bq;
        const int64_t nq = std::min(p.bq, p.Nq - i0);
        Accumulators<T> acc;
        acc.dq = dq_accumulator(ws, bh, i0, nq);
        for (int64_t kt = 0; kt < nkt; ++kt) {
          const Segment<E>* sg;
          int64_t j0, nk;
          key_tile(kt, sg, j0, nk);
          if (Problem<E>::skipped(*sg, i0, nq, j0)) continue;
          backward_tile(p, g, bh, *sg, j0, nk, i0, nq, ws.tiles, acc);
        }
        store_accumulated(acc.dq, g.dq + (bh * p.Nq + i0) * p.Dh, nq * p.Dh);
      }
    });
  });
}

}  // namespace hd::cpu
