// Small RAII and error helpers over the HDF5 C API, private to the checkpoint code.
#pragma once
#include <hdf5.h>

#include <string>
#include <utility>

#include "autograd/error.h"

namespace hd::parallel::ckpt::h5 {

// Owns one hid_t and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    reset();
    id_ = std::exchange(o.id_, H5I_INVALID_HID);
    close_ = o.close_;
    return *this;
  }
  ~Handle() { reset(); }
  // Explicit close whose failure is reported (a failed close of a written file loses data).
  herr_t close() {
    const hid_t id = std::exchange(id_, H5I_INVALID_HID);
    return id >= 0 ? close_(id) : 0;
  }
  void reset() {
    // A close that fails here (unwinding from an earlier error) is not reported: drop the error
    // stack it left, which HDF5 would keep allocated (per thread) until the next API call.
    if (id_ >= 0 && close_(id_) < 0) H5Eclear2(H5E_DEFAULT);
    id_ = H5I_INVALID_HID;
  }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// HDF5 prints its error stack to stderr by default; we report our own messages instead.
// Also (when this is the process's first HDF5 call, as in every checkpoint path) no library
// clean-up at exit: after a write failed for lack of space, H5Fclose cannot flush the file's
// metadata and leaves a half-destroyed file object behind, which HDF5's atexit handler then
// closes again and crashes on (SIGSEGV in H5F__close_cb), turning a clean "No space left on
// device" exit into a segfault. Every file we open is closed explicitly, so nothing is lost.
inline void silence_errors() {
  H5dont_atexit();  // fails harmlessly once the library is initialised
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

// The reason at the bottom of HDF5's error stack of this thread, for our messages: the system's
// text when a read or write system call failed (HDF5's file drivers record "errno = 28, error
// message = 'No space left on device'"), else the innermost HDF5 description; "" when the stack is
// empty. Why: "HDF5 write failed" alone does not tell an operator that the disk is full. The stack
// is cleared once read: its strings would otherwise stay allocated (for good on a writer thread
// that exits; LeakSanitizer reports them).
inline std::string error_reason() {
  std::string system, innermost;
  auto visit = [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
    auto* out = static_cast<std::pair<std::string*, std::string*>*>(data);
    const std::string desc = e->desc ? e->desc : "";
    const std::string key = "error message = '";
    const size_t at = desc.find(key);
    if (at != std::string::npos && out->first->empty()) {
      const size_t end = desc.find('\'', at + key.size());
      *out->first =
          desc.substr(at + key.size(), end == std::string::npos ? end : end - at - key.size());
    }
    if (!desc.empty() && out->second->empty()) *out->second = desc;  // upward: innermost first
    return 0;
  };
  std::pair<std::string*, std::string*> out{&system, &innermost};
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, visit, &out);
  H5Eclear2(H5E_DEFAULT);
  return system.empty() ? innermost : system;
}

// Throws hd::Error("checkpoint: HDF5 <context>: <reason>") when an HDF5 call returned a negative
// id/status (the reason from error_reason(), when HDF5 recorded one).
template <class T, class... A>
T check(T result, const A&... context) {
  if (result < 0) {
    const std::string reason = error_reason();
    throw Error(
        ::hd::detail::concat("checkpoint: HDF5 ", context..., reason.empty() ? "" : ": ", reason));
  }
  return result;
}

}  // namespace hd::parallel::ckpt::h5
