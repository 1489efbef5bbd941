// load_checkpoint and latest_complete: resharding reads (see [Note: resharding]).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>

#include "autograd/error.h"
#include "parallel/checkpoint/checkpoint.h"
#include "parallel/checkpoint/crc32c.h"
#include "parallel/checkpoint/h5_util.h"
#include "parallel/checkpoint/layout.h"
#include "proto/checkpoint.pb.h"

namespace hd::parallel::ckpt {
namespace fs = std::filesystem;
using ::hd::detail::concat;

namespace {

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Reads and checks the manifest; `why` receives the reason when it returns false.
bool try_read_manifest(const fs::path& step_path, proto::Manifest& man, std::string& why) {
  return internal::check_manifest(step_path, man, why) == internal::ManifestState::ok;
}

// Open HDF5 files of one load, by name: each file is opened once however many tensors it holds.
class FileCache {
 public:
  explicit FileCache(fs::path dir) : dir_(std::move(dir)) {}
  hid_t get(const std::string& name, const std::string& tensor) {
    auto it = files_.find(name);
    if (it != files_.end()) return it->second;
    const fs::path p = dir_ / name;
    HD_CHECK(fs::exists(p), "checkpoint ", dir_.string(), ": missing file ", name, " (needed for '",
             tensor, "')");
    h5::Handle f(H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    HD_CHECK(f.get() >= 0, "checkpoint ", dir_.string(), ": cannot open ", name,
             " as HDF5 (truncated or corrupt file; needed for '", tensor, "')");
    return files_.emplace(name, std::move(f)).first->second;
  }

 private:
  fs::path dir_;
  std::map<std::string, h5::Handle> files_;
};

// "a 64-bit float"-style description of an HDF5 type for error messages.
std::string describe_type(hid_t type) {
  const size_t size = H5Tget_size(type);
  switch (H5Tget_class(type)) {
    case H5T_FLOAT:
      return concat("a ", size * 8, "-bit float");
    case H5T_INTEGER:
      return concat("a ", size * 8, "-bit integer");
    default:
      return concat("a non-numeric HDF5 type of ", size, " bytes");
  }
}

Shape dataset_dims(hid_t ds) {
  h5::Handle space(H5Dget_space(ds), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(std::max(nd, 0));
  if (nd > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  return Shape(dims.begin(), dims.end());
}

// How one saved tensor is cut: the dim its chunks' rows run along and the elements per row.
struct SavedRows {
  int dim = 0;
  int64_t row_numel = 1;
};

// Checks the entry's shard dim against its format and shape (a bad one is manifest damage).
SavedRows saved_rows(const proto::TensorEntry& t, uint32_t version, const fs::path& dir) {
  const Shape g(t.global_shape().begin(), t.global_shape().end());
  const int k = t.shard_dim();
  bool ok = k == 0 || (version >= 2 && k > 0 && size_t(k) < g.size());
  for (int d = 0; ok && d < k; ++d) ok = g[size_t(d)] == 1;
  HD_CHECK(ok, "checkpoint ", dir.string(), ": manifest entry '", t.name(), "' of shape ", g,
           " has shard_dim ", k, ", which format ", version,
           " does not allow (format 2: a dim after only dims of size 1)");
  SavedRows s;
  s.dim = k;
  const int64_t rows = g.empty() ? 1 : g[size_t(k)];
  s.row_numel = rows > 0 ? shape_numel(g) / rows : 0;
  return s;
}

// Copies the elements of `chunk` that overlap [lo, hi) (elements of the flattened global tensor;
// dst[0] is element lo) into `dst`. A chunk and a rank's shard are both contiguous ranges of the
// flattened tensor whatever their shard dims ([Note: resharding]), so this works between any two
// layouts. Reads the chunk rows holding the overlap, widened to whole checksum blocks, and
// verifies each block. Returns the elements copied.
int64_t read_overlap(FileCache& files, const fs::path& dir, const proto::TensorEntry& t,
                     const SavedRows& saved, const proto::Chunk& c, int64_t lo, int64_t hi,
                     float* dst) {
  const int64_t rn = saved.row_numel;
  const int64_t c_lo = c.row_offset() * rn, c_hi = (c.row_offset() + c.rows()) * rn;
  const int64_t ea = std::max(lo, c_lo), eb = std::min(hi, c_hi);
  if (ea >= eb) return 0;
  // Chunk rows [a, b) hold the overlap (rn > 0 here: the overlap is not empty).
  const int64_t a = (ea - c_lo) / rn, b = (eb - c_lo + rn - 1) / rn;
  const std::string where = concat(dir.string(), "/", c.file(), ":", c.dataset());
  const int64_t block = c.checksum_block_rows();
  HD_CHECK(block > 0 && c.crc32c_size() == internal::num_blocks(c.rows(), block),
           "checkpoint: manifest has no valid checksums for ", where);
  hid_t f = files.get(c.file(), t.name());
  HD_CHECK(H5Lexists(f, c.dataset().c_str(), H5P_DEFAULT) > 0, "checkpoint: dataset ", where,
           " not found (needed for '", t.name(), "')");
  h5::Handle ds(H5Dopen2(f, c.dataset().c_str(), H5P_DEFAULT), H5Dclose);
  h5::check(ds.get(), "cannot open dataset ", where);
  h5::Handle type(H5Dget_type(ds), H5Tclose);
  HD_CHECK(H5Tequal(type, H5T_IEEE_F32LE) > 0, "checkpoint: dtype mismatch for '", t.name(),
           "' in ", where, ": the manifest says f32 (a 32-bit float), the dataset holds ",
           describe_type(type));
  const std::vector<hsize_t> dims = internal::chunk_dims(
      Shape(t.global_shape().begin(), t.global_shape().end()), saved.dim, c.rows());
  const Shape expect(dims.begin(), dims.end());
  const Shape found = dataset_dims(ds);
  HD_CHECK(found == expect, "checkpoint: shape mismatch for '", t.name(), "' in ", where,
           ": expected ", expect, ", found ", found);

  // Widen [a, b) to whole checksum blocks so every byte we use is verified.
  const int64_t ba = a / block * block;
  const int64_t bb = std::min(c.rows(), (b + block - 1) / block * block);
  std::vector<float> buf(size_t((bb - ba) * rn));
  std::vector<hsize_t> start(found.size(), 0), count(found.begin(), found.end());
  start[size_t(saved.dim)] = hsize_t(ba);
  count[size_t(saved.dim)] = hsize_t(bb - ba);
  h5::Handle fspace(H5Dget_space(ds), H5Sclose);
  h5::check(
      H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
      "hyperslab of ", where);
  h5::Handle mspace(H5Screate_simple(int(count.size()), count.data(), nullptr), H5Sclose);
  h5::check(H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, buf.data()), "read of ",
            where, " rows [", ba, ", ", bb, ") failed (truncated or corrupt file?)");
  for (int64_t r = ba; r < bb; r += block) {
    const int64_t n = std::min(block, c.rows() - r);
    const uint32_t got = crc32c(buf.data() + (r - ba) * rn, size_t(n * rn) * sizeof(float));
    const uint32_t want = c.crc32c(int(r / block));
    HD_CHECK(got == want, "checkpoint: checksum mismatch in dataset ", where, " rows [", r, ", ",
             r + n, ") of '", t.name(), "': expected crc32c ", hex(want), ", computed ", hex(got));
  }
  const int64_t first = ea - c_lo - ba * rn;  // element ea's index in buf
  std::copy(buf.begin() + first, buf.begin() + first + (eb - ea), dst + (ea - lo));
  return eb - ea;
}

}  // namespace

internal::ManifestState internal::check_manifest(const fs::path& step_path, proto::Manifest& man,
                                                 std::string& why) {
  const fs::path p = step_path / kManifestName;
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    why = concat("missing ", kManifestName, " (not a complete checkpoint)");
    return ManifestState::missing;
  }
  if (!man.ParseFromIstream(&in)) {
    why = concat("corrupt ", kManifestName);
    return ManifestState::corrupt;
  }
  if (man.format_version() < kFormatVersionDim0 || man.format_version() > kFormatVersion) {
    why = concat("incompatible format version ", man.format_version(), " (this build reads ",
                 kFormatVersionDim0, " to ", kFormatVersion, ", written by hdtrain ",
                 man.library_version(), ")");
    return ManifestState::other_format;
  }
  return ManifestState::ok;
}

std::string name_list(const std::vector<std::string>& names, size_t max_names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max_names; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > max_names) s += concat(", ... (", names.size() - max_names, " more)");
  return s;
}

proto::Manifest read_manifest(const fs::path& step_path) {
  proto::Manifest man;
  std::string why;
  HD_CHECK(try_read_manifest(step_path, man, why), "checkpoint ", step_path.string(), ": ", why);
  return man;
}

LoadResult load_checkpoint(const fs::path& step_path, const std::vector<ShardRef>& shards,
                           const LoadOptions& options) {
  h5::silence_errors();
  const proto::Manifest man = read_manifest(step_path);
  LoadResult result;
  result.step = man.step();
  result.saved_world_size = man.world_size();
  result.config_text = man.config_text();

  std::map<std::string, const proto::TensorEntry*> saved;
  for (const auto& t : man.tensors()) saved[t.name()] = &t;
  std::set<std::string> requested;
  for (const ShardRef& s : shards) {
    requested.insert(s.info.name);
    if (!saved.count(s.info.name)) result.missing.push_back(s.info.name);
  }
  for (const auto& [name, t] : saved)
    if (!requested.count(name)) result.unexpected.push_back(name);
  HD_CHECK(result.missing.empty() || options.allow_missing, "checkpoint ", step_path.string(), ": ",
           result.missing.size(),
           " missing parameters (not in the checkpoint; allow_missing to initialise them fresh): ",
           name_list(result.missing));
  HD_CHECK(result.unexpected.empty() || options.allow_unexpected, "checkpoint ", step_path.string(),
           ": ", result.unexpected.size(),
           " unexpected parameters (in the checkpoint, not in the model): ",
           name_list(result.unexpected));

  // Compatibility first, for every entry, so that a checkpoint of another model fails before a
  // single shard is overwritten (see load_checkpoint in checkpoint.h).
  for (const ShardRef& s : shards) {
    auto it = saved.find(s.info.name);
    if (it == saved.end()) continue;  // allow_missing: keep the caller's initial values
    const proto::TensorEntry& t = *it->second;
    const ShardInfo& info = s.info;
    HD_CHECK(t.dtype() == dtype_name(DType::f32), "checkpoint: dtype mismatch for '", info.name,
             "': expected f32, found ", t.dtype(), " in ", step_path.string());
    const Shape found(t.global_shape().begin(), t.global_shape().end());
    HD_CHECK(found == info.global_shape, "checkpoint: shape mismatch for '", info.name,
             "': expected ", info.global_shape, ", found ", found, " in ", step_path.string());
    HD_CHECK(s.shard.dtype() == DType::f32, "checkpoint: dtype mismatch for '", info.name,
             "': the checkpoint holds f32, the destination shard is ", dtype_name(s.shard.dtype()),
             " (load into f32 and convert)");
    HD_CHECK(s.shard.is_contiguous() && s.shard.numel() >= info.padded_length, "checkpoint load: '",
             info.name, "' needs a contiguous f32 shard of ", info.padded_length, " elements, got ",
             s.shard.shape());
  }

  // Then the data: any failure from here on is damage to the checkpoint.
  try {
    FileCache files(step_path);
    for (const ShardRef& s : shards) {
      auto it = saved.find(s.info.name);
      if (it == saved.end()) continue;
      const proto::TensorEntry& t = *it->second;
      const ShardInfo& info = s.info;
      const SavedRows saved_layout = saved_rows(t, man.format_version(), step_path);
      float* dst = s.shard.data<float>();
      std::fill(dst, dst + info.padded_length, 0.0f);  // padding rows stay zero, as FSDP expects
      // This rank's rows in its own layout, as a range of the flattened tensor.
      const int64_t lo = internal::first_row(info, info.rank);
      const int64_t rows = info.valid_rows(info.rank);
      int64_t covered = 0;  // elements
      for (const proto::Chunk& c : t.chunks())
        covered += read_overlap(files, step_path, t, saved_layout, c, lo * info.row_numel,
                                (lo + rows) * info.row_numel, dst);
      HD_CHECK(covered == rows * info.row_numel, "checkpoint: '", info.name,
               "': saved chunks cover ", info.row_numel > 0 ? covered / info.row_numel : rows,
               " of the ", rows, " rows [", lo, ", ", lo + rows, ") this rank owns");
    }
  } catch (const CorruptCheckpoint&) {
    throw;
  } catch (const Error& e) {
    throw CorruptCheckpoint(e.what());
  }
  return result;
}

std::optional<fs::path> latest_complete(const fs::path& dir) {
  struct Candidate {
    int64_t step;
    fs::path path;
    bool tmp;
  };
  std::vector<Candidate> found;
  const std::regex pattern(R"(step_(\d{8})(\.tmp)?)");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, pattern))
      found.push_back({std::stoll(m[1].str()), e.path(), m[2].matched});
  }
  // Newest first; at equal steps the final folder before its leftover .tmp.
  std::sort(found.begin(), found.end(), [](const Candidate& x, const Candidate& y) {
    return x.step != y.step ? x.step > y.step : x.tmp < y.tmp;
  });
  for (const Candidate& c : found) {
    proto::Manifest man;
    std::string why;
    if (c.tmp)
      why = "save did not finish";
    else if (try_read_manifest(c.path, man, why))
      return c.path;
    std::cerr << "hdtrain: warning: checkpoint: ignoring " << c.path.string() << ": " << why
              << "\n";
  }
  return std::nullopt;
}

}  // namespace hd::parallel::ckpt
