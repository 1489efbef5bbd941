#include "parallel/broadcast_tensors.h"

#include "autograd/error.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd::parallel {

void broadcast_tensor_list(ProcessGroup& pg, std::vector<Tensor>& tensors, int root) {
  HD_CHECK(root >= 0 && root < pg.world_size(), "broadcast_tensor_list: root ", root,
           " outside a world of ", pg.world_size());
  const bool sender = pg.rank() == root;
  // Header: [count, then per tensor: defined, dtype, ndim, dims...].
  std::vector<int64_t> header;
  if (sender) {
    header.push_back(int64_t(tensors.size()));
    for (const Tensor& t : tensors) {
      header.push_back(t.defined());
      if (!t.defined()) continue;
      HD_CHECK(t.device().is_cpu(), "broadcast_tensor_list: ", t.str(), " is not on the CPU");
      header.push_back(int64_t(t.dtype()));
      header.push_back(t.dim());
      header.insert(header.end(), t.shape().begin(), t.shape().end());
    }
  }
  Tensor length = from_vector<int64_t>({int64_t(header.size())}, {1});
  pg.broadcast(length, root).wait();
  const int64_t n = length.item<int64_t>();
  Tensor head = sender ? from_vector<int64_t>(header, {n}) : empty({n}, DType::i64);
  pg.broadcast(head, root).wait();
  if (!sender) header = head.to_vector<int64_t>();

  std::vector<Tensor> out;
  size_t at = 0;
  auto next = [&] {
    HD_CHECK(at < header.size(), "broadcast_tensor_list: header from rank ", root, " ends early (",
             header.size(), " values)");
    return header[at++];
  };
  const int64_t count = next();
  for (int64_t i = 0; i < count; ++i) {
    if (!next()) {
      out.emplace_back();
      continue;
    }
    const auto dtype = DType(next());
    Shape shape(static_cast<size_t>(next()));
    for (int64_t& d : shape) d = next();
    if (sender) {
      out.push_back(contiguous(tensors[size_t(i)].detach()));
    } else {
      out.push_back(empty(shape, dtype));
    }
    if (out.back().numel() > 0) pg.broadcast(out.back(), root).wait();
  }
  if (!sender) tensors = std::move(out);
}

}  // namespace hd::parallel
