// The multi-rank VILA-HD stage (launcher/vilahd_stage.h) on a micro model and a tiny SFT set
// written here (PNG images, records with and without boxes, answers of unequal length).
//
// Run at 1 rank (fixture: writes its per-step losses) and at 2 and 4 ranks under mpirun:
//   - N ranks train like one rank: the 2-rank losses equal the 1-rank file within 1e-5 (the
//     per-rank loss scaling makes unequal token counts per rank exact up to summation order);
//   - stop_at_step k, then the same stage again, equals the uninterrupted run bit for bit
//     (losses and every byte of the result folder); so does a stop signal seen on one rank;
//   - frozen parameters (the vision tower) keep their bits and get no optimizer moments in the
//     checkpoint, trained ones move;
//   - the vision memo filled across ranks (each rank runs PS3 on its share, padding passes for
//     an odd count, entries broadcast) holds, bit for bit, what one unsharded model computes
//     for every record, and a memoized stage trains alike on 1 and 2 ranks;
//   - gradient accumulation (micro_batches 2) trains like the whole batch at once.
#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "launcher/signals.h"
#include "launcher/vilahd_memo.h"
#include "launcher/vilahd_stage.h"
#include "parallel/checkpoint/checkpoint.h"
#include "proto/checkpoint.pb.h"
#include "ps3/data/image.h"
#include "ps3/data/records.h"
#include "tests/parallel/mpi_main.h"
#include "tests/testing/errors.h"
#include "tests/vilahd/vila_test_util.h"
#include "vilahd/parallelize.h"
#include "vilahd/sft_data.h"
#include "vilahd/text/bpe_tokenizer.h"
#include "vilahd/trainable_parts.h"
#include "vilahd/vila_checkpoint.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;
using parallel::testing::world;
using parallel::testing::world_ptr;

const fs::path kWork = HD_STAGE_WORK;
const fs::path kTokenizer = fs::path(HD_SOURCE_DIR) / "tests/fixtures/bpe_tokenizer/tokenizer.json";

fs::path data_dir() {
  return kWork / "data";
}
fs::path init_dir() {
  return kWork / "init";
}
fs::path run_dir() {
  return kWork / ("np" + std::to_string(world().world_size()));
}

vilahd::VilaHdConfig stage_model_config(const vilahd::BpeTokenizer& tok) {
  vilahd::VilaHdConfig c = vilahd::testing::micro_vila_config();
  c.llm.vocab_size = tok.max_id_plus_one();
  c.image_newline_token = tok.encode("\n").at(0);
  c.vision.low_res = 56;
  return c;
}

