#include "ops/attention.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/attention_dpbf16.h"
#include "ops/cpu/isa.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/cpu_half.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"

namespace hd {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

// The kernel needs a unit stride in the last dim and rows at least a row apart (BLAS). Permuted
// views of a [B, N, 3, H, Dh] qkv projection qualify, so the ViT's q/k/v pass without a copy.
Tensor kernel_ready(const Tensor& t) {
  if (!t.defined()) return t;
  const int64_t rows = t.size(2), cols = t.size(3);
  const bool ok = (t.stride(3) == 1 || cols == 1) && (rows <= 1 || t.stride(2) >= cols);
  return ok ? t : contiguous(t);
}

// [Note: gradients laid out like packed q, k, v] SelfAttention's q, k and v are views of one
// projection ([B, N, 3, H, D] memory unbound into three [B, H, N, D] views). Where the kernel
// writes strided rows (cpu::attention_backward_writes_views), their gradients are made views of
// one buffer laid out as that memory, and the unbind's backward (ops/shape.cpp) passes the
// buffer on as the projection's gradient instead of copying three gradients into one (PS3 demo,
// bf16 step: ~0.8 ms of copies of 16-value rows).
// Returns dq, dk, dv in `dtype` so laid out, or three undefined tensors when q, k, v are not
// three equally spaced views filling one block of memory.
std::array<Tensor, 3> gradients_like_packed_views(const Tensor& q, const Tensor& k, const Tensor& v,
                                                  DType dtype) {
  const int64_t step = k.offset() - q.offset();
  if (q.numel() == 0 || q.storage() != k.storage() || q.storage() != v.storage() ||
      k.shape() != q.shape() || v.shape() != q.shape() || k.strides() != q.strides() ||
      v.strides() != q.strides() || step <= 0 || v.offset() - k.offset() != step) {
    return {};
  }
  // [3, B, H, N, D] with strides [step, q's strides] must fill 3 * numel elements exactly.
  std::vector<std::pair<int64_t, int64_t>> dims = {{step, 3}};  // (stride, size), size > 1
  for (int64_t d = 0; d < q.dim(); ++d) {
    if (q.size(d) > 1) dims.emplace_back(q.stride(d), q.size(d));
  }
  std::sort(dims.begin(), dims.end());
  int64_t expected = 1;
  for (auto [stride, size] : dims) {
    if (stride != expected) return {};
    expected *= size;
  }
  Tensor buffer = Tensor::empty({3 * q.numel()}, dtype, q.device());
  return {buffer.as_strided(q.shape(), q.strides(), 0),
          buffer.as_strided(q.shape(), q.strides(), step),
          buffer.as_strided(q.shape(), q.strides(), 2 * step)};
}

// Whether the CPU kernel reads 16-bit operands in place (bf16 tile products) rather than f32
// copies made up front ([Note: 16-bit saved tensors] covers what is saved either way).
bool bf16_in_tiles(const Tensor& q, const Tensor& v, const cpu::AttentionBlocks& blocks) {
  if (!is_cpu_half(q) || q.dtype() != DType::bf16) return false;
  if (cpu::attention_dpbf16_applies(q.dtype(), q.size(3), v.size(3), blocks)) return true;
  return blocks.bf16_tiles < 0 ? cpu::onednn::capability().bf16_matmul : blocks.bf16_tiles > 0;
}

void check_4d(const Tensor& t, const char* what, const char* layout) {
  HD_CHECK(t.dim() == 4, kOp, ": ", what, " must be ", layout, ", got ", t.str());
}

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  HD_CHECK(q.defined() && k.defined() && v.defined(), kOp, ": q, k and v must be defined");
  check_4d(q, "q", "[B, H, Nq, Dh]");
  check_4d(k, "k", "[B, H, Nk, Dh]");
  check_4d(v, "v", "[B, H, Nk, Dv]");
  check_same_device(kOp, {&q, &k, &v, &o.prefix_k, &o.prefix_v, &o.key_mask});
  check_same_dtype(kOp, q, k);
  check_same_dtype(kOp, q, v);
  // bf16/f16 compute in f32: inside the fused CUDA kernel, on f32 copies on the CPU
  // (ops/cpu_half.h).
  const bool half = q.dtype() == DType::bf16 || q.dtype() == DType::f16;
  HD_CHECK(q.dtype() == DType::f32 || q.dtype() == DType::f64 || half, kOp,
           ": expected f32, f64, bf16 or f16 tensors, got ", q.str());
  const int64_t B = q.size(0), H = q.size(1), Dh = q.size(3), Nk = k.size(2), Dv = v.size(3);
  HD_CHECK(k.size(0) == B && k.size(1) == H && k.size(3) == Dh, kOp, ": q ", q.shape(), " and k ",
           k.shape(), " must agree in batch, heads and head dim");
  HD_CHECK(v.size(0) == B && v.size(1) == H && v.size(2) == Nk, kOp, ": k ", k.shape(), " and v ",
           v.shape(), " must agree in batch, heads and key count");
  HD_CHECK(Dh > 0 && Dv > 0, kOp, ": head dims must be positive, got q ", q.shape(), " v ",
           v.shape());
  HD_CHECK(o.prefix_k.defined() == o.prefix_v.defined(), kOp,
           ": prefix_k and prefix_v must be given together");
  int64_t Np = 0;
  if (o.prefix_k.defined()) {
    check_4d(o.prefix_k, "prefix_k", "[B, H, Np, Dh]");
    check_4d(o.prefix_v, "prefix_v", "[B, H, Np, Dv]");
    check_same_dtype(kOp, q, o.prefix_k);
    check_same_dtype(kOp, q, o.prefix_v);
    Np = o.prefix_k.size(2);
    HD_CHECK(o.prefix_k.shape() == (Shape{B, H, Np, Dh}), kOp, ": prefix_k ", o.prefix_k.shape(),
             " does not match q ", q.shape(), " (expected [", B, ", ", H, ", Np, ", Dh, "])");
    HD_CHECK(o.prefix_v.shape() == (Shape{B, H, Np, Dv}), kOp, ": prefix_v ", o.prefix_v.shape(),
             " does not match prefix_k ", o.prefix_k.shape(), " and v ", v.shape(), " (expected [",
             B, ", ", H, ", ", Np, ", ", Dv, "])");
  }
  if (o.key_mask.defined()) {
    HD_CHECK(o.key_mask.dtype() == DType::boolean, kOp, ": key_mask must be bool, got ",
             o.key_mask.str());
    HD_CHECK(o.key_mask.shape() == (Shape{B, Np + Nk}), kOp, ": key_mask ", o.key_mask.shape(),
             " must be [B, Np + Nk] = [", B, ", ", Np + Nk, "] (prefix keys first)");
  }
}

