// The VILA-HD projector: parameter names, the 2x2 window order and zero padding against a plain
// loop, the kept-window rule and placeholder on hand-built maps, PyTorch parity (values and
// gradients, f64 and f32) with tests/fixtures/make_projector.py, and finite differences.
#include "vilahd/projector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "tests/testing/errors.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/gradcheck.h"

namespace hd::vilahd {
namespace {

using testing::expect_close;
using testing::expect_error;
using testing::Fixture;

ProjectorConfig tiny(int64_t c, int64_t d, bool pe, int64_t grid, int64_t scales,
                     PromptHeadType head) {
  ProjectorConfig cfg;
  cfg.vision_dim = c;
  cfg.llm_dim = d;
  cfg.high_res_pos_embed = pe;
  cfg.low_res_grid = grid;
  cfg.num_scales = scales;
  cfg.prompt_head = head;
  return cfg;
}

Tensor leaf(const Tensor& t, DType dtype) {
  Tensor x = clone(to(t, dtype));
  x.requires_grad_();
  return x;
}

TEST(Projector, VilaParameterNamesAndShapes) {
  MlpDownsampleProjector p(tiny(8, 12, true, 27, 3, PromptHeadType::mlp));
  std::map<std::string, Shape> got;
  for (auto& [n, t] : p.named_parameters()) got[n] = t.shape();
  std::map<std::string, Shape> want = {
      {"layers.1.weight", {32}},
      {"layers.1.bias", {32}},
      {"layers.2.weight", {12, 32}},
      {"layers.2.bias", {12}},
      {"layers.4.weight", {12, 12}},
      {"layers.4.bias", {12}},
      {"top_down_prompt_head.fc1.weight", {16, 12}},
      {"top_down_prompt_head.fc1.bias", {16}},
      {"top_down_prompt_head.norm.weight", {16}},
      {"top_down_prompt_head.norm.bias", {16}},
      {"top_down_prompt_head.fc2.weight", {8, 16}},
      {"top_down_prompt_head.fc2.bias", {8}},
      {"high_res_pos_embed", {1, 729, 12}},
      {"high_res_scale_embed.0", {1, 1, 12}},
      {"high_res_scale_embed.1", {1, 1, 12}},
      {"high_res_scale_embed.2", {1, 1, 12}},
  };
  EXPECT_EQ(got, want);

  MlpDownsampleProjector lin(tiny(8, 12, false, 27, 3, PromptHeadType::linear));
  got.clear();
  for (auto& [n, t] : lin.named_parameters()) got[n] = t.shape();
  EXPECT_EQ(got.at("top_down_prompt_head.weight"), (Shape{8, 12}));
  EXPECT_EQ(got.at("top_down_prompt_head.bias"), (Shape{8}));
  EXPECT_EQ(got.size(), 8u);  // 6 layer tensors + the head; no embeddings
  EXPECT_FALSE(
      MlpDownsampleProjector(tiny(8, 12, false, 27, 3, PromptHeadType::none)).has_prompt_head());
}

TEST(Projector, InitialisationFollowsVila) {
  MlpDownsampleProjector p(tiny(8, 12, true, 5, 3, PromptHeadType::mlp));
  p.initialize(7);
  for (auto& [n, t] : p.named_parameters()) {
    std::vector<double> v = t.to_vector<double>();
    double lo = 1e9, hi = -1e9;
    for (double x : v) lo = std::min(lo, x), hi = std::max(hi, x);
    if (n.rfind("high_res_", 0) == 0 || n == "layers.1.bias" ||
        n == "top_down_prompt_head.norm.bias") {
      EXPECT_EQ(lo, 0.0) << n;
      EXPECT_EQ(hi, 0.0) << n;
    } else if (n == "layers.1.weight" || n == "top_down_prompt_head.norm.weight") {
      EXPECT_EQ(lo, 1.0) << n;
      EXPECT_EQ(hi, 1.0) << n;
    } else if (n.rfind("top_down_prompt_head.", 0) == 0) {  // U(-0.02, 0.02), not PyTorch's
      EXPECT_GE(lo, -0.02) << n;
      EXPECT_LE(hi, 0.02) << n;
      EXPECT_GT(hi - lo, 0.01) << n;
    } else {  // nn.Linear default U(+-1/sqrt(in))
      EXPECT_GT(hi - lo, 0.05) << n;
    }
  }
}

// (1) Window order TL, TR, BL, BR and the bottom/right zero padding, element by element.
TEST(Projector, DownsampleWindowOrderAndPaddingMatchPlainLoop) {
  const int64_t B = 2, H = 5, W = 3, C = 2;  // odd on both sides, not square
  std::vector<float> v(size_t(B * H * W * C));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i + 1);  // no zeros: padding is visible
  Tensor x = from_vector<float>(v, {B, H, W, C});
  Tensor y = downsample_2x2(x);
  ASSERT_EQ(y.shape(), (Shape{B, 3, 2, 4 * C}));
  std::vector<float> got = y.to_vector<float>();
  size_t n = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t cell = 0; cell < 4; ++cell)  // 0 TL, 1 TR, 2 BL, 3 BR
          for (int64_t c = 0; c < C; ++c, ++n) {
            int64_t r = 2 * i + cell / 2, q = 2 * j + cell % 2;
            float want = (r < H && q < W) ? v[size_t(((b * H + r) * W + q) * C + c)] : 0.0f;
            EXPECT_EQ(got[n], want) << "b " << b << " window (" << i << ", " << j << ") cell "
                                    << cell << " channel " << c;
          }
  // 3-D input (one image) gives the same windows.
  EXPECT_EQ(downsample_2x2(select(x, 0, 1)).to_vector<float>(), select(y, 0, 1).to_vector<float>());
}

