// The VILA-HD multimodal projector: the 2x2 "mlp_downsample" projector, the optional high-res
// position/scale embeddings, the kept-window rule for selected high-res tokens and the top-down
// prompt head (ps3-reference-implementation.md §3.2, §3.3, §3.4, §3.6).
//
// Parameter names are those of VILA's MultimodalProjector (the `mm_projector/` sub-model), so
// its weights load by name:
//   layers.1.{weight,bias}    LayerNorm(4C), eps 1e-5      } nn.Sequential(DownSampleBlock(),
//   layers.2.{weight,bias}    Linear 4C -> D               }   LayerNorm, Linear, GELU, Linear):
//   layers.4.{weight,bias}    Linear D -> D                }   indices 0 and 3 hold no parameters
//   top_down_prompt_head.*    only with a prompt head (look_close_mode = after_prompt):
//                               mlp:    fc1.{weight [2C, D], bias}, norm.{weight, bias} [2C],
//                                       fc2.{weight [C, 2C], bias}   (timm Mlp with norm_layer)
//                               linear: weight [C, D], bias [C]    (the head IS an nn.Linear)
//   high_res_pos_embed        [1, G*G, D] zero-init (G*G = mm_low_res_token_num = 729)
//   high_res_scale_embed.N    [1, 1, D] zero-init, N = 0 .. mm_scale_num - 1 (0 = low-res)
// C = mm_hidden_size (the PS3 width), D = hidden_size (the LLM width). VILA's checkpoint for
// a released model may not use every option: read mm_projector_type, top_down_prompt_head_type
// and high_res_pos_embed from its config.
//
// One image becomes [low-res tokens (row-major, 14x14 for a 27x27 grid)] [scale 0 kept windows,
// row-major] [scale 1 kept windows] ... (§3.6); the caller appends the "\n" embedding.
//
// Departure from the reference's computation (not its values): VILA runs the projector and the
// area-resampled position embedding over every window of every dense high-res grid and then
// drops the windows that were not fully selected. Every op after the 2x2 concatenation works on
// one token at a time, so this projector gathers the kept windows first and runs the MLP and the
// position embedding only there: same values and gradients, without 135x135 windows of LN +
// two GEMMs (and a 135x135xD resampled embedding) per 4K scale when a few hundred are kept.
#pragma once

#include <memory>
#include <vector>

#include "autograd/module.h"

namespace hd::nn {
class Linear;
class LayerNorm;
}  // namespace hd::nn

namespace hd::vilahd {

enum class PromptHeadType { none, linear, mlp };

struct ProjectorConfig {
  int64_t vision_dim = 1152;  // C: mm_hidden_size, the PS3 feature width
  int64_t llm_dim = 3584;     // D: hidden_size of the LLM
  // §3.4 (`high_res_pos_embed` in the VILA config): high_res_pos_embed + high_res_scale_embed.
  bool high_res_pos_embed = false;
  int64_t low_res_grid = 27;  // sqrt(mm_low_res_token_num): the position embedding is G x G
  int64_t num_scales = 3;     // mm_scale_num: PS3 scales including low-res (3 for 1.5K, 4 for 4K)
  // top_down_prompt_head_type; none when look_close_mode is not after_prompt (VILA builds none).
  PromptHeadType prompt_head = PromptHeadType::none;
};

// §3.2.3: maps the LLM's final hidden state at the look-close position to the PS3 prompt.
//   mlp:    fc1 (D -> 2C), GELU (exact erf), norm = LayerNorm(2C, eps 1e-5), fc2 (2C -> C)
//   linear: one Linear D -> C; its parameters are this module's own "weight" and "bias"
// Every non-norm parameter is initialised U(-0.02, 0.02) (VILA re-initialises them so).
class TopDownPromptHead : public Module {
 public:
  TopDownPromptHead(int64_t llm_dim, int64_t vision_dim, PromptHeadType type);
  // hidden [..., D] -> [..., C]; throws naming the shape if the last dim is not D.
  Tensor forward(const Tensor& hidden) const;
  PromptHeadType type() const { return type_; }

