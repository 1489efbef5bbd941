// Preset + overrides -> PS3Config (see model_config.h).
#include "launcher/model_config.h"

#include "autograd/error.h"

namespace hd::launcher {

ps3::PS3Config to_ps3_config(const proto::ModelConfig& m, int64_t tokenizer_vocab) {
  ps3::PS3Config c;
  int64_t vocab = m.text().has_vocab() ? m.text().vocab() : tokenizer_vocab;
  if (m.preset() == "demo") {
    c = ps3::PS3Config::demo(vocab);
  } else if (m.preset() == "ps3-1.5k") {
    c = ps3::PS3Config::paper_1p5k();
  } else if (m.preset() == "ps3-4k") {
    c = ps3::PS3Config::paper_4k();
  } else {
    throw Error("config: model.preset = '" + m.preset() + "' is not one of demo, ps3-1.5k, ps3-4k");
  }
  const auto& v = m.vision();
  auto& cv = c.vision;
  if (v.has_width()) cv.width = v.width();
  if (v.has_depth()) cv.depth = v.depth();
  if (v.has_heads()) cv.heads = v.heads();
  if (v.has_mlp_hidden()) cv.mlp_hidden = v.mlp_hidden();
  if (v.has_low_res()) cv.low_res = v.low_res();
  if (v.scales_size() > 0) cv.scales.assign(v.scales().begin(), v.scales().end());
  if (v.select_layers_size() > 0)
    cv.select_layers.assign(v.select_layers().begin(), v.select_layers().end());
  if (v.has_max_select()) cv.max_select = v.max_select();
  if (v.has_selection_res()) cv.selection_res = v.selection_res();
  if (v.has_convnext_hidden()) cv.convnext_hidden = v.convnext_hidden();
  if (v.has_convnext_out()) cv.convnext_out = v.convnext_out();
  if (v.has_convnext_depth()) cv.convnext_depth = v.convnext_depth();
  if (v.has_convnext_stem()) cv.convnext_stem = v.convnext_stem();

  const auto& t = m.text();
  auto& ct = c.text;
  if (t.has_vocab()) ct.vocab = t.vocab();
  if (t.has_context()) ct.context = t.context();
  if (t.has_width()) ct.width = t.width();
  if (t.has_depth()) ct.depth = t.depth();
  if (t.has_heads()) ct.heads = t.heads();
  if (t.has_mlp_hidden()) ct.mlp_hidden = t.mlp_hidden();
  if (t.has_gelu_tanh()) ct.gelu_tanh = t.gelu_tanh();
  HD_CHECK(ct.vocab >= tokenizer_vocab, "config: model.text.vocab = ", ct.vocab,
           " is smaller than the tokenizer's ", tokenizer_vocab,
           " pieces (data.tokenizer): token ids would fall outside the embedding");

  c.init_logit_scale = m.has_init_logit_scale() ? m.init_logit_scale() : c.init_logit_scale;
  c.init_logit_bias = m.has_init_logit_bias() ? m.init_logit_bias() : c.init_logit_bias;
  c.validate();
  return c;
}

}  // namespace hd::launcher
