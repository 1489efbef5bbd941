// AsyncCheckpointer: snapshot to host buffers on the caller's thread, write and commit on a
// writer thread over a process group of its own.
//
// Why its own group (anchors E.5): the writer's collectives (tmp-folder broadcast, the commit
// all-gather) run while the training thread issues FSDP's all-gathers and reduce-scatters. On one
// communicator the two sequences would interleave differently on different ranks and deadlock or
// mismatch; a duplicated communicator has its own matching space and its own issue queue.
//
// Why errors come back through save()/wait() and not at once: the writer cannot interrupt the
// training thread. save_checkpoint already makes every rank throw when any rank failed (the
// commit all-gather carries each rank's status), so each rank's writer holds an error for the
// same step, and every rank's next save()/wait() rethrows it: the failure is seen everywhere at
// the same point of the training loop, and no manifest was written.
//
// One save in flight at most: save() first waits for the previous one. That bounds host memory
// to one snapshot and keeps the io group's collectives in the same order on every rank.
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <iostream>
#include <thread>

#include "autograd/error.h"
#include "parallel/checkpoint/train_state.h"

namespace hd::parallel::ckpt {
namespace fs = std::filesystem;
using ::hd::detail::concat;

struct AsyncCheckpointer::Impl {
  std::shared_ptr<ProcessGroup> io_pg;
  RetentionPolicy retention;
  std::thread writer;
  std::atomic<bool> running{false};
  std::exception_ptr error;     // set by the writer, read after join
  std::vector<Tensor> buffers;  // host snapshot, reused across saves
  double blocked_s = 0;
  std::function<void()> before_write;

  void join() {
    if (writer.joinable()) writer.join();
  }
  void rethrow() {
    if (!error) return;
    std::exception_ptr e = std::exchange(error, nullptr);  // reported once
    std::rethrow_exception(e);
  }
};

AsyncCheckpointer::AsyncCheckpointer(std::shared_ptr<ProcessGroup> io_pg, RetentionPolicy retention)
    : impl_(std::make_unique<Impl>()) {
  HD_CHECK(io_pg != nullptr, "AsyncCheckpointer: needs a process group of its own (io_pg is null)");
  impl_->io_pg = std::move(io_pg);
  impl_->retention = retention;
}

AsyncCheckpointer::~AsyncCheckpointer() {
  impl_->join();
  if (impl_->error) {
    try {
      impl_->rethrow();
    } catch (const std::exception& e) {
      std::cerr << "hdtrain: error: unreported async checkpoint failure: " << e.what() << "\n";
    }
  }
}

void AsyncCheckpointer::save(const fs::path& dir, int64_t step, const std::vector<ShardRef>& shards,
                             const TrainerState& state, const SaveOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  wait();  // one save in flight; rethrows the previous save's failure
  Impl& m = *impl_;
  // Snapshot: the only work the training loop waits for. Shards are copied whole (padding
  // included) so the writer sees exactly the bytes a synchronous save would.
  if (m.buffers.size() != shards.size()) m.buffers.assign(shards.size(), Tensor());
  std::vector<ShardRef> snapshot;
  snapshot.reserve(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    const ShardRef& s = shards[i];
    HD_CHECK(s.shard.dtype() == DType::f32 && s.shard.is_contiguous() &&
                 s.shard.device().is_cpu() && s.shard.numel() >= s.info.padded_length,
             "AsyncCheckpointer: '", s.info.name, "' needs a contiguous host f32 shard of ",
             s.info.padded_length, " elements, got ", s.shard.str());
    Tensor& b = m.buffers[i];
    if (!b.defined() || b.numel() != s.info.padded_length)
      b = Tensor::empty({s.info.padded_length}, DType::f32);
    std::memcpy(b.data<float>(), s.shard.data<float>(), size_t(s.info.padded_length) * 4);
    snapshot.push_back({s.info, b});
  }
  m.running = true;
  m.writer = std::thread([this, dir, step, snapshot = std::move(snapshot), state, options] {
    Impl& w = *impl_;
    try {
      if (w.before_write) w.before_write();
      save_training_checkpoint(dir, step, snapshot, state, *w.io_pg, options);
      if (w.io_pg->rank() == 0) {
        // Retention is housekeeping: failing to delete an old folder must not fail the save
        // (and would be seen on rank 0 only), so it is a warning.
        try {
          apply_retention(dir, w.retention);
        } catch (const std::exception& e) {
          std::cerr << "hdtrain: warning: " << e.what() << "\n";
        }
      }
    } catch (const std::exception& e) {
      w.error = std::make_exception_ptr(
          Error(concat("async checkpoint of step ", step, " failed: ", e.what())));
    }
    w.running = false;
  });
  m.blocked_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void AsyncCheckpointer::wait() {
  impl_->join();
  impl_->rethrow();
}

bool AsyncCheckpointer::busy() const {
  return impl_->running.load();
}

bool AsyncCheckpointer::failed() const {
  // `error` is written before `running` is cleared (both by the writer thread), so once running
  // reads false the error is visible here.
  return !impl_->running.load() && impl_->error != nullptr;
}

double AsyncCheckpointer::last_blocked_seconds() const {
  return impl_->blocked_s;
}

void AsyncCheckpointer::set_before_write_hook(std::function<void()> hook) {
  HD_CHECK(!busy(), "AsyncCheckpointer: set_before_write_hook while a save is in flight");
  impl_->before_write = std::move(hook);
}

}  // namespace hd::parallel::ckpt