// Rank 0 writes the data and the start folder once (other rank counts reuse them).
void prepare() {
  if (world().rank() == 0 && !fs::exists(kWork / "ready_memo")) {
    fs::remove_all(kWork);
    fs::create_directories(data_dir());
    uint64_t x = 12345;
    for (int i = 0; i < 4; ++i) {
      data::Image im(160, 200);
      for (auto& p : im.pixels)
        x = x * 6364136223846793005ull + 1442695040888963407ull, p = uint8_t(x >> 56);
      for (int64_t y = 40; y < 80; ++y)
        for (int64_t c = 30 * i; c < 30 * i + 40; ++c) std::memset(im.row(y) + c * 3, 250, 3);
      data::write_file((data_dir() / ("im" + std::to_string(i) + ".png")).string(),
                       data::encode_png(im, 1));
    }
    std::ofstream sft(data_dir() / "sft.jsonl");
    const char* answers[] = {"red", "a big blue square",       "OPEN",
                             "no",  "the word CAFE on a sign", "7"};
    for (int r = 0; r < 12; ++r) {
      data::SftRecord rec;
      rec.image = "im" + std::to_string(r % 4) + ".png";
      if (r % 3 != 2) rec.box = data::Box{float(30 * (r % 4)), 40, float(30 * (r % 4) + 40), 80};
      rec.conversations = {{"human", "<image>\nWhat is in the bright patch?"},
                           {"gpt", answers[r % 6]}};
      sft << data::sft_to_json(rec) << "\n";
    }
    sft.close();
    // For the vision memo: every record boxed, 7 distinct (image, box) keys over 10 records (an
    // odd count: one rank of two runs a padding pass; repeats: a key filled once).
    std::ofstream memo_sft(data_dir() / "sft_memo.jsonl");
    for (int r = 0; r < 10; ++r) {
      const int key = r % 7, image = key % 4, variant = key / 4;
      data::SftRecord rec;
      rec.image = "im" + std::to_string(image) + ".png";
      rec.box = data::Box{float(30 * image + 5 * variant), 40, float(30 * image + 40), 80};
      rec.conversations = {{"human", "<image>\nWhat is in the bright patch?"},
                           {"gpt", answers[r % 6]}};
      memo_sft << data::sft_to_json(rec) << "\n";
    }
    memo_sft.close();
    const vilahd::BpeTokenizer tok = vilahd::BpeTokenizer::load(kTokenizer);
    auto model = vilahd::testing::micro_vila(stage_model_config(tok), 7);
    vilahd::save_vila_folder(*model, init_dir(), kTokenizer);
    std::ofstream(kWork / "ready_memo") << "ok\n";
  }
  world().barrier().wait();
  if (world().rank() == 0) fs::remove_all(run_dir());
  world().barrier().wait();
}

VilaStageOptions options(const std::string& name) {
  VilaStageOptions o;
  o.stage = "vilahd_sft";
  o.init = init_dir();
  o.data_dir = data_dir();
  o.sft = data_dir() / "sft.jsonl";
  o.stage_dir = run_dir() / name;
  o.trainable = {"llm", "projector", "top_down_selection"};
  o.steps = 6;
  o.global_batch = 4;
  o.lr = 3e-3;
  o.warmup_steps = 1;
  o.weight_decay = 1e-4;
  o.seed = 5;
  o.progress = false;
  return o;
}

// The largest difference between two VILA-HD folders' parameters, each relative to its tensor's
// largest magnitude (at least 1e-3).
double largest_parameter_difference(const fs::path& first, const fs::path& second) {
  auto a = vilahd::load_vila_folder(first), b = vilahd::load_vila_folder(second);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  EXPECT_EQ(pa.size(), pb.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    const std::vector<float> x = pa[i].second.to_vector<float>(),
                             y = pb[i].second.to_vector<float>();
    EXPECT_EQ(x.size(), y.size()) << pa[i].first;
    float scale = 1e-3f;
    for (float v : x) scale = std::max(scale, std::abs(v));
    for (size_t k = 0; k < std::min(x.size(), y.size()); ++k)
      worst = std::max(worst, double(std::abs(x[k] - y[k]) / scale));
  }
  return worst;
}

// The stage with the vision tower trained too (so recomputation and bf16 reach every part).
VilaStageOptions every_part_trained(const std::string& name, int64_t steps) {
  VilaStageOptions o = options(name);
  o.trainable = {"llm", "projector", "top_down_selection", "vision_tower"};
  o.steps = steps;
  return o;
}

// A memoized stage: PS3 frozen and run once per record, teacher forcing, the LLM trained.
VilaStageOptions memoized_options(const std::string& name) {
  VilaStageOptions o = options(name);
  o.sft = data_dir() / "sft_memo.jsonl";
  o.trainable = {"llm", "projector"};
  o.memoize_vision = true;
  o.train_w_gt_selection_map = true;
  return o;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void expect_same_folder(const fs::path& a, const fs::path& b) {
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(a)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), a);
    ASSERT_TRUE(fs::exists(b / rel)) << rel;
    EXPECT_TRUE(bytes_of(e.path()) == bytes_of(b / rel)) << rel << " differs";
    ++files;
  }
  EXPECT_GE(files, 5);
}