 private:
  PromptHeadType type_;
  int64_t llm_dim_;
  std::shared_ptr<nn::Linear> fc1_, fc2_;
  std::shared_ptr<nn::LayerNorm> norm_;
  Tensor weight_, bias_;  // linear type
};

struct ProjectedImage {
  // [N, D]: low-res tokens, then the kept windows of each scale in order, row-major; or the
  // low-res tokens and one placeholder (see `placeholder`).
  Tensor tokens;
  int64_t low_res_tokens = 0;        // 196 for a 27x27 low-res grid
  std::vector<int64_t> kept_counts;  // per high-res scale
  // Per high-res scale, flat row-major window indices into its ceil(g_h/2) x ceil(g_w/2) grid.
  std::vector<std::vector<int64_t>> kept_windows;
  // True when high-res scales were given and no window of any of them survived: VILA then uses
  // the first low-res token (position embedding included) as the image's only high-res token.
  bool placeholder = false;
};

namespace projector_detail {
class Layers;         // layers.{1,2,4}
class ParameterList;  // high_res_scale_embed.N
}  // namespace projector_detail

class MlpDownsampleProjector : public Module {
 public:
  explicit MlpDownsampleProjector(const ProjectorConfig& config);

  // VILA's mm_projector(x) on whole grids: x [..., H, W, C] -> [..., ceil(H/2), ceil(W/2), D].
  Tensor forward(const Tensor& grid) const;
  // layers.1 .. layers.4 on already concatenated windows: [..., 4C] -> [..., D].
  Tensor project_windows(const Tensor& windows) const;

  // One image (§3.3, §3.4, §3.6):
  //   low_res        [T, C] low-res tokens (T = s*s, 729 for PS3), projected as an s x s grid;
  //   grids[k]       [g_h, g_w, C] dense high-res features of scale k, zeros where unselected;
  //   selection[k]   [g_h, g_w] 0/1 selection map of scale k (any float/int dtype).
  // Scale k keeps the windows of kept_windows(selection[k]). No scales at all is the prompt
  // pass (§3.2.2, num_look_close = 0): low-res tokens only, no placeholder. Throws naming the
  // tensor and shape at fault (wrong width, grid/map mismatch, a map value not 0 or 1, more
  // scales than high_res_scale_embed has entries).
  ProjectedImage project_image(const Tensor& low_res, const std::vector<Tensor>& grids,
                               const std::vector<Tensor>& selection) const;

  // Rows `windows` (flat row-major) of area(high_res_pos_embed as G x G -> out_h x out_w) +
  // high_res_scale_embed[scale]: [windows.size(), D]. Area = PyTorch's adaptive average pooling
  // (output i averages inputs [floor(i*in/out), ceil((i+1)*in/out)); the window rule of
  // ops/resample.h), applied as one constant [K, G*G] matrix so only the asked rows are built.
  Tensor position_embedding(int64_t out_h, int64_t out_w, int64_t scale,
                            const std::vector<int64_t>& windows) const;

  // top_down_prompt_head(llm_hidden); throws if the config has no prompt head.
  Tensor prompt(const Tensor& llm_hidden) const;
  bool has_prompt_head() const { return head_ != nullptr; }
  const TopDownPromptHead& top_down_prompt_head() const;
  const ProjectorConfig& config() const { return config_; }

 private:
  ProjectorConfig config_;
  std::shared_ptr<projector_detail::Layers> layers_;
  std::shared_ptr<TopDownPromptHead> head_;
  Tensor pos_embed_;
  std::shared_ptr<projector_detail::ParameterList> scale_embed_;
};

// DownSampleBlock: x [..., H, W, C] -> [..., ceil(H/2), ceil(W/2), 4C], each output the concat
// of its window's top-left, top-right, bottom-left, bottom-right cells; an odd H (W) gets one
// zero row (column) at the bottom (right) first. Output windows are row-major.
Tensor downsample_2x2(const Tensor& x);

// The windows a scale keeps (§3.3): VILA area-interpolates the 0/1 map [g_h, g_w] to
// ceil(g_h/2) x ceil(g_w/2) and keeps outputs equal to 1, i.e. windows whose adaptive-average
// input window [floor(i*g/o), ceil((i+1)*g/o)) is all ones (computed exactly, in integers).
// For even sides that window is the window's own 2x2 cells. For odd sides it is not: e.g.
// g = 5 -> 3 averages rows {0,1}, {1,2,3}, {3,4} while the projector's windows are {0,1},
// {2,3}, {4,pad}; this reproduces the reference, which only ever sees even grids (54/108/270).
// Returns flat row-major indices, ascending; throws if a value is not 0 or 1.
std::vector<int64_t> kept_windows(const Tensor& selection_map);

// Dense per-scale grids of one image from PS3's sparse high-res output (VisionOutputs
// high_res_tokens[b] [M, C] and high_res_positions[b] [M], positions in the concatenation of
// the flattened scale grids): [grids[k], grids[k], C] each, zeros at unselected cells (what
// VILA builds before projecting). Differentiable in tokens.
std::vector<Tensor> dense_scale_grids(const Tensor& tokens, const Tensor& positions,
                                      const std::vector<int64_t>& grids);

}  // namespace hd::vilahd
