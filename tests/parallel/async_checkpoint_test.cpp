// AsyncCheckpointer, retention and the training-checkpoint errors, within one mpirun job
// (run at 1, 2 and 3 ranks).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <thread>

#include "parallel/checkpoint/train_state.h"
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
  return testing::ckpt_scratch("hd_ckpt_async", test);
}

using testing::error_of;

// Full tensors of every entry of a checkpoint, read on this rank alone (world-size-1 layout).
std::map<std::string, std::vector<float>> read_full(const fs::path& step_path) {
  const proto::Manifest man = read_manifest(step_path);
  std::vector<ShardRef> refs;
  for (const auto& t : man.tensors()) {
    ShardRef r{
        make_shard_info(t.name(), Shape(t.global_shape().begin(), t.global_shape().end()), 0, 1),
        {}};
    r.shard = Tensor::empty({r.info.padded_length});
    refs.push_back(std::move(r));
  }
  load_checkpoint(step_path, refs);
  std::map<std::string, std::vector<float>> out;
  for (const ShardRef& r : refs)
    out[r.info.name].assign(r.shard.data<float>(), r.shard.data<float>() + r.info.global_numel());
  return out;
}

void expect_bits_eq(const std::map<std::string, std::vector<float>>& a,
                    const std::map<std::string, std::vector<float>>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, v] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    ASSERT_EQ(v.size(), b.at(name).size()) << name;
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(v[i]), std::bit_cast<uint32_t>(b.at(name)[i]))
          << name << "[" << i << "]";
  }
}

TEST(Async, TrainingContinuesWhileWritingAndResultEqualsSyncSave) {
  const fs::path dir = scratch("async_vs_sync");
  Trainer t;
  t.step(), t.step(), t.step();
  const auto at_save = gather_full(t.shards());
  save_training_checkpoint(dir / "sync", 3, t.shards(), t.st, world());

  auto io = make_mpi_group();  // a duplicated communicator, not the training one
  ASSERT_NE(io.get(), &world());
  AsyncCheckpointer ac(io, {10, 0});
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  ac.set_before_write_hook([gate] { gate.wait(); });
  const TrainerState state_at_save = t.st;
  ac.save(dir / "async", 3, t.shards(), t.st);
  // The write cannot have started (the hook holds it), yet training runs FSDP collectives on the
  // training group and changes every shard the snapshot was taken from.
  EXPECT_TRUE(ac.busy());
  t.step(), t.step();
  EXPECT_TRUE(ac.busy());
  EXPECT_FALSE(fs::exists(step_dir(dir / "async", 3)));
  release.set_value();
  ac.wait();
  EXPECT_FALSE(ac.busy());
  EXPECT_GE(ac.last_blocked_seconds(), 0.0);

  // Same bytes as the synchronous save of the same state, and as the state at save time.
  const auto async_full = read_full(step_dir(dir / "async", 3));
  expect_bits_eq(async_full, read_full(step_dir(dir / "sync", 3)));
  expect_bits_eq(async_full, at_save);
  Trainer fresh;
  const auto r = load_training_checkpoint(step_dir(dir / "async", 3), fresh.shards());
  EXPECT_EQ(r.state, state_at_save);
  EXPECT_NE(r.state, t.st);  // training moved on meanwhile
}

