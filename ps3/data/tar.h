// Webdataset-style tar shards through libarchive: index a shard once, then read single members
// at random (the sampler visits images in a shuffled order, not shard order).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct archive;

namespace hd::data {

struct TarMember {
  std::string name;
  int64_t offset = 0;  // byte offset of the member's first header block in the shard
  int64_t size = 0;
};

// Lists the regular-file members of an uncompressed tar. A damaged header stops the listing:
// the members before it are returned and `error` says what went wrong (empty when clean).
std::vector<TarMember> list_tar(const std::string& path, std::string& error);

// Reads one member by seeking to its header: O(member size), independent of shard size. Throws
// hd::Error naming the shard and member when it cannot be read.
std::vector<uint8_t> read_tar_member(const std::string& path, const TarMember& member);

// Streams every regular-file member (for the small JSON shards). `error` as in list_tar; a
// member whose data cannot be read is passed to `on_error` and skipped.
void for_each_tar_member(
    const std::string& path,
    const std::function<void(const std::string&, std::vector<uint8_t>)>& fn,
    const std::function<void(const std::string&, const std::string&)>& on_error,
    std::string& error);

// Writes an uncompressed ustar/pax shard.
class TarWriter {
 public:
  explicit TarWriter(const std::string& path);
  ~TarWriter();
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;
  void add(const std::string& name, const std::vector<uint8_t>& bytes);
  void close();

 private:
  ::archive* a_ = nullptr;
  std::string path_;
};

}  // namespace hd::data
