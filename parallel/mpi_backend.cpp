// The MPI process group: host tensors, one communication thread, a watchdog, an error channel.
//
// Why a communication thread: MPI's non-blocking collectives only progress inside MPI calls on
// this OpenMPI (libnbc, no progress thread), so MPI_Iallgather issued before a unit's compute
// would sit idle until the next MPI call. A dedicated thread that runs the blocking collective
// gives real overlap with compute, exactly like a NCCL stream, and a single FIFO keeps the
// collective order identical on every rank. Requires MPI_THREAD_MULTIPLE (the watchdog probes
// the error communicator and may call MPI_Abort while the thread is inside a collective).
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>
#include <type_traits>
#include <vector>

#include "autograd/error.h"
#include "parallel/process_group.h"
#include "parallel/watchdog.h"
#include "parallel/work_state.h"

namespace hd::parallel {
namespace {

constexpr int kErrorTag = 7301;

// Point-to-point tag of the ring reduce-scatter (comm_ carries no other point-to-point traffic).
constexpr int kReduceScatterTag = 7301;

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i64:
      return MPI_INT64_T;
    case DType::i32:
      return MPI_INT32_T;
    case DType::bf16:  // moved as bits; reductions use the user ops of SixteenBitOps
    case DType::f16:
      return MPI_UINT16_T;
    default:
      break;
  }
  throw Error(detail::concat("MPI process group: dtype ", dtype_name(t),
                             " is not supported (f32, f64, bf16, f16, i32, i64)"));
}

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(detail::concat("MPI: ", what, " failed: ", std::string(text, len)));
}

// MPI has no bf16/f16 type, and MPI_SUM on MPI_UINT16_T would add the bit patterns. These user
// ops (one per format and op, so the function knows its element type without global state)
// load to f32, combine, and round back once per combine, as NCCL does for bf16.
template <class T, bool kMax>
void combine_16bit(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = ElementTraits<T>::load(a[i]), y = ElementTraits<T>::load(b[i]);
    b[i] = ElementTraits<T>::store(kMax ? std::max(x, y) : x + y);
  }
}

// The four ops live as long as the process group (created after MPI_Init, freed before
// MPI_Finalize).
class SixteenBitOps {
 public:
  void create() {
    check_mpi(MPI_Op_create(&combine_16bit<bf16_t, false>, 1, &ops_[0][0]), "MPI_Op_create");
    check_mpi(MPI_Op_create(&combine_16bit<bf16_t, true>, 1, &ops_[0][1]), "MPI_Op_create");
    check_mpi(MPI_Op_create(&combine_16bit<f16_t, false>, 1, &ops_[1][0]), "MPI_Op_create");
    check_mpi(MPI_Op_create(&combine_16bit<f16_t, true>, 1, &ops_[1][1]), "MPI_Op_create");
  }
  void free() {
    for (auto& row : ops_) {
      for (MPI_Op& op : row) {
        if (op != MPI_OP_NULL) MPI_Op_free(&op);
      }
    }
  }
  // The MPI op for a reduction (avg is a sum followed by divide()).
  MPI_Op get(ReduceOp op, DType t) const {
    const bool max = op == ReduceOp::max;
    if (t == DType::bf16) return ops_[0][max];
    if (t == DType::f16) return ops_[1][max];
    return max ? MPI_MAX : MPI_SUM;
  }

 private:
  MPI_Op ops_[2][2] = {{MPI_OP_NULL, MPI_OP_NULL}, {MPI_OP_NULL, MPI_OP_NULL}};
};

int count_of(const Tensor& t, const char* what) {
  HD_CHECK(t.device().is_cpu(), "MPI process group: ", what, " needs a host tensor, got ", t.str(),
           " (use the NCCL group for device tensors)");
  HD_CHECK(t.is_contiguous(), "MPI process group: ", what, " needs a contiguous tensor, got ",
           t.str());
  HD_CHECK(t.numel() <= INT_MAX, "MPI process group: ", what, " of ", t.numel(),
           " elements exceeds MPI's int count");
  return int(t.numel());
}