// The gathered kept-window path of project_image equals the whole-grid forward at those
// windows (odd grid: padding cells included), with the position embedding on top.
TEST(Projector, KeptWindowsEqualWholeGridForward) {
  MlpDownsampleProjector p(tiny(3, 5, true, 3, 3, PromptHeadType::none));
  p.initialize(11);
  p.to_(Device::cpu(), DType::f64);
  {
    Tensor pe = p.parameter("high_res_pos_embed").detach();
    copy_(pe, testing::random_leaf({1, 9, 5}, 3).detach());
    Tensor se = p.parameter("high_res_scale_embed.1").detach();
    copy_(se, testing::random_leaf({1, 1, 5}, 4).detach());
  }
  Tensor low = testing::random_leaf({9, 3}, 1).detach();
  Tensor grid = testing::random_leaf({5, 5, 3}, 2).detach();
  Tensor map = ones({5, 5}, DType::f64);
  ProjectedImage out = p.project_image(low, {grid}, {map});
  ASSERT_EQ(out.kept_windows[0].size(), 9u);  // all ones: every window kept
  Tensor whole = reshape(p.forward(grid), {9, 5});
  std::vector<int64_t> all{0, 1, 2, 3, 4, 5, 6, 7, 8};
  Tensor want = add(whole, p.position_embedding(3, 3, 1, all));
  expect_close(narrow(out.tokens, 0, 4, 9), want, 1e-12, 1e-12, "kept = whole grid");
  // The position embedding equals the library's adaptive_avg_pool2d of the G x G grid.
  Tensor pe_grid =
      permute(reshape(p.parameter("high_res_pos_embed").detach(), {3, 3, 5}), {2, 0, 1});
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{2, 2}, {3, 7}, {1, 4}}) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < oh * ow; ++i) idx.push_back(i);
    Tensor pooled = reshape(permute(adaptive_avg_pool2d(pe_grid, oh, ow), {1, 2, 0}), {oh * ow, 5});
    Tensor se = reshape(p.parameter("high_res_scale_embed.2").detach(), {5});
    expect_close(p.position_embedding(oh, ow, 2, idx), add(pooled, se), 1e-14, 1e-12,
                 "position embedding vs adaptive_avg_pool2d");
  }
}

