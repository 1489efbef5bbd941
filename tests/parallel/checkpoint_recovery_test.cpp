// Unattended recovery (issue 19): invalid step folders moved aside instead of blocking saves,
// resume falling back past a damaged checkpoint to the same older one on every rank, and a full
// disk reported with the system's reason and cleaned up. Run at 1, 2 and 3 ranks; damage is
// done to the LAST rank's file, which only that rank reads, so the other ranks load fine unless
// the ranks agree.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <bit>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "parallel/checkpoint/layout.h"
#include "parallel/checkpoint/resume.h"
#include "proto/checkpoint.pb.h"
#include "tests/parallel/ckpt_test_util.h"
#include "tests/parallel/mpi_main.h"
#include "tests/parallel/tiny_trainer.h"

namespace hd::parallel::ckpt {
namespace {
namespace fs = std::filesystem;
using testing::gather_full;
using testing::Trainer;
using testing::world;

fs::path scratch(const std::string& test) {
  return testing::ckpt_scratch("hd_ckpt_recovery", test);
}

using testing::error_of;

// Folders of `dir` named "<step folder>.invalid-*".
std::vector<fs::path> moved_aside(const fs::path& dir, int64_t step) {
  std::vector<fs::path> out;
  const std::string prefix = step_dir(dir, step).filename().string() + ".invalid-";
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path());
  return out;
}

// The last rank flips one byte inside the data of the first entry it saved, in its own file.
void damage_last_rank_file(const fs::path& step_path, const std::vector<ShardRef>& shards) {
  const int last = world().world_size() - 1;
  if (world().rank() == last) {
    const fs::path file = step_path / internal::rank_file(last);
    haddr_t offset = HADDR_UNDEF;
    hsize_t bytes = 0;
    hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0) << file;
    for (const ShardRef& s : shards) {
      if (s.info.valid_rows(last) == 0) continue;
      hid_t ds = H5Dopen2(f, internal::dataset_path(s.info.name).c_str(), H5P_DEFAULT);
      offset = H5Dget_offset(ds), bytes = H5Dget_storage_size(ds);
      H5Dclose(ds);
      break;
    }
    H5Fclose(f);
    ASSERT_NE(offset, HADDR_UNDEF);
    std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(std::streamoff(offset + bytes / 2));
    char c = 0;
    io.read(&c, 1);
    io.seekp(std::streamoff(offset + bytes / 2));
    c = char(c ^ 0x40);
    io.write(&c, 1);
  }
  world().barrier().wait();
}

// Every rank's loaded step, all-reduced as (min, max) (min = -max(-x)): equal means every rank
// loaded the same one.
std::pair<int64_t, int64_t> loaded_steps(const ResumeResult& r) {
  Tensor t = Tensor::empty({2}, DType::i64);
  const int64_t step = r.path ? r.loaded.state.step : -1;
  t.data<int64_t>()[0] = -step, t.data<int64_t>()[1] = step;
  world().all_reduce(t, ReduceOp::max).wait();
  return {-t.data<int64_t>()[0], t.data<int64_t>()[1]};
}

TEST(Recovery, InvalidFoldersAreMovedAsideAndNeverBlockASave) {
  const fs::path dir = scratch("invalid");
  Trainer t;
  for (int64_t s = 1; s <= 3; ++s)
    t.step(), save_training_checkpoint(dir, s, t.shards(), t.st, world());
  if (world().rank() == 0) {
    fs::remove(step_dir(dir, 2) / kManifestName);                                   // missing
    std::ofstream(step_dir(dir, 3) / kManifestName, std::ios::trunc) << "garbage";  // corrupt
  }
  world().barrier().wait();
  Trainer fresh;
  const ResumeResult r = resume_training(dir, fresh.shards(), world());
  ASSERT_TRUE(r.path.has_value());
  EXPECT_EQ(*r.path, step_dir(dir, 1));
  EXPECT_TRUE(r.corrupt.empty());  // invalid folders are not damaged checkpoints: no fallback
  world().barrier().wait();
  EXPECT_EQ(moved_aside(dir, 2).size(), 1u);
  EXPECT_EQ(moved_aside(dir, 3).size(), 1u);
  // The resumed run reaches steps 2 and 3 again: nothing is in their way.
  save_training_checkpoint(dir, 2, fresh.shards(), fresh.st, world());
  save_training_checkpoint(dir, 3, fresh.shards(), fresh.st, world());
  // A manifest-less leftover met by a save directly (no resume before it).
  if (world().rank() == 0) fs::create_directories(step_dir(dir, 4));
  world().barrier().wait();
  EXPECT_EQ(save_checkpoint(dir, 4, fresh.shards(), world()), step_dir(dir, 4));
  world().barrier().wait();
  EXPECT_EQ(moved_aside(dir, 4).size(), 1u);
  EXPECT_EQ(latest_complete(dir), step_dir(dir, 4));
  // A complete checkpoint of the same step is still an error (never overwritten).
  const std::string msg = error_of([&] { save_checkpoint(dir, 4, fresh.shards(), world()); });
  EXPECT_HAS(msg, world().rank() == 0 ? "already exists" : "checkpoint save failed on rank 0");
}

