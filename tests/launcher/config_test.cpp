// RunConfig parsing, overrides, defaults and validation: every error must name the place to fix
// (file:line:col, the --set argument, or the dotted field).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "autograd/error.h"
#include "launcher/config.h"

namespace hd::launcher {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const char* kMinimal = R"(name: "t"
run_dir: "runs/t"
model { preset: "demo" }
data { dir: "data/x" }
train { steps: 10 global_batch: 4 lr: 1e-3 warmup_steps: 2 }
)";

TEST(Config, ParsesAndResolvesDefaults) {
  proto::RunConfig c = parse_config_text(kMinimal, "mem");
  resolve_defaults(c);
  EXPECT_EQ(c.train().steps(), 10);
  EXPECT_EQ(c.train().micro_batches(), 1);
  EXPECT_DOUBLE_EQ(c.train().weight_decay(), 3e-4);
  EXPECT_DOUBLE_EQ(c.train().beta1(), 0.9);
  EXPECT_DOUBLE_EQ(c.train().beta2(), 0.95);
  EXPECT_DOUBLE_EQ(c.train().eps(), 1e-8);
  EXPECT_TRUE(c.train().gt_forcing());
  EXPECT_TRUE(c.train().pool_gt_only());
  EXPECT_EQ(c.train().max_nonfinite_in_a_row(), 5);
  EXPECT_EQ(c.data().train_dir(), "data/x/train");
  EXPECT_EQ(c.data().eval_dir(), "data/x/eval");
  EXPECT_EQ(c.data().tokenizer(), "data/x/tokenizer.model");
  EXPECT_EQ(c.monitoring().port_base(), 9470);
  EXPECT_EQ(c.monitoring().jsonl(), "runs/t/metrics_rank{rank}.jsonl");
  EXPECT_DOUBLE_EQ(c.model().init_logit_scale(), std::log(10.0));
  EXPECT_DOUBLE_EQ(c.model().init_logit_bias(), -10.0);
  EXPECT_EQ(c.checkpoint().keep_last(), 3);
  EXPECT_EQ(c.eval().look_close_steps(), 1);
  // Selection follows the reference unless a config departs from it.
  EXPECT_EQ(c.train().selection_loss(), "bce");
  EXPECT_EQ(c.train().prior_target(), "caption_box");
  EXPECT_DOUBLE_EQ(c.train().selection_lr_scale(), 1.0);
  validate_config(c, 2);
}

TEST(Config, ExplicitFalseAndZeroAreKept) {
  proto::RunConfig c = parse_config_text(kMinimal, "mem");
  c.MergeFrom(parse_config_text("train { gt_forcing: false weight_decay: 0 }\n", "mem2"));
  resolve_defaults(c);
  EXPECT_EQ(c.train().steps(), 10);
  EXPECT_FALSE(c.train().gt_forcing());
  EXPECT_DOUBLE_EQ(c.train().weight_decay(), 0.0);
}

TEST(Config, UnknownFieldNamesFileLineColumnAndSuggests) {
  std::string text =
      "name: \"t\"\nrun_dir: \"r\"\n\ntrain {\n  lr: 1e-3\n  # note\n  stpes: 20\n}\n";
  std::string e = error_of([&] { parse_config_text(text, "configs/x.textproto"); });
  // Line 7 (1-based), column 3: where "stpes" starts.
  EXPECT_NE(e.find("configs/x.textproto:7:3: unknown field 'stpes' in train (did you mean "
                   "'steps'?)"),
            std::string::npos)
      << e;
}

