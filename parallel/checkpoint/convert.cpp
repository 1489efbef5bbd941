// inspect / verify / export / import of checkpoints (see convert.h).
#include "parallel/checkpoint/convert.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "autograd/error.h"
#include "ops/shape.h"
#include "parallel/checkpoint/h5_util.h"
#include "parallel/checkpoint/layout.h"
#include "parallel/checkpoint/safetensors.h"
#include "proto/checkpoint.pb.h"

namespace hd::parallel::ckpt {
namespace fs = std::filesystem;
using ::hd::detail::concat;

namespace {

Shape shape_of(const proto::TensorEntry& t) {
  return Shape(t.global_shape().begin(), t.global_shape().end());
}

// One tensor in full, through the resharding reader as the only rank of a world of one: every
// chunk is read and every checksum block verified.
Tensor read_full(const fs::path& step_path, const proto::TensorEntry& t) {
  ShardRef ref{make_shard_info(t.name(), shape_of(t), 0, 1), {}};
  ref.shard = Tensor::empty({ref.info.padded_length});
  LoadOptions o;
  o.allow_unexpected = true;
  load_checkpoint(step_path, {ref}, o);
  return reshape(ref.shard, shape_of(t));
}

bool is_optimizer(const std::string& name) {
  return name.rfind("optim.", 0) == 0;
}

}  // namespace

std::string describe_checkpoint(const fs::path& step_path) {
  const proto::Manifest man = read_manifest(step_path);
  std::ostringstream o;
  o << "checkpoint " << step_path.string() << "\n"
    << "  step " << man.step() << ", saved on " << man.world_size() << " rank(s), format "
    << man.format_version() << ", hdtrain " << man.library_version() << "\n";
  for (int r = 0; r < man.world_size(); ++r) {
    char name[32];
    std::snprintf(name, sizeof name, "rank_%05d.h5", r);
    std::error_code ec;
    const auto size = fs::file_size(step_path / name, ec);
    o << "  " << name << ": " << (ec ? std::string("MISSING") : concat(size, " bytes")) << "\n";
  }
  if (man.has_trainer_state()) {
    const auto& s = man.trainer_state();
    o << "  trainer state: step " << s.step() << ", optimizer step " << s.optimizer_step()
      << ", stage '" << s.stage() << "', sampler seed " << s.sampler_seed() << " epoch "
      << s.sampler_epoch() << " batch " << s.sampler_batch() << ", rng seed " << s.rng_seed()
      << " offset " << s.rng_offset() << ", micro-batches " << s.micro_batches_per_step()
      << ", non-finite skipped " << s.nonfinite_skipped_total() << " (" << s.nonfinite_in_a_row()
      << " in a row)\n";
    std::map<std::string, double> counters(s.counters().begin(), s.counters().end());
    for (const auto& [k, v] : counters) o << "    counter " << k << " = " << v << "\n";
  } else {
    o << "  trainer state: none (parameters only)\n";
  }
  if (!man.config_text().empty()) {
    const std::string& c = man.config_text();
    o << "  config:\n    " << c << (c.back() == '\n' ? "" : "\n");
  }
  int64_t total = 0;
  o << "  tensors (" << man.tensors_size() << "):\n";
  for (const auto& t : man.tensors()) {
    const Shape shape = shape_of(t);
    // Rows along the entry's shard dim (dim 0 in format 1; parallel/shard.h [Note: shard dim]).
    const int k = t.shard_dim();
    const int64_t d0 = shape.empty() ? 1 : size_t(k) < shape.size() ? shape[size_t(k)] : 0;
    int64_t rows = 0;
    for (const auto& c : t.chunks()) rows += c.rows();
    const int64_t bytes = shape_numel(shape) * 4;
    total += bytes;
    o << "    " << t.name() << "  " << t.dtype() << " " << concat(shape) << "  " << t.chunks_size()
      << " chunk(s)  " << bytes << " bytes"
      << (rows == d0 ? "" : concat("  INCOMPLETE: ", rows, " of ", d0, " rows")) << "\n";
  }
  o << "  total " << total << " bytes\n";
  return o.str();
}

int64_t verify_checkpoint(const fs::path& step_path) {
  const proto::Manifest man = read_manifest(step_path);
  int64_t bytes = 0;
  for (const auto& t : man.tensors()) bytes += read_full(step_path, t).numel() * 4;
  return bytes;
}

int64_t export_safetensors(const fs::path& step_path, const fs::path& out_file,
                           const ExportOptions& options) {
  const proto::Manifest man = read_manifest(step_path);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& t : man.tensors()) {
    if (is_optimizer(t.name()) && !options.include_optimizer) continue;
    tensors.emplace_back(options.prefix + t.name(), read_full(step_path, t));
  }
  safetensors::write(out_file, tensors,
                     {{"format", "pt"},
                      {"hdtrain_step", std::to_string(man.step())},
                      {"hdtrain_source", step_path.string()}});
  return int64_t(tensors.size());
}