// 1 rank writes its losses to kWork/name; more ranks compare with them within 1e-5 (the np1
// test is the others' fixture).
// The losses written by an earlier run (the np1 test, or an earlier test of this binary).
void expect_losses_like_file(const std::vector<double>& losses, const std::string& name) {
  const fs::path file = kWork / name;
  ASSERT_TRUE(fs::exists(file)) << "run the np1 test first (its fixture)";
  std::ifstream f(file);
  for (size_t i = 0; i < losses.size(); ++i) {
    double want = 0;
    ASSERT_TRUE(f >> want);
    EXPECT_NEAR(losses[i], want, 1e-5 * std::max(1.0, std::abs(want))) << "step " << i;
  }
}

void expect_losses_like_one_rank(const std::vector<double>& losses, const std::string& name) {
  if (world().world_size() > 1) return expect_losses_like_file(losses, name);
  std::ofstream f(kWork / name);
  f.precision(17);
  for (double l : losses) f << l << "\n";
}

class VilaStage : public ::testing::Test {
 protected:
  void SetUp() override {
    prepare();
    clear_stop_signal();
  }
};

TEST_F(VilaStage, TrainsFrozenPartsKeepBitsAndRanksAgree) {
  VilaStageOutcome out = run_vila_stage(options("full"), world_ptr());
  ASSERT_TRUE(out.finished);
  ASSERT_EQ(out.losses.size(), 6u);
  for (double l : out.losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_EQ(out.records_dropped, 0);

  // Frozen: the vision tower (but its selection modules) keeps every bit; the rest moved.
  auto init = vilahd::load_vila_folder(init_dir());
  auto done = vilahd::load_vila_folder(out.result);
  std::map<std::string, Tensor> after;
  for (auto& [n, p] : done->named_parameters()) after[n] = p;
  int frozen = 0, moved = 0, trained = 0;
  for (auto& [n, p] : init->named_parameters()) {
    const bool same = std::memcmp(p.data<float>(), after.at(n).data<float>(),
                                  size_t(p.numel()) * sizeof(float)) == 0;
    if (vilahd::trainable_part_of(n) == "vision_tower") {
      EXPECT_TRUE(same) << n << " is frozen but changed";
      ++frozen;
    } else {
      ++trained;
      moved += !same;
    }
  }
  EXPECT_GT(frozen, 10);
  EXPECT_GT(moved, trained / 2) << "most trained tensors should move in 6 steps";
  // The final checkpoint holds moments for trained parameters only.
  const fs::path step = out.result.parent_path() / "checkpoints" / "step_00000006";
  const proto::Manifest man = parallel::ckpt::read_manifest(step);
  int moments = 0;
  for (const auto& t : man.tensors()) {
    const std::string n = t.name();
    if (n.rfind("optim.exp_avg.", 0) == 0) {
      ++moments;
      EXPECT_NE(vilahd::trainable_part_of(n.substr(14)), "vision_tower") << n;
    }
  }
  EXPECT_EQ(moments, trained);
  EXPECT_EQ(man.trainer_state().stage(), "vilahd_sft");

  expect_losses_like_one_rank(out.losses, "losses_np1.txt");
}

TEST_F(VilaStage, StopAtStepThenResumeIsBitExact) {
  VilaStageOutcome full = run_vila_stage(options("full"), world_ptr());
  VilaStageOptions o = options("stopped");
  o.stop_at_step = 3;
  o.checkpoint_every = 2;
  VilaStageOutcome first = run_vila_stage(o, world_ptr());
  EXPECT_TRUE(first.stopped_at_step);
  EXPECT_FALSE(first.finished);
  EXPECT_EQ(first.steps_done, 3);
  EXPECT_FALSE(fs::exists(vila_stage_result(o.stage_dir)));
  o.stop_at_step = 0;
  VilaStageOutcome second = run_vila_stage(o, world_ptr());
  EXPECT_EQ(second.start_step, 3);
  ASSERT_TRUE(second.finished);
  ASSERT_EQ(second.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(first.losses[i], full.losses[i]) << "step " << i;
    EXPECT_EQ(second.losses[i], full.losses[i + 3]) << "step " << i + 3;
  }
  expect_same_folder(full.result, second.result);
}

TEST_F(VilaStage, StopSignalOnOneRankStopsEveryRankAndResumes) {
  install_stop_signal_handlers();
  VilaStageOutcome full = run_vila_stage(options("full"), world_ptr());
  VilaStageOptions o = options("signalled");
  if (world().rank() == world().world_size() - 1) std::raise(SIGUSR1);
  VilaStageOutcome first = run_vila_stage(o, world_ptr());
  EXPECT_NE(first.stop_signal, 0);  // the signal number on the rank that got it, 1 elsewhere
  EXPECT_EQ(first.steps_done, 1);
  clear_stop_signal();
  VilaStageOutcome second = run_vila_stage(o, world_ptr());
  EXPECT_EQ(second.start_step, 1);
  ASSERT_TRUE(second.finished);
  expect_same_folder(full.result, second.result);
}

TEST_F(VilaStage, NonFiniteLossIsSkippedOnEveryRank) {
  VilaStageOptions o = options("nonfinite");
  o.debug_nonfinite_steps = {2};
  VilaStageOutcome out = run_vila_stage(o, world_ptr());
  ASSERT_TRUE(out.finished);
  EXPECT_EQ(out.nonfinite_skipped, 1);
  EXPECT_TRUE(std::isnan(out.losses[2]));
  EXPECT_TRUE(std::isfinite(out.losses[3]));
}

// The memo filled across the job's ranks (FSDP-sharded vision tower) equals, tensor by tensor
// and bit for bit, what one unsharded model computes for every record; samples keep their text,
// labels and GT maps and need no PS3 inputs.
TEST_F(VilaStage, VisionMemoFilledAcrossRanksEqualsOneRankFillingAll) {
  const vilahd::BpeTokenizer tok = vilahd::BpeTokenizer::load(kTokenizer);
  const vilahd::VilaHdConfig c = stage_model_config(tok);
  data::BadInputLog log;
  const std::vector<data::SftRecord> records =
      data::read_sft((data_dir() / "sft_memo.jsonl").string(), log);
  ASSERT_EQ(records.size(), 10u);
  std::vector<const data::SftRecord*> pointers;
  for (const auto& r : records) pointers.push_back(&r);

  auto build = [&] {
    auto m = vilahd::testing::micro_vila(c, 7);
    vilahd::freeze_all_but(*m, vilahd::parse_trainable_parts("llm,projector"));
    m->set_train_with_gt_selection(true);
    return m;
  };
  auto sharded = build(), single = build();
  auto fsdp = vilahd::shard_vila(*sharded, world_ptr());
  auto memo = std::make_shared<vilahd::VisionMemo>(), ref = std::make_shared<vilahd::VisionMemo>();
  sharded->set_vision_memo(memo);
  single->set_vision_memo(ref);
  vilahd::ImageCache images(c.vision, 4);
  const std::vector<vilahd::VilaSample> samples = fill_vision_memo_across_ranks(
      *sharded, *memo, pointers, true, tok, images, data_dir(), world());
  ASSERT_EQ(samples.size(), records.size());
  EXPECT_EQ(memo->outputs.size(), 7u);  // every key on every rank, each once

  int compared = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    vilahd::VilaSample want = vilahd::sft_sample(
        tok, records[i], images.get(data_dir() / records[i].image), c.vision, true);
    want.images[0].memo_key = record_memo_key(records[i]);
    single->fill_vision_memo({want});
    const vilahd::VilaSample& got = samples[i];
    EXPECT_EQ(got.input_ids, want.input_ids) << "record " << i;
    EXPECT_EQ(got.labels, want.labels) << "record " << i;
    ASSERT_EQ(got.images.size(), 1u);
    EXPECT_FALSE(got.images[0].inputs.low_res.defined()) << "record " << i << " kept PS3 inputs";
    ASSERT_EQ(got.images[0].gt_maps.size(), want.images[0].gt_maps.size());
    for (size_t s = 0; s < want.images[0].gt_maps.size(); ++s)
      EXPECT_EQ(got.images[0].gt_maps[s].to_vector<float>(),
                want.images[0].gt_maps[s].to_vector<float>());
    const std::string key = sharded->vision_memo_key(got.images[0]);
    ASSERT_EQ(key, single->vision_memo_key(want.images[0]));
    const auto a = vilahd::memo_entry_to_tensors(memo->outputs.at(key));
    const auto b = vilahd::memo_entry_to_tensors(ref->outputs.at(key));
    ASSERT_EQ(a.size(), b.size());
    for (size_t t = 0; t < a.size(); ++t) {
      ASSERT_EQ(a[t].shape(), b[t].shape()) << key << " tensor " << t;
      ASSERT_EQ(a[t].dtype(), b[t].dtype());
      EXPECT_EQ(std::memcmp(a[t].raw_data(), b[t].raw_data(), a[t].nbytes()), 0)
          << key << " tensor " << t << " differs";
      ++compared;
    }
  }
  EXPECT_GT(compared, 10 * 7);
  sharded->set_unit_runner({});
}

