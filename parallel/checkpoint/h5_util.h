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
    if (id_ >= 0) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// HDF5 prints its error stack to stderr by default; we report our own messages instead.
inline void silence_errors() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

// Throws hd::Error("<what>: <context>") when an HDF5 call returned a negative id/status.
template <class T, class... A>
T check(T result, const A&... context) {
  if (result < 0) throw Error(::hd::detail::concat("checkpoint: HDF5 ", context...));
  return result;
}

}  // namespace hd::parallel::ckpt::h5
