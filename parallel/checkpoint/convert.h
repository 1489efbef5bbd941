// What `hdtrain ckpt inspect|export|import` does, as library calls (the command only parses
// arguments), so tests exercise the same code.
//
// Memory: export and verify hold one full tensor at a time (each is read on its own through the
// resharding reader at world size 1), so a checkpoint of any size converts within the largest
// tensor's footprint; import likewise holds one tensor of the safetensors file at a time until
// the checkpoint write, which needs them all (save_checkpoint writes one file per call).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "parallel/checkpoint/checkpoint.h"
#include "parallel/checkpoint/name_map.h"

namespace hd::parallel::ckpt {

// A person-readable summary: step, world size, format and library version, trainer state,
// config, then every tensor with dtype, shape, chunks, bytes and whether its chunks cover it.
std::string describe_checkpoint(const std::filesystem::path& step_path);

// Reads every chunk of every tensor and checks every CRC32C block; throws on the first bad one.
// Returns the number of bytes verified.
int64_t verify_checkpoint(const std::filesystem::path& step_path);

struct ExportOptions {
  std::string prefix;              // prepended to every name ("" keeps them)
  bool include_optimizer = false;  // also the "optim.*" entries
};
// Writes the full tensors of a step folder into one f32 safetensors file. Returns the count.
int64_t export_safetensors(const std::filesystem::path& step_path,
                           const std::filesystem::path& out_file,
                           const ExportOptions& options = {});
// The same tensors in one consolidated HDF5 file: a group per module path, one f32 dataset per
// tensor with its full shape (a scalar dataspace for 0-d tensors), and the root attributes
// `hdtrain_step` and `hdtrain_source`; `h5dump -H` shows the model's structure. Returns the count.
int64_t export_hdf5(const std::filesystem::path& step_path, const std::filesystem::path& out_file,
                    const ExportOptions& options = {});

struct ImportOptions {
  // Applied first, to the file's names: renames and drops (see name_map.h).
  std::optional<NameMap> name_map;
  std::string strip_prefix;  // then: kept names must start with it; it is removed
  std::string add_prefix;    // then this is prepended
};
// Writes `file`'s tensors (F32/BF16/F16/F64, converted to f32) as DIR/step_00000000, a
// world-size-1 checkpoint without trainer state that any world size can load (load_checkpoint
// with allow_unexpected/allow_missing to initialise part of a model). Collective over `pg`,
// which must have world size 1. Rules of the name map that matched nothing are printed to
// stderr as a warning (with their line); a name collision after mapping is an error.
std::filesystem::path import_safetensors(const std::filesystem::path& file,
                                         const std::filesystem::path& dir, ProcessGroup& pg,
                                         const ImportOptions& options = {});

}  // namespace hd::parallel::ckpt