// A memoized stage (PS3 frozen, teacher forcing) on 1 and 2 ranks: the same losses.
TEST_F(VilaStage, MemoizedStageRanksAgree) {
  VilaStageOptions o = memoized_options("memo");
  VilaStageOutcome out = run_vila_stage(o, world_ptr());
  ASSERT_TRUE(out.finished);
  ASSERT_EQ(out.losses.size(), 6u);
  expect_losses_like_one_rank(out.losses, "memo_losses_np1.txt");
}

// The same on the second host device (autograd/device.h): the memo's entries are computed on
// cpu:1 and broadcast between ranks through the host; the losses are the host stage's.
TEST_F(VilaStage, MemoizedStageOnASecondHostDeviceRanksAgree) {
  VilaStageOptions o = memoized_options("memo_cpu1");
  o.device = Device{DeviceType::cpu, 1};
  VilaStageOutcome out = run_vila_stage(o, world_ptr());
  ASSERT_TRUE(out.finished);
  ASSERT_EQ(out.losses.size(), 6u);
  expect_losses_like_file(out.losses, "memo_losses_np1.txt");  // the host stage's, on one rank
}

// train.activation_checkpointing = llm,vision: every LLM layer and PS3 block recomputed in
// backward, the vision tower trained too so its recompute matters. Same training to rounding.
TEST_F(VilaStage, RecomputedLayersTrainLikeThePlainStage) {
  VilaStageOptions p = every_part_trained("plain", 3);
  VilaStageOutcome plain = run_vila_stage(p, world_ptr());
  VilaStageOptions o = p;
  o.stage_dir = run_dir() / "recomputed";
  o.recompute_llm = o.recompute_vision = true;
  VilaStageOutcome recomputed = run_vila_stage(o, world_ptr());
  ASSERT_TRUE(plain.finished && recomputed.finished);
  ASSERT_EQ(recomputed.losses.size(), plain.losses.size());
  for (size_t i = 0; i < plain.losses.size(); ++i)
    EXPECT_NEAR(recomputed.losses[i], plain.losses[i],
                1e-5 * std::max(1.0, std::abs(plain.losses[i])))
        << "step " << i;
  EXPECT_LT(largest_parameter_difference(plain.result, recomputed.result), 1e-4)
      << "largest parameter difference relative to its tensor's scale";
}

