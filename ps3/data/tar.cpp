#include "ps3/data/tar.h"

#include <archive.h>
#include <archive_entry.h>

#include <cstdio>
#include <memory>

#include "autograd/error.h"

namespace hd::data {
namespace {

struct ReaderDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using Reader = std::unique_ptr<archive, ReaderDeleter>;

Reader open_reader() {
  Reader a(archive_read_new());
  // Uncompressed tar only: random access by header offset needs byte offsets into the file.
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_none(a.get());
  return a;
}

bool read_data(archive* a, int64_t size, std::vector<uint8_t>& out) {
  out.resize(size_t(size));
  int64_t got = 0;
  while (got < size) {
    la_ssize_t n = archive_read_data(a, out.data() + got, size_t(size - got));
    if (n <= 0) return false;
    got += n;
  }
  return true;
}

}  // namespace

std::vector<TarMember> list_tar(const std::string& path, std::string& error) {
  error.clear();
  std::vector<TarMember> members;
  Reader a = open_reader();
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK) {
    error = archive_error_string(a.get()) ? archive_error_string(a.get()) : "cannot open";
    return members;
  }
  archive_entry* e = nullptr;
  while (true) {
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      error = archive_error_string(a.get()) ? archive_error_string(a.get()) : "bad header";
      break;
    }
    if (archive_entry_filetype(e) == AE_IFREG)
      members.push_back({archive_entry_pathname(e), archive_read_header_position(a.get()),
                         archive_entry_size(e)});
    archive_read_data_skip(a.get());
  }
  return members;
}

std::vector<uint8_t> read_tar_member(const std::string& path, const TarMember& member) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  HD_CHECK(f, "read_tar_member: cannot open shard ", path);
  HD_CHECK(std::fseek(f.get(), long(member.offset), SEEK_SET) == 0, "read_tar_member: ", path,
           ": cannot seek to member ", member.name);
  // From the member's header onwards the file is again a valid tar stream.
  Reader a = open_reader();
  HD_CHECK(archive_read_open_FILE(a.get(), f.get()) == ARCHIVE_OK, "read_tar_member: ", path, ": ",
           archive_error_string(a.get()));
  archive_entry* e = nullptr;
  int r = archive_read_next_header(a.get(), &e);
  HD_CHECK(r >= ARCHIVE_WARN && member.name == archive_entry_pathname(e), "read_tar_member: ", path,
           ": member ", member.name, " unreadable at offset ", member.offset);
  std::vector<uint8_t> bytes;
  HD_CHECK(read_data(a.get(), archive_entry_size(e), bytes), "read_tar_member: ", path, ": member ",
           member.name, " is truncated");
  return bytes;
}

void for_each_tar_member(
    const std::string& path,
    const std::function<void(const std::string&, std::vector<uint8_t>)>& fn,
    const std::function<void(const std::string&, const std::string&)>& on_error,
    std::string& error) {
  error.clear();
  Reader a = open_reader();
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK) {
    error = archive_error_string(a.get()) ? archive_error_string(a.get()) : "cannot open";
    return;
  }
  archive_entry* e = nullptr;
  std::vector<uint8_t> bytes;
  while (true) {
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      error = archive_error_string(a.get()) ? archive_error_string(a.get()) : "bad header";
      break;
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    std::string name = archive_entry_pathname(e);
    if (!read_data(a.get(), archive_entry_size(e), bytes)) {
      on_error(name, "member data truncated or unreadable");
      error = "archive ends inside member " + name;
      break;
    }
    fn(name, std::move(bytes));
  }
}

TarWriter::TarWriter(const std::string& path) : path_(path) {
  a_ = archive_write_new();
  archive_write_set_format_pax_restricted(a_);
  HD_CHECK(archive_write_open_filename(a_, path.c_str()) == ARCHIVE_OK, "TarWriter: cannot create ",
           path, ": ", archive_error_string(a_));
}

TarWriter::~TarWriter() {
  try {
    close();
  } catch (...) {
  }
}

void TarWriter::add(const std::string& name, const std::vector<uint8_t>& bytes) {
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                             &archive_entry_free);
  archive_entry_set_pathname(e.get(), name.c_str());
  archive_entry_set_size(e.get(), la_int64_t(bytes.size()));
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  HD_CHECK(archive_write_header(a_, e.get()) == ARCHIVE_OK, "TarWriter: ", path_, ": ",
           archive_error_string(a_));
  HD_CHECK(archive_write_data(a_, bytes.data(), bytes.size()) == la_ssize_t(bytes.size()),
           "TarWriter: ", path_, ": short write of ", name);
}

void TarWriter::close() {
  if (!a_) return;
  int r = archive_write_close(a_);
  archive_write_free(a_);
  a_ = nullptr;
  HD_CHECK(r == ARCHIVE_OK, "TarWriter: cannot finish ", path_);
}

}  // namespace hd::data
