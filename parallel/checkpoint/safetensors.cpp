// safetensors reader and writer (see safetensors.h for the format and why it validates first).
#include "parallel/checkpoint/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/error.h"

namespace hd::parallel::ckpt::safetensors {
namespace fs = std::filesystem;
using ::hd::detail::concat;

namespace {

// Element size of every dtype the format defines (an unknown one is an error, not a skip:
// its byte range could not be checked).
int64_t dtype_size(const std::string& d) {
  static const std::map<std::string, int64_t> sizes{
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

std::string st_dtype(DType d) {
  switch (d) {
    case DType::f32:
      return "F32";
    case DType::bf16:
      return "BF16";
    case DType::f16:
      return "F16";
    case DType::f64:
      return "F64";
    default:
      throw Error(concat("safetensors write: dtype ", dtype_name(d),
                         " is not supported (f32, bf16, f16, f64)"));
  }
}

void pread_all(int fd, void* dst, uint64_t n, uint64_t at, const fs::path& path) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, off_t(at));
    HD_CHECK(got > 0, "safetensors ", path.string(), ": read of ", n, " bytes at offset ", at,
             " failed (file truncated?)");
    p += got, n -= uint64_t(got), at += uint64_t(got);
  }
}

}  // namespace

Reader::Reader(const fs::path& file) : path_(file) {
  const std::string where = concat("safetensors ", file.string(), ": ");
  fd_ = ::open(file.c_str(), O_RDONLY);
  HD_CHECK(fd_ >= 0, where, "cannot open the file");
  const uint64_t size = fs::file_size(file);
  HD_CHECK(size >= 8, where, "file is ", size, " bytes, too short for the 8-byte header length");
  unsigned char len_bytes[8];
  pread_all(fd_, len_bytes, 8, 0, file);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];  // little-endian
  HD_CHECK(header_len <= size - 8, where, "header length ", header_len,
           " runs past the end of the file (", size, " bytes): truncated or not safetensors");
  std::string text(header_len, '\0');
  pread_all(fd_, text.data(), header_len, 8, file);
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(concat(where, "header is not valid JSON: ", e.what()));
  }
  HD_CHECK(header.is_object(), where, "header is not a JSON object");
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      HD_CHECK(v.is_object(), where, "__metadata__ is not an object");
      for (const auto& [k, s] : v.items()) {
        HD_CHECK(s.is_string(), where, "__metadata__ value of '", k, "' is not a string");
        metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    const std::string at = concat(where, "tensor '", name, "': ");
    HD_CHECK(v.is_object() && v.contains("dtype") && v["dtype"].is_string() &&
                 v.contains("shape") && v["shape"].is_array() && v.contains("data_offsets") &&
                 v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
             at, "needs dtype (string), shape (array) and data_offsets ([begin, end])");
    Entry e;
    e.name = name;
    e.dtype = v["dtype"].get<std::string>();
    const int64_t item = dtype_size(e.dtype);
    HD_CHECK(item > 0, at, "unknown dtype '", e.dtype, "'");
    int64_t numel = 1;
    for (const auto& d : v["shape"]) {
      HD_CHECK(d.is_number_unsigned(), at, "shape entries must be non-negative integers");
      e.shape.push_back(d.get<int64_t>());
      numel *= e.shape.back();
    }
    const auto& off = v["data_offsets"];
    HD_CHECK(off[0].is_number_unsigned() && off[1].is_number_unsigned(), at,
             "data_offsets must be non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    HD_CHECK(e.begin <= e.end && e.end <= data_size, at, "data_offsets [", e.begin, ", ", e.end,
             "] out of range: the data section has ", data_size, " bytes (file truncated?)");
    HD_CHECK(e.end - e.begin == uint64_t(numel * item), at, "data_offsets [", e.begin, ", ", e.end,
             "] hold ", e.end - e.begin, " bytes but ", e.dtype, " ", e.shape, " needs ",
             numel * item);
    entries_.push_back(std::move(e));
  }
  std::sort(entries_.begin(), entries_.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries_.size(); ++i) {
    const Entry &a = entries_[i - 1], &b = entries_[i];
    HD_CHECK(b.begin >= a.end || a.begin == a.end || b.begin == b.end, where, "tensors '", a.name,
             "' [", a.begin, ", ", a.end, "] and '", b.name, "' [", b.begin, ", ", b.end,
             "] overlap");
  }
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

Reader::~Reader() {
  if (fd_ >= 0) ::close(fd_);
}

const Entry& Reader::entry(const std::string& name) const {
  auto it = index_.find(name);
  HD_CHECK(it != index_.end(), "safetensors ", path_.string(), ": no tensor named '", name, "'");
  return entries_[it->second];
}

Tensor Reader::read_f32(const std::string& name) const {
  const Entry& e = entry(name);
  Tensor out = Tensor::empty(e.shape, DType::f32);
  const int64_t n = out.numel();
  float* dst = out.data<float>();
  const uint64_t at = data_start_ + e.begin, bytes = e.end - e.begin;
  if (e.dtype == "F32") {
    pread_all(fd_, dst, bytes, at, path_);
  } else if (e.dtype == "BF16" || e.dtype == "F16") {
    std::vector<uint16_t> raw(static_cast<size_t>(n));
    pread_all(fd_, raw.data(), bytes, at, path_);
    for (int64_t i = 0; i < n; ++i)
      dst[i] = e.dtype == "BF16" ? bf16_to_float(bf16_t{raw[i]}) : f16_to_float(f16_t{raw[i]});
  } else if (e.dtype == "F64") {
    std::vector<double> raw(static_cast<size_t>(n));
    pread_all(fd_, raw.data(), bytes, at, path_);
    for (int64_t i = 0; i < n; ++i) dst[i] = float(raw[i]);
  } else {
    throw Error(concat("safetensors ", path_.string(), ": tensor '", name, "' is ", e.dtype,
                       ", which cannot be read as f32 parameters (F32, BF16, F16, F64)"));
  }
  return out;
}

void write(const fs::path& file, const std::vector<std::pair<std::string, Tensor>>& tensors,
           const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    HD_CHECK(name != "__metadata__" && !header.contains(name),
             "safetensors write: duplicate or "
             "reserved tensor name '",
             name, "'");
    HD_CHECK(t.is_contiguous() && t.device().is_cpu(), "safetensors write: '", name,
             "' must be a contiguous host tensor, got ", t.str());
    const uint64_t bytes = uint64_t(t.numel()) * dtype_size(st_dtype(t.dtype()));
    header[name] = {{"dtype", st_dtype(t.dtype())},
                    {"shape", std::vector<int64_t>(t.shape().begin(), t.shape().end())},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data 8-byte aligned, as HF's writer does
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  HD_CHECK(out, "safetensors write: cannot create ", file.string());
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), long(text.size()));
  for (const auto& [name, t] : tensors)
    out.write(static_cast<const char*>(t.raw_data()),
              long(t.numel() * dtype_size(st_dtype(t.dtype()))));
  out.flush();
  HD_CHECK(out.good(), "safetensors write: writing ", file.string(), " failed (disk full?)");
}

}  // namespace hd::parallel::ckpt::safetensors