// Issue 18 without a GPU: the stage with its model on the second host device cpu:1
// (autograd/device.h), records made on the host. Every tensor created on the wrong device is an
// error there; the losses and the result folder must equal the host stage's bit for bit.
TEST_F(VilaStage, SecondHostDeviceTrainsLikeTheHostStage) {
  VilaStageOptions p = every_part_trained("host", 3);
  VilaStageOutcome host = run_vila_stage(p, world_ptr());
  VilaStageOptions o = p;
  o.stage_dir = run_dir() / "cpu1";
  o.device = Device{DeviceType::cpu, 1};
  VilaStageOutcome other = run_vila_stage(o, world_ptr());
  ASSERT_TRUE(host.finished && other.finished);
  EXPECT_EQ(other.losses, host.losses);
  EXPECT_EQ(largest_parameter_difference(host.result, other.result), 0.0);
}

// train.precision = bf16: the LLM, projector and PS3 compute in bf16 (FSDP param_dtype), the
// masters, AdamW and losses in f32. It must track the fp32 stage and stay deterministic.
TEST_F(VilaStage, Bf16TracksTheFp32Stage) {
  VilaStageOptions p = every_part_trained("fp32", 4);
  VilaStageOutcome fp32 = run_vila_stage(p, world_ptr());
  VilaStageOptions o = p;
  o.param_dtype = DType::bf16;
  o.stage_dir = run_dir() / "bf16_a";
  VilaStageOutcome a = run_vila_stage(o, world_ptr());
  o.stage_dir = run_dir() / "bf16_b";
  VilaStageOutcome b = run_vila_stage(o, world_ptr());
  ASSERT_TRUE(fp32.finished && a.finished && b.finished);
  ASSERT_EQ(a.losses.size(), fp32.losses.size());
  EXPECT_EQ(a.losses, b.losses) << "bf16: same seed, same losses";
  bool differs = false;
  for (size_t i = 0; i < fp32.losses.size(); ++i) {
    EXPECT_TRUE(std::isfinite(a.losses[i])) << "step " << i;
    EXPECT_NEAR(a.losses[i], fp32.losses[i], 0.05 * std::abs(fp32.losses[i])) << "step " << i;
    differs = differs || a.losses[i] != fp32.losses[i];
  }
  std::printf("losses fp32 / bf16:");
  for (size_t i = 0; i < a.losses.size(); ++i)
    std::printf(" %.5f/%.5f", fp32.losses[i], a.losses[i]);
  std::printf("\n");
  EXPECT_TRUE(differs) << "the bf16 stage gave fp32's losses bit for bit: did it run in bf16?";
  // The result folder holds fp32 weights (the masters), loadable as any VILA-HD folder.
  auto model = vilahd::load_vila_folder(a.result);
  for (const auto& [name, t] : model->named_parameters()) {
    ASSERT_EQ(t.dtype(), DType::f32) << name;
  }
}

