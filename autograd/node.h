// The autograd graph.
//
// A differentiable op that sees an input requiring grad records a Node: it holds one Edge per
// differentiable input (the node that produced that input, or the input's AccumulateGrad node
// if it is a leaf) and saves only what its backward needs (flashlight's rule). Backward formulas
// are written with ops (hd::mul, hd::matmul, ...), never with raw loops, so any backend that
// implements the forward ops gets gradients for free (ggml's rule).
//
// Hook contract (FSDP and DDP are built on it):
//  * Node pre-hooks run just before a node's backward, with the gradients w.r.t. its outputs;
//    they may modify them. FSDP uses them to all-gather a unit's parameters before its backward.
//  * Node post-hooks run right after, with the gradients w.r.t. its inputs (modifiable) and
//    outputs. FSDP uses them to reduce-scatter a unit's gradients.
//  * Leaf grad hooks (Tensor::register_grad_hook) run on every gradient arriving at a leaf,
//    before accumulation, in registration order; each may return a replacement.
//  * Post-accumulate hooks (Tensor::register_post_accumulate_hook) run once per arrival, after
//    the gradient has been added into leaf.grad(). DDP buckets start their all-reduce here.
//  * Order: the engine runs ready nodes latest-created first, so for a sequential model the
//    hooks of the last layer fire first, as in PyTorch.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace hd {

struct Edge {
  std::shared_ptr<Node> node;  // null: this input needs no gradient
  uint32_t input_nr = 0;       // which output of `node` the input was
};

struct TensorMeta {
  Shape shape;
  DType dtype = DType::f32;
  Device device;
};

// A tensor saved for backward, with the storage version it had when saved. unpack() throws if
// the tensor was modified in place since, because the gradient would silently be wrong.
// It keeps a detached handle: backward runs without grad, and a node saving its own output
// with history would own itself (node -> output -> grad_fn -> node) and leak. The version
// counter lives on the shared storage, so in-place writes are still seen.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t)
      : tensor_(t.defined() ? t.detach() : t), version_(t.defined() ? t.version() : 0) {}
  Tensor unpack(const Node& owner) const;
  bool defined() const { return tensor_.defined(); }
  void reset() { tensor_ = Tensor(); }

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  using PreHook = std::function<void(std::vector<Tensor>& grad_outputs)>;
  using PostHook =
      std::function<void(std::vector<Tensor>& grad_inputs, const std::vector<Tensor>& grad_outputs)>;

  Node();
  virtual ~Node() = default;
  virtual std::string name() const = 0;
  // grad_outputs has one defined tensor per output (the engine fills missing ones with zeros).
  // Returns one gradient per edge; an entry may be undefined where needs_input_grad is false.
  virtual std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) = 0;
  // Drops saved tensors once backward has run without retain_graph.
  virtual void release_saved() {}

  bool needs_input_grad(size_t i) const { return i < next_edges.size() && next_edges[i].node; }
  void add_pre_hook(PreHook h) { pre_hooks.push_back(std::move(h)); }
  void add_post_hook(PostHook h) { post_hooks.push_back(std::move(h)); }

  std::vector<Edge> next_edges;
  std::vector<TensorMeta> outputs;  // metadata of each output, to materialise zero grads
  std::vector<PreHook> pre_hooks;
  std::vector<PostHook> post_hooks;
  uint64_t sequence_nr;  // creation order; later nodes run first among ready ones
  bool released = false;
};

// The node at the end of every leaf's edges: adds incoming gradients into leaf.grad().
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::string name() const override { return "AccumulateGrad"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override;

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// Grad mode is per thread (a loader thread must not see the trainer's no_grad scope).
struct GradMode {
  static bool enabled();
  static void set_enabled(bool enabled);
};

class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// --- helpers for op implementations --------------------------------------------------------

// The edge a gradient for `t` must flow along (AccumulateGrad for leaves, created once).
Edge gradient_edge(const Tensor& t);

// True when grad mode is on and any defined input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);

// Creates node N with one edge per input if any input requires grad; nullptr otherwise.
template <class N, class... Args>
std::shared_ptr<N> make_grad_node(std::initializer_list<const Tensor*> inputs, Args&&... args) {
  if (!any_requires_grad(inputs)) return nullptr;
  auto node = std::make_shared<N>(std::forward<Args>(args)...);
  for (const Tensor* t : inputs) {
    node->next_edges.push_back(t->defined() && t->requires_grad() ? gradient_edge(*t) : Edge{});
  }
  return node;
}

// Makes `out` the `output_nr`-th output of `node` (records its metadata on the node).
void set_history(Tensor& out, const std::shared_ptr<Node>& node, uint32_t output_nr = 0);

}  // namespace hd
