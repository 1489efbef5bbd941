// Top-k along the last dim (ops/index.h). Selection maps in PS3 are full of ties (nearest
// upsampling makes constant blocks), so the order is a fixed rule, not PyTorch's unspecified
// one: larger value first, then lower index.
#include "autograd/node.h"
#include "ops/cpu/index.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/shape.h"

namespace hd {
namespace {

struct TopkBackward final : Node {
  Shape in_shape;
  SavedTensor indices;  // [..., k]; the caller gets the same tensor, so a later in-place
                        // write to it is caught by the version check on unpack
  std::string name() const override { return "TopkBackward"; }
  void release_saved() override { indices.reset(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    // The gradient of each chosen value goes back to the position it was taken from.
    Tensor gx = zeros(in_shape, g[0].dtype(), g[0].device());
    indexing::scatter_add_into(gx, int64_t(in_shape.size()) - 1, indices.unpack(*this), g[0]);
    return {gx};
  }
};

}  // namespace

ValuesIndices topk(const Tensor& x, int64_t k) {
  HD_CHECK(x.dim() >= 1, "topk: input must have at least 1 dim, got ", x.str());
  int64_t n = x.size(-1);
  HD_CHECK(k >= 0 && k <= n, "topk: k = ", k, " is out of range for the last dim of size ", n,
           " (input ", x.shape(), ")");
  HD_CHECK(x.dtype() != DType::boolean, "topk: bool input is not supported (", x.str(), ")");
  Tensor xc = contiguous(x.detach());
  int64_t rows = n == 0 ? 0 : x.numel() / n;
  Shape out_shape = x.shape();
  out_shape.back() = k;
  Tensor values = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor indices = Tensor::empty(out_shape, DType::i64, x.device());
  if (rows > 0 && k > 0) {
    dispatch(x, "topk", [&] { cpu::topk(xc, rows, n, k, values, indices); },
           HD_CUDA_KERNEL(cuda::topk(xc, rows, n, k, values, indices)));
  }
  if (auto node = make_grad_node<TopkBackward>({&x})) {
    node->in_shape = x.shape();
    node->indices = SavedTensor(indices);
    set_history(values, node);
  }
  return {values, indices};
}

}  // namespace hd