struct AttentionBackward final : Node {
  SavedTensor q, k, v, prefix_k, prefix_v, key_mask, out, lse;
  double scale = 1;
  bool causal = false;
  cpu::AttentionBlocks blocks;
  std::string name() const override { return "ScaledDotProductAttentionBackward"; }
  void release_saved() override {
    for (SavedTensor* s : {&q, &k, &v, &prefix_k, &prefix_v, &key_mask, &out, &lse}) s->reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    cpu::AttentionArgs a{q.unpack(*this),
                         k.unpack(*this),
                         v.unpack(*this),
                         prefix_k.unpack(*this),
                         prefix_v.unpack(*this),
                         key_mask.unpack(*this),
                         scale,
                         causal,
                         blocks};
    Tensor o = out.unpack(*this), l = lse.unpack(*this);
    check_same_dtype(kOp, o, grads[0]);
    // 16-bit CPU tensors were saved as they are; the kernel reads them in place (bf16 tiles,
    // bf16 gradients) or runs on f32 copies (f32 gradients, rounded here).
    const DType saved_dtype = a.q.dtype();
    const bool half = is_cpu_half(a.q);
    const bool widen = half && !bf16_in_tiles(a.q, a.v, blocks);
    if (widen) {
      for (Tensor* t : {&a.q, &a.k, &a.v, &a.prefix_k, &a.prefix_v}) *t = half_to_f32(*t);
      o = to(o, DType::f32);
    }
    Tensor g = kernel_ready(widen ? to(grads[0], DType::f32) : grads[0]);
    const DType grad_dtype = widen ? DType::f32 : saved_dtype;
    std::array<Tensor, 3> packed;  // [Note: gradients laid out like packed q, k, v]
    if (!widen && a.q.device().is_cpu() && cpu::attention_backward_writes_views(a))
      packed = gradients_like_packed_views(a.q, a.k, a.v, grad_dtype);
    auto gradient_for = [&](const Tensor& t, size_t i) {
      return packed[i].defined() ? packed[i] : Tensor::empty(t.shape(), grad_dtype, t.device());
    };
    Tensor dq = gradient_for(a.q, 0), dk = gradient_for(a.k, 1), dv = gradient_for(a.v, 2);
    Tensor dpk, dpv;
    if (a.prefix_k.defined()) {
      dpk = Tensor::empty(a.prefix_k.shape(), grad_dtype, a.q.device());
      dpv = Tensor::empty(a.prefix_v.shape(), grad_dtype, a.q.device());
    }
    dispatch(
        g, kOp, [&] { cpu::attention_backward(a, o, l, g, dq, dk, dv, dpk, dpv); },
        HD_CUDA_KERNEL(cuda::attention_backward(a, o, l, g, dq, dk, dv, dpk, dpv)));
    if (widen) {
      for (Tensor* t : {&dq, &dk, &dv, &dpk, &dpv}) {
        if (t->defined()) *t = to(*t, saved_dtype);
      }
    }
    return {needs_input_grad(0) ? dq : Tensor(), needs_input_grad(1) ? dk : Tensor(),
            needs_input_grad(2) ? dv : Tensor(), needs_input_grad(3) ? dpk : Tensor(),
            needs_input_grad(4) ? dpv : Tensor()};
  }
};