int64_t export_hdf5(const fs::path& step_path, const fs::path& out_file,
                    const ExportOptions& options) {
  const proto::Manifest man = read_manifest(step_path);
  h5::silence_errors();
  // Written under a temporary name and renamed: an interrupted export never leaves a file that
  // looks complete.
  const fs::path tmp = out_file.string() + ".tmp";
  int64_t count = 0;
  {
    h5::Handle f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    h5::check(f.get(), "cannot create ", tmp.string());
    for (const auto& t : man.tensors()) {
      if (is_optimizer(t.name()) && !options.include_optimizer) continue;
      const std::string path = internal::dataset_path(options.prefix + t.name());
      for (const std::string& g : internal::parent_groups(path)) {
        if (H5Lexists(f, g.c_str(), H5P_DEFAULT) > 0) continue;
        h5::Handle grp(h5::check(H5Gcreate2(f, g.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                                 "cannot create group ", g, " in ", tmp.string()),
                       H5Gclose);
      }
      const Tensor full = read_full(step_path, t);
      const std::vector<hsize_t> dims(full.shape().begin(), full.shape().end());
      h5::Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                                    : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                       H5Sclose);
      h5::Handle ds(h5::check(H5Dcreate2(f, path.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT,
                                         H5P_DEFAULT, H5P_DEFAULT),
                              "cannot create dataset ", path, " in ", tmp.string()),
                    H5Dclose);
      h5::check(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, full.data<float>()),
                "write of ", path, " in ", tmp.string());
      ++count;
    }
    const int64_t step = man.step();
    h5::Handle scalar(H5Screate(H5S_SCALAR), H5Sclose);
    h5::Handle a_step(
        h5::check(H5Acreate2(f, "hdtrain_step", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT),
                  "cannot create attribute hdtrain_step"),
        H5Aclose);
    h5::check(H5Awrite(a_step, H5T_NATIVE_INT64, &step), "write of attribute hdtrain_step");
    const std::string source = step_path.string();
    h5::Handle str(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(str, std::max<size_t>(1, source.size()));
    h5::Handle a_src(
        h5::check(H5Acreate2(f, "hdtrain_source", str, scalar, H5P_DEFAULT, H5P_DEFAULT),
                  "cannot create attribute hdtrain_source"),
        H5Aclose);
    h5::check(H5Awrite(a_src, str, source.c_str()), "write of attribute hdtrain_source");
    h5::check(f.close(), "close of ", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, out_file, ec);
  HD_CHECK(!ec, "ckpt export: cannot rename ", tmp.string(), " to ", out_file.string(), ": ",
           ec.message());
  return count;
}

fs::path import_safetensors(const fs::path& file, const fs::path& dir, ProcessGroup& pg,
                            const ImportOptions& options) {
  HD_CHECK(pg.world_size() == 1, "ckpt import: run it as a single process (world size 1), got ",
           pg.world_size(), " ranks");
  safetensors::Reader reader(file);
  std::vector<std::string> names;
  for (const auto& e : reader.entries()) names.push_back(e.name);
  std::vector<std::optional<std::string>> mapped(names.begin(), names.end());
  if (options.name_map) {
    std::vector<NameMap::Rule> unused;
    mapped = options.name_map->apply_all(names, &unused);
    for (const auto& r : unused)
      std::fprintf(stderr,
                   "hdtrain ckpt import: warning: %s: rule '%s%s' matched no tensor in %s\n",
                   r.where.c_str(), r.source.c_str(), r.prefix ? "*" : "", file.c_str());
  }
  std::vector<ShardRef> shards;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!mapped[i]) continue;  // dropped by the name map
    const std::string& renamed = *mapped[i];
    const auto& e = reader.entry(names[i]);
    HD_CHECK(renamed.rfind(options.strip_prefix, 0) == 0, "ckpt import: tensor '", renamed, "' in ",
             file.string(), renamed == e.name ? "" : concat(" (mapped from '", e.name, "')"),
             " does not start with the prefix '", options.strip_prefix, "' to strip");
    const std::string name = options.add_prefix + renamed.substr(options.strip_prefix.size());
    Tensor full = reader.read_f32(e.name);
    shards.push_back({make_shard_info(name, e.shape, 0, 1), reshape(full, {full.numel()})});
  }
  SaveOptions so;
  so.config_text = concat("imported from ", file.string(), "\n");
  return save_checkpoint(dir, 0, shards, pg, so);
}

}  // namespace hd::parallel::ckpt
