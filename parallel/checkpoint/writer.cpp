// save_checkpoint: per-rank HDF5 files, then the manifest last (see [Note: commit]).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <system_error>

#include "autograd/error.h"
#include "parallel/checkpoint/checkpoint.h"
#include "parallel/checkpoint/crc32c.h"
#include "parallel/checkpoint/h5_util.h"
#include "parallel/checkpoint/layout.h"
#include "proto/checkpoint.pb.h"

#ifndef HD_VERSION
#define HD_VERSION "unknown"
#endif

namespace hd::parallel::ckpt {
namespace fs = std::filesystem;
using ::hd::detail::concat;

namespace {

// Durability: rename() and close() do not flush file contents or directory entries, so a
// power loss after "commit" could leave a manifest pointing at empty files without this.
void fsync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  HD_CHECK(fd >= 0, "checkpoint: cannot open ", p.string(), " to fsync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  HD_CHECK(rc == 0, "checkpoint: fsync of ", p.string(), " failed: ", std::strerror(err));
}

// The manifest, written with POSIX calls so that a failure carries errno's text (a full disk
// says "No space left on device"; an ofstream only says that it failed).
void write_manifest_file(const fs::path& p, const std::string& bytes) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  HD_CHECK(fd >= 0, "checkpoint save: cannot create ", p.string(), ": ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw Error(concat("checkpoint save: cannot write ", p.string(), ": ", std::strerror(err)));
    }
    done += size_t(n);
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  HD_CHECK(rc == 0, "checkpoint save: fsync of ", p.string(), " failed: ", std::strerror(err));
}

void write_attr_i64(hid_t obj, const char* name, const std::vector<int64_t>& values) {
  // A 0-d tensor's global_shape is empty: a null dataspace says so explicitly.
  const hsize_t n = values.size();
  h5::Handle space(values.empty() ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr),
                   H5Sclose);
  h5::Handle attr(h5::check(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                            "cannot create attribute ", name),
                  H5Aclose);
  if (!values.empty()) h5::check(H5Awrite(attr, H5T_NATIVE_INT64, values.data()), "write ", name);
}

// HD_CKPT_TEST_FAULT=fail:R / kill:R / enospc:R (see checkpoint.h): the fault this rank must
// inject, if any. Read on every save (not cached) so a test can set it between two saves of one
// process.
std::string injected_fault(int rank) {
  const char* v = std::getenv("HD_CKPT_TEST_FAULT");
  if (!v) return "";
  const std::string_view s(v);
  const size_t colon = s.find(':');
  if (colon == std::string_view::npos || std::string(s.substr(colon + 1)) != std::to_string(rank))
    return "";
  return std::string(s.substr(0, colon));
}

