#include "autograd/checkpoint.h"

#include "autograd/engine.h"
#include "autograd/error.h"
#include "autograd/node.h"

namespace hd {
namespace {

class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled) : previous_(GradMode::enabled()) {
    GradMode::set_enabled(enabled);
  }
  ~GradModeGuard() { GradMode::set_enabled(previous_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

// Keeps the body and its inputs; the recomputed graph lives only inside backward().
class CheckpointBackward : public Node {
 public:
  CheckpointBackward(MultiInputBody body, const std::vector<Tensor>& inputs)
      : body_(std::move(body)) {
    for (const Tensor& x : inputs) inputs_.emplace_back(x);
  }
  std::string name() const override { return "CheckpointBackward"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    HD_CHECK(body_, "CheckpointBackward: the saved body and inputs were already released");
    std::vector<Tensor> xs;
    xs.reserve(inputs_.size());
    for (size_t i = 0; i < inputs_.size(); ++i) {
      Tensor x = inputs_[i].defined() ? inputs_[i].unpack(*this).detach() : Tensor();
      if (x.defined() && needs_input_grad(i)) x.requires_grad_(true);
      xs.push_back(x);
    }
    Tensor y;
    {
      GradModeGuard grad_on(true);
      y = body_(xs);
    }
    HD_CHECK(y.shape() == outputs.at(0).shape,
             "CheckpointBackward: the recomputed output has shape ", y.shape(),
             " but the forward's had ", outputs.at(0).shape, " (is the body deterministic?)");
    // A body whose result needs no gradient (frozen parameters, inputs without grad) has
    // nothing to backpropagate.
    if (y.requires_grad()) run_backward({y}, {grad_outputs.at(0)}, /*retain_graph=*/false);
    std::vector<Tensor> grads;
    for (size_t i = 0; i < xs.size(); ++i) {
      grads.push_back(xs[i].defined() && needs_input_grad(i) ? xs[i].grad() : Tensor());
    }
    return grads;
  }

  void release_saved() override {
    for (SavedTensor& s : inputs_) s.reset();
    body_ = nullptr;
  }

 private:
  MultiInputBody body_;
  std::vector<SavedTensor> inputs_;
};

}  // namespace

Tensor checkpoint(const MultiInputBody& body, const std::vector<Tensor>& inputs) {
  if (!GradMode::enabled()) return body(inputs);
  Tensor y;
  {
    NoGradGuard no_grad;
    y = body(inputs);
  }
  // One edge per input; the parameters are reached by the recompute's own graph. The node is
  // recorded even when no input needs a gradient: the body's parameters may.
  auto node = std::make_shared<CheckpointBackward>(body, inputs);
  for (const Tensor& x : inputs) {
    node->next_edges.push_back(x.defined() && x.requires_grad() ? gradient_edge(x) : Edge{});
  }
  set_history(y, node);
  return y;
}

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& body, const Tensor& x) {
  return checkpoint([body](const std::vector<Tensor>& xs) { return body(xs[0]); },
                    std::vector<Tensor>{x});
}

bool is_recomputed_in_backward(const Tensor& output) {
  return output.defined() && dynamic_cast<const CheckpointBackward*>(output.grad_fn().get());
}

}  // namespace hd