TEST(Recovery, DamagedNewestFallsBackToTheSameCheckpointOnEveryRank) {
  const fs::path dir = scratch("fallback");
  Trainer t;
  std::map<std::string, std::vector<float>> at_two;
  TrainerState state_two;
  for (int64_t s = 1; s <= 3; ++s) {
    t.step();
    save_training_checkpoint(dir, s, t.shards(), t.st, world());
    if (s == 2) at_two = gather_full(t.shards()), state_two = t.st;
  }
  damage_last_rank_file(step_dir(dir, 3), t.shards());

  Trainer fresh;
  const ResumeResult r = resume_training(dir, fresh.shards(), world());
  ASSERT_TRUE(r.path.has_value());
  EXPECT_EQ(*r.path, step_dir(dir, 2));
  EXPECT_EQ(loaded_steps(r), std::make_pair(int64_t(2), int64_t(2)));
  EXPECT_EQ(r.corrupt, std::vector<fs::path>{step_dir(dir, 3)});
  EXPECT_FALSE(r.shards_dirty);
  EXPECT_EQ(r.loaded.state, state_two);
  const auto loaded = gather_full(fresh.shards());
  ASSERT_EQ(loaded.size(), at_two.size());
  for (const auto& [name, v] : at_two)
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(v[i]), std::bit_cast<uint32_t>(loaded.at(name)[i])) << name;
  world().barrier().wait();
  EXPECT_FALSE(fs::exists(step_dir(dir, 3)));
  EXPECT_EQ(moved_aside(dir, 3).size(), 1u);
  // Training goes on and saves step 3 again.
  save_training_checkpoint(dir, 3, fresh.shards(), fresh.st, world());
}

TEST(Recovery, OnCorruptErrorStopsEveryRankAndMovesNothing) {
  const fs::path dir = scratch("on_corrupt_error");
  Trainer t;
  t.step(), save_training_checkpoint(dir, 1, t.shards(), t.st, world());
  damage_last_rank_file(step_dir(dir, 1), t.shards());
  Trainer fresh;
  const std::string msg = error_of(
      [&] { resume_training(dir, fresh.shards(), world(), {.on_corrupt = OnCorrupt::error}); });
  EXPECT_HAS(msg, "checkpoint " + step_dir(dir, 1).string() + " is damaged (rank " +
                      std::to_string(world().world_size() - 1) + ": checkpoint: checksum mismatch");
  EXPECT_HAS(msg, "checkpoint.on_corrupt = error");
  world().barrier().wait();
  EXPECT_TRUE(fs::exists(step_dir(dir, 1)));
  EXPECT_TRUE(moved_aside(dir, 1).empty());
}

TEST(Recovery, EveryCheckpointDamagedLeavesDirtyShards) {
  const fs::path dir = scratch("all_damaged");
  Trainer t;
  t.step(), save_training_checkpoint(dir, 1, t.shards(), t.st, world());
  damage_last_rank_file(step_dir(dir, 1), t.shards());
  Trainer fresh;
  const ResumeResult r = resume_training(dir, fresh.shards(), world());
  EXPECT_FALSE(r.path.has_value());
  EXPECT_EQ(r.corrupt.size(), 1u);
  EXPECT_TRUE(r.shards_dirty);  // on every rank, though only the last rank's read failed
  // The caller builds the model again and asks once more: nothing left, a fresh start.
  Trainer again;
  const ResumeResult r2 = resume_training(dir, again.shards(), world());
  EXPECT_FALSE(r2.path.has_value());
  EXPECT_TRUE(r2.corrupt.empty());
  EXPECT_FALSE(r2.shards_dirty);
}