// (2) The kept-window rule on hand-built maps.
TEST(Projector, KeptWindowRule) {
  // Even side: windows are exactly the 2x2 blocks; partially selected ones are dropped.
  Tensor even = from_vector<float>({1, 1, 1, 0,  //
                                    1, 1, 1, 1,  //
                                    0, 0, 1, 1,  //
                                    0, 1, 1, 1},
                                   {4, 4});
  EXPECT_EQ(kept_windows(even), (std::vector<int64_t>{0, 3}));
  // Odd side 5 -> 3: the area rule averages rows/cols {0,1}, {1,2,3}, {3,4}.
  std::vector<float> v(25, 1.0f);
  v[2 * 5 + 2] = 0;  // only the middle area window contains (2, 2)
  EXPECT_EQ(kept_windows(from_vector<float>(v, {5, 5})),
            (std::vector<int64_t>{0, 1, 2, 3, 5, 6, 7, 8}));
  std::vector<float> corner(25, 0.0f);
  for (int r = 3; r < 5; ++r)
    for (int q = 3; q < 5; ++q) corner[size_t(r * 5 + q)] = 1;
  EXPECT_EQ(kept_windows(from_vector<float>(corner, {5, 5})), (std::vector<int64_t>{8}));
  // Non-square, i64 map, and a 1x1 map (one window covering one cell).
  EXPECT_EQ(kept_windows(from_vector<int64_t>({0, 1, 1, 1, 1, 1, 1, 1}, {2, 4})),
            (std::vector<int64_t>{1}));
  EXPECT_EQ(kept_windows(ones({1, 1})), (std::vector<int64_t>{0}));
  expect_error([] { kept_windows(full({2, 2}, 0.5)); }, "must be 0 or 1");
  expect_error([] { kept_windows(ones({4})); }, "[g_h, g_w]");
}