TEST(Config, UnknownTopLevelFieldAndBadValue) {
  std::string e = error_of([] { parse_config_text("nmae: \"x\"\n", "a.textproto"); });
  EXPECT_NE(e.find("a.textproto:1:1: unknown field 'nmae' at the top level (did you mean 'name'?)"),
            std::string::npos)
      << e;
  e = error_of([] { parse_config_text("seed: 1\ntrain { steps: ten }\n", "b.textproto"); });
  EXPECT_NE(e.find("b.textproto:2:16:"), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
}

TEST(Config, MissingFileIsNamed) {
  std::string e = error_of([] { read_config_file("/nonexistent/run.textproto"); });
  EXPECT_NE(e.find("config file '/nonexistent/run.textproto' cannot be read"), std::string::npos)
      << e;
}

TEST(Config, OverridesSetScalarsListsAndStrings) {
  proto::RunConfig c = parse_config_text(kMinimal, "mem");
  apply_override(c, "train.steps=20");
  apply_override(c, "train.lr=5e-4");
  apply_override(c, "train.gt_forcing=false");
  apply_override(c, "model.vision.scales=756,1512");
  apply_override(c, "train.debug_nonfinite_steps=[2, 3]");
  apply_override(c, "run_dir=/tmp/run x");
  apply_override(c, "seed=7");
  EXPECT_EQ(c.train().steps(), 20);
  EXPECT_DOUBLE_EQ(c.train().lr(), 5e-4);
  EXPECT_TRUE(c.train().has_gt_forcing());
  EXPECT_FALSE(c.train().gt_forcing());
  ASSERT_EQ(c.model().vision().scales_size(), 2);
  EXPECT_EQ(c.model().vision().scales(1), 1512);
  ASSERT_EQ(c.train().debug_nonfinite_steps_size(), 2);
  EXPECT_EQ(c.train().debug_nonfinite_steps(0), 2);
  EXPECT_EQ(c.run_dir(), "/tmp/run x");
  EXPECT_EQ(c.seed(), 7u);
  apply_override(c, "model.vision.scales=[]");
  EXPECT_EQ(c.model().vision().scales_size(), 0);
}

TEST(Config, OverrideErrorsNameTheArgument) {
  proto::RunConfig c = parse_config_text(kMinimal, "mem");
  EXPECT_EQ(error_of([&] { apply_override(c, "train.stpes=20"); }),
            "--set train.stpes=20: unknown field 'stpes' in train (did you mean 'steps'?)");
  EXPECT_EQ(error_of([&] { apply_override(c, "train.steps=abc"); }),
            "--set train.steps=abc: TrainConfig.steps needs an integer, got 'abc'");
  EXPECT_EQ(error_of([&] { apply_override(c, "train.steps"); }),
            "--set train.steps: expected FIELD=VALUE, e.g. train.steps=20");
  EXPECT_EQ(error_of([&] { apply_override(c, "seed.x=1"); }),
            "--set seed.x=1: 'seed' is not a section (it has no field 'x')");
  EXPECT_EQ(error_of([&] { apply_override(c, "train=1"); }),
            "--set train=1: train is a message; set its fields (train.FIELD=VALUE)");
  EXPECT_EQ(error_of([&] { apply_override(c, "train.gt_forcing=maybe"); }),
            "--set train.gt_forcing=maybe: TrainConfig.gt_forcing needs true or false, got "
            "'maybe'");
  EXPECT_EQ(error_of([&] { apply_override(c, "seed=-1"); }),
            "--set seed=-1: RunConfig.seed needs a non-negative integer, got '-1'");
}

proto::RunConfig resolved(const std::vector<std::string>& sets) {
  proto::RunConfig c = parse_config_text(kMinimal, "mem");
  for (const auto& s : sets) apply_override(c, s);
  resolve_defaults(c);
  return c;
}

TEST(Config, ValidationNamesTheField) {
  auto check = [](const std::vector<std::string>& sets, int world, const std::string& want) {
    proto::RunConfig c = resolved(sets);
    EXPECT_EQ(error_of([&] { validate_config(c, world); }), want);
  };
  check({"train.global_batch=6"}, 4,
        "config: train.global_batch = 6 is not divisible by world size 4 x train.micro_batches 1");
  check({"train.global_batch=8", "train.micro_batches=3"}, 1,
        "config: train.global_batch = 8 is not divisible by train.micro_batches = 3");
  check({"train.steps=0"}, 1, "config: train.steps = 0 must be >= 1");
  check({"train.lr=0"}, 1, "config: train.lr = 0 must be > 0");
  check({"train.warmup_steps=10"}, 1,
        "config: train.warmup_steps = 10 must be in [0, train.steps = 10)");
  check({"train.beta2=1"}, 1, "config: train.beta2 = 1 must be in [0, 1)");
  check({"train.grad_clip=-1"}, 1, "config: train.grad_clip = -1 must be >= 0 (0: off)");
  check({"train.max_nonfinite_in_a_row=0"}, 1,
        "config: train.max_nonfinite_in_a_row = 0 must be >= 1");
  check({"model.preset=huge"}, 1,
        "config: model.preset = 'huge' is not one of demo, ps3-1.5k, ps3-4k");
  check({"run_dir="}, 1, "config: run_dir is empty: set the run folder (checkpoints, metrics)");
  check({"checkpoint.keep_last=0"}, 1, "config: checkpoint.keep_last = 0 must be >= 1");
  check({"monitoring.port_base=70000"}, 2,
        "config: monitoring.port_base = 70000 must leave room for one port per rank below 65536");
  check({"data.synthesize.enabled=true"}, 1, "config: data.synthesize.images = 0 must be >= 1");
  check({"data.synthesize.enabled=true", "data.synthesize.images=4",
         "data.synthesize.resolution=256", "data.synthesize.max_regions=6"},
        1, "config: data.synthesize.max_regions = 6 must be in [1, 5] (0: the default, 5)");
  check({"train.selection_loss=focal"}, 1,
        "config: train.selection_loss = 'focal' is not one of bce (the reference), balanced, "
        "balanced_rank");
  check({"train.prior_target=box"}, 1,
        "config: train.prior_target = 'box' is not one of caption_box (the reference), "
        "all_regions");
  check({"train.selection_lr_scale=0"}, 1, "config: train.selection_lr_scale = 0 must be > 0");
  check({"train.activation_checkpointing=vision,txt"}, 1,
        "config: train.activation_checkpointing = 'vision,txt': 'txt' is not one of vision, text, "
        "llm (a comma list; empty: none)");
  check({"train.precision=fp16"}, 1, "config: train.precision = 'fp16' is not one of fp32, bf16");
  check({"checkpoint.on_corrupt=ignore"}, 1,
        "config: checkpoint.on_corrupt = 'ignore' is not one of fallback, error");
  EXPECT_EQ(resolved({}).checkpoint().on_corrupt(), "fallback");  // the unattended default
  EXPECT_EQ(resolved({}).train().precision(), "fp32");
  // The same batch is fine on 2 ranks.
  proto::RunConfig ok = resolved({"train.global_batch=6"});
  validate_config(ok, 2);
}

TEST(Config, ActivationCheckpointingNamesTowers) {
  RecomputedTowers none = parse_activation_checkpointing("");
  EXPECT_FALSE(none.vision || none.text || none.llm);
  RecomputedTowers some = parse_activation_checkpointing("llm,vision");
  EXPECT_TRUE(some.vision && some.llm);
  EXPECT_FALSE(some.text);
  RecomputedTowers all = parse_activation_checkpointing("vision,text,llm");
  EXPECT_TRUE(all.vision && all.text && all.llm);
  EXPECT_EQ(error_of([] { parse_activation_checkpointing("vision,"); }),
            "config: train.activation_checkpointing = 'vision,': '' is not one of vision, text, "
            "llm (a comma list; empty: none)");
}

// The shipped configs parse, resolve and validate at the world sizes they are meant for.
TEST(Config, ShippedConfigsAreValid) {
  std::filesystem::path dir = std::filesystem::path(HD_SOURCE_DIR) / "configs";
  for (auto [name, world] :
       std::vector<std::pair<std::string, int>>{{"demo", 2}, {"ps3-1.5k", 128}, {"ps3-4k", 128}}) {
    SCOPED_TRACE(name);
    proto::RunConfig c = load_run_config((dir / (name + ".textproto")).string(), {}, world);
    EXPECT_EQ(c.name(), name);
    EXPECT_EQ(c.model().preset(), name);
    // The resolved text parses back to the same message (it is what checkpoints store).
    proto::RunConfig again = parse_config_text(to_text(c), "resolved");
    EXPECT_EQ(to_text(again), to_text(c));
  }
  proto::RunConfig paper = load_run_config((dir / "ps3-4k.textproto").string(), {}, 128);
  EXPECT_DOUBLE_EQ(paper.train().lr(), 5e-6);
  EXPECT_EQ(paper.train().warmup_steps(), 1500);
  EXPECT_EQ(paper.train().global_batch(), 4096);
  EXPECT_DOUBLE_EQ(paper.train().weight_decay(), 3e-4);
  EXPECT_DOUBLE_EQ(paper.train().beta2(), 0.95);
  EXPECT_DOUBLE_EQ(paper.train().grad_clip(), 0.0);
}

// `ps3 encode` reads only the model: a config with nothing else loads through load_model_config,
// which still checks what encoding uses; load_run_config rejects the same file (training needs
// run_dir, data and train).
TEST(Config, ModelOnlyConfigForEncoding) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "hd_config_model";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "model.textproto").string();
  std::ofstream(path) << "name: \"m\"\nmodel { preset: \"demo\" text { vocab: 64 } }\n";
  proto::RunConfig c = load_model_config(path, {"model.vision.width=32"});
  EXPECT_EQ(c.name(), "m");
  EXPECT_EQ(c.model().vision().width(), 32);
  EXPECT_TRUE(c.run_dir().empty());
  EXPECT_TRUE(c.data().tokenizer().empty());  // no data.dir: nothing derived
  EXPECT_EQ(c.eval().look_close_steps(), 1);  // defaults resolved
  EXPECT_NE(error_of([&] { load_run_config(path, {}, 0); }).find("run_dir"), std::string::npos);
  // What encoding does read is still checked, naming the field or the --set argument.
  EXPECT_NE(error_of([&] { load_model_config(path, {"model.preset=tiny"}); }).find("model.preset"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              load_model_config(path, {"eval.look_close_steps=0"});
            }).find("eval.look_close_steps"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_model_config(path, {"train.stpes=3"}); }).find("'stpes'"),
            std::string::npos);
  // The committed config of the reference-package fixture is such a file.
  proto::RunConfig ref = load_model_config(
      (std::filesystem::path(HD_SOURCE_DIR) / "tests/launcher/ref_tiny.textproto").string(), {});
  EXPECT_EQ(ref.model().vision().selection_res(), 1512);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hd::launcher
