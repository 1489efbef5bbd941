// inspect / verify / export / import of checkpoints (see convert.h).
#include "parallel/checkpoint/convert.h"

#include <sstream>

#include "autograd/error.h"
#include "ops/shape.h"
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
    const int64_t d0 = shape.empty() ? 1 : shape[0];
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

fs::path import_safetensors(const fs::path& file, const fs::path& dir, ProcessGroup& pg,
                            const ImportOptions& options) {
  HD_CHECK(pg.world_size() == 1, "ckpt import: run it as a single process (world size 1), got ",
           pg.world_size(), " ranks");
  safetensors::Reader reader(file);
  std::vector<ShardRef> shards;
  for (const auto& e : reader.entries()) {
    HD_CHECK(e.name.rfind(options.strip_prefix, 0) == 0, "ckpt import: tensor '", e.name, "' in ",
             file.string(), " does not start with the prefix '", options.strip_prefix,
             "' to strip");
    const std::string name = options.add_prefix + e.name.substr(options.strip_prefix.size());
    Tensor full = reader.read_f32(e.name);
    shards.push_back({make_shard_info(name, e.shape, 0, 1), reshape(full, {full.numel()})});
  }
  SaveOptions so;
  so.config_text = concat("imported from ", file.string(), "\n");
  return save_checkpoint(dir, 0, shards, pg, so);
}

}  // namespace hd::parallel::ckpt
