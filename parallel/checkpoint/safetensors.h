// safetensors files (Hugging Face's format), read and written without Python.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the raw little-endian tensor bytes; offsets are relative to the end of the header.
//
// Why a reader that validates everything up front: the file comes from elsewhere (a Hub
// download, a truncated copy), and a bad offset must not become an out-of-bounds read or a
// silently garbled parameter. Every tensor's offsets are checked against the file size, its
// dtype x shape, and the other tensors (no overlap) before any data is read. Data is read per
// tensor with pread, so importing a multi-GiB model holds one tensor in memory at a time.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace hd::parallel::ckpt::safetensors {

struct Entry {
  std::string name;
  std::string dtype;  // safetensors spelling: "F32", "BF16", "F16", "F64", "I64", ...
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range relative to the data section
};

class Reader {
 public:
  // Opens and validates `file`; throws hd::Error naming the file and the problem.
  explicit Reader(const std::filesystem::path& file);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::vector<Entry>& entries() const { return entries_; }  // in file (offset) order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const Entry& entry(const std::string& name) const;
  // The tensor converted to f32 (F32 as is, BF16/F16 exactly, F64 rounded); other dtypes throw.
  Tensor read_f32(const std::string& name) const;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes f32, bf16, f16 or f64 tensors (contiguous, host) under their names, in the given order.
void write(const std::filesystem::path& file,
           const std::vector<std::pair<std::string, Tensor>>& tensors,
           const std::map<std::string, std::string>& metadata = {});

}  // namespace hd::parallel::ckpt::safetensors
