// Text tower layers and forward; the why of the layout is in text_tower.h. Initialisation
// follows OpenCLIP's TextTransformer.init_parameters (token std 0.02, positions 0.01, attention
// in-proj W^-1/2, out-proj and c_proj W^-1/2 (2L)^-1/2, c_fc (2W)^-1/2, text_projection W^-1/2
// with a zero bias); a released checkpoint overwrites all of it anyway.
#include "ps3/text_tower.h"

#include <cmath>

#include "autograd/error.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/linalg.h"
#include "ops/norm.h"
#include "ops/shape.h"
#include "ops/similarity.h"

namespace hd::ps3 {
namespace text_detail {

// Linear with OpenCLIP/PyTorch names (weight [out, in], bias [out]) in any float dtype.
class Dense : public Module {
 public:
  Dense(int64_t in, int64_t out, DType dtype, Init weight_init, Init bias_init) {
    weight = register_parameter("weight", {out, in}, weight_init, dtype);
    bias = register_parameter("bias", {out}, bias_init, dtype);
  }
  // PyTorch's nn.Linear default: U(+-1/sqrt(in)) for both.
  Dense(int64_t in, int64_t out, DType dtype)
      : Dense(in, out, dtype, default_init(in), default_init(in)) {}
  Tensor forward(const Tensor& x) const { return linear(x, weight, bias); }
  Tensor weight, bias;

 private:
  static Init default_init(int64_t in) {
    double b = 1.0 / std::sqrt(double(in));
    return Init::uniform(-b, b);
  }
};

class Norm : public Module {
 public:
  Norm(int64_t dim, double eps, DType dtype) : eps(eps) {
    weight = register_parameter("weight", {dim}, Init::ones(), dtype);
    bias = register_parameter("bias", {dim}, Init::zeros(), dtype);
  }
  Tensor forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }
  Tensor weight, bias;
  double eps;
};

// torch.nn.MultiheadAttention's parameter layout: in_proj_weight [3W, W] (q | k | v),
// in_proj_bias [3W], out_proj (a Linear). No mask: SigLIP's text tower is bidirectional.
class TextAttention : public Module {
 public:
  TextAttention(int64_t width, int64_t heads, int64_t depth, DType dtype)
      : heads(heads), head_dim(width / heads) {
    HD_CHECK(heads > 0 && width % heads == 0, "TextAttention: text.width ", width,
             " is not divisible by text.heads ", heads);
    const double w = double(width);
    in_proj_weight = register_parameter("in_proj_weight", {3 * width, width},
                                        Init::normal(0, 1 / std::sqrt(w)), dtype);
    in_proj_bias = register_parameter("in_proj_bias", {3 * width}, Init::zeros(), dtype);
    const double proj_std = 1 / std::sqrt(w) / std::sqrt(2.0 * double(depth));
    out_proj = register_module(
        "out_proj",
        std::make_shared<Dense>(width, width, dtype, Init::normal(0, proj_std), Init::zeros()));
  }
  Tensor forward(const Tensor& x) const {
    const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
    Tensor qkv =
        permute(reshape(linear(x, in_proj_weight, in_proj_bias), {B, N, 3, heads, head_dim}),
                {2, 0, 3, 1, 4});
    std::vector<Tensor> parts = unbind(qkv, 0);
    Tensor o = scaled_dot_product_attention(parts[0], parts[1], parts[2]);  // [B, H, N, Dh]
    return out_proj->forward(reshape(transpose(o, 1, 2), {B, N, C}));
  }
  Tensor in_proj_weight, in_proj_bias;
  std::shared_ptr<Dense> out_proj;
  int64_t heads, head_dim;
};

class TextMLP : public Module {
 public:
  TextMLP(int64_t width, int64_t hidden, int64_t depth, GeluApprox approx, DType dtype)
      : approx(approx) {
    const double w = double(width);
    const double fc_std = 1 / std::sqrt(2.0 * w);
    const double proj_std = 1 / std::sqrt(w) / std::sqrt(2.0 * double(depth));
    const double b_fc = 1 / std::sqrt(w), b_proj = 1 / std::sqrt(double(hidden));
    c_fc = register_module("c_fc",
                           std::make_shared<Dense>(width, hidden, dtype, Init::normal(0, fc_std),
                                                   Init::uniform(-b_fc, b_fc)));
    c_proj = register_module(
        "c_proj", std::make_shared<Dense>(hidden, width, dtype, Init::normal(0, proj_std),
                                          Init::uniform(-b_proj, b_proj)));
  }
  Tensor forward(const Tensor& x) const { return c_proj->forward(gelu(c_fc->forward(x), approx)); }
  std::shared_ptr<Dense> c_fc, c_proj;
  GeluApprox approx;
};

// OpenCLIP ResidualAttentionBlock: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class TextBlock : public Module {
 public:
  TextBlock(const TextConfig& c, DType dtype) {
    ln_1 = register_module("ln_1", std::make_shared<Norm>(c.width, c.ln_eps, dtype));
    attn =
        register_module("attn", std::make_shared<TextAttention>(c.width, c.heads, c.depth, dtype));
    ln_2 = register_module("ln_2", std::make_shared<Norm>(c.width, c.ln_eps, dtype));
    mlp = register_module(
        "mlp", std::make_shared<TextMLP>(c.width, c.mlp_hidden, c.depth,
                                         c.gelu_tanh ? GeluApprox::tanh : GeluApprox::none, dtype));
  }
  Tensor forward(const Tensor& x) const {
    Tensor h = add(x, attn->forward(ln_1->forward(x)));
    return add(h, mlp->forward(ln_2->forward(h)));
  }
  std::shared_ptr<Norm> ln_1, ln_2;
  std::shared_ptr<TextAttention> attn;
  std::shared_ptr<TextMLP> mlp;
};

