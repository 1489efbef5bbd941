// Backward engine: dependency counting, then a ready queue ordered latest-created first.
//
// Why that order: among nodes whose inputs are complete, the most recently created one is the
// deepest in the forward pass, so gradients come back layer by layer in reverse. FSDP relies on
// it to prefetch the previous unit's parameters while the current unit's backward runs.
#include "autograd/engine.h"

#include <queue>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

#include "ops/elementwise.h"
#include "ops/factory.h"

namespace hd {
namespace {

struct LaterFirst {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

// Gradients waiting for a node, one slot per output; summed when several edges deliver.
struct InputBuffer {
  std::vector<Tensor> grads;
  void add(uint32_t slot, const Tensor& g, size_t num_outputs) {
    if (grads.size() < num_outputs) grads.resize(num_outputs);
    Tensor& cur = grads[slot];
    cur = cur.defined() ? add(cur, g) : g;
  }
  static Tensor add(const Tensor& a, const Tensor& b) { return hd::add(a, b); }
};

}  // namespace

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph) {
  HD_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ", grads.size(),
           " gradients");
  NoGradGuard no_grad;  // backward formulas do not build graphs of their own

  // Open-addressing maps keyed by Node* (no allocation per entry, unlike std::unordered_map):
  // backward touches each a few times per node; on a graph of 1-element ops, where this
  // bookkeeping is a visible share, backward got about 10 % faster (bench/ops_bench.cpp
  // BM_BackwardChainTiny). Nothing iterates these maps, so their order cannot affect results.
  absl::flat_hash_map<Node*, InputBuffer> buffers;
  std::vector<std::shared_ptr<Node>> root_nodes;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    HD_CHECK(r.requires_grad(), "backward: tensor ", r.str(),
             " does not require grad and has no grad_fn (was it computed under no_grad, or from "
             "inputs that do not require grad?)");
    Tensor g = grads[i];
    if (!g.defined()) {
      HD_CHECK(r.numel() == 1, "backward: a gradient must be given for non-scalar output ",
               r.str());
      g = ones(r.shape(), r.dtype(), r.device());
    }
    HD_CHECK(g.shape() == r.shape(), "backward: gradient shape ", g.shape(),
             " does not match output shape ", r.shape());
    Edge e = gradient_edge(r);
    buffers[e.node.get()].add(e.input_nr, g, std::max<size_t>(e.node->outputs.size(), 1));
    root_nodes.push_back(e.node);
  }

  // Count, for every reachable node, how many edges point at it.
  absl::flat_hash_map<Node*, int> dependencies;
  std::vector<Node*> stack;
  absl::flat_hash_set<Node*> seen;
  for (auto& n : root_nodes) {
    if (seen.insert(n.get()).second) stack.push_back(n.get());
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.node) continue;
      ++dependencies[e.node.get()];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  std::priority_queue<Node*, std::vector<Node*>, LaterFirst> ready;
  for (auto& n : root_nodes) {
    if (dependencies[n.get()] == 0) {
      dependencies[n.get()] = -1;  // queued
      ready.push(n.get());
    }
  }

  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    HD_CHECK(!node->released, node->name(),
             ": trying to run backward through the graph a second time, but its saved tensors "
             "were already freed. Pass retain_graph=true to the first backward.");
    std::vector<Tensor> grad_outputs;
    if (auto it = buffers.find(node); it != buffers.end()) {
      grad_outputs = std::move(it->second.grads);
      buffers.erase(it);
    }
    grad_outputs.resize(std::max<size_t>(node->outputs.size(), 1));
    for (size_t i = 0; i < grad_outputs.size(); ++i) {
      if (!grad_outputs[i].defined()) {
        const TensorMeta& m = node->outputs.at(i);
        grad_outputs[i] = zeros(m.shape, m.dtype, m.device);
      }
    }
    for (auto& hook : node->pre_hooks) hook(grad_outputs);
    std::vector<Tensor> grad_inputs = node->backward(grad_outputs);
    for (auto& hook : node->post_hooks) hook(grad_inputs, grad_outputs);
    if (!retain_graph) {
      node->release_saved();
      if (!dynamic_cast<AccumulateGrad*>(node)) node->released = true;
    }

    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.node) continue;
      Node* next = e.node.get();
      if (i < grad_inputs.size() && grad_inputs[i].defined()) {
        const Tensor& g = grad_inputs[i];
        const TensorMeta& m = next->outputs.at(e.input_nr);
        HD_CHECK(g.shape() == m.shape, node->name(), ": backward returned a gradient of shape ",
                 g.shape(), " for input ", i, " whose shape is ", m.shape);
        buffers[next].add(e.input_nr, g, next->outputs.size());
      }
      if (--dependencies[next] == 0) ready.push(next);
    }
  }
}

}  // namespace hd