// Attention composed from differentiable ops (matmuls, the softmax kernel, where): the plain
// softmax(QK^T)V reference that the fused kernels are checked and benchmarked against (on the
// GPU it is the cuBLAS composition). Same semantics as the kernels (prefix always visible,
// causal on own keys j <= i, masked keys ignored, a query with no visible key gets zeros and
// zero gradients), but it materialises the [B, H, Nq, Np + Nk] scores. Masked scores are set to
// a large finite negative value rather than -inf, so a fully masked row is a finite uniform
// softmax that the row mask then zeroes (no NaN anywhere, also not in the backward).
}  // namespace

namespace detail {
Tensor attention_composed(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& o) {
  const int64_t Nq = q.size(2), Nk = k.size(2);
  const int64_t Np = o.prefix_k.defined() ? o.prefix_k.size(2) : 0, Nt = Np + Nk;
  Tensor keys = Np > 0 ? cat({o.prefix_k, k}, 2) : k;
  Tensor values = Np > 0 ? cat({o.prefix_v, v}, 2) : v;
  const double scale = o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(q.size(3)));
  Tensor scores = mul(matmul(q, transpose(keys, -1, -2)), scale);  // [B, H, Nq, Nt]
  Tensor visible;                                                  // bool, broadcastable
  if (o.key_mask.defined()) visible = reshape(o.key_mask, {o.key_mask.size(0), 1, 1, Nt});
  if (o.causal) {
    std::vector<int32_t> c(size_t(Nq * Nt));
    for (int64_t i = 0; i < Nq; ++i)
      for (int64_t j = 0; j < Nt; ++j) c[size_t(i * Nt + j)] = j < Np || (j - Np) <= i;
    Tensor causal = from_vector<int32_t>(c, {1, 1, Nq, Nt}, DType::boolean, q.device());
    visible = visible.defined() ? logical_and(visible, causal) : causal;
  }
  if (!visible.defined()) return matmul(softmax(scores, -1), values);
  Tensor p = softmax(where(visible, scores, -1e30), -1);
  Tensor row_has_key = gt(sum(to(visible, DType::i32), {-1}, true), 0.0);
  return matmul(where(row_has_key, p, 0.0), values);
}
}  // namespace detail