// Holders that exist only to give parameters their checkpoint names.
class TokenEmbedding : public Module {
 public:
  TokenEmbedding(int64_t vocab, int64_t width, DType dtype) {
    weight = register_parameter("weight", {vocab, width}, Init::normal(0, 0.02), dtype);
  }
  Tensor weight;
};

class Transformer : public Module {
 public:
  explicit Transformer(std::shared_ptr<ModuleList<TextBlock>> blocks) {
    resblocks = register_module("resblocks", std::move(blocks));
  }
  std::shared_ptr<ModuleList<TextBlock>> resblocks;
};

}  // namespace text_detail

using text_detail::Dense;
using text_detail::Norm;

PromptHead::PromptHead(int64_t dim, DType dtype) {
  fc1_ = register_module("fc1", std::make_shared<Dense>(dim, dim, dtype));
  norm_ = register_module("norm", std::make_shared<Norm>(dim, 1e-5, dtype));
  fc2_ = register_module("fc2", std::make_shared<Dense>(dim, dim, dtype));
}

Tensor PromptHead::forward(const Tensor& features) const {
  return fc2_->forward(norm_->forward(gelu(fc1_->forward(features))));
}

TextTower::TextTower(const TextConfig& config, int64_t embed_dim, DType dtype)
    : config_(config), embed_dim_(embed_dim) {
  HD_CHECK(config.vocab > 0 && config.context > 0 && config.width > 0 && config.depth >= 0 &&
               config.mlp_hidden > 0 && embed_dim > 0,
           "TextTower: text.vocab (", config.vocab, "), text.context (", config.context,
           "), text.width (", config.width, "), text.mlp_hidden (", config.mlp_hidden,
           ") and embed_dim (", embed_dim, ") must be positive, text.depth (", config.depth,
           ") non-negative");
  HD_CHECK(dtype == DType::f32 || dtype == DType::f64, "TextTower: dtype must be f32 or f64, got ",
           dtype_name(dtype));
  token_embedding_ =
      register_module("token_embedding", std::make_shared<text_detail::TokenEmbedding>(
                                             config.vocab, config.width, dtype))
          ->weight;
  positional_embedding_ = register_parameter("positional_embedding", {config.context, config.width},
                                             Init::normal(0, 0.01), dtype);
  auto list = std::make_shared<ModuleList<text_detail::TextBlock>>();
  for (int64_t i = 0; i < config.depth; ++i) {
    blocks_.push_back(std::make_shared<text_detail::TextBlock>(config, dtype));
    list->push_back(blocks_.back());
  }
  register_module("transformer", std::make_shared<text_detail::Transformer>(list));
  ln_final_ =
      register_module("ln_final", std::make_shared<Norm>(config.width, config.ln_eps, dtype));
  text_projection_ = register_module(
      "text_projection",
      std::make_shared<Dense>(config.width, embed_dim, dtype,
                              Init::normal(0, 1 / std::sqrt(double(config.width))), Init::zeros()));
  prompt_proj_ = register_module("prompt_proj", std::make_shared<PromptHead>(embed_dim, dtype));
}

Tensor TextTower::encode(const Tensor& tokens) const {
  HD_CHECK(tokens.defined() && tokens.dim() == 2 && tokens.size(1) == config_.context,
           "TextTower: tokens must be [B, text.context = ", config_.context, "], got ",
           tokens.defined() ? tokens.str() : std::string("an undefined tensor"));
  HD_CHECK(tokens.dtype() == DType::i32 || tokens.dtype() == DType::i64,
           "TextTower: tokens must be i32 or i64 ids, got ", tokens.str());
  Tensor x = add(embedding(token_embedding_, tokens), positional_embedding_);  // [B, ctx, W]
  for (const auto& block : blocks_) {
    const text_detail::TextBlock* b = block.get();
    x = nn::run_unit(runner_, *b, x,
                     nn::recomputed(config_.activation_checkpointing,
                                    [b](const Tensor& h) { return b->forward(h); }));
  }
  // Pool the last position after the final norm (OpenCLIP text_pool_type "last").
  Tensor pooled = select(ln_final_->forward(x), 1, config_.context - 1);  // [B, W]
  return text_projection_->forward(pooled);
}

TextOutputs TextTower::forward(const Tensor& tokens) const {
  TextOutputs out;
  out.features = l2_normalize(encode(tokens), -1);
  out.prompt = prompt_proj_->forward(out.features);
  return out;
}

std::vector<const Module*> TextTower::sharding_units() const {
  std::vector<const Module*> out;
  for (const auto& b : blocks_) out.push_back(b.get());
  return out;
}

}  // namespace hd::ps3
