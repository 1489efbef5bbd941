// Tensor: a cheap handle (one shared_ptr) to shape, strides, offset, dtype and storage.
// Copying a Tensor copies the handle, not the data; views share storage. Operators live in
// ops/ as free functions (hd::add, hd::matmul, ...) so this header stays the data model only.
//
// Autograd state sits on the impl: requires_grad, the node that produced the tensor
// (grad_fn), the accumulated .grad of a leaf, and hooks. See autograd/node.h for the contract.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/device.h"
#include "autograd/dtype.h"
#include "autograd/storage.h"

namespace hd {

using Shape = std::vector<int64_t>;

class Node;
class Tensor;

int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);

// Hooks on a leaf tensor's gradient (see node.h for when each runs).
using GradHook = std::function<Tensor(const Tensor& grad)>;  // may return a replacement
using PostAccumulateHook = std::function<void(Tensor& leaf)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  uint32_t output_nr = 0;         // which output of grad_fn this tensor is
  std::shared_ptr<TensorImpl> grad;
  std::weak_ptr<Node> grad_accumulator;  // leaves: the AccumulateGrad node edges point to
  std::vector<GradHook> grad_hooks;
  std::vector<PostAccumulateHook> post_accumulate_hooks;
  std::string name;  // optional, shown in error messages and hooks
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Uninitialised contiguous tensor. Factories with values are in ops/factory.h.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  // The same on the host, in a pinned staging buffer (autograd/pinned_host.h): what a batch
  // bound for a GPU is assembled in, so its copy to the device does not block the host.
  static Tensor empty_pinned(const Shape& shape, DType dtype = DType::f32);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t dim() const { return int64_t(impl().shape.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(impl().shape); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  // Whether the storage came from pinned_host_allocator() (page-locked when a GPU is present).
  bool is_pinned() const;
  std::string str() const;  // "f32[2, 3] cpu" for messages

  // Pointer to element 0 (storage + offset). T must match dtype() (checked).
  template <class T>
  T* data() const {
    HD_CHECK(dtype_of<T>() == dtype(), "Tensor::data: requested ", dtype_name(dtype_of<T>()),
             " but tensor is ", dtype_name(dtype()));
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const {
    return static_cast<char*>(impl().storage->data()) +
           impl().offset * int64_t(dtype_size(dtype()));
  }
  // Host copy of the elements in logical (row-major) order, converted to T.
  template <class T>
  std::vector<T> to_vector() const;
  template <class T>
  T item() const;

  // A new handle on the same storage with other geometry (no autograd; ops/shape.h wraps
  // this with gradients).
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  // --- autograd ---
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as needing gradients. Throws on a non-leaf (its flag comes from its inputs).
  Tensor& requires_grad_(bool value = true);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  uint32_t output_nr() const { return impl().output_nr; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  // Same storage, no history: gradients stop here.
  Tensor detach() const;
  uint64_t version() const { return impl().storage->version(); }
  void bump_version() const { impl().storage->bump_version(); }
  const std::string& name() const { return impl().name; }
  Tensor& set_name(std::string n) {
    impl().name = std::move(n);
    return *this;
  }
  // Runs backward from this tensor (a scalar unless `gradient` is given). See engine.h.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  // Leaf hooks: `hook` sees (and may replace) each incoming gradient before accumulation;
  // `post` runs after the gradient has been accumulated into .grad.
  void register_grad_hook(GradHook hook) const { impl().grad_hooks.push_back(std::move(hook)); }
  void register_post_accumulate_hook(PostAccumulateHook post) const {
    impl().post_accumulate_hooks.push_back(std::move(post));
  }

  TensorImpl& impl() const {
    HD_CHECK(impl_ != nullptr, "use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace hd
