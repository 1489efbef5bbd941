// The NCCL process group: device tensors, one communicator per process, bootstrapped over MPI.
//
// Bootstrap (llm.c's multi_gpu_config_init, anchors B.2): rank 0 creates the unique id, the MPI
// group broadcasts it, every rank selects device local_rank and joins with ncclCommInitRank.
// Collectives are enqueued on a dedicated stream that first waits (device-side, through an
// event) for the device's current compute stream, where the tensors were produced
// (ops/cuda/runtime.h); a Work waits on a CUDA event recorded after the collective, device-side
// (the caller's stream waits for it; process_group.h, Work). Buffers must stay alive until the
// Work has been waited on: the allocator frees on the compute stream, which from then on is
// ordered after the collective. The
// communicator is non-blocking (config.blocking = 0) so the watchdog can poll ncclCommGetAsyncError
// and call ncclCommAbort: NCCL has no timeout of its own (E.4).
//
// Built only with HD_CUDA (HD_PARALLEL_NCCL); make_nccl_group throws otherwise.
#include "parallel/process_group.h"

#ifdef HD_PARALLEL_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "autograd/error.h"
#include "ops/cuda/runtime.h"
#include "parallel/watchdog.h"
#include "parallel/work_state.h"
#endif

namespace hd::parallel {

#ifdef HD_PARALLEL_NCCL
namespace {

void check_cuda(cudaError_t rc, const char* what) {
  HD_CHECK(rc == cudaSuccess, "CUDA: ", what, " failed: ", cudaGetErrorString(rc));
}

void check_nccl(ncclResult_t rc, const char* what) {
  HD_CHECK(rc == ncclSuccess || rc == ncclInProgress, "NCCL: ", what,
           " failed: ", ncclGetErrorString(rc));
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::i64:
      return ncclInt64;
    case DType::i32:
      return ncclInt32;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    default:
      break;
  }
  throw Error(detail::concat("NCCL process group: dtype ", dtype_name(t), " is not supported"));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  return ncclSum;
}

// Completion is the event after the collective on the NCCL stream. wait() orders the caller's
// current stream after it without blocking the host (Work's note); a barrier's wait blocks the
// host, since "every rank got here" is a statement about the host.
struct EventState final : Work::State {
  cudaEvent_t event = nullptr;
  int device = 0;
  bool host_blocking = false;
  ~EventState() override {
    if (event) cudaEventDestroy(event);
  }
  void wait() override {
    if (host_blocking) return synchronize();
    hd::cuda::DeviceGuard guard(device);
    check_cuda(cudaStreamWaitEvent(hd::cuda::current_stream(device).handle(), event, 0),
               "cudaStreamWaitEvent (Work::wait)");
  }
  void synchronize() override { check_cuda(cudaEventSynchronize(event), "cudaEventSynchronize"); }
  bool done() override { return cudaEventQuery(event) == cudaSuccess; }
};

class NcclProcessGroup final : public ProcessGroup {
 public:
  NcclProcessGroup(const std::shared_ptr<ProcessGroup>& mpi, ProcessGroupOptions options) {
    rank_ = mpi->rank();
    world_size_ = mpi->world_size();
    local_rank_ = mpi->local_rank();
    int devices = 0;
    cudaError_t rc = cudaGetDeviceCount(&devices);
    HD_CHECK(rc == cudaSuccess && devices > 0, "NCCL process group: no CUDA device (",
             cudaGetErrorString(rc), ")");
    HD_CHECK(local_rank_ < devices, "NCCL process group: local rank ", local_rank_, " but only ",
             devices, " devices on this host (one process per device)");
    device_ = local_rank_;
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");

    ncclUniqueId id;
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    Tensor id_bytes = Tensor::empty({int64_t(sizeof(id) / sizeof(int32_t))}, DType::i32);
    std::memcpy(id_bytes.raw_data(), &id, sizeof(id));
    mpi->broadcast(id_bytes, 0).wait();
    std::memcpy(&id, id_bytes.raw_data(), sizeof(id));

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    check_nccl(ncclCommInitRankConfig(&comm_, world_size_, id, rank_, &config),
               "ncclCommInitRankConfig");
    wait_ready("ncclCommInitRankConfig");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");

    Watchdog::Options w;
    w.rank = rank_;
    w.backend = "nccl";
    w.timeout_s = timeout_from_env(options.timeout_s);
    w.remote_error = [this]() -> std::optional<std::string> {
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state == ncclSuccess || state == ncclInProgress) return std::nullopt;
      return std::string("NCCL async error: ") + ncclGetErrorString(state);
    };
    w.abort = [this](const std::string&) {
      ncclCommAbort(comm_);
      std::abort();
    };
    watchdog_ = std::make_unique<Watchdog>(std::move(w));
  }

