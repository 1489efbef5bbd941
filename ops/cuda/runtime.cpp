// The CUDA runtime layer (see runtime.h for why it looks like this). Plain C++ against the CUDA
// runtime API: no kernels here, so it compiles with the host compiler.
#include "ops/cuda/runtime.h"

#include <cstdint>
#include <vector>

#include "ops/cuda/device_probe.h"

namespace hd::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const std::string& context) {
  cudaGetLastError();  // reset the non-sticky error state so later checks see only new errors
  throw Error(detail::concat(context.empty() ? std::string("CUDA") : context, ": ", call,
                             " failed: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

namespace {

const DeviceProbe& probe() {
  static const DeviceProbe p = probe_devices();
  return p;
}

// The registry: per device a default stream and an allocator, created on first use. It is
// leaked on purpose: tensors in static objects may be freed after main returns, and their
// streams and pools must still exist then.
struct DeviceState {
  std::once_flag once;
  std::shared_ptr<Stream> stream;
  std::unique_ptr<CudaAllocator> allocator;
};

struct Registry {
  std::vector<std::unique_ptr<DeviceState>> devices;
  Registry() {
    for (int i = 0; i < probe().device_count; ++i)
      devices.push_back(std::make_unique<DeviceState>());
  }
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

DeviceState& state(int device) {
  require_device(Device::cuda(device), "CUDA runtime");
  DeviceState& s = *registry().devices[size_t(device)];
  std::call_once(s.once, [&] {
    s.stream = Stream::create(device);
    s.allocator = std::make_unique<CudaAllocator>(device);
  });
  return s;
}

thread_local std::vector<Stream*> tls_current;  // by device; null = the default stream

}  // namespace

bool available() {
  return probe().device_count > 0;
}
int device_count() {
  return probe().device_count;
}
const std::string& unavailable_reason() {
  return probe().reason;
}

void require_device(Device device, const char* op) {
  HD_CHECK(device.type == DeviceType::cuda, op, ": ", device.str(), " is not a CUDA device");
  HD_CHECK(available(), op, ": no CUDA device for ", device.str(), " (", unavailable_reason(),
           "); this machine can only run on the CPU");
  HD_CHECK(device.index >= 0 && device.index < device_count(), op, ": ", device.str(),
           " does not exist (", device_count(), " CUDA devices)");
}

DeviceGuard::DeviceGuard(int device) {
  HD_CUDA_CHECK(cudaGetDevice(&previous_), "DeviceGuard(", device, ")");
  if (previous_ != device) HD_CUDA_CHECK(cudaSetDevice(device), "DeviceGuard(", device, ")");
}
DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

std::shared_ptr<Stream> Stream::create(int device, int priority) {
  require_device(Device::cuda(device), "Stream::create");
  DeviceGuard g(device);
  cudaStream_t h = nullptr;
  HD_CUDA_CHECK(cudaStreamCreateWithPriority(&h, cudaStreamNonBlocking, priority),
                "Stream::create(cuda:", device, ")");
  return std::shared_ptr<Stream>(new Stream(h, device));
}
Stream::~Stream() {
  if (handle_) cudaStreamDestroy(handle_);
}
void Stream::synchronize() const {
  HD_CUDA_CHECK(cudaStreamSynchronize(handle_), "Stream::synchronize(cuda:", device_, ")");
}
void Stream::wait(const Event& event) const {
  HD_CUDA_CHECK(cudaStreamWaitEvent(handle_, event.handle(), 0), "Stream::wait(cuda:", device_,
                ")");
}
void Stream::wait(const Stream& other) const {
  if (&other == this) return;
  DeviceGuard g(other.device());  // an event must be created on its stream's device
  Event e;
  e.record(other);
  wait(e);  // waiting across devices is allowed; destroying e after enqueueing the wait is too
}

Event::Event(bool timing) {
  HD_CUDA_CHECK(
      cudaEventCreateWithFlags(&handle_, timing ? cudaEventDefault : cudaEventDisableTiming),
      "Event()");
}
Event::~Event() {
  if (handle_) cudaEventDestroy(handle_);
}
void Event::record(const Stream& stream) {
  HD_CUDA_CHECK(cudaEventRecord(handle_, stream.handle()), "Event::record(cuda:", stream.device(),
                ")");
}
void Event::synchronize() const {
  HD_CUDA_CHECK(cudaEventSynchronize(handle_), "Event::synchronize");
}
bool Event::query() const {
  cudaError_t e = cudaEventQuery(handle_);
  if (e == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  HD_CUDA_CHECK(e, "Event::query");
  return true;
}
float Event::elapsed_ms(const Event& start) const {
  float ms = 0;
  HD_CUDA_CHECK(cudaEventElapsedTime(&ms, start.handle_, handle_), "Event::elapsed_ms");
  return ms;
}

Stream& current_stream(int device) {
  DeviceState& s = state(device);
  if (size_t(device) < tls_current.size() && tls_current[size_t(device)])
    return *tls_current[size_t(device)];
  return *s.stream;
}

StreamGuard::StreamGuard(Stream& stream) : device_(stream.device()) {
  if (tls_current.size() <= size_t(device_)) tls_current.resize(size_t(device_) + 1, nullptr);
  previous_ = tls_current[size_t(device_)];
  tls_current[size_t(device_)] = &stream;
}
StreamGuard::~StreamGuard() {
  tls_current[size_t(device_)] = previous_;
}

// --- allocator ---------------------------------------------------------------------------

CudaAllocator::CudaAllocator(int device) : device_(device) {
  DeviceGuard g(device);
  HD_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device), "CudaAllocator(cuda:", device, ")");
  uint64_t keep_everything = UINT64_MAX;  // freed blocks stay in the pool: this is the cache
  HD_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_everything),
                "CudaAllocator(cuda:", device, ")");
}

void* CudaAllocator::allocate(size_t nbytes) {
  cudaStream_t stream = current_stream(device_).handle();
  DeviceGuard g(device_);
  void* p = nullptr;
  size_t request = nbytes == 0 ? 1 : nbytes;  // a distinct, valid pointer even for empty tensors
  cudaError_t err = cudaMallocAsync(&p, request, stream);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    empty_cache();  // other streams may hold freed-but-cached blocks
    err = cudaMallocAsync(&p, request, stream);
  }
  if (err != cudaSuccess) {
    MemoryStats s = stats();
    throw_cuda_error(err, "cudaMallocAsync",
                     detail::concat("cuda allocator: allocating ", nbytes,
                                    " bytes on cuda:", device_, " (in use: ", s.current_bytes,
                                    " bytes, cached: ", s.cached_bytes, " bytes)"));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  streams_[p] = stream;
  current_ += int64_t(nbytes);
  if (current_ > peak_) peak_ = current_;
  ++allocations_;
  return p;
}

void CudaAllocator::deallocate(void* ptr, size_t nbytes) {
  if (!ptr) return;
  cudaStream_t stream = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = streams_.find(ptr);
    if (it == streams_.end()) return;  // not ours: nothing sane to do in a destructor
    stream = it->second;
    streams_.erase(it);
    current_ -= int64_t(nbytes);
  }
  int previous = -1;
  cudaGetDevice(&previous);
  if (previous != device_) cudaSetDevice(device_);
  // Errors here (e.g. the runtime already unloaded at exit) cannot be thrown from a destructor.
  if (cudaFreeAsync(ptr, stream) != cudaSuccess) cudaGetLastError();
  if (previous != device_ && previous >= 0) cudaSetDevice(previous);
}

