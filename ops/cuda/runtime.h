// The CUDA runtime layer: error checks, the device/stream registry, events, the caching device
// allocator, pinned host buffers and host<->device copies.
//
// Why this shape:
// - Errors: every CUDA call goes through HD_CUDA_CHECK, which throws hd::Error naming the call,
//   the CUDA error and the op/shapes the caller passes (llm.c's cudaCheck, but an exception: the
//   libraries never exit).
// - No GPU is a normal state (no driver -> cudaErrorInsufficientDriver). The probe is run once;
//   anything that needs a device (allocating a CUDA tensor, creating a stream) throws
//   "no CUDA device: <probe reason>" instead of crashing, and CPU code never touches CUDA.
// - The registry (one default compute stream and one allocator per device, plus a thread-local
//   "current stream") is the one piece of global state the design allows. Kernels launch on
//   current_stream(device); FSDP/NCCL use their own Stream objects and order work with Events.
// - The allocator is stream-ordered (cudaMallocAsync on the device's default memory pool, with
//   an unlimited release threshold so freed blocks stay cached in the pool). A block is freed
//   on the stream it was allocated on; a tensor used on another stream must be waited for
//   (Work::wait / Event) before it dies, as in FSDP2 (no record_stream).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "autograd/allocator.h"
#include "autograd/device.h"
#include "autograd/error.h"
#include "autograd/pinned_host.h"

namespace hd::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const std::string& context);

}  // namespace hd::cuda

// HD_CUDA_CHECK(call, context parts...): throws hd::Error "<context>: <call> failed: <name>:
// <msg>".
#define HD_CUDA_CHECK(call, ...)                                                            \
  do {                                                                                      \
    cudaError_t hd_cuda_err_ = (call);                                                      \
    if (hd_cuda_err_ != cudaSuccess)                                                        \
      ::hd::cuda::throw_cuda_error(hd_cuda_err_, #call, ::hd::detail::concat(__VA_ARGS__)); \
  } while (0)

namespace hd::cuda {

// True when the probe found at least one device (cached; never throws).
bool available();
int device_count();
// The probe's reason when there is no device ("" otherwise).
const std::string& unavailable_reason();
// Throws "<op>: no CUDA device for <device>: <reason>" unless `device` exists.
void require_device(Device device, const char* op);

// Sets the current CUDA device for the scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

class Event;

// An owned, non-blocking CUDA stream on one device.
class Stream {
 public:
  static std::shared_ptr<Stream> create(int device, int priority = 0);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t handle() const { return handle_; }
  int device() const { return device_; }
  void synchronize() const;
  // Work enqueued on this stream after the call waits for `event` (no host sync).
  void wait(const Event& event) const;
  // Records an event on this stream and makes `other` wait for it.
  void wait(const Stream& other) const;

 private:
  Stream(cudaStream_t h, int device) : handle_(h), device_(device) {}
  cudaStream_t handle_;
  int device_;
};

class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(const Stream& stream);
  void synchronize() const;
  bool query() const;                          // true when complete
  float elapsed_ms(const Event& start) const;  // both recorded with timing = true
  cudaEvent_t handle() const { return handle_; }

 private:
  cudaEvent_t handle_ = nullptr;
};

// The stream kernels for `device` launch on: the thread's StreamGuard if one is active for that
// device, else the device's default compute stream (created on first use).
Stream& current_stream(int device);

// Makes `stream` the current stream of its device on this thread for the scope.
class StreamGuard {
 public:
  explicit StreamGuard(Stream& stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  Stream* previous_;
};

// Stream-ordered caching allocator for one device (see the note at the top).
class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int device);
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;  // never throws
  MemoryStats stats() const override;
  void reset_peak() override;
  void empty_cache() override;  // synchronizes the device, then trims the pool

 private:
  int device_;
  cudaMemPool_t pool_ = nullptr;
  mutable std::mutex mutex_;
  std::unordered_map<void*, cudaStream_t> streams_;  // live block -> stream it belongs to
  int64_t current_ = 0, peak_ = 0, allocations_ = 0;
};

// The registry's allocator for `device` (throws without a device).
Allocator& device_allocator(int device);

// Page-locked host memory: host<->device copies from it are truly asynchronous and run at full
// PCIe/NVLink bandwidth. Used for staging transfers (data loader batches, checkpoint reads).
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t nbytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
};

// A fence that is done once the work queued so far on the current stream of `device` has run
// (an event recorded there now): what a pinned block read by an async copy waits for before
// the pinned host allocator hands it out again ([Note: pinned host memory]).
std::shared_ptr<ReadFence> record_read_fence(int device);

// Byte copies on the current stream of `device`. Copies that end on the host synchronize the
// stream before returning, so the host sees the bytes; the others are stream-ordered.
void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_host(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device,
                           size_t nbytes);

}  // namespace hd::cuda