TEST(Async, FailureOnOneRankIsReportedOnEveryRank) {
  const fs::path dir = scratch("async_failure");
  const int bad = world().world_size() - 1;
  Trainer t;
  AsyncCheckpointer ac(make_mpi_group());
  const std::string fault = "fail:" + std::to_string(bad);
  setenv("HD_CKPT_TEST_FAULT", fault.c_str(), 1);
  ac.save(dir, 1, t.shards(), t.st);
  std::string msg = error_of([&] { ac.wait(); });
  EXPECT_NE(msg.find("async checkpoint of step 1 failed"), std::string::npos) << msg;
  // Every rank names the failing rank and its reason.
  EXPECT_NE(msg.find("failed on rank " + std::to_string(bad) + ": cannot write "),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("no manifest was written"), std::string::npos) << msg;

  // Reported by the next save() when nobody called wait().
  ac.save(dir, 2, t.shards(), t.st);
  // No wait(): the failure is held until the next save(). (Polling without collectives: ranks
  // would otherwise issue different numbers of training collectives.)
  while (ac.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  msg = error_of([&] { ac.save(dir, 3, t.shards(), t.st); });
  EXPECT_NE(msg.find("async checkpoint of step 2 failed"), std::string::npos) << msg;
  unsetenv("HD_CKPT_TEST_FAULT");
  world().barrier().wait();
  EXPECT_FALSE(latest_complete(dir).has_value());

  // The failure was reported once; the checkpointer works again.
  ac.save(dir, 4, t.shards(), t.st);
  ac.wait();
  EXPECT_EQ(latest_complete(dir), step_dir(dir, 4));
}

TEST(Async, AppliesRetentionAfterEachCommit) {
  const fs::path dir = scratch("async_retention");
  Trainer t;
  AsyncCheckpointer ac(make_mpi_group(), {2, 0});
  for (int64_t s = 1; s <= 4; ++s) ac.save(dir, s, t.shards(), t.st);
  ac.wait();
  world().barrier().wait();
  EXPECT_FALSE(fs::exists(step_dir(dir, 2)));
  EXPECT_TRUE(fs::exists(step_dir(dir, 3)));
  EXPECT_TRUE(fs::exists(step_dir(dir, 4)));
}

TEST(Retention, KeepsLastKAndEveryMthAndDeletesStaleTmp) {
  const fs::path dir = scratch("retention");
  const ShardInfo info = make_shard_info("w", {4, 2}, world().rank(), world().world_size());
  ShardRef ref{info, Tensor::empty({info.padded_length})};
  for (int64_t i = 0; i < info.padded_length; ++i) ref.shard.data<float>()[i] = float(i);
  for (int64_t s = 1; s <= 8; ++s) save_checkpoint(dir, s, {ref}, world());
  if (world().rank() == 0) {
    fs::remove(step_dir(dir, 8) / kManifestName);                // not a checkpoint
    fs::create_directories(step_dir(dir, 9).string() + ".tmp");  // a crashed save
    fs::create_directories(step_dir(dir, 2).string() + ".tmp");  // an older crashed save
    const auto removed = apply_retention(dir, {2, 3});
    const std::vector<fs::path> want{step_dir(dir, 1), step_dir(dir, 2).string() + ".tmp",
                                     step_dir(dir, 2), step_dir(dir, 4),
                                     step_dir(dir, 5), step_dir(dir, 9).string() + ".tmp"};
    EXPECT_EQ(removed, want);
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename());
    std::sort(left.begin(), left.end());
    // Last 2 complete (7, 6), multiples of 3 (3, 6), and the manifest-less 8 moved aside for a
    // person (it would block the save of step 8 otherwise).
    ASSERT_EQ(left.size(), 4u);
    EXPECT_EQ(std::vector<std::string>(left.begin(), left.begin() + 3),
              (std::vector<std::string>{"step_00000003", "step_00000006", "step_00000007"}));
    EXPECT_EQ(left[3].rfind("step_00000008.invalid-", 0), 0u) << left[3];
    EXPECT_EQ(apply_retention(dir, {2, 3}), std::vector<fs::path>{});
  }
  world().barrier().wait();
}

TEST(TrainingErrors, EveryMessage) {
  const fs::path dir = scratch("errors");
  std::string msg = error_of([&] { apply_retention(dir, {0, 0}); });
  EXPECT_NE(msg.find("keep_last must be at least 1, got 0"), std::string::npos) << msg;
  msg = error_of([&] { apply_retention(dir, {1, -2}); });
  EXPECT_NE(msg.find("keep_every must be >= 0, got -2"), std::string::npos) << msg;
  msg = error_of([&] { AsyncCheckpointer ac(nullptr); });
  EXPECT_NE(msg.find("needs a process group of its own"), std::string::npos) << msg;

  Trainer t;
  // An optimizer over other tensors than FSDP's shards.
  std::vector<ParamGroup> groups = t.fsdp.param_groups(0.0);
  groups[0].params[0] = clone(groups[0].params[0]);
  AdamW other(groups, AdamWOptions{});
  msg = error_of([&] { training_shards(t.fsdp, other); });
  EXPECT_NE(
      msg.find("the optimizer's tensor for '" + groups[0].names[0] + "' is not FSDP's shard of it"),
      std::string::npos)
      << msg;
  groups[0].names.erase(groups[0].names.begin());
  groups[0].params.erase(groups[0].params.begin());
  AdamW fewer(groups, AdamWOptions{});
  msg = error_of([&] { training_shards(t.fsdp, fewer); });
  EXPECT_NE(msg.find("is not in the optimizer"), std::string::npos) << msg;

  // A parameter-only checkpoint has no trainer state.
  const fs::path plain = save_checkpoint(dir, 1, t.shards(), world());
  msg = error_of([&] { load_training_checkpoint(plain, t.shards()); });
  EXPECT_NE(msg.find(": no trainer state in manifest.pb"), std::string::npos) << msg;

  // A shard of another dtype than the checkpoint's: both dtypes are named.
  auto shards = t.shards();
  shards[0].shard = Tensor::empty({shards[0].info.padded_length}, DType::bf16);
  msg = error_of([&] { load_checkpoint(plain, shards); });
  EXPECT_NE(msg.find("dtype mismatch for '" + shards[0].info.name +
                     "': the checkpoint holds f32, the destination shard is bf16"),
            std::string::npos)
      << msg;
  msg = error_of([&] {
    AsyncCheckpointer ac(make_mpi_group());
    ac.save(dir, 2, shards, t.st);
  });
  EXPECT_NE(
      msg.find("AsyncCheckpointer: '" + shards[0].info.name + "' needs a contiguous host f32"),
      std::string::npos)
      << msg;
  world().barrier().wait();
}

}  // namespace
}  // namespace hd::parallel::ckpt
