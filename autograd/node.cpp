#include "autograd/node.h"

#include <atomic>

#include "ops/elementwise.h"
#include "ops/shape.h"

namespace hd {
namespace {
std::atomic<uint64_t> g_next_sequence_nr{0};
thread_local bool t_grad_enabled = true;
}  // namespace

Node::Node() : sequence_nr(g_next_sequence_nr.fetch_add(1)) {}

bool GradMode::enabled() {
  return t_grad_enabled;
}
void GradMode::set_enabled(bool enabled) {
  t_grad_enabled = enabled;
}

Tensor SavedTensor::unpack(const Node& owner) const {
  HD_CHECK(!owner.released, owner.name(),
           ": trying to run backward through the graph a second time, but its saved tensors "
           "were already freed. Pass retain_graph=true to the first backward.");
  if (!tensor_.defined()) return tensor_;
  HD_CHECK(tensor_.version() == version_, owner.name(), ": a tensor ", tensor_.str(),
           (tensor_.name().empty() ? "" : " '" + tensor_.name() + "'"),
           " saved for backward was modified in place afterwards (version ", version_,
           " when saved, now ", tensor_.version(),
           "). Its gradient would be wrong; clone it before the in-place op.");
  return tensor_;
}

Edge gradient_edge(const Tensor& t) {
  if (t.grad_fn()) return Edge{t.grad_fn(), t.output_nr()};
  TensorImpl& impl = t.impl();
  std::shared_ptr<Node> acc = impl.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    acc->outputs.push_back({t.shape(), t.dtype(), t.device()});
    impl.grad_accumulator = acc;
  }
  return Edge{acc, 0};
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

void set_history(Tensor& out, const std::shared_ptr<Node>& node, uint32_t output_nr) {
  if (!node) return;
  if (node->outputs.size() <= output_nr) node->outputs.resize(output_nr + 1);
  node->outputs[output_nr] = {out.shape(), out.dtype(), out.device()};
  TensorImpl& impl = out.impl();
  impl.grad_fn = node;
  impl.output_nr = output_nr;
  impl.requires_grad = true;
}

std::vector<Tensor> AccumulateGrad::backward(const std::vector<Tensor>& grad_outputs) {
  Tensor grad = grad_outputs.at(0);
  for (const GradHook& hook : leaf_->grad_hooks) {
    Tensor replaced = hook(grad);
    if (replaced.defined()) grad = replaced;
  }
  HD_CHECK(grad.shape() == leaf_->shape, "AccumulateGrad: gradient of shape ", grad.shape(),
           " for leaf '", leaf_->name, "' of shape ", leaf_->shape);
  NoGradGuard no_grad;
  if (!leaf_->grad) {
    // Own the buffer: the incoming gradient may alias a broadcast view or another node's data.
    // A gradient nothing else can reach (this handle and the engine's are its only ones, its
    // storage is its alone and exactly its size, no hook saw it) is adopted as it is, as
    // PyTorch's AccumulateGrad steals it: no copy of every parameter's gradient every step.
    const bool only_here = leaf_->grad_hooks.empty() && grad.impl_ptr().use_count() <= 2 &&
                           grad.storage().use_count() == 1 && grad.is_contiguous() &&
                           grad.offset() == 0 && grad.storage()->nbytes() == grad.nbytes() &&
                           grad.dtype() == leaf_->dtype &&
                           grad.device() == leaf_->storage->device();
    leaf_->grad = (only_here ? grad.detach() : clone(grad)).impl_ptr();
  } else {
    Tensor acc(leaf_->grad);
    add_(acc, grad);
  }
  Tensor leaf(leaf_);
  for (const PostAccumulateHook& hook : leaf_->post_accumulate_hooks) hook(leaf);
  return {};
}

}  // namespace hd