// Divides by the world size after a sum (avg).
void divide(const Tensor& t, int n) {
  const int64_t k = t.numel();
  switch (t.dtype()) {
    case DType::f32: {
      float* p = t.data<float>();
      for (int64_t i = 0; i < k; ++i) p[i] /= float(n);
      break;
    }
    case DType::f64: {
      double* p = t.data<double>();
      for (int64_t i = 0; i < k; ++i) p[i] /= double(n);
      break;
    }
    case DType::i64: {
      int64_t* p = t.data<int64_t>();
      for (int64_t i = 0; i < k; ++i) p[i] /= n;
      break;
    }
    case DType::i32: {
      int32_t* p = t.data<int32_t>();
      for (int64_t i = 0; i < k; ++i) p[i] /= n;
      break;
    }
    case DType::bf16:
    case DType::f16:
      visit_dtype(t.dtype(), "divide", [&]<class T>() {
        if constexpr (std::is_same_v<T, bf16_t> || std::is_same_v<T, f16_t>) {
          T* p = t.data<T>();
          for (int64_t i = 0; i < k; ++i) {
            p[i] = ElementTraits<T>::store(ElementTraits<T>::load(p[i]) / float(n));
          }
        }
      });
      break;
    default:
      break;
  }
}

uint64_t hostname_hash() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (const char* c = name; *c; ++c) h = (h ^ uint8_t(*c)) * 1099511628211ull;
  return h;
}

