// The checkpoint error messages not covered by checkpoint_test.cpp: each is provoked for real
// (a damaged manifest, a replaced HDF5 dataset, a failing rank) and its text asserted.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "parallel/checkpoint/checkpoint.h"
#include "proto/checkpoint.pb.h"
#include "tests/parallel/ckpt_test_util.h"
#include "tests/parallel/mpi_main.h"

namespace hd::parallel::ckpt {
namespace {
namespace fs = std::filesystem;
using testing::world;

using testing::error_of;

fs::path scratch(const std::string& test) {
  return testing::ckpt_scratch("hd_ckpt_errors", test);
}

std::vector<ShardRef> shards(bool fill = true) {
  std::vector<ShardRef> out;
  for (auto [name, shape] :
       std::vector<std::pair<std::string, Shape>>{{"a.weight", {6, 2}}, {"b", {3}}}) {
    ShardRef r{make_shard_info(name, shape, world().rank(), world().world_size()), {}};
    r.shard = Tensor::empty({r.info.padded_length});
    for (int64_t i = 0; i < r.info.padded_length; ++i)
      r.shard.data<float>()[i] = fill ? float(i) : 0;
    out.push_back(r);
  }
  return out;
}

// Rank 0 rewrites the manifest through `edit`; every rank then tries to load.
std::string load_after_manifest_edit(const fs::path& step,
                                     const std::function<void(proto::Manifest&)>& edit) {
  if (world().rank() == 0) {
    proto::Manifest man = read_manifest(step);
    edit(man);
    std::ofstream out(step / kManifestName, std::ios::binary | std::ios::trunc);
    man.SerializeToOstream(&out);
  }
  world().barrier().wait();
  auto s = shards(false);
  const std::string msg = error_of([&] { load_checkpoint(step, s); });
  world().barrier().wait();  // nobody edits the files again before every rank has read them
  return msg;
}

// Rank 0 replaces dataset /a/weight of every rank file with one of another type or shape.
std::string load_after_dataset_swap(const fs::path& step, hid_t type, hsize_t rows, hsize_t cols) {
  if (world().rank() == 0)
    for (int r = 0; r < world().world_size(); ++r) {
      const fs::path f = step / ("rank_0000" + std::to_string(r) + ".h5");
      hid_t file = H5Fopen(f.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
      H5Ldelete(file, "/a/weight", H5P_DEFAULT);
      if (type >= 0) {
        hsize_t dims[2] = {rows, cols};
        hid_t space = H5Screate_simple(2, dims, nullptr);
        hid_t ds =
            H5Dcreate2(file, "/a/weight", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dclose(ds), H5Sclose(space);
      }
      H5Fclose(file);
    }
  world().barrier().wait();
  auto s = shards(false);
  const std::string msg = error_of([&] { load_checkpoint(step, s); });
  world().barrier().wait();  // nobody edits the files again before every rank has read them
  return msg;
}

TEST(CheckpointErrors, Manifest) {
  const fs::path dir = scratch("manifest");
  const fs::path step = save_checkpoint(dir, 1, shards(), world());
  std::string msg = load_after_manifest_edit(
      step, [](proto::Manifest& m) { m.mutable_tensors(0)->set_dtype("bf16"); });
  EXPECT_HAS(msg, "dtype mismatch for 'a.weight': expected f32, found bf16 in " + step.string());
  msg = load_after_manifest_edit(step, [](proto::Manifest& m) {
    m.mutable_tensors(0)->set_dtype("f32");
    for (auto& c : *m.mutable_tensors(0)->mutable_chunks()) c.clear_crc32c();
  });
  EXPECT_HAS(msg, "manifest has no valid checksums for " + step.string() + "/rank_0000");
  EXPECT_HAS(msg, ".h5:/a/weight");
  msg = load_after_manifest_edit(step,
                                 [](proto::Manifest& m) { m.mutable_tensors(0)->clear_chunks(); });
  EXPECT_HAS(msg, "checkpoint: 'a.weight': saved chunks cover 0 of the ");
  EXPECT_HAS(msg, " this rank owns");
  if (world().rank() == 0) {
    std::ofstream(step / kManifestName, std::ios::binary | std::ios::trunc)
        << "not a protobuf \xff\xff";
  }
  world().barrier().wait();
  auto s = shards(false);
  msg = error_of([&] { load_checkpoint(step, s); });
  EXPECT_HAS(msg, "checkpoint " + step.string() + ": corrupt manifest.pb");
  world().barrier().wait();
}

TEST(CheckpointErrors, Datasets) {
  const fs::path dir = scratch("datasets");
  const int world_size = world().world_size();
  const hsize_t rows = hsize_t(world_size == 1 ? 6 : world_size == 2 ? 3 : 2);
  std::string msg =
      load_after_dataset_swap(save_checkpoint(dir, 1, shards(), world()), H5T_IEEE_F64LE, rows, 2);
  EXPECT_HAS(msg, "dtype mismatch for 'a.weight' in ");
  EXPECT_HAS(msg, ": the manifest says f32 (a 32-bit float), the dataset holds a 64-bit float");
  msg =
      load_after_dataset_swap(save_checkpoint(dir, 2, shards(), world()), H5T_IEEE_F32LE, rows, 3);
  EXPECT_HAS(msg, "shape mismatch for 'a.weight' in ");
  EXPECT_HAS(
      msg, ": expected [" + std::to_string(rows) + ", 2], found [" + std::to_string(rows) + ", 3]");
  msg = load_after_dataset_swap(save_checkpoint(dir, 3, shards(), world()), -1, 0, 0);
  EXPECT_HAS(msg, ":/a/weight not found (needed for 'a.weight')");
}

TEST(CheckpointErrors, Save) {
  const fs::path dir = scratch("save");
  save_checkpoint(dir, 1, shards(), world());
  std::string msg = error_of([&] { save_checkpoint(dir, 1, shards(), world()); });
  EXPECT_HAS(msg, world().rank() == 0
                      ? "checkpoint save: " + step_dir(dir, 1).string() + " already exists"
                      : "checkpoint save failed on rank 0");

  auto bad = shards();
  bad[1].info = make_shard_info("b", {3}, (world().rank() + 1) % 2, 2);
  msg = error_of([&] { save_checkpoint(dir, 2, bad, world()); });
  EXPECT_HAS(msg, "checkpoint save: 'b' is sharded for rank " +
                      std::to_string((world().rank() + 1) % 2) + " of 2 but the group is rank " +
                      std::to_string(world().rank()));
  bad = shards();
  bad[0].shard = Tensor::empty({bad[0].info.padded_length}, DType::f64);
  msg = error_of([&] { save_checkpoint(dir, 2, bad, world()); });
  EXPECT_HAS(msg, "checkpoint save: 'a.weight' needs a contiguous f32 shard of");
  bad = shards();
  bad[0].info.name = "a..weight";
  msg = error_of([&] { save_checkpoint(dir, 2, bad, world()); });
  EXPECT_HAS(msg, "parameter name 'a..weight' cannot be mapped to an HDF5 path");

  // A file where the run folder should be: rank 0 cannot create the step folder.
  if (world().rank() == 0) std::ofstream(dir / "blocker") << "x";
  world().barrier().wait();
  msg = error_of([&] { save_checkpoint(dir / "blocker", 3, shards(), world()); });
  EXPECT_HAS(msg, world().rank() == 0 ? "checkpoint save: cannot create "
                                      : "checkpoint save failed on rank 0");

  // The last rank fails to write: every rank throws, naming it and its reason, no manifest is
  // written and the half-written folder is removed.
  const int last = world().world_size() - 1;
  setenv("HD_CKPT_TEST_FAULT", ("fail:" + std::to_string(last)).c_str(), 1);
  msg = error_of([&] { save_checkpoint(dir, 4, shards(), world()); });
  unsetenv("HD_CKPT_TEST_FAULT");
  EXPECT_HAS(
      msg, "checkpoint save of step 4 failed on rank " + std::to_string(last) + ": cannot write ");
  EXPECT_HAS(msg, "injected failure (HD_CKPT_TEST_FAULT); no manifest was written");
  world().barrier().wait();
  EXPECT_FALSE(fs::exists(step_dir(dir, 4)));
  EXPECT_FALSE(fs::exists(step_dir(dir, 4).string() + ".tmp"));
  EXPECT_EQ(latest_complete(dir), step_dir(dir, 1));
}

}  // namespace
}  // namespace hd::parallel::ckpt
