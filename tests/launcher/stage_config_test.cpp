// Staged-run configs (launcher/stage_config.h): the shipped pipeline configs parse and validate,
// stage defaults, the PS3 stage's derived config, stage overrides, and errors naming the field.
#include <gtest/gtest.h>

#include <string>

#include "autograd/error.h"
#include "launcher/stage_config.h"

namespace hd::launcher {
namespace {

const std::string kConfigs = std::string(HD_SOURCE_DIR) + "/configs/";

std::string error_of(const std::string& file, const std::vector<std::string>& sets, int world) {
  try {
    load_staged_config(kConfigs + file, sets, world);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(StageConfig, ShippedPipelinesValidate) {
  proto::RunConfig demo = load_staged_config(kConfigs + "pipeline-demo.textproto", {}, 2);
  ASSERT_EQ(demo.stages_size(), 4);
  EXPECT_EQ(demo.stages(1).trainable(), "projector,top_down_selection");  // align's default
  EXPECT_EQ(demo.stages(1).sft(), "data/synth_pipeline/sft.jsonl");
  EXPECT_EQ(demo.stages(3).mc(), "data/synth_pipeline/eval_mc.jsonl");
  EXPECT_EQ(stage_dir(demo, 2).string(), "runs/pipeline-demo/stages/02_vilahd_sft");
  proto::RunConfig paper = load_staged_config(kConfigs + "vilahd-4k.textproto", {}, 0);
  EXPECT_EQ(paper.stages(0).global_batch(), 4096);
  EXPECT_EQ(paper.vilahd().num_look_close(), 6);
  EXPECT_EQ(paper.vilahd().select_num_each_scale_size(), 3);
}

TEST(StageConfig, Ps3StageTakesTheStageOverrides) {
  proto::RunConfig c = load_staged_config(kConfigs + "pipeline-demo.textproto", {}, 2);
  proto::RunConfig p = ps3_stage_config(c, 0, stage_dir(c, 0));
  EXPECT_EQ(p.train().steps(), c.stages(0).steps());
  EXPECT_EQ(p.train().global_batch(), c.stages(0).global_batch());
  EXPECT_EQ(p.run_dir(), "runs/pipeline-demo/stages/00_ps3_pretrain");
  EXPECT_EQ(p.monitoring().jsonl(), p.run_dir() + "/metrics_rank{rank}.jsonl");
  EXPECT_EQ(p.stages_size(), 0);
}

TEST(StageConfig, OverridesSetOneStageAndZeroIsKept) {
  proto::RunConfig c =
      load_staged_config(kConfigs + "pipeline-demo.textproto",
                         {"stages.2.steps=7", "stages.2.warmup_steps=2", "stages.2.trainable=llm",
                          "stages.2.lr=0.5", "stages.2.train_w_gt_selection_map=false"},
                         2);
  EXPECT_EQ(c.stages(2).steps(), 7);
  EXPECT_EQ(c.stages(2).trainable(), "llm");
  EXPECT_EQ(c.stages(2).lr(), 0.5);
  EXPECT_FALSE(c.stages(2).train_w_gt_selection_map());  // a bool override, off
  EXPECT_NE(error_of("pipeline-demo.textproto", {"stages.1.warmup_steps=0", "stages.1.steps=0"}, 2)
                .find("stages[1].steps = 0 must be >= 1"),
            std::string::npos);
}

TEST(StageConfig, ErrorsNameTheField) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"stages.1.kind=sft"}, "stages[1].kind = 'sft' is not one of"},
      {{"stages.2.trainable=llm,brain"}, "stages[2].trainable names 'brain'"},
      {{"stages.2.global_batch=3"},
       "stages[2].global_batch = 3 is not divisible by the world size 2"},
      {{"stages.3.lr=1"}, "stages[3].lr is set, but an eval stage does not train"},
      {{"stages.0.sft=x.jsonl"}, "stages[0].sft applies to VILA-HD stages"},
      {{"stages.3.train_w_gt_selection_map=true"},
       "stages[3].train_w_gt_selection_map applies to VILA-HD stages"},
      {{"stages.2.trainable=llm,projector,top_down_selection"},  // the demo memoizes
       "stages[2].memoize_vision needs PS3 frozen, but trainable names 'top_down_selection'"},
      {{"stages.0.memoize_vision=true"}, "stages[0].memoize_vision applies to VILA-HD stages"},
      {{"stages.1.prompt_pass_grad=true"},
       "stages[1].prompt_pass_grad trains the LLM from the selection loss"},
      {{"stages.2.prompt_pass_grad=true", "stages.2.trainable=llm,projector",
        "stages.2.memoize_vision=true"},
       "stages[2].prompt_pass_grad needs the prompt pass"},
      {{"stages.1.mc=q.jsonl"}, "stages[1].mc applies to eval stages only"},
      {{"stages.2.micro_batches=3"},
       "stages[2].micro_batches = 3: global_batch 8 is not divisible by the world size x "
       "micro_batches = 6"},
      {{"stages.3.micro_batches=2"}, "stages[3].micro_batches is set, but an eval stage"},
      {{"stages.2.micro_batches=-1"}, "stages[2].micro_batches = -1 must be >= 0"},
      {{"stages.0.min_lr=1"}, "stages[0].min_lr = 1 must be in [0, lr"},
      {{"train.micro_batches=3"}, "stages[0] (ps3_pretrain"},
      {{"vilahd.tokenizer="}, "vilahd.tokenizer is empty"},
      {{"vilahd.look_close_mode=sideways"}, "vilahd.look_close_mode = 'sideways'"},
      {{"stages.2.kind=ps3_pretrain", "stages.2.trainable=", "stages.2.checkpoint_every=0",
        "stages.2.train_w_gt_selection_map=false", "stages.2.memoize_vision=false"},
       "stages[2].kind = ps3_pretrain comes after"},
      {{"stages.9.steps=1"}, "stage index '9'"},
      {{"stages.1.steps=many"}, "'many' is not a valid value for stages[1].steps"},
  };
  for (const auto& [sets, want] : cases) {
    const std::string got = error_of("pipeline-demo.textproto", sets, 2);
    EXPECT_NE(got.find(want), std::string::npos) << sets[0] << ": got '" << got << "'";
  }
}

}  // namespace
}  // namespace hd::launcher