  ~NcclProcessGroup() override {
    watchdog_.reset();
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(device_); }

  Work all_reduce(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce");
    return launch(Collective::all_reduce, int64_t(t.nbytes()), [&] {
      return ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                           nccl_op(op), comm_, stream_);
    });
  }
  Work all_gather(const Tensor& in, const Tensor& out) override {
    check(in, "all_gather");
    check(out, "all_gather");
    HD_CHECK(out.numel() == in.numel() * world_size_, "all_gather: output ", out.str(),
             " must hold world_size x input ", in.str());
    return launch(Collective::all_gather, int64_t(out.nbytes()), [&] {
      return ncclAllGather(in.raw_data(), out.raw_data(), size_t(in.numel()), nccl_type(in.dtype()),
                           comm_, stream_);
    });
  }
  Work reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check(in, "reduce_scatter");
    check(out, "reduce_scatter");
    HD_CHECK(in.numel() == out.numel() * world_size_, "reduce_scatter: input ", in.str(),
             " must hold world_size x output ", out.str());
    return launch(Collective::reduce_scatter, int64_t(in.nbytes()), [&] {
      return ncclReduceScatter(in.raw_data(), out.raw_data(), size_t(out.numel()),
                               nccl_type(in.dtype()), nccl_op(op), comm_, stream_);
    });
  }
  Work broadcast(const Tensor& t, int root) override {
    check(t, "broadcast");
    return launch(Collective::broadcast, int64_t(t.nbytes()), [&] {
      return ncclBroadcast(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                           root, comm_, stream_);
    });
  }
  Work barrier() override {
    // A one-element all-reduce, as llm.c's multi_gpu_barrier.
    if (!barrier_buf_) check_cuda(cudaMalloc(&barrier_buf_, sizeof(float)), "cudaMalloc");
    return launch(Collective::barrier, 0, [&] {
      return ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclFloat32, ncclSum, comm_, stream_);
    });
  }

  [[noreturn]] void abort_job(const std::string& message) override {
    std::fprintf(stderr, "[hd] rank %d failed: %s\n", rank_, message.c_str());
    std::fflush(stderr);
    ncclCommAbort(comm_);
    std::abort();
  }

 private:
  void check(const Tensor& t, const char* what) const {
    HD_CHECK(!t.device().is_cpu() && t.is_contiguous(), "NCCL process group: ", what,
             " needs a contiguous device tensor, got ", t.str());
    HD_CHECK(t.device().index == device_, "NCCL process group: ", what, " got ", t.str(),
             " but this rank's communicator is on cuda:", device_);
  }

  template <class F>
  Work launch(Collective kind, int64_t bytes, F&& issue) {
    auto state = std::make_shared<EventState>();
    state->device = device_;
    state->host_blocking = kind == Collective::barrier;
    check_cuda(cudaEventCreateWithFlags(&state->event, cudaEventDisableTiming), "cudaEventCreate");
    {
      // Order the collective after the kernels that produced its inputs, without a host sync.
      hd::cuda::DeviceGuard guard(device_);
      hd::cuda::Event inputs_ready;
      inputs_ready.record(hd::cuda::current_stream(device_));
      check_cuda(cudaStreamWaitEvent(stream_, inputs_ready.handle(), 0), "cudaStreamWaitEvent");
    }
    auto t0 = std::chrono::steady_clock::now();
    watchdog_->begin(++seq_, kind, bytes);
    check_nccl(issue(), collective_name(kind));
    wait_ready(collective_name(kind));
    check_cuda(cudaEventRecord(state->event, stream_), "cudaEventRecord");
    watchdog_->end();  // enqueued; device-side completion is waited on by Work
    record(kind, bytes,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return Work(state);
  }

  // Non-blocking communicators return ncclInProgress until the call is enqueued.
  void wait_ready(const char* what) {
    ncclResult_t state = ncclInProgress;
    while (state == ncclInProgress) check_nccl(ncclCommGetAsyncError(comm_, &state), what);
    check_nccl(state, what);
  }

  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* barrier_buf_ = nullptr;
  uint64_t seq_ = 0;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_nccl_group(const std::shared_ptr<ProcessGroup>& mpi,
                                              ProcessGroupOptions options) {
  return std::make_shared<NcclProcessGroup>(mpi, options);
}
#else
std::shared_ptr<ProcessGroup> make_nccl_group(const std::shared_ptr<ProcessGroup>&,
                                              ProcessGroupOptions) {
  throw Error("NCCL process group: hdtrain was built without HD_CUDA");
}
#endif

}  // namespace hd::parallel
