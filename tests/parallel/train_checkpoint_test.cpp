// Training checkpoints (issue 5): FSDP + AdamW + WarmupCosine on the tiny transformer.
//
// Resume.* and Crash.* are halves of one scenario run by two mpirun jobs (CTest fixtures set
// HD_CKPT_DIR / HD_CKPT_SAVED_NP / HD_RESUME_EXACT), as a restarted job would: the first half
// saves and writes the full (gathered) parameters and moments as a reference file; the second,
// a new process on possibly another world size, loads and compares bit for bit, then trains on
// and compares with a straight 10-step run. Async.* and Retention.* run within one job.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>

#include "parallel/checkpoint/train_state.h"
#include "proto/checkpoint.pb.h"
#include "tests/parallel/mpi_main.h"
#include "tests/parallel/tiny_trainer.h"

namespace hd::parallel::ckpt {
namespace {
namespace fs = std::filesystem;
using testing::world;

using testing::gather_full;
using testing::kBatch;
using testing::Trainer;

void write_reference(const fs::path& file, const std::map<std::string, std::vector<float>>& m,
                     const std::vector<double>& losses) {
  std::ofstream out(file, std::ios::binary);
  auto put = [&](const void* p, size_t n) { out.write(static_cast<const char*>(p), long(n)); };
  const uint64_t count = m.size(), nl = losses.size();
  put(&count, 8);
  for (const auto& [name, v] : m) {
    const uint64_t len = name.size(), numel = v.size();
    put(&len, 8), put(name.data(), len), put(&numel, 8), put(v.data(), numel * 4);
  }
  put(&nl, 8), put(losses.data(), nl * 8);
  ASSERT_TRUE(out.good()) << file;
}

void read_reference(const fs::path& file, std::map<std::string, std::vector<float>>& m,
                    std::vector<double>& losses) {
  std::ifstream in(file, std::ios::binary);
  ASSERT_TRUE(in) << file;
  auto get = [&](void* p, size_t n) { in.read(static_cast<char*>(p), long(n)); };
  uint64_t count = 0, nl = 0;
  get(&count, 8);
  for (uint64_t k = 0; k < count; ++k) {
    uint64_t len = 0, numel = 0;
    get(&len, 8);
    std::string name(len, '\0');
    get(name.data(), len), get(&numel, 8);
    std::vector<float> v(numel);
    get(v.data(), numel * 4);
    m[name] = std::move(v);
  }
  get(&nl, 8);
  losses.resize(nl);
  get(losses.data(), nl * 8);
  ASSERT_TRUE(in.good()) << file;
}

// The key third of a qkv bias (and its moments) has an analytically zero gradient (softmax
// ignores a per-query constant), so AdamW there is driven by rounding noise of ~1e-8 that
// depends on the summation order, amplified by 1/eps: across world sizes these entries drift
// apart by ~1e-5 in 5 steps, every other entry by < 2e-7 (measured, 2 -> 1 ranks). They get
// 10x the tolerance; a real resharding error would show in every entry, not only here.
double tolerance_for(const std::string& name, size_t i, double tol) {
  const std::string qkv_bias = "attn.qkv.bias";
  const bool is_qkv_bias =
      name.size() >= qkv_bias.size() &&
      name.compare(name.size() - qkv_bias.size(), qkv_bias.size(), qkv_bias) == 0;
  const size_t width = 15;  // TinyTransformer: qkv.bias = [q | k | v], 15 each
  return is_qkv_bias && i >= width && i < 2 * width ? 10 * tol : tol;
}

// Bit-exact (tol < 0) or |a - b| <= tol per element (see tolerance_for).
void expect_state_eq(const std::map<std::string, std::vector<float>>& got,
                     const std::map<std::string, std::vector<float>>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const std::vector<float>& g = got.at(name);
    ASSERT_EQ(g.size(), w.size()) << name;
    for (size_t i = 0; i < w.size(); ++i) {
      if (tol < 0)
        ASSERT_EQ(std::bit_cast<uint32_t>(g[i]), std::bit_cast<uint32_t>(w[i]))
            << name << "[" << i << "]: " << g[i] << " vs " << w[i];
      else
        ASSERT_NEAR(g[i], w[i], tolerance_for(name, i, tol)) << name << "[" << i << "]";
    }
  }
}

fs::path env_dir() {
  const char* dir = std::getenv("HD_CKPT_DIR");
  if (!dir) throw Error("HD_CKPT_DIR must be set (run through CTest)");
  return dir;
}

TEST(Resume, DISABLED_FirstHalf) {
  const fs::path dir = env_dir();
  if (world().rank() == 0) fs::remove_all(dir), fs::create_directories(dir);
  world().barrier().wait();
  Trainer t;
  std::vector<double> losses;
  for (int i = 0; i < 5; ++i) losses.push_back(t.step());
  save_training_checkpoint(dir, t.st.step, t.shards(), t.st, world(), {"tiny: 1\n", 0});
  const auto full = gather_full(t.shards());
  if (world().rank() == 0) write_reference(dir / "reference.bin", full, losses);
  world().barrier().wait();
}

TEST(Resume, DISABLED_SecondHalf) {
  const fs::path dir = env_dir();
  const int saved_np = std::atoi(std::getenv("HD_CKPT_SAVED_NP"));
  const bool exact =
      std::getenv("HD_RESUME_EXACT") && std::string(std::getenv("HD_RESUME_EXACT")) == "1";
  std::map<std::string, std::vector<float>> saved_full;
  std::vector<double> first_losses;
  read_reference(dir / "reference.bin", saved_full, first_losses);

  // The straight run on this world size: 10 steps, state and full tensors after 5.
  Trainer straight;
  std::vector<double> straight_losses;
  TrainerState straight_at_5;
  std::map<std::string, std::vector<float>> straight_full_5;
  for (int i = 0; i < 10; ++i) {
    if (i == 5) straight_at_5 = straight.st, straight_full_5 = gather_full(straight.shards());
    straight_losses.push_back(straight.step());
  }

  Trainer resumed;
  const auto latest = latest_complete(dir);
  ASSERT_TRUE(latest.has_value());
  ASSERT_EQ(*latest, step_dir(dir, 5));
  const TrainingLoadResult r = load_training_checkpoint(*latest, resumed.shards());
  EXPECT_EQ(r.load.saved_world_size, saved_np);
  EXPECT_EQ(r.load.config_text, "tiny: 1\n");
  EXPECT_EQ(r.state, straight_at_5);  // sampler, RNG, counters are world-size independent
  EXPECT_EQ(r.state.counters.at("samples_seen"), 5.0 * kBatch);
  resumed.st = r.state;
  resumed.opt->set_step_count(r.state.optimizer_step);

  // Loading on any world size gives back exactly what was saved (parameters and moments).
  expect_state_eq(gather_full(resumed.shards()), saved_full, -1);
  EXPECT_EQ(saved_full.size(), 3 * straight.fsdp.shard_infos().size());

  const double tol = exact ? -1 : 1e-5;
  if (exact) {
    for (int i = 0; i < 5; ++i)
      EXPECT_EQ(std::bit_cast<uint64_t>(first_losses[i]),
                std::bit_cast<uint64_t>(straight_losses[i]))
          << "step " << i;
    expect_state_eq(saved_full, straight_full_5, -1);
  }
  for (int i = 5; i < 10; ++i) {
    const double loss = resumed.step();
    if (exact)
      EXPECT_EQ(std::bit_cast<uint64_t>(loss), std::bit_cast<uint64_t>(straight_losses[i]))
          << "step " << i << ": " << loss << " vs " << straight_losses[i];
    else
      EXPECT_NEAR(loss, straight_losses[i], 1e-5) << "step " << i;
  }
  EXPECT_EQ(resumed.st, straight.st);
  expect_state_eq(gather_full(resumed.shards()), gather_full(straight.shards()), tol);
}

// First job: a complete checkpoint at step 2, then rank 1 SIGKILLs itself while writing step 4
// (HD_CKPT_TEST_FAULT); mpirun ends the job. Run by expect_failure.sh.
TEST(Crash, DISABLED_KilledMidWrite) {
  const fs::path dir = env_dir();
  if (world().rank() == 0) fs::remove_all(dir), fs::create_directories(dir);
  world().barrier().wait();
  Trainer t;
  t.step(), t.step();
  save_training_checkpoint(dir, 2, t.shards(), t.st, world());
  const auto full = gather_full(t.shards());
  if (world().rank() == 0) write_reference(dir / "reference.bin", full, {});
  world().barrier().wait();
  t.step(), t.step();
  setenv("HD_CKPT_TEST_FAULT", "kill:1", 1);
  save_training_checkpoint(dir, 4, t.shards(), t.st, world());
  ADD_FAILURE() << "rank 1 should have been killed while writing step 4";
}

// Second job: the partial step 4 is ignored, step 2 loads exactly, retention removes the debris.
TEST(Crash, DISABLED_PreviousCheckpointSurvives) {
  const fs::path dir = env_dir();
  const fs::path partial = step_dir(dir, 4).string() + ".tmp";
  ASSERT_TRUE(fs::exists(partial / "rank_00001.h5")) << "rank 1 never started step 4";
  EXPECT_GT(fs::file_size(partial / "rank_00001.h5"), 0u);
  EXPECT_FALSE(fs::exists(partial / kManifestName));
  EXPECT_FALSE(fs::exists(step_dir(dir, 4)));
  const auto latest = latest_complete(dir);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(*latest, step_dir(dir, 2));
  std::map<std::string, std::vector<float>> want;
  std::vector<double> unused;
  read_reference(dir / "reference.bin", want, unused);
  Trainer t;
  const TrainingLoadResult r = load_training_checkpoint(*latest, t.shards());
  EXPECT_EQ(r.state.step, 2);
  expect_state_eq(gather_full(t.shards()), want, -1);
  world().barrier().wait();
  if (world().rank() == 0) {
    const auto removed = apply_retention(dir, {1, 0});
    EXPECT_EQ(removed, std::vector<fs::path>{partial});
    EXPECT_TRUE(fs::exists(step_dir(dir, 2)));
  }
}

}  // namespace
}  // namespace hd::parallel::ckpt