// micro_batches = 2 (each rank's share in two halves, one gradient sync) = the whole batch at
// once: the same losses and final weights to float rounding, on 1 and 2 ranks.
TEST_F(VilaStage, MicroBatchesTrainLikeTheWholeBatch) {
  VilaStageOptions w = options("whole");
  w.global_batch = 8;  // 2 micro-batches per rank at 1, 2 and 4 ranks
  VilaStageOutcome whole = run_vila_stage(w, world_ptr());
  VilaStageOptions o = w;
  o.stage_dir = run_dir() / "micro";
  o.micro_batches = 2;
  VilaStageOutcome micro = run_vila_stage(o, world_ptr());
  ASSERT_TRUE(whole.finished && micro.finished);
  ASSERT_EQ(micro.losses.size(), whole.losses.size());
  for (size_t i = 0; i < whole.losses.size(); ++i)
    EXPECT_NEAR(micro.losses[i], whole.losses[i], 1e-5 * std::max(1.0, std::abs(whole.losses[i])))
        << "step " << i;
  EXPECT_LT(largest_parameter_difference(whole.result, micro.result), 1e-4)
      << "largest parameter difference relative to its tensor's scale";
  o.micro_batches = 3;  // 8 / (world x 3) is not whole
  hd::testing::expect_error([&] { run_vila_stage(o, world_ptr()); }, "micro_batches = 3");
}

}  // namespace
}  // namespace hd::launcher
