// A micro VILA-HD for tests: a 2-layer Qwen2 (hidden 16, GQA 2 -> 1) over 40 tokens and a
// 3-block PS3 (width 8) with a 4x4 low-res grid (2x2 = 4 low-res LLM tokens) and scales of 8x8
// and 16x16 patches; mlp prompt head, high-res position embeddings, 2 look-close steps of
// {4, 16} patches. Runs in milliseconds, in f32 or f64.
#pragma once

#include <vector>

#include "tests/ps3/model/model_test_util.h"
#include "vilahd/vila_hd.h"

namespace hd::vilahd::testing {

inline constexpr int64_t kNewline = 3;

inline VilaHdConfig micro_vila_config() {
  VilaHdConfig c;
  c.llm.vocab_size = 40;
  c.llm.hidden_size = 16;
  c.llm.intermediate_size = 24;
  c.llm.num_hidden_layers = 2;
  c.llm.num_attention_heads = 2;
  c.llm.num_key_value_heads = 1;
  c.llm.max_position_embeddings = 512;
  c.llm.rope_theta = 1000.0;
  c.llm.tie_word_embeddings = true;
  c.llm.initializer_range = 0.3;
  ps3::VisionConfig& v = c.vision;
  v = ps3::testing::micro_config();
  v.depth = 3;
  v.low_res = 56;
  v.scales = {112, 224};
  v.select_layers = {0, 1, 2};
  v.max_select = 20;
  v.selection_res = 112;  // ConvNeXt stem 28 -> 4x4, the low-res grid
  c.mm_vision_select_layer = -2;
  c.high_res_pos_embed = true;
  c.top_down_prompt_head_type = PromptHeadType::mlp;
  c.look_close_mode = LookCloseMode::after_prompt;
  c.num_look_close = 2;
  c.select_num_each_scale = {4, 16};
  c.token_selection_loss_weight = 1.0;
  c.image_newline_token = kNewline;
  return c;
}

// Random parameters (every zero-init embedding too), deterministic per seed.
inline std::unique_ptr<VilaHdModel> micro_vila(const VilaHdConfig& c, uint64_t seed,
                                               DType dtype = DType::f32) {
  auto m = std::make_unique<VilaHdModel>(c);
  m->initialize(seed);
  ps3::testing::randomize(*m, 0.05, seed + 1);
  if (dtype != DType::f32) m->to_(Device::cpu(), dtype);
  return m;
}

inline VilaImage micro_image(const VilaHdConfig& c, uint64_t seed, bool with_box,
                             DType dtype = DType::f32) {
  VilaImage im;
  im.inputs = ps3::testing::make_inputs(ps3::testing::make_images(c.vision, 1, seed, dtype));
  if (with_box) im.gt_maps = ps3::testing::box_gt_maps(c.vision, 1, 1, 3, 0, 2, dtype);
  return im;
}

}  // namespace hd::vilahd::testing
