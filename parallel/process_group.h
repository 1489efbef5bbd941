// One collective interface over two backends: MPI for host tensors (mpi_backend.cpp), NCCL for
// device tensors (nccl_backend.cpp, built with HD_CUDA). FSDP and DDP only see ProcessGroup.
//
// Every collective is asynchronous and returns a Work handle; call wait() before touching the
// buffers. Collectives run in the order they were issued (one FIFO per group), which is what
// keeps ranks matched: every rank issues the same sequence, so sequence numbers identify a
// collective across ranks in watchdog messages.
//
// Buffers are contiguous tensors of f32, f64 or i64, passed as flat element ranges:
//  * all_reduce(t):           t <- op over ranks of t                       (in place)
//  * all_gather(in, out):     out = concat over ranks of in; out.numel() == N * in.numel()
//  * reduce_scatter(in, out): out = rank r's chunk of op over ranks of in; in.numel() == N * out
//  * broadcast(t, root):      t <- t on root
// avg divides by the world size after summing (integers: truncating division).
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "autograd/tensor.h"

namespace hd::parallel {

enum class ReduceOp { sum, avg, max };
enum class Collective { all_reduce, all_gather, reduce_scatter, broadcast, barrier };
constexpr int kNumCollectives = 5;
const char* collective_name(Collective c);
const char* reduce_op_name(ReduceOp op);

// Counters per collective kind, read by monitoring. `bytes` is the payload (the buffer that
// holds the full result: all-reduce/broadcast buffer, all-gather output, reduce-scatter input);
// `bus_bytes` is what one rank sends on a ring, nccl-tests' convention: all-reduce
// 2(N-1)/N * bytes, all-gather and reduce-scatter (N-1)/N * bytes, broadcast bytes. The ZeRO
// communication formulas are stated in bus bytes.
struct CollectiveCounter {
  int64_t calls = 0;
  int64_t bytes = 0;
  double bus_bytes = 0;
  double seconds = 0;  // issue to completion, summed
};
struct CollectiveStats {
  std::array<CollectiveCounter, kNumCollectives> by_kind{};
  const CollectiveCounter& operator[](Collective c) const { return by_kind[size_t(c)]; }
  CollectiveCounter& operator[](Collective c) { return by_kind[size_t(c)]; }
};

// Where this process sits in the job, from the launcher's environment.
struct LaunchInfo {
  int rank = 0, world_size = 1;
  int local_rank = -1, local_world_size = -1;  // -1: not given by the launcher
  std::string source = "default";              // "openmpi", "slurm", "pmi", "default"
};
// Reads OMPI_COMM_WORLD_* (mpirun), then SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID (srun), then
// PMI_RANK/PMI_SIZE (MPICH/hydra). Missing local rank stays -1; ProcessGroup fills it from a
// hostname hash all-gather (llm.c / NCCL docs), never rank % devices (anchors E.6).
LaunchInfo launch_info_from_env();

// A handle on an issued collective; a collective that never completes is the watchdog's
// business, not wait()'s.
//
// wait() makes the result usable by what the caller does next: on the host (MPI) it blocks
// until the collective completed and rethrows its error; on a GPU (NCCL) it makes the caller's
// current stream wait for the collective (a device-side wait, FSDP2's wait_stream) and returns
// at once, so the host keeps enqueueing kernels while NCCL runs. Kernels, copies and frees the
// caller issues afterwards on that stream are ordered after the collective, and a host read of
// a device tensor copies it to the host, which synchronizes the stream. synchronize() blocks
// the host until the collective completed on every backend (barriers, timing).
class Work {
 public:
  struct State;
  Work() = default;
  explicit Work(std::shared_ptr<State> s) : state_(std::move(s)) {}
  void wait() const;
  void synchronize() const;
  bool done() const;
  bool valid() const { return state_ != nullptr; }

 private:
  std::shared_ptr<State> state_;
};

struct ProcessGroupOptions {
  // A collective running longer than this ends the job (watchdog.h). HD_COLLECTIVE_TIMEOUT_S
  // overrides it from the environment.
  double timeout_s = 300.0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }
  virtual std::string backend() const = 0;
  // Where the tensors this group moves live: the host (MPI) or the rank's GPU (NCCL).
  virtual Device device() const = 0;
  // Whether it can move tensors on `d`: the MPI group takes any host device, including the
  // second host device tests use (autograd/device.h); NCCL only its own GPU.
  virtual bool moves(Device d) const { return d == device(); }

  virtual Work all_reduce(const Tensor& t, ReduceOp op) = 0;
  virtual Work all_gather(const Tensor& in, const Tensor& out) = 0;
  virtual Work reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) = 0;
  virtual Work broadcast(const Tensor& t, int root) = 0;
  virtual Work barrier() = 0;

  // Ends the whole job because this rank failed: other ranks print `message` with this rank's
  // number and every process exits non-zero. Only the watchdog and this call may abort.
  [[noreturn]] virtual void abort_job(const std::string& message) = 0;

  CollectiveStats stats() const;
  void reset_stats();

 protected:
  // Called by backends when a collective completes.
  void record(Collective kind, int64_t bytes, double seconds);
  int rank_ = 0, world_size_ = 1, local_rank_ = 0;

 private:
  mutable std::mutex stats_mutex_;
  CollectiveStats stats_;
};

// The MPI group over MPI_COMM_WORLD (initialises MPI with MPI_THREAD_MULTIPLE if needed).
std::shared_ptr<ProcessGroup> make_mpi_group(ProcessGroupOptions options = {});
// The NCCL group for device tensors, bootstrapped through `mpi` (unique id broadcast). Throws
// hd::Error without HD_CUDA or without a GPU.
std::shared_ptr<ProcessGroup> make_nccl_group(const std::shared_ptr<ProcessGroup>& mpi,
                                              ProcessGroupOptions options = {});

// Runs `body`; an exception ends the job through `pg.abort_job` so that no other rank waits
// forever in a collective this rank will never join. Returns body's exit code.
int run_or_abort(ProcessGroup& pg, const std::function<int()>& body);

double bus_factor(Collective kind, int world_size);

}  // namespace hd::parallel