TEST(Recovery, AnotherModelIsAnErrorNotAFallback) {
  const fs::path dir = scratch("incompatible");
  Trainer t;
  t.step(), save_training_checkpoint(dir, 1, t.shards(), t.st, world());
  Trainer fresh;
  auto shards = fresh.shards();
  shards[0].info.name = "no_such.weight";  // a model with another parameter
  const std::string msg = error_of([&] { resume_training(dir, shards, world()); });
  EXPECT_HAS(msg, "cannot resume from " + step_dir(dir, 1).string() + ": rank 0: checkpoint ");
  EXPECT_HAS(msg,
             "1 missing parameters (not in the checkpoint; allow_missing to initialise them "
             "fresh): no_such.weight");
  world().barrier().wait();
  EXPECT_TRUE(fs::exists(step_dir(dir, 1)));  // not damaged: left where it is
}

TEST(Recovery, ANewerFormatIsNeitherMovedNorSkipped) {
  const fs::path dir = scratch("other_format");
  Trainer t;
  for (int64_t s = 1; s <= 2; ++s)
    t.step(), save_training_checkpoint(dir, s, t.shards(), t.st, world());
  if (world().rank() == 0) {  // as a later hdtrain with a newer format would have written it
    proto::Manifest man = read_manifest(step_dir(dir, 2));
    man.set_format_version(kFormatVersion + 1);
    std::ofstream out(step_dir(dir, 2) / kManifestName, std::ios::binary | std::ios::trunc);
    man.SerializeToOstream(&out);
  }
  world().barrier().wait();
  Trainer fresh;
  const std::string msg = error_of([&] { resume_training(dir, fresh.shards(), world()); });
  EXPECT_HAS(msg, world().rank() == 0
                      ? "newer checkpoints of another format: " + step_dir(dir, 2).string() +
                            ": incompatible format version " + std::to_string(kFormatVersion + 1)
                      : "rank 0 could not prepare it");
  world().barrier().wait();
  EXPECT_TRUE(fs::exists(step_dir(dir, 2)));
  EXPECT_TRUE(moved_aside(dir, 2).empty());
  const std::string save_msg = error_of([&] { save_checkpoint(dir, 2, fresh.shards(), world()); });
  EXPECT_HAS(save_msg, world().rank() == 0 ? "already exists" : "checkpoint save failed on rank 0");
}

TEST(DiskFull, ErrnoTextOnEveryRankAndNoTmpLeft) {
  const fs::path dir = scratch("enospc");
  Trainer t;
  save_training_checkpoint(dir, 1, t.shards(), t.st, world());
  const int last = world().world_size() - 1;
  setenv("HD_CKPT_TEST_FAULT", ("enospc:" + std::to_string(last)).c_str(), 1);
  const std::string msg = error_of([&] { save_checkpoint(dir, 2, t.shards(), world()); });
  unsetenv("HD_CKPT_TEST_FAULT");
  // Every rank names the failing rank and the system's reason (rank 0 is the one that reports).
  EXPECT_HAS(msg, "checkpoint save of step 2 failed on rank " + std::to_string(last) + ": ");
  EXPECT_HAS(msg, "No space left on device");
  EXPECT_HAS(msg, "; no manifest was written");
  world().barrier().wait();
  EXPECT_FALSE(fs::exists(step_dir(dir, 2).string() + ".tmp"));
  EXPECT_FALSE(fs::exists(step_dir(dir, 2)));
  EXPECT_EQ(latest_complete(dir), step_dir(dir, 1));
}

TEST(DiskFull, AsyncFailureIsVisibleWithoutWaiting) {
  const fs::path dir = scratch("enospc_async");
  Trainer t;
  AsyncCheckpointer ac(make_mpi_group());
  EXPECT_FALSE(ac.failed());
  const int last = world().world_size() - 1;
  setenv("HD_CKPT_TEST_FAULT", ("enospc:" + std::to_string(last)).c_str(), 1);
  ac.save(dir, 1, t.shards(), t.st);
  // What a trainer polls at each step boundary: no collective, no blocking.
  while (ac.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  unsetenv("HD_CKPT_TEST_FAULT");
  EXPECT_TRUE(ac.failed());
  const std::string msg = error_of([&] { ac.wait(); });
  EXPECT_HAS(msg, "async checkpoint of step 1 failed: checkpoint save of step 1 failed on rank " +
                      std::to_string(last));
  EXPECT_HAS(msg, "No space left on device");
  EXPECT_FALSE(ac.failed());  // reported once
  world().barrier().wait();
  EXPECT_FALSE(fs::exists(step_dir(dir, 1).string() + ".tmp"));
}

}  // namespace
}  // namespace hd::parallel::ckpt
