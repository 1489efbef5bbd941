// PS3 configurations and their validation.
//
// validate() exists because a wrong number here fails far away (a shape error deep in stage 3,
// or a silently dead selection slot); each message names the field and the rule it breaks so
// a launcher flag typo is diagnosed at start-up. Paper numbers: reference §1.1, §1.2, §1.9.
#include "ps3/config.h"

#include "autograd/error.h"

namespace hd::ps3 {

void VisionConfig::validate() const {
  const VisionConfig& v = *this;
  HD_CHECK(v.width > 0, "vision.width must be positive, got ", v.width);
  HD_CHECK(v.depth > 0, "vision.depth must be positive, got ", v.depth);
  HD_CHECK(v.heads > 0 && v.width % v.heads == 0, "vision.heads = ", v.heads,
           " must be positive and divide vision.width = ", v.width);
  HD_CHECK(v.mlp_hidden > 0, "vision.mlp_hidden must be positive, got ", v.mlp_hidden);
  HD_CHECK(v.patch > 0, "vision.patch must be positive, got ", v.patch);
  HD_CHECK(v.channels > 0, "vision.channels must be positive, got ", v.channels);
  HD_CHECK(v.low_res > 0 && v.low_res % v.patch == 0, "vision.low_res = ", v.low_res,
           " must be a positive multiple of vision.patch = ", v.patch);
  int64_t previous = v.low_res;
  for (size_t i = 0; i < v.scales.size(); ++i) {
    int64_t s = v.scales[i];
    HD_CHECK(s % v.patch == 0, "vision.scales[", i, "] = ", s,
             " is not a multiple of vision.patch = ", v.patch);
    HD_CHECK(s > previous, "vision.scales[", i, "] = ", s,
             " must be above the previous scale (or vision.low_res) ", previous,
             ": scales are ascending");
    previous = s;
  }
  HD_CHECK(!v.select_layers.empty(), "vision.select_layers must name at least one block");
  for (int64_t l : v.select_layers) {
    HD_CHECK(l >= 0 && l < v.depth, "vision.select_layers: ", l,
             " is not below vision.depth = ", v.depth);
  }
  HD_CHECK(v.max_select >= 0, "vision.max_select must not be negative, got ", v.max_select);
  HD_CHECK(v.convnext_stem > 0 && v.selection_res % v.convnext_stem == 0,
           "vision.selection_res = ", v.selection_res,
           " must be a positive multiple of vision.convnext_stem = ", v.convnext_stem);
  int64_t sel_grid = v.selection_res / v.convnext_stem;
  HD_CHECK(sel_grid >= v.low_grid(), "vision.selection_res / vision.convnext_stem = ", sel_grid,
           " must be at least the low-res grid ", v.low_grid(),
           " (the high-res cosine map is max-pooled down to it)");
  HD_CHECK(v.convnext_hidden > 0, "vision.convnext_hidden must be positive, got ",
           v.convnext_hidden);
  HD_CHECK(v.convnext_out > 0, "vision.convnext_out must be positive, got ", v.convnext_out);
  HD_CHECK(v.convnext_depth >= 0, "vision.convnext_depth must not be negative, got ",
           v.convnext_depth);
  HD_CHECK(v.ln_eps > 0, "vision.ln_eps must be positive, got ", v.ln_eps);
}

namespace {

void validate_text(const TextConfig& t) {
  HD_CHECK(t.vocab > 0, "text.vocab must be positive, got ", t.vocab);
  HD_CHECK(t.context > 0, "text.context must be positive, got ", t.context);
  HD_CHECK(t.width > 0, "text.width must be positive, got ", t.width);
  HD_CHECK(t.depth > 0, "text.depth must be positive, got ", t.depth);
  HD_CHECK(t.heads > 0 && t.width % t.heads == 0, "text.heads = ", t.heads,
           " must be positive and divide text.width = ", t.width);
  HD_CHECK(t.mlp_hidden > 0, "text.mlp_hidden must be positive, got ", t.mlp_hidden);
  HD_CHECK(t.ln_eps > 0, "text.ln_eps must be positive, got ", t.ln_eps);
}

}  // namespace

void PS3Config::validate() const {
  vision.validate();
  validate_text(text);
  // The top-down prompt from the text tower is fed to the vision selection head (§1.5.2).
  HD_CHECK(text.width == vision.width, "text.width = ", text.width,
           " must equal vision.width = ", vision.width,
           " (the text prompt is compared with vision features)");
}

PS3Config PS3Config::demo(int64_t vocab) {
  PS3Config c;
  VisionConfig& v = c.vision;
  v.width = 64;
  v.depth = 4;
  v.heads = 4;
  v.mlp_hidden = 256;
  v.scales = {756, 1512, 3780};
  v.select_layers = {0, 1, 2, 3};
  v.max_select = 256;  // split {8, 34, 214}
  v.selection_res = 1512;
  v.convnext_hidden = 32;
  v.convnext_out = 32;
  v.convnext_depth = 3;
  v.convnext_stem = 28;
  TextConfig& t = c.text;
  t.vocab = vocab;
  t.context = 32;
  t.width = 64;
  t.depth = 2;
  t.heads = 4;
  t.mlp_hidden = 256;
  return c;
}

PS3Config PS3Config::paper_1p5k() {
  PS3Config c;  // the struct defaults are SigLIP SO400M/14 (§1.1, §1.2, §1.9)
  c.vision.scales = {756, 1512};
  return c;
}

PS3Config PS3Config::paper_4k() {
  PS3Config c;
  c.vision.scales = {756, 1512, 3780};
  return c;
}

}  // namespace hd::ps3