MemoryStats CudaAllocator::stats() const {
  MemoryStats s;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s.current_bytes = current_;
    s.peak_bytes = peak_;
    s.allocations = allocations_;
  }
  uint64_t reserved = 0, used = 0;
  if (cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess &&
      cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess) {
    s.cached_bytes = int64_t(reserved - used);
  } else {
    cudaGetLastError();
  }
  return s;
}

void CudaAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  peak_ = current_;
}

void CudaAllocator::empty_cache() {
  DeviceGuard g(device_);
  HD_CUDA_CHECK(cudaDeviceSynchronize(), "CudaAllocator::empty_cache(cuda:", device_, ")");
  HD_CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0), "CudaAllocator::empty_cache(cuda:", device_, ")");
}

Allocator& device_allocator(int device) {
  return *state(device).allocator;
}

// --- pinned memory and copies --------------------------------------------------------------

PinnedBuffer::PinnedBuffer(size_t nbytes) : nbytes_(nbytes) {
  HD_CHECK(available(), "PinnedBuffer: no CUDA device (", unavailable_reason(), ")");
  HD_CUDA_CHECK(cudaMallocHost(&data_, nbytes == 0 ? 1 : nbytes), "PinnedBuffer(", nbytes,
                " bytes)");
}
PinnedBuffer::~PinnedBuffer() {
  if (data_) cudaFreeHost(data_);
}

namespace {
class EventFence final : public ReadFence {
 public:
  explicit EventFence(const Stream& stream) { event_.record(stream); }
  bool done() const override { return event_.query(); }

 private:
  Event event_;
};
}  // namespace

std::shared_ptr<ReadFence> record_read_fence(int device) {
  DeviceGuard g(device);
  return std::make_shared<EventFence>(current_stream(device));
}

void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device) {
  if (nbytes == 0) return;
  Stream& s = current_stream(device);
  DeviceGuard g(device);
  // From pageable memory the call returns once the source has been staged, so the caller may
  // free `src` right away; from pinned memory it is asynchronous, and `to` records a read
  // fence on the source's block ([Note: pinned host memory]).
  HD_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s.handle()),
                "copy host->cuda:", device, " (", nbytes, " bytes)");
}

void copy_device_to_host(void* dst, const void* src, size_t nbytes, int device) {
  if (nbytes == 0) return;
  Stream& s = current_stream(device);
  DeviceGuard g(device);
  HD_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s.handle()),
                "copy cuda:", device, "->host (", nbytes, " bytes)");
  s.synchronize();
}

void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device,
                           size_t nbytes) {
  if (nbytes == 0) return;
  Stream& ds = current_stream(dst_device);
  DeviceGuard g(dst_device);
  if (dst_device == src_device) {
    HD_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, ds.handle()),
                  "copy cuda:", src_device, "->cuda:", dst_device, " (", nbytes, " bytes)");
    return;
  }
  ds.wait(current_stream(src_device));  // the source was produced on its device's stream
  HD_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, nbytes, ds.handle()),
                "copy cuda:", src_device, "->cuda:", dst_device, " (", nbytes, " bytes)");
  // The source's stream must not free/reuse the source before the copy has read it.
  current_stream(src_device).wait(ds);
}

}  // namespace hd::cuda