namespace {

Tensor attention_impl(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o,
                      const cpu::AttentionBlocks& blocks) {
  check_inputs(q, k, v, o);
  // The inputs as saved for backward: kernel-ready views, in their own dtype. What the kernel
  // reads: the same, or f32 copies of 16-bit CPU inputs ([Note: 16-bit saved tensors]) where
  // it does not read bf16 in place.
  cpu::AttentionArgs saved;
  saved.q = kernel_ready(q.detach());
  saved.k = kernel_ready(k.detach());
  saved.v = kernel_ready(v.detach());
  if (o.prefix_k.defined()) {
    saved.prefix_k = kernel_ready(o.prefix_k.detach());
    saved.prefix_v = kernel_ready(o.prefix_v.detach());
  }
  const bool half = is_cpu_half(q);
  const bool widen = half && !bf16_in_tiles(q, v, blocks);
  cpu::AttentionArgs a = saved;
  if (widen) {
    for (Tensor* t : {&a.q, &a.k, &a.v, &a.prefix_k, &a.prefix_v}) *t = half_to_f32(*t);
  }
  if (o.key_mask.defined()) a.key_mask = contiguous(o.key_mask.detach());
  a.scale = o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(q.size(3)));
  a.causal = o.causal;
  a.blocks = blocks;
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Dv = v.size(3);
  // On the CPU the output is laid out heads-last ([B, Nq, H, Dv] memory, returned as the
  // [B, H, Nq, Dv] view): a block merges the heads back into [B, Nq, H * Dv] as a view instead
  // of a copy (bf16 ViT step: one [8, 729, 192] copy per block). The kernel writes either layout.
  Tensor out;
  if (q.device().is_cpu() && !widen) {
    out = Tensor::empty({B, Nq, H, Dv}, q.dtype(), q.device())
              .as_strided({B, H, Nq, Dv}, {Nq * H * Dv, Dv, H * Dv, 1}, 0);
  } else {
    out = Tensor::empty({B, H, Nq, Dv}, widen ? DType::f32 : q.dtype(), q.device());
  }
  // lse in the compute type: f64 for f64, f32 otherwise (bf16 would lose the softmax scale).
  const DType lse_dtype = q.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor lse = Tensor::empty({B, H, Nq}, lse_dtype, q.device());
  dispatch(
      q, kOp, [&] { cpu::attention_forward(a, out, lse); },
      HD_CUDA_KERNEL(cuda::attention_forward(a, out, lse)));
  if (widen) out = to(out, q.dtype());
  if (auto node = make_grad_node<AttentionBackward>({&q, &k, &v, &o.prefix_k, &o.prefix_v})) {
    node->q = SavedTensor(saved.q);
    node->k = SavedTensor(saved.k);
    node->v = SavedTensor(saved.v);
    node->prefix_k = SavedTensor(saved.prefix_k);
    node->prefix_v = SavedTensor(saved.prefix_v);
    node->key_mask = SavedTensor(a.key_mask);
    node->out = SavedTensor(out.detach());
    node->lse = SavedTensor(lse);
    node->scale = a.scale;
    node->causal = a.causal;
    node->blocks = blocks;
    set_history(out, node);
  }
  return out;
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options) {
  return attention_impl(q, k, v, options, cpu::AttentionBlocks{});
}

namespace detail {

Tensor scaled_dot_product_attention_tiled(const Tensor& q, const Tensor& k, const Tensor& v,
                                          const AttentionOptions& options, int64_t q_block,
                                          int64_t k_block, int split) {
  HD_CHECK(q_block > 0 && k_block > 0, kOp, ": tile sizes must be positive, got ", q_block, " x ",
           k_block);
  return attention_impl(q, k, v, options, cpu::AttentionBlocks{q_block, k_block, split});
}

Tensor scaled_dot_product_attention_bf16(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const AttentionOptions& options, bool in_tiles,
                                         int64_t q_block, int64_t k_block) {
  HD_CHECK(q_block > 0 && k_block > 0, kOp, ": tile sizes must be positive, got ", q_block, " x ",
           k_block);
  return attention_impl(q, k, v, options,
                        cpu::AttentionBlocks{q_block, k_block, -1, in_tiles ? 1 : 0});
}

Tensor scaled_dot_product_attention_dpbf16(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const AttentionOptions& options, bool on) {
  cpu::AttentionBlocks blocks;
  blocks.dpbf16 = on ? 1 : 0;
  HD_CHECK(!on || (q.device().is_cpu() &&
                   cpu::attention_dpbf16_applies(q.dtype(), q.size(3), v.size(3), blocks)),
           kOp,
           ": the bf16 dot-product kernel takes bf16 CPU operands with Dh = Dv in {16, 32, 64} on "
           "a CPU with "
           "AVX512_BF16 (",
           cpu::vector_isa().name, "), got q ", q.str(), " and v ", v.str());
  return attention_impl(q, k, v, options, blocks);
}

}  // namespace detail
}  // namespace hd