// Writes this rank's valid rows of every shard; returns the CRC32C blocks per shard, in order.
std::vector<std::vector<uint32_t>> write_rank_file(const fs::path& file,
                                                   const std::vector<ShardRef>& shards,
                                                   int64_t requested_block_rows, int rank) {
  h5::silence_errors();
  const std::string fault = injected_fault(rank);
  if (fault == "fail")
    throw Error(concat("cannot write ", file.string(), ": injected failure (HD_CKPT_TEST_FAULT)"));
  if (fault == "enospc") {
    // Every write through the link fails in the kernel with ENOSPC, as on a full disk.
    std::error_code ec;
    fs::create_symlink("/dev/full", file, ec);
    HD_CHECK(!ec, "HD_CKPT_TEST_FAULT=enospc: cannot link ", file.string(),
             " to /dev/full: ", ec.message());
  }
  size_t written = 0;
  h5::Handle f(H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  h5::check(f.get(), "cannot create ", file.string());
  std::vector<std::vector<uint32_t>> crcs(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    const ShardInfo& info = shards[i].info;
    const int64_t rows = info.valid_rows(info.rank);
    if (rows == 0) continue;  // trailing ranks may own only padding: nothing to save
    const std::string path = internal::dataset_path(info.name);
    for (const std::string& g : internal::parent_groups(path)) {
      if (H5Lexists(f, g.c_str(), H5P_DEFAULT) > 0) continue;
      h5::Handle grp(h5::check(H5Gcreate2(f, g.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                               "cannot create group ", g, " in ", file.string()),
                     H5Gclose);
    }
    // The global shape with the shard dim cut to this rank's rows ([Note: layout]).
    const std::vector<hsize_t> dims = internal::chunk_dims(info.global_shape, info.shard_dim, rows);
    h5::Handle space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
    // Contiguous layout (the default): hyperslab reads are then plain seeks and reads.
    h5::Handle ds(h5::check(H5Dcreate2(f, path.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT,
                                       H5P_DEFAULT, H5P_DEFAULT),
                            "cannot create dataset ", path, " in ", file.string()),
                  H5Dclose);
    const float* data = shards[i].shard.data<float>();
    h5::check(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "write of ",
              path, " in ", file.string());
    write_attr_i64(ds, "global_shape",
                   std::vector<int64_t>(info.global_shape.begin(), info.global_shape.end()));
    write_attr_i64(ds, "offset", {internal::first_row(info, info.rank)});
    // Format 1 files (dim 0) stay exactly as they were; only a later shard dim is spelled out.
    if (info.shard_dim != 0) write_attr_i64(ds, "shard_dim", {info.shard_dim});
    const int64_t block = internal::block_rows(info, requested_block_rows);
    for (int64_t r = 0; r < rows; r += block) {
      const int64_t n = std::min(block, rows - r) * info.row_numel;
      crcs[i].push_back(crc32c(data + r * info.row_numel, size_t(n) * sizeof(float)));
    }
    if (fault == "kill" && ++written >= (shards.size() + 1) / 2) {
      // A crash mid-write: part of the file is on disk, the rest never will be.
      H5Fflush(f, H5F_SCOPE_GLOBAL);
      std::fprintf(stderr, "HD_CKPT_TEST_FAULT: rank %d SIGKILLs itself after %zu of %zu tensors\n",
                   rank, written, shards.size());
      std::fflush(stderr);
      raise(SIGKILL);
    }
  }
  h5::check(H5Fflush(f, H5F_SCOPE_GLOBAL), "flush of ", file.string());
  h5::check(f.close(), "close of ", file.string());
  fsync_path(file);
  return crcs;
}

void validate(const std::vector<ShardRef>& shards, const ProcessGroup& pg) {
  for (const ShardRef& s : shards) {
    HD_CHECK(s.info.rank == pg.rank() && s.info.world_size == pg.world_size(), "checkpoint save: '",
             s.info.name, "' is sharded for rank ", s.info.rank, " of ", s.info.world_size,
             " but the group is rank ", pg.rank(), " of ", pg.world_size());
    HD_CHECK(s.shard.dtype() == DType::f32 && s.shard.is_contiguous() &&
                 s.shard.numel() >= s.info.padded_length,
             "checkpoint save: '", s.info.name, "' needs a contiguous f32 shard of ",
             s.info.padded_length, " elements, got ", dtype_name(s.shard.dtype()), " ",
             s.shard.shape());
  }
}

// Cleanup after a failed save; a failure to delete is reported but must not hide the save's error.
void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec)
    std::fprintf(stderr, "hdtrain: warning: checkpoint save: cannot remove %s: %s\n",
                 p.string().c_str(), ec.message().c_str());
}

// Every rank learns rank 0's status; throws the same message everywhere when it is not ok.
void agree(ProcessGroup& pg, bool ok_on_root, const std::string& root_message) {
  Tensor flag = Tensor::empty({1}, DType::i64);
  flag.data<int64_t>()[0] = ok_on_root ? 1 : 0;
  pg.broadcast(flag, 0).wait();
  if (flag.data<int64_t>()[0] != 1)
    throw Error(pg.rank() == 0 ? root_message : "checkpoint save failed on rank 0");
}

}  // namespace

fs::path step_dir(const fs::path& dir, int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return dir / buf;
}

fs::path save_checkpoint(const fs::path& dir, int64_t step, const std::vector<ShardRef>& shards,
                         ProcessGroup& pg, const SaveOptions& options) {
  return internal::save_checkpoint_with(dir, step, shards, pg, options, {});
}