TEST(Projector, PlaceholderWhenNothingSurvivesAndPromptPass) {
  MlpDownsampleProjector p(tiny(3, 4, true, 3, 3, PromptHeadType::none));
  p.initialize(2);
  Tensor low = testing::random_leaf({9, 3}, 5).detach();
  Tensor low_f = to(low, DType::f32);
  // Partial windows only, in both scales.
  Tensor m0 = from_vector<float>({1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0}, {4, 4});
  Tensor m1 = from_vector<float>({1, 0, 1, 0}, {2, 2});
  Tensor g0 = to(testing::random_leaf({4, 4, 3}, 6).detach(), DType::f32);
  Tensor g1 = to(testing::random_leaf({2, 2, 3}, 7).detach(), DType::f32);
  ProjectedImage out = p.project_image(low_f, {g0, g1}, {m0, m1});
  EXPECT_TRUE(out.placeholder);
  EXPECT_EQ(out.low_res_tokens, 4);
  EXPECT_EQ(out.kept_counts, (std::vector<int64_t>{0, 0}));
  ASSERT_EQ(out.tokens.shape(), (Shape{5, 4}));
  EXPECT_EQ(select(out.tokens, 0, 4).to_vector<float>(),
            select(out.tokens, 0, 0).to_vector<float>());
  // One scale keeping a window: no placeholder.
  ProjectedImage some = p.project_image(low_f, {g0, g1}, {m0, ones({2, 2})});
  EXPECT_FALSE(some.placeholder);
  EXPECT_EQ(some.kept_counts, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(some.tokens.size(0), 5);
  // No scales: the prompt pass, low-res tokens only.
  ProjectedImage lr = p.project_image(low_f, {}, {});
  EXPECT_FALSE(lr.placeholder);
  EXPECT_EQ(lr.tokens.shape(), (Shape{4, 4}));
  EXPECT_EQ(lr.tokens.to_vector<float>(), narrow(out.tokens, 0, 0, 4).to_vector<float>());
}

TEST(Projector, RejectsBadInputs) {
  MlpDownsampleProjector p(tiny(3, 4, true, 3, 2, PromptHeadType::none));
  p.initialize(1);
  Tensor low = zeros({9, 3});
  expect_error([&] { p.project_image(zeros({8, 3}), {}, {}); }, "low_res must be [s*s");
  expect_error([&] { p.project_image(zeros({9, 4}), {}, {}); }, "vision_dim = 3");
  expect_error([&] { p.project_image(low, {zeros({4, 4, 3})}, {}); }, "1 high-res grids but 0");
  expect_error([&] { p.project_image(low, {zeros({4, 4, 2})}, {ones({4, 4})}); }, "grids[0]");
  expect_error([&] { p.project_image(low, {zeros({4, 4, 3})}, {ones({4, 2})}); }, "selection[0]");
  expect_error(
      [&] {
        p.project_image(low, {zeros({4, 4, 3})}, {full({4, 4}, 2.0)});
      },
      "selection[0]: kept_windows");
  expect_error(
      [&] {
        p.project_image(low, {zeros({4, 4, 3}), zeros({4, 4, 3})}, {ones({4, 4}), ones({4, 4})});
      },
      "num_scales is 2");
  expect_error([&] { p.prompt(zeros({1, 4})); }, "no top_down_prompt_head");
  expect_error([&] { p.position_embedding(2, 2, 0, {4}); }, "window 4 is outside");
  expect_error(
      [&] {
        TopDownPromptHead(4, 3, PromptHeadType::mlp).forward(zeros({2, 3}));
      },
      "llm_dim = 4");
}

TEST(Projector, DenseScaleGridsScatterSparseTokens) {
  // Two scales 2x2 and 3x3 (13 cells); tokens at positions 1, 4, 12.
  Tensor tok = from_vector<float>({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor pos = from_vector<int64_t>({1, 4, 12}, {3});
  std::vector<Tensor> g = dense_scale_grids(tok, pos, {2, 3});
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0].to_vector<float>(), (std::vector<float>{0, 0, 1, 2, 0, 0, 0, 0}));
  std::vector<float> want(18, 0.0f);
  want[0] = 3, want[1] = 4, want[16] = 5, want[17] = 6;
  EXPECT_EQ(g[1].to_vector<float>(), want);
}

// (3) PyTorch parity.
void load(Module& m, const Fixture& fx, const std::string& prefix) {
  int n = 0;
  for (auto& [name, t] : m.named_parameters()) {
    const Tensor& src = fx.get(prefix + name);
    ASSERT_EQ(src.shape(), t.shape()) << name;
    Tensor dst = t.detach();
    copy_(dst, src);
    ++n;
  }
  int in_fixture = 0;
  for (auto& [name, t] : fx.all())
    if (name.rfind(prefix, 0) == 0) ++in_fixture;
  EXPECT_EQ(n, in_fixture) << "the PyTorch model has parameters the projector does not";
}

void parity_case(const std::string& c, DType dtype, double atol, double rtol) {
  static const Fixture fx = Fixture::load("projector.bin");
  MlpDownsampleProjector p(tiny(8, 12, true, 27, 5, PromptHeadType::mlp));
  p.to_(Device::cpu(), dtype);
  load(p, fx, "p.");
  Tensor low = leaf(fx.get(c + ".low_res"), dtype);
  std::vector<Tensor> grids, maps;
  for (int k = 0; fx.has(c + ".grid." + std::to_string(k)); ++k) {
    grids.push_back(leaf(fx.get(c + ".grid." + std::to_string(k)), dtype));
    maps.push_back(fx.get(c + ".map." + std::to_string(k)));
  }
  ProjectedImage out = p.project_image(low, grids, maps);
  std::string what = c + " " + dtype_name(dtype);
  for (size_t k = 0; k < grids.size(); ++k)
    EXPECT_EQ(out.kept_windows[k], fx.get(c + ".kept." + std::to_string(k)).to_vector<int64_t>())
        << what << " scale " << k;
  expect_close(out.tokens, fx.get(c + ".tokens"), atol, rtol, what + " tokens");
  sum(mul(out.tokens, to(fx.get(c + ".w"), dtype))).backward();
  expect_close(low.grad(), fx.get(c + ".g.low_res"), atol, rtol, what + " grad low_res");
  for (size_t k = 0; k < grids.size(); ++k) {
    Tensor gg = grids[k].grad().defined() ? grids[k].grad() : zeros_like(grids[k]);
    expect_close(gg, fx.get(c + ".g.grid." + std::to_string(k)), atol, rtol,
                 what + " grad grid " + std::to_string(k));
  }
  for (auto& [n, t] : p.named_parameters()) {
    if (n.rfind("top_down_prompt_head", 0) == 0) continue;
    Tensor gt = t.grad().defined() ? t.grad() : zeros_like(t);
    expect_close(gt, fx.get(c + ".g." + n), atol, rtol, what + " grad " + n);
  }
}

TEST(Projector, MatchesPyTorchF64) {
  parity_case("a", DType::f64, 1e-11, 1e-9);
  parity_case("b", DType::f64, 1e-11, 1e-9);
}

// f32: the weight gradients are sums over every token, so their last bits follow the BLAS
// kernel's summation order: with OpenBLAS's AVX-512 kernels one of layers.2.weight's 384
// gradient elements (0.0396) lands 1.5e-5 from PyTorch's, where its AVX2 kernels stayed under
// 1e-5. The f64 case above is the exactness check.
TEST(Projector, MatchesPyTorchF32) {
  parity_case("a", DType::f32, 3e-5, 1e-5);
  parity_case("b", DType::f32, 3e-5, 1e-5);
}

TEST(Projector, PromptHeadsMatchPyTorch) {
  static const Fixture fx = Fixture::load("projector.bin");
  for (DType dtype : {DType::f64, DType::f32}) {
    double tol = dtype == DType::f64 ? 1e-11 : 1e-5;
    Tensor hidden = to(fx.get("prompt.hidden"), dtype);
    Tensor wp = to(fx.get("prompt.w"), dtype);
    MlpDownsampleProjector p(tiny(8, 12, true, 27, 5, PromptHeadType::mlp));
    p.to_(Device::cpu(), dtype);
    load(p, fx, "p.");
    Tensor out = p.prompt(hidden);
    expect_close(out, fx.get("prompt.mlp.out"), tol, tol, "mlp head");
    sum(mul(out, wp)).backward();
    for (auto& [n, t] : p.top_down_prompt_head().named_parameters())
      expect_close(t.grad(), fx.get("prompt.mlp.g." + n), tol, tol, "mlp head grad " + n);

    TopDownPromptHead lin(12, 8, PromptHeadType::linear);
    lin.to_(Device::cpu(), dtype);
    load(lin, fx, "prompt.linear.p.");
    Tensor lo = lin.forward(hidden);
    expect_close(lo, fx.get("prompt.linear.out"), tol, tol, "linear head");
    sum(mul(lo, wp)).backward();
    for (auto& [n, t] : lin.named_parameters())
      expect_close(t.grad(), fx.get("prompt.linear.g." + n), tol, tol, "linear head grad " + n);
  }
}

// (4) Finite differences in f64 through every parameter and input.
TEST(Projector, GradientsMatchFiniteDifferences) {
  MlpDownsampleProjector p(tiny(3, 4, true, 3, 3, PromptHeadType::mlp));
  p.initialize(9);
  p.to_(Device::cpu(), DType::f64);
  std::vector<Tensor> inputs;
  int64_t seed = 100;
  for (auto& [n, t] : p.named_parameters()) {
    Tensor d = t.detach();
    copy_(d, testing::random_leaf(t.shape(), uint64_t(seed++), -0.7, 0.7).detach());
    if (n.rfind("top_down_prompt_head", 0) != 0) inputs.push_back(t);
  }
  Tensor low = testing::random_leaf({9, 3}, 1);
  Tensor g0 = testing::random_leaf({4, 4, 3}, 2);  // even: window 0 full, 1 partial, 3 full
  Tensor g1 = testing::random_leaf({3, 3, 3}, 3);  // odd: padded windows
  Tensor m0 = from_vector<float>({1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1}, {4, 4});
  Tensor m1 = from_vector<float>({1, 1, 1, 1, 1, 1, 0, 1, 1}, {3, 3});
  inputs.insert(inputs.end(), {low, g0, g1});
  auto f = [&](const std::vector<Tensor>&) {
    ProjectedImage out = p.project_image(low, {g0, g1}, {m0, m1});
    EXPECT_EQ(out.kept_counts, (std::vector<int64_t>{2, 3}));
    return out.tokens;
  };
  EXPECT_TRUE(testing::check_gradients(f, inputs, {1e-6, 1e-7, 1e-5}));

  // The placeholder path: its gradient reaches the first low-res token twice.
  Tensor none = zeros({4, 4});
  auto fp = [&](const std::vector<Tensor>&) { return p.project_image(low, {g0}, {none}).tokens; };
  EXPECT_TRUE(testing::check_gradients(
      fp, {low, p.parameter("high_res_pos_embed"), p.parameter("high_res_scale_embed.0")},
      {1e-6, 1e-7, 1e-5}));

  Tensor hidden = testing::random_leaf({2, 4}, 50);
  std::vector<Tensor> head;
  for (auto& [n, t] : p.top_down_prompt_head().named_parameters()) head.push_back(t);
  head.push_back(hidden);
  EXPECT_TRUE(testing::check_gradients([&](const std::vector<Tensor>&) { return p.prompt(hidden); },
                                       head, {1e-6, 1e-7, 1e-5}));
  TopDownPromptHead lin(4, 3, PromptHeadType::linear);
  lin.initialize(4);
  lin.to_(Device::cpu(), DType::f64);
  std::vector<Tensor> lp = lin.parameters();
  lp.push_back(hidden);
  EXPECT_TRUE(testing::check_gradients(
      [&](const std::vector<Tensor>&) { return lin.forward(hidden); }, lp, {1e-6, 1e-7, 1e-5}));
}

}  // namespace
}  // namespace hd::vilahd
