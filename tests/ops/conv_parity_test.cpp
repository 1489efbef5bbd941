// PyTorch parity for the vision family: conv2d (every path), interpolate (bicubic and bilinear
// with and without antialias, nearest, area), adaptive max pooling, top-k, gather, index_add
// and embedding. tests/fixtures/make_vision.py stores inputs, outputs, a fixed upstream
// gradient and the input gradients; we redo forward + backward in f32 and compare.
#include <gtest/gtest.h>

#include <string>

#include "ops/conv.h"
#include "ops/index.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "tests/testing/fixtures.h"

namespace hd {
namespace {

using testing::expect_close;
using testing::Fixture;

const Fixture& fx() {
  static Fixture f = Fixture::load("vision.bin");
  return f;
}

// A fresh leaf holding fixture tensor `name`.
Tensor leaf(const std::string& name) {
  Tensor t = clone(fx().get(name));
  t.requires_grad_(true);
  return t;
}

// f32 sums of up to a few hundred products: PyTorch and we add in different orders.
constexpr double kAtol = 2e-5, kRtol = 1e-4;

void check(const std::string& name, const Tensor& out, const std::string& gout_name,
           const std::vector<std::pair<std::string, Tensor>>& inputs) {
  expect_close(out, fx().get(name + ".out"), kAtol, kRtol, name + " output");
  out.backward(fx().get(gout_name));
  for (const auto& [key, t] : inputs) {
    ASSERT_TRUE(t.grad().defined()) << name << ": no gradient for " << key;
    expect_close(t.grad(), fx().get(name + ".grad_" + key), kAtol, kRtol,
                 name + " gradient of " + key);
  }
}

struct ConvCase {
  const char* name;
  int64_t stride, padding, groups;
};

void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << c.name;
}

class ConvParity : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvParity, OutputAndGradients) {
  const ConvCase& c = GetParam();
  std::string n = c.name;
  Tensor x = leaf(n + ".x"), w = leaf(n + ".w"), b = leaf(n + ".b");
  Tensor out = conv2d(x, w, b, c.stride, c.padding, c.groups);
  check(n, out, n + ".gout", {{"x", x}, {"w", w}, {"b", b}});
}

INSTANTIATE_TEST_SUITE_P(Paths, ConvParity,
                         ::testing::Values(ConvCase{"conv_patch", 14, 0, 1},
                                           ConvCase{"conv_1x1", 1, 0, 1},
                                           ConvCase{"conv_dw", 1, 3, 4},
                                           ConvCase{"conv_general", 2, 1, 1}),
                         [](const auto& info) { return std::string(info.param.name); });

struct ResampleCase {
  const char* tag;
  ResampleMode mode;
  bool antialias;
};

void PrintTo(const ResampleCase& c, std::ostream* os) {
  *os << c.tag;
}

class ResampleParity : public ::testing::TestWithParam<ResampleCase> {};

TEST_P(ResampleParity, DownAndUp) {
  const ResampleCase& c = GetParam();
  for (const char* dir : {"down", "up"}) {
    SCOPED_TRACE(dir);
    std::string name = std::string(c.tag) + "_" + dir;
    Tensor x = leaf(std::string(dir) + ".x");
    bool down = std::string(dir) == "down";
    int64_t oh = down ? 11 : 64, ow = down ? 9 : 48;
    Tensor out = c.mode == ResampleMode::area ? adaptive_avg_pool2d(x, oh, ow)
                                              : interpolate(x, oh, ow, c.mode, c.antialias);
    check(name, out, std::string(dir) + ".gout", {{"x", x}});
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, ResampleParity,
                         ::testing::Values(ResampleCase{"bicubic", ResampleMode::bicubic, false},
                                           ResampleCase{"bicubic_aa", ResampleMode::bicubic, true},
                                           ResampleCase{"bilinear", ResampleMode::bilinear, false},
                                           ResampleCase{"bilinear_aa", ResampleMode::bilinear,
                                                        true},
                                           ResampleCase{"nearest", ResampleMode::nearest, false},
                                           ResampleCase{"area", ResampleMode::area, false}),
                         [](const auto& info) { return std::string(info.param.tag); });

TEST(VisionParity, AdaptiveMaxPool) {
  Tensor x = leaf("maxpool_54.x");
  check("maxpool_54", adaptive_max_pool2d(x, 27, 27).values, "maxpool_54.gout", {{"x", x}});
  Tensor y = leaf("maxpool_odd.x");
  ValuesIndices r = adaptive_max_pool2d(y, 3, 4);
  EXPECT_EQ(r.indices.to_vector<int64_t>(), fx().get("maxpool_odd.indices").to_vector<int64_t>());
  check("maxpool_odd", r.values, "maxpool_odd.gout", {{"x", y}});
}

TEST(VisionParity, Topk) {
  Tensor x = leaf("topk.x");
  ValuesIndices r = topk(x, 5);
  EXPECT_EQ(r.indices.to_vector<int64_t>(), fx().get("topk.indices").to_vector<int64_t>());
  check("topk", r.values, "topk.gout", {{"x", x}});
}

TEST(VisionParity, Gather) {
  Tensor x = leaf("gather.x");
  check("gather", gather(x, 1, fx().get("gather.index")), "gather.gout", {{"x", x}});
}

TEST(VisionParity, IndexAdd) {
  Tensor x = leaf("index_add.x"), src = leaf("index_add.src");
  check("index_add", index_add(x, 0, fx().get("index_add.index"), src), "index_add.gout",
        {{"x", x}, {"src", src}});
}

TEST(VisionParity, Embedding) {
  Tensor w = leaf("embedding.w");
  check("embedding", embedding(w, fx().get("embedding.ids")), "embedding.gout", {{"w", w}});
}

}  // namespace
}  // namespace hd