fs::path internal::save_checkpoint_with(const fs::path& dir, int64_t step,
                                        const std::vector<ShardRef>& shards, ProcessGroup& pg,
                                        const SaveOptions& options,
                                        const std::function<void(proto::Manifest&)>& extend) {
  validate(shards, pg);
  const fs::path final_dir = step_dir(dir, step);
  const fs::path tmp_dir = final_dir.string() + ".tmp";
  const int rank = pg.rank(), world = pg.world_size();

  // Rank 0 prepares the folder; a stale .tmp from a crashed save of this step is discarded.
  bool ok = true;
  std::string message;
  if (rank == 0) {
    std::error_code ec;
    if (fs::exists(final_dir, ec)) {
      // A leftover without a readable manifest must not block the save ([Note: invalid folders]);
      // a checkpoint (of this format or another) is never replaced.
      proto::Manifest man;
      std::string why;
      const auto state = internal::check_manifest(final_dir, man, why);
      if (state == internal::ManifestState::ok || state == internal::ManifestState::other_format) {
        ok = false;
        message = concat("checkpoint save: ", final_dir.string(), " already exists");
      } else {
        try {
          move_aside(final_dir, concat(final_dir.string(), ": ", why));
        } catch (const std::exception& m) {
          ok = false;
          message =
              concat("checkpoint save: ", final_dir.string(),
                     " exists without a valid manifest and cannot be moved aside: ", m.what());
        }
      }
    }
    if (ok) {
      fs::remove_all(tmp_dir, ec);
      fs::create_directories(tmp_dir, ec);
      if (ec)
        ok = false,
        message = concat("checkpoint save: cannot create ", tmp_dir.string(), ": ", ec.message());
    }
  }
  agree(pg, ok, message);

  // Phase 1: every rank writes its file. Failures are caught so the rank still joins the
  // all-gather below; otherwise the other ranks would hang in it.
  std::vector<std::vector<uint32_t>> crcs;
  std::string local_error;
  try {
    crcs = write_rank_file(tmp_dir / internal::rank_file(rank), shards, options.checksum_block_rows,
                           rank);
  } catch (const std::exception& e) {
    local_error = e.what();
  }

  // Phase 2: one all-gather of [ok, crc...] per rank. Block counts follow from the shard
  // metadata alone, so every rank computes the same slot size without an extra collective.
  std::vector<int64_t> count(world, 0);
  for (const ShardRef& s : shards)
    for (int r = 0; r < world; ++r)
      count[r] += internal::num_blocks(s.info.valid_rows(r),
                                       internal::block_rows(s.info, options.checksum_block_rows));
  const int64_t slot = 1 + *std::max_element(count.begin(), count.end());
  Tensor mine = Tensor::empty({slot}, DType::i64);
  Tensor all = Tensor::empty({slot * world}, DType::i64);
  int64_t* m = mine.data<int64_t>();
  std::fill(m, m + slot, int64_t(0));
  m[0] = local_error.empty() ? 1 : 0;
  if (local_error.empty()) {
    int64_t k = 1;
    for (const auto& v : crcs)
      for (uint32_t c : v) m[k++] = c;
  }
  pg.all_gather(mine, all).wait();
  const int64_t* a = all.data<int64_t>();
  bool all_ok = true;
  for (int r = 0; r < world; ++r) all_ok = all_ok && a[r * slot] == 1;
  if (!all_ok) {
    // Every rank knows a write failed; a second exchange tells every rank which ones and why, so
    // the rank that reports (rank 0) names the reason even when only another rank failed.
    const auto outcomes = internal::exchange_outcomes(pg, local_error.empty() ? 1 : 0, local_error);
    // Every rank has closed its file by now: the half-written step goes (a full disk gets its
    // space back, and nothing is left for a person or retention to clean up).
    if (rank == 0) remove_quietly(tmp_dir);
    std::string failed;
    for (int r = 0; r < world; ++r)
      if (outcomes[r].status != 1)
        failed += concat(failed.empty() ? "" : "; ", "rank ", r, ": ", outcomes[r].message);
    throw Error(concat("checkpoint save of step ", step, " failed on ", failed,
                       "; no manifest was written"));
  }

  // Phase 3: rank 0 writes the manifest last and publishes the folder by renaming it.
  ok = true;
  message.clear();
  if (rank == 0) {
    try {
      proto::Manifest man;
      // The oldest format that describes these chunks, so that a checkpoint without a tensor
      // split past dim 0 stays readable by builds that know format 1 only.
      bool later_dim = false;
      for (const ShardRef& s : shards) later_dim = later_dim || s.info.shard_dim != 0;
      man.set_format_version(later_dim ? kFormatVersion : kFormatVersionDim0);
      man.set_library_version(HD_VERSION);
      man.set_step(step);
      man.set_world_size(world);
      man.set_config_text(options.config_text);
      std::vector<int64_t> cursor(world, 1);
      for (const ShardRef& s : shards) {
        proto::TensorEntry* t = man.add_tensors();
        t->set_name(s.info.name);
        t->set_dtype(dtype_name(DType::f32));
        for (int64_t d : s.info.global_shape) t->add_global_shape(d);
        t->set_shard_dim(s.info.shard_dim);
        const int64_t block = internal::block_rows(s.info, options.checksum_block_rows);
        for (int r = 0; r < world; ++r) {
          const int64_t rows = s.info.valid_rows(r);
          if (rows == 0) continue;
          proto::Chunk* c = t->add_chunks();
          c->set_file(internal::rank_file(r));
          c->set_dataset(internal::dataset_path(s.info.name));
          c->set_row_offset(internal::first_row(s.info, r));
          c->set_rows(rows);
          c->set_checksum_block_rows(block);
          for (int64_t b = 0; b < internal::num_blocks(rows, block); ++b)
            c->add_crc32c(uint32_t(a[r * slot + cursor[r]++]));
        }
      }
      if (extend) extend(man);
      const fs::path man_path = tmp_dir / kManifestName;
      std::string bytes;
      HD_CHECK(man.SerializeToString(&bytes), "checkpoint save: cannot serialize the manifest");
      write_manifest_file(man_path, bytes);
      fs::rename(tmp_dir, final_dir);
      fsync_path(dir);
    } catch (const std::exception& e) {
      ok = false;
      message = concat("checkpoint save: commit of step ", step, " failed: ", e.what());
      remove_quietly(tmp_dir);
    }
  }
  // Nobody returns before the step is published, so a caller may load it right away.
  agree(pg, ok, message);
  return final_dir;
}

}  // namespace hd::parallel::ckpt