class MpiProcessGroup final : public ProcessGroup {
 public:
  explicit MpiProcessGroup(ProcessGroupOptions options) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init");
      owns_mpi_ = true;
    }
    int provided = 0;
    MPI_Query_thread(&provided);
    HD_CHECK(provided == MPI_THREAD_MULTIPLE,
             "MPI process group: MPI_THREAD_MULTIPLE is required (the watchdog and the "
             "communication thread call MPI concurrently), MPI provides level ",
             provided, ". Initialise MPI with MPI_Init_thread(MPI_THREAD_MULTIPLE).");
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &error_comm_), "MPI_Comm_dup");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &world_size_);
    sixteen_bit_ops_.create();
    local_rank_ = discover_local_rank();
    Watchdog::Options w;
    w.rank = rank_;
    w.backend = "mpi";
    w.timeout_s = timeout_from_env(options.timeout_s);
    w.remote_error = [this] { return poll_remote_error(); };
    w.abort = [](const std::string&) { MPI_Abort(MPI_COMM_WORLD, 1); };
    watchdog_ = std::make_unique<Watchdog>(std::move(w));
    thread_ = std::thread([this] { run(); });
  }

  ~MpiProcessGroup() override {
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      stop_ = true;
    }
    queue_cv_.notify_all();
    thread_.join();
    watchdog_.reset();
    sixteen_bit_ops_.free();
    MPI_Comm_free(&comm_);
    MPI_Comm_free(&error_comm_);
    if (owns_mpi_) MPI_Finalize();
  }

  std::string backend() const override { return "mpi"; }
  Device device() const override { return Device::cpu(); }
  bool moves(Device d) const override { return d.is_cpu(); }

  Work all_reduce(const Tensor& t, ReduceOp op) override {
    int n = count_of(t, "all_reduce");
    return enqueue(
        Collective::all_reduce, int64_t(t.nbytes()),
        [this, t, op, n] {
          MPI_Op mop = sixteen_bit_ops_.get(op, t.dtype());
          check_mpi(MPI_Allreduce(MPI_IN_PLACE, t.raw_data(), n, mpi_type(t.dtype()), mop, comm_),
                    "MPI_Allreduce");
          if (op == ReduceOp::avg) divide(t, world_size_);
        },
        {t});
  }

  Work all_gather(const Tensor& in, const Tensor& out) override {
    int n = count_of(in, "all_gather input");
    count_of(out, "all_gather output");
    HD_CHECK(in.dtype() == out.dtype() && out.numel() == int64_t(n) * world_size_,
             "all_gather: output ", out.str(), " must hold world_size (", world_size_, ") x input ",
             in.str());
    return enqueue(Collective::all_gather, int64_t(out.nbytes()),
                   [this, in, out, n] {
                     MPI_Datatype dt = mpi_type(in.dtype());
                     check_mpi(MPI_Allgather(in.raw_data(), n, dt, out.raw_data(), n, dt, comm_),
                               "MPI_Allgather");
                   },
                   {in, out});
  }

  Work reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    count_of(in, "reduce_scatter input");
    int n = count_of(out, "reduce_scatter output");
    HD_CHECK(in.dtype() == out.dtype() && in.numel() == int64_t(n) * world_size_,
             "reduce_scatter: input ", in.str(), " must hold world_size (", world_size_,
             ") x output ", out.str());
    return enqueue(Collective::reduce_scatter, int64_t(in.nbytes()),
                   [this, in, out, n, op] {
                     ring_reduce_scatter(in, out, n, sixteen_bit_ops_.get(op, in.dtype()));
                     if (op == ReduceOp::avg) divide(out, world_size_);
                   },
                   {in, out});
  }

  // Ring reduce-scatter: N - 1 steps; at step s rank r sends its running sum of chunk
  // (r - 1 - s) mod N to rank r + 1 and receives chunk (r - 2 - s) mod N from rank r - 1, adding
  // its own contribution (MPI_Reduce_local, any type and op). After the last step it holds
  // chunk r reduced over every rank. Each step goes in segments of 256 KiB, so the received
  // bytes are still in cache when they are added (at 64 MiB, unsegmented, the add ran from
  // memory and the whole collective managed 0.33 GB/s bus bandwidth). Why not
  // MPI_Reduce_scatter_block: this OpenMPI's default measured 0.37 GB/s at 64 MiB on 2 ranks, a
  // quarter of its all-gather. The ring's summation order is fixed: results are deterministic.
  void ring_reduce_scatter(const Tensor& in, const Tensor& out, int n, MPI_Op op) {
    const int N = world_size_, r = rank_;
    const MPI_Datatype dt = mpi_type(in.dtype());
    const size_t elem = dtype_size(in.dtype()), chunk_bytes = size_t(n) * elem;
    const auto* src = static_cast<const char*>(in.raw_data());
    auto own = [&](int c) { return src + size_t((c % N + N) % N) * chunk_bytes; };
    if (N == 1) {
      std::memcpy(out.raw_data(), src, chunk_bytes);
      return;
    }
    // Two chunk buffers (running sum out, running sum in), reused across calls: only the
    // communication thread touches them.
    if (ring_buffer_.size() < 2 * chunk_bytes) ring_buffer_.resize(2 * chunk_bytes);
    char* send = ring_buffer_.data();
    char* recv = send + chunk_bytes;
    std::memcpy(send, own(r - 1), chunk_bytes);
    const int next = (r + 1) % N, prev = (r + N - 1) % N;
    const int segment = int(std::max<size_t>(1, (size_t(256) << 10) / elem));
    for (int s = 0; s < N - 1; ++s) {
      char* sum = s == N - 2 ? static_cast<char*>(out.raw_data()) : recv;
      const char* mine = own(r - 2 - s);
      for (int off = 0; off < n; off += segment) {
        const int len = std::min(segment, n - off);
        const size_t at = size_t(off) * elem;
        check_mpi(MPI_Sendrecv(send + at, len, dt, next, kReduceScatterTag, sum + at, len, dt, prev,
                               kReduceScatterTag, comm_, MPI_STATUS_IGNORE),
                  "MPI_Sendrecv (reduce_scatter)");
        check_mpi(MPI_Reduce_local(mine + at, sum + at, len, dt, op), "MPI_Reduce_local");
      }
      std::swap(send, recv);  // this step's sums go on at the next step
    }
  }

  Work broadcast(const Tensor& t, int root) override {
    int n = count_of(t, "broadcast");
    HD_CHECK(root >= 0 && root < world_size_, "broadcast: root ", root, " outside world size ",
             world_size_);
    return enqueue(Collective::broadcast, int64_t(t.nbytes()),
                   [this, t, n, root] {
                     check_mpi(MPI_Bcast(t.raw_data(), n, mpi_type(t.dtype()), root, comm_),
                               "MPI_Bcast");
                   },
                   {t});
  }

  Work barrier() override {
    return enqueue(Collective::barrier, 0,
                   [this] { check_mpi(MPI_Barrier(comm_), "MPI_Barrier"); });
  }

  [[noreturn]] void abort_job(const std::string& message) override {
    std::string text = "rank " + std::to_string(rank_) + " failed: " + message;
    std::fprintf(stderr, "[hd] %s\n", text.c_str());
    std::fflush(stderr);
    // Tell every other rank first, so each prints who failed and why before MPI_Abort's
    // SIGTERM reaches it. Small messages go eagerly; the short wait bounds the damage if not.
    std::vector<MPI_Request> requests;
    for (int r = 0; r < world_size_; ++r) {
      if (r == rank_) continue;
      requests.emplace_back();
      MPI_Isend(text.data(), int(text.size()), MPI_CHAR, r, kErrorTag, error_comm_,
                &requests.back());
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    int all_done = 0;
    while (!all_done && std::chrono::steady_clock::now() < deadline) {
      MPI_Testall(int(requests.size()), requests.data(), &all_done, MPI_STATUSES_IGNORE);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let them print
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();
  }

 private:
  struct Task {
    uint64_t seq;
    Collective kind;
    int64_t bytes;
    std::function<void()> run;
    std::shared_ptr<Work::State> state;
  };

  // [Note: buffer lifetime] A collective's buffers must stay alive until its Work has been
  // waited for: on a GPU the NCCL stream reads and writes them after the call has returned, and
  // a buffer freed on the compute stream is reused while NCCL still uses it. Here the closure
  // keeps its own references (the host is safe either way), but wait() checks that the caller
  // still holds each buffer, so the CPU tests catch what on a GPU would be silent corruption.
  struct BufferCheckedState final : Work::State {
    Collective kind = Collective::barrier;
    std::vector<std::weak_ptr<Storage>> buffers;
    void wait() override {
      Work::State::wait();
      for (const auto& b : buffers) {
        HD_CHECK(!b.expired(), "MPI process group: a buffer of ", collective_name(kind),
                 " was freed before its Work was waited for; keep a collective's tensors alive "
                 "until wait() (on a GPU, NCCL uses them after the call returns: [Note: buffer "
                 "lifetime], parallel/mpi_backend.cpp)");
      }
    }
  };

  Work enqueue(Collective kind, int64_t bytes, std::function<void()> fn,
               const std::vector<Tensor>& buffers = {}) {
    auto state = std::make_shared<BufferCheckedState>();
    state->kind = kind;
    for (const Tensor& t : buffers) state->buffers.push_back(t.storage());
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      queue_.push_back(Task{next_seq_++, kind, bytes, std::move(fn), state});
    }
    queue_cv_.notify_one();
    return Work(state);
  }

  void run() {
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(queue_mutex_);
        queue_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ and drained
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      auto t0 = std::chrono::steady_clock::now();
      watchdog_->begin(task.seq, task.kind, task.bytes);
      std::exception_ptr error;
      try {
        task.run();
      } catch (...) {
        error = std::current_exception();
      }
      watchdog_->end();
      record(task.kind, task.bytes,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      // Drop the closure (and the buffers it holds) before waking the waiter, so memory
      // counters read after wait() do not depend on this thread's timing.
      task.run = nullptr;
      task.state->complete(error);
    }
  }

  std::optional<std::string> poll_remote_error() {
    int flag = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, kErrorTag, error_comm_, &flag, &status);
    if (!flag) return std::nullopt;
    int len = 0;
    MPI_Get_count(&status, MPI_CHAR, &len);
    std::string text(size_t(len), '\0');
    MPI_Recv(text.data(), len, MPI_CHAR, status.MPI_SOURCE, kErrorTag, error_comm_,
             MPI_STATUS_IGNORE);
    return text;
  }

  // Launcher's local rank if it gave one, else the number of lower ranks on the same host.
  int discover_local_rank() {
    LaunchInfo info = launch_info_from_env();
    if (info.local_rank >= 0) return info.local_rank;
    uint64_t mine = hostname_hash();
    std::vector<uint64_t> all(static_cast<size_t>(world_size_), 0);
    check_mpi(MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, comm_),
              "MPI_Allgather(hostname hash)");
    int local = 0;
    for (int r = 0; r < rank_; ++r) local += all[size_t(r)] == mine;
    return local;
  }

  MPI_Comm comm_ = MPI_COMM_NULL, error_comm_ = MPI_COMM_NULL;
  bool owns_mpi_ = false;
  std::unique_ptr<Watchdog> watchdog_;
  std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<Task> queue_;
  uint64_t next_seq_ = 1;
  bool stop_ = false;
  std::thread thread_;
  std::vector<char> ring_buffer_;  // ring_reduce_scatter's chunk buffers
  SixteenBitOps sixteen_bit_ops_;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_mpi_group(ProcessGroupOptions options) {
  return std::make_shared<MpiProcessGroup>(options);
}

}  // namespace hd::parallel
