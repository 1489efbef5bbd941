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

// Keeps the body and its input; the recomputed graph lives only inside backward().
class CheckpointBackward : public Node {
 public:
  CheckpointBackward(std::function<Tensor(const Tensor&)> body, const Tensor& input)
      : body_(std::move(body)), input_(input) {}
  std::string name() const override { return "CheckpointBackward"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    HD_CHECK(input_.defined(), "CheckpointBackward: the saved input was already released");
    Tensor x = input_.unpack(*this).detach();
    if (needs_input_grad(0)) x.requires_grad_(true);
    Tensor y;
    {
      GradModeGuard grad_on(true);
      y = body_(x);
    }
    HD_CHECK(y.shape() == outputs.at(0).shape,
             "CheckpointBackward: the recomputed output has shape ", y.shape(),
             " but the forward's had ", outputs.at(0).shape, " (is the body deterministic?)");
    // A body whose result needs no gradient (frozen parameters, input without grad) has
    // nothing to backpropagate.
    if (y.requires_grad()) run_backward({y}, {grad_outputs.at(0)}, /*retain_graph=*/false);
    return {needs_input_grad(0) ? x.grad() : Tensor()};
  }

  void release_saved() override {
    input_.reset();
    body_ = nullptr;
  }

 private:
  std::function<Tensor(const Tensor&)> body_;
  SavedTensor input_;
};

}  // namespace

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& body, const Tensor& x) {
  if (!GradMode::enabled()) return body(x);
  Tensor y;
  {
    NoGradGuard no_grad;
    y = body(x);
  }
  // The node has one edge, to x; the parameters are reached by the recompute's own graph. It
  // is recorded even when x needs no gradient: the body's parameters may.
  auto node = std::make_shared<CheckpointBackward>(body, x);
  node->next_edges.push_back(x.defined() && x.requires_grad() ? gradient_edge(x) : Edge{});
  set_history(y, node);
  return y;
}

}  // namespace hd
