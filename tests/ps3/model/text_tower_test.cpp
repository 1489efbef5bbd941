// The PS3 text tower: checkpoint names and shapes, PyTorch parity (values and parameter
// gradients, f64), finite-difference gradients through every parameter kind, the unit runner,
// determinism and bad inputs.
#include "ps3/text_tower.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/errors.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/gradcheck.h"

namespace hd::ps3 {
namespace {

using testing::expect_close;
using testing::expect_error;
using testing::Fixture;

TextConfig tiny_text(int64_t vocab = 37, int64_t ctx = 8, int64_t width = 16, int64_t heads = 2,
                     int64_t hidden = 24, int64_t depth = 2, bool tanh = false) {
  TextConfig c;
  c.vocab = vocab;
  c.context = ctx;
  c.width = width;
  c.heads = heads;
  c.mlp_hidden = hidden;
  c.depth = depth;
  c.gelu_tanh = tanh;
  return c;
}

Tensor tokens_of(std::vector<int32_t> ids, int64_t rows) {
  return from_vector<int32_t>(ids, {rows, int64_t(ids.size()) / rows});
}

TEST(TextTower, CheckpointNamesAndShapes) {
  TextConfig c = tiny_text();
  TextTower t(c, /*embed_dim=*/20);
  std::map<std::string, Shape> got;
  for (auto& [n, p] : t.named_parameters()) got[n] = p.shape();
  const int64_t W = 16;
  std::map<std::string, Shape> want = {
      {"token_embedding.weight", {37, W}},
      {"positional_embedding", {8, W}},
      {"ln_final.weight", {W}},
      {"ln_final.bias", {W}},
      {"text_projection.weight", {20, W}},
      {"text_projection.bias", {20}},
      {"prompt_proj.fc1.weight", {20, 20}},
      {"prompt_proj.fc1.bias", {20}},
      {"prompt_proj.norm.weight", {20}},
      {"prompt_proj.norm.bias", {20}},
      {"prompt_proj.fc2.weight", {20, 20}},
      {"prompt_proj.fc2.bias", {20}},
  };
  for (int i = 0; i < 2; ++i) {
    std::string b = "transformer.resblocks." + std::to_string(i) + ".";
    want[b + "ln_1.weight"] = {W};
    want[b + "ln_1.bias"] = {W};
    want[b + "attn.in_proj_weight"] = {3 * W, W};
    want[b + "attn.in_proj_bias"] = {3 * W};
    want[b + "attn.out_proj.weight"] = {W, W};
    want[b + "attn.out_proj.bias"] = {W};
    want[b + "ln_2.weight"] = {W};
    want[b + "ln_2.bias"] = {W};
    want[b + "mlp.c_fc.weight"] = {24, W};
    want[b + "mlp.c_fc.bias"] = {24};
    want[b + "mlp.c_proj.weight"] = {W, 24};
    want[b + "mlp.c_proj.bias"] = {W};
  }
  EXPECT_EQ(got, want);
  ASSERT_EQ(t.sharding_units().size(), 2u);
}

TEST(TextTower, FeaturesAreUnitNormAndDeterministic) {
  TextTower a(tiny_text(), 20), b(tiny_text(), 20);
  a.initialize(5);
  b.initialize(5);
  Tensor tok = tokens_of({1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 13, 36}, 2);
  TextOutputs oa = a.forward(tok), ob = b.forward(tok);
  ASSERT_EQ(oa.features.shape(), (Shape{2, 20}));
  ASSERT_EQ(oa.prompt.shape(), (Shape{2, 20}));
  std::vector<float> f = oa.features.to_vector<float>();
  for (int r = 0; r < 2; ++r) {
    double n = 0;
    for (int k = 0; k < 20; ++k) n += double(f[size_t(r * 20 + k)]) * f[size_t(r * 20 + k)];
    EXPECT_NEAR(n, 1.0, 1e-5) << "row " << r;
  }
  EXPECT_EQ(oa.features.to_vector<float>(), ob.features.to_vector<float>());
  EXPECT_EQ(oa.prompt.to_vector<float>(), ob.prompt.to_vector<float>());
  // A different seed gives a different model.
  TextTower c(tiny_text(), 20);
  c.initialize(6);
  EXPECT_GT(testing::max_abs_diff(c.forward(tok).features, oa.features), 1e-3);
}

TEST(TextTower, RunsEveryBlockThroughTheUnitRunner) {
  TextTower t(tiny_text(), 20);
  t.initialize(1);
  Tensor tok = tokens_of({1, 2, 3, 4, 5, 6, 7, 8}, 1);
  Tensor plain = t.forward(tok).features;
  std::vector<const Module*> seen;
  t.set_unit_runner([&](const Module& unit, const Tensor& x, const nn::UnitBody& body) {
    seen.push_back(&unit);
    return body(x);
  });
  Tensor routed = t.forward(tok).features;
  EXPECT_EQ(seen, t.sharding_units());
  EXPECT_EQ(routed.to_vector<float>(), plain.to_vector<float>());
}

// Loads fixture parameters "<cfg>.p.<name>" into the tower by checkpoint name.
void load(TextTower& t, const Fixture& fx, const std::string& cfg) {
  int loaded = 0;
  for (auto& [n, p] : t.named_parameters()) {
    const Tensor& src = fx.get(cfg + ".p." + n);
    ASSERT_EQ(src.shape(), p.shape()) << n;
    Tensor dst = p.detach();
    copy_(dst, src);
    ++loaded;
  }
  int in_fixture = 0;
  for (auto& [n, v] : fx.all())
    if (n.rfind(cfg + ".p.", 0) == 0) ++in_fixture;
  EXPECT_EQ(loaded, in_fixture) << "the PyTorch model has parameters the tower does not";
}

void parity(const std::string& cfg, const TextConfig& c) {
  Fixture fx = Fixture::load("text.bin");
  TextTower t(c, 12, DType::f64);
  load(t, fx, cfg);
  TextOutputs out = t.forward(fx.get(cfg + ".tokens"));
  expect_close(out.features, fx.get(cfg + ".features"), 1e-12, 1e-10, cfg + " features");
  expect_close(out.prompt, fx.get(cfg + ".prompt"), 1e-12, 1e-10, cfg + " prompt");
  Tensor loss =
      add(sum(mul(out.features, fx.get(cfg + ".wf"))), sum(mul(out.prompt, fx.get(cfg + ".wp"))));
  loss.backward();
  for (auto& [n, p] : t.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << n;
    expect_close(p.grad(), fx.get(cfg + ".g." + n), 1e-10, 1e-8, cfg + " grad " + n);
  }
}

TEST(TextTower, MatchesPyTorchExactGelu) {
  parity("exact", tiny_text(37, 8, 16, 2, 24, 2));
}
TEST(TextTower, MatchesPyTorchTanhGelu) {
  parity("tanh", tiny_text(29, 6, 12, 3, 20, 1, true));
}

TEST(TextTower, GradientsMatchFiniteDifferences) {
  // One block, tiny widths: every parameter kind (embedding rows used, positions, in-proj,
  // out-proj, LNs, MLP, projection, prompt head) against central differences in f64.
  TextTower t(tiny_text(11, 4, 6, 2, 8, 1), 5, DType::f64);
  t.initialize(3);
  Tensor tok = tokens_of({1, 5, 0, 0, 10, 2, 3, 7}, 2);
  std::vector<Tensor> params;
  for (auto& [n, p] : t.named_parameters()) params.push_back(p);
  auto f = [&](const std::vector<Tensor>&) {
    TextOutputs o = t.forward(tok);
    return cat({o.features, o.prompt}, 1);
  };
  EXPECT_TRUE(testing::check_gradients(f, params, {1e-6, 1e-7, 1e-5}));
}

TEST(TextTower, RejectsBadTokens) {
  TextTower t(tiny_text(), 20);
  t.initialize(1);
  expect_error([&] { t.forward(tokens_of({1, 2, 3, 4}, 1)); }, "text.context = 8");
  expect_error(
      [&] {
        t.forward(from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {1, 8}));
      },
      "i32 or i64");
  expect_error([&] { t.forward(tokens_of({1, 2, 3, 4, 5, 6, 7, 37}, 1)); }, "out of range");
  expect_error([] { TextTower(tiny_text(37, 8, 15, 2), 20); }, "not divisible by text.heads");
}

}  // namespace
}  // namespace hd::ps3
