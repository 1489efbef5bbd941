// conv2d: each of the four paths against finite differences (f64) and against a direct
// reference loop; argument errors.
#include "ops/conv.h"

#include <gtest/gtest.h>

#include <vector>

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/errors.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::max_abs_diff;
using testing::random_leaf;

// The definition, one output element at a time (f64, groups 1 or depthwise).
Tensor conv_reference(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s, int64_t p,
                      int64_t groups) {
  int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t O = w.size(0), ci = w.size(1), kh = w.size(2), kw = w.size(3);
  int64_t oh = (H + 2 * p - kh) / s + 1, ow = (W + 2 * p - kw) / s + 1;
  std::vector<double> xv = x.to_vector<double>(), wv = w.to_vector<double>(), out;
  std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>(size_t(O));
  for (int64_t n = 0; n < B; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xo = 0; xo < ow; ++xo) {
          double acc = bv[size_t(o)];
          for (int64_t c = 0; c < ci; ++c) {
            int64_t cin = groups == 1 ? c : o;
            for (int64_t ky = 0; ky < kh; ++ky)
              for (int64_t kx = 0; kx < kw; ++kx) {
                int64_t iy = y * s - p + ky, ix = xo * s - p + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += xv[size_t(((n * C + cin) * H + iy) * W + ix)] *
                       wv[size_t(((o * ci + c) * kh + ky) * kw + kx)];
              }
          }
          out.push_back(acc);
        }
  return from_vector(out, {B, O, oh, ow});
}

struct Case {
  const char* name;
  Shape x, w;
  int64_t stride, padding, groups;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

class ConvPaths : public ::testing::TestWithParam<Case> {};

TEST_P(ConvPaths, MatchesReference) {
  const Case& c = GetParam();
  Tensor x = random_leaf(c.x, 1), w = random_leaf(c.w, 2), b = random_leaf({c.w[0]}, 3);
  Tensor got = conv2d(x, w, b, c.stride, c.padding, c.groups);
  Tensor want = conv_reference(x, w, b, c.stride, c.padding, c.groups);
  ASSERT_EQ(got.shape(), want.shape());
  EXPECT_LT(max_abs_diff(got, want), 1e-12);
  // f32 agrees too (to rounding).
  Tensor got32 = conv2d(to(x, DType::f32), to(w, DType::f32), to(b, DType::f32), c.stride,
                        c.padding, c.groups);
  EXPECT_LT(max_abs_diff(got32, want), 1e-5);
}

TEST_P(ConvPaths, Gradients) {
  const Case& c = GetParam();
  Tensor x = random_leaf(c.x, 4), w = random_leaf(c.w, 5), b = random_leaf({c.w[0]}, 6);
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return conv2d(in[0], in[1], in[2], c.stride, c.padding, c.groups);
      },
      {x, w, b});
}

// Non-contiguous input: x stored NHWC and permuted to NCHW inside the function.
TEST_P(ConvPaths, GradientsNonContiguousInput) {
  const Case& c = GetParam();
  Tensor x = random_leaf({c.x[0], c.x[2], c.x[3], c.x[1]}, 7), w = random_leaf(c.w, 8);
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return conv2d(permute(in[0], {0, 3, 1, 2}), in[1], Tensor(), c.stride, c.padding, c.groups);
      },
      {x, w});
}

INSTANTIATE_TEST_SUITE_P(
    Conv, ConvPaths,
    ::testing::Values(Case{"patch", {2, 3, 8, 8}, {4, 3, 4, 4}, 4, 0, 1},
                      Case{"patch_ragged", {1, 2, 9, 11}, {3, 2, 4, 4}, 4, 0, 1},
                      Case{"pointwise", {2, 4, 5, 6}, {3, 4, 1, 1}, 1, 0, 1},
                      Case{"pointwise_s2p1", {1, 3, 5, 6}, {2, 3, 1, 1}, 2, 1, 1},
                      Case{"depthwise7_pad3", {2, 3, 9, 8}, {3, 1, 7, 7}, 1, 3, 3},
                      Case{"depthwise3_s2p1", {1, 2, 7, 6}, {2, 1, 3, 3}, 2, 1, 2},
                      // Stride 1 runs in blocks of 32 (f32) / 16 (f64) output columns: rows
                      // of several blocks with a ragged last one, padding beyond the kernel
                      // (negative in the flipped backward pass), none, and a non-square kernel.
                      Case{"depthwise7_wide", {1, 2, 5, 37}, {2, 1, 7, 7}, 1, 3, 2},
                      Case{"depthwise3_pad3", {1, 2, 5, 6}, {2, 1, 3, 3}, 1, 3, 2},
                      Case{"depthwise3x5_pad0", {2, 2, 6, 9}, {2, 1, 3, 5}, 1, 0, 2},
                      Case{"general3_s2p1", {2, 3, 7, 8}, {4, 3, 3, 3}, 2, 1, 1},
                      Case{"general2x3", {1, 2, 6, 7}, {3, 2, 2, 3}, 1, 0, 1}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Conv, UnfoldFoldAreAdjoint) {
  // <unfold(x), c> == <x, fold(c)> for random x, c: fold is the exact transpose of unfold.
  Tensor x = random_leaf({2, 3, 7, 6}, 11);
  Tensor cols = unfold2d(x, 3, 2, 2, 1);
  Tensor c = random_leaf(cols.shape(), 12);
  Tensor back = fold2d(c, x.shape(), 3, 2, 2, 1);
  double lhs = sum(mul(cols, c)).item<double>(), rhs = sum(mul(x, back)).item<double>();
  EXPECT_NEAR(lhs, rhs, 1e-10);
}

TEST(Conv, DepthwiseKernelsMatchDefinition) {
  // The raw backward kernels against the gradients of the reference conv (via the general path
  // on one channel at a time, which is a plain groups=1 conv).
  Tensor x = random_leaf({2, 3, 6, 5}, 13), w = random_leaf({3, 1, 3, 3}, 14);
  Tensor g = random_leaf({2, 3, 6, 5}, 15);
  Tensor gx = depthwise_conv2d_backward_input(g, w, x.shape(), 1, 1);
  Tensor gw = depthwise_conv2d_backward_weight(g, x, w.shape(), 1, 1);
  for (int64_t ch = 0; ch < 3; ++ch) {
    Tensor xc = narrow(x, 1, ch, 1).detach(), wc = narrow(w, 0, ch, 1).detach();
    xc = clone(xc);
    wc = clone(wc);
    xc.requires_grad_(true);
    wc.requires_grad_(true);
    conv2d(xc, wc, Tensor(), 1, 1, 1).backward(clone(narrow(g, 1, ch, 1)));
    EXPECT_LT(max_abs_diff(xc.grad(), narrow(gx, 1, ch, 1)), 1e-12);
    EXPECT_LT(max_abs_diff(wc.grad(), narrow(gw, 0, ch, 1)), 1e-12);
  }
}

TEST(Conv, DepthwiseStride1BackwardInF32MatchesF64) {
  // The f32 kernels block by 32 columns, the f64 ones by 16: the ragged tails differ.
  Tensor x = random_leaf({2, 3, 11, 70}, 16), w = random_leaf({3, 1, 7, 7}, 17);
  Tensor g = random_leaf({2, 3, 11, 70}, 18);
  Tensor gx = depthwise_conv2d_backward_input(g, w, x.shape(), 1, 3);
  Tensor gw = depthwise_conv2d_backward_weight(g, x, w.shape(), 1, 3);
  Tensor x32 = to(x, DType::f32), w32 = to(w, DType::f32), g32 = to(g, DType::f32);
  Tensor gx32 = depthwise_conv2d_backward_input(g32, w32, x.shape(), 1, 3);
  Tensor gw32 = depthwise_conv2d_backward_weight(g32, x32, w.shape(), 1, 3);
  EXPECT_LT(max_abs_diff(to(gx32, DType::f64), gx), 1e-4);
  EXPECT_LT(max_abs_diff(to(gw32, DType::f64), gw), 1e-3);  // sums of 1540 products
  EXPECT_GT(max_abs_diff(gx, zeros_like(gx)), 1.0);
}

// bf16 depthwise convolution of stride 1 reads and writes bf16 in place (ops/conv.cpp,
// reads_16_bit): its output and both gradients are the f32 computation on the same values,
// rounded once, bit for bit (what the f32 round trip it replaced gave), also with the gradient
// arriving as a permuted view (ConvNeXt's NHWC block).
TEST(Conv, Bf16DepthwiseIsTheF32ResultRounded) {
  Tensor x = to(random_leaf({2, 5, 9, 11}, 41).detach(), DType::bf16);
  Tensor w = to(random_leaf({5, 1, 7, 7}, 42).detach(), DType::bf16);
  Tensor g_nhwc = to(random_leaf({2, 9, 11, 5}, 44).detach(), DType::bf16);
  auto run = [&](DType dt) {
    Tensor lx = to(x, dt).detach().requires_grad_(true);
    Tensor lw = to(w, dt).detach().requires_grad_(true);
    Tensor y = conv2d(lx, lw, Tensor(), 1, 3, 5);
    y.backward(permute(to(g_nhwc, dt), {0, 3, 1, 2}));
    return std::vector<Tensor>{y.detach(), lx.grad(), lw.grad()};
  };
  const std::vector<Tensor> half = run(DType::bf16), full = run(DType::f32);
  for (size_t i = 0; i < half.size(); ++i) {
    ASSERT_EQ(half[i].dtype(), DType::bf16);
    const Tensor want = to(full[i], DType::bf16);
    const bf16_t* p = half[i].data<bf16_t>();
    const bf16_t* q = contiguous(want).data<bf16_t>();
    for (int64_t k = 0; k < want.numel(); ++k)
      ASSERT_EQ(p[k].bits, q[k].bits) << "tensor " << i << " element " << k;
  }
}

TEST(Conv, DepthwiseUsesItsKernel) {
  // Without a bias the output comes straight from the depthwise node (not im2col + matmul).
  Tensor x = random_leaf({1, 4, 6, 6}, 16), w = random_leaf({4, 1, 7, 7}, 17);
  Tensor y = conv2d(x, w, Tensor(), 1, 3, 4);
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "DepthwiseConv2dBackward");
}

TEST(Conv, KnownValues) {
  // All-ones 3x3 kernel with padding 1 counts the in-image neighbours of each pixel.
  Tensor x = ones({1, 1, 3, 3}), w = ones({1, 1, 3, 3});
  EXPECT_EQ(conv2d(x, w, Tensor(), 1, 1).to_vector<float>(),
            (std::vector<float>{4, 6, 4, 6, 9, 6, 4, 6, 4}));
  Tensor b = from_vector<float>({0.5f}, {1});
  EXPECT_EQ(conv2d(x, w, b, 1, 1, 1).to_vector<float>()[4], 9.5f);
}

using testing::expect_error;

// conv2d's patch path gathers an image (no gradient) with cpu::gather_patches and an input that
// needs a gradient as a copy of a permuted view (whose backward scatters back): both give the
// same bits, at a size with a partial last patch row and column (dropped) and for an input
// sliced out of a wider one (row stride != width).
TEST(Conv, PatchGatherKernelMatchesTheViewPath) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    Tensor wide = to(random_leaf({2, 3, 31, 40}, 41).detach(), dt);
    Tensor w = to(random_leaf({5, 3, 7, 7}, 42).detach(), dt);
    Tensor b = to(random_leaf({5}, 43).detach(), dt);
    for (const Tensor& x : {contiguous(narrow(wide, 3, 0, 30)), narrow(wide, 3, 2, 37)}) {
      Tensor image = conv2d(x, w, b, 7);
      Tensor with_grad = conv2d(x.detach().requires_grad_(true), w, b, 7);
      ASSERT_EQ(image.shape(), (Shape{2, 5, 4, x.size(3) / 7}));
      EXPECT_EQ(to(image, DType::f64).to_vector<double>(),
                to(with_grad.detach(), DType::f64).to_vector<double>())
          << dtype_name(dt);
      EXPECT_LT(
          max_abs_diff(to(image, DType::f64), conv_reference(to(x, DType::f64), to(w, DType::f64),
                                                             to(b, DType::f64), 7, 0, 1)),
          dt == DType::bf16  ? 0.2
          : dt == DType::f32 ? 1e-4
                             : 1e-12)
          << dtype_name(dt);
    }
  }
}

// A patch convolution takes an f32 image into a bf16 (or f64) model: the patches are converted
// as they are gathered. The result and the weight and bias gradients equal, bit for bit, those
// of the same conv over the image converted first (each value is rounded once either way).
TEST(Conv, PatchConvConvertsItsInputInTheGather) {
  Tensor image = to(random_leaf({2, 3, 56, 56}, 31).detach(), DType::f32);
  for (DType dt : {DType::bf16, DType::f64}) {
    Tensor w = to(random_leaf({8, 3, 28, 28}, 32).detach(), dt).requires_grad_(true);
    Tensor b = to(random_leaf({8}, 33).detach(), dt).requires_grad_(true);
    Tensor fused = conv2d(image, w, b, 28);
    ASSERT_EQ(fused.dtype(), dt);
    Tensor g = to(random_leaf(fused.shape(), 34).detach(), dt);
    fused.backward(g);
    Tensor gw = w.grad(), gb = b.grad();
    w.zero_grad();
    b.zero_grad();
    Tensor first = conv2d(to(image, dt), w, b, 28);
    first.backward(g);
    EXPECT_EQ(to(fused, DType::f64).to_vector<double>(), to(first, DType::f64).to_vector<double>())
        << dtype_name(dt);
    EXPECT_EQ(to(gw, DType::f64).to_vector<double>(), to(w.grad(), DType::f64).to_vector<double>());
    EXPECT_EQ(to(gb, DType::f64).to_vector<double>(), to(b.grad(), DType::f64).to_vector<double>());
  }
  // The gradient reaches an f32 input through the conversion, in f32.
  Tensor x = to(random_leaf({1, 2, 4, 4}, 35).detach(), DType::f32).requires_grad_(true);
  Tensor w64 = random_leaf({3, 2, 2, 2}, 36).detach();
  sum(conv2d(x, w64, Tensor(), 2)).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  Tensor want = conv2d(to(x.detach(), DType::f64), w64, Tensor(), 2);
  EXPECT_LT(max_abs_diff(conv2d(x.detach(), w64, Tensor(), 2), want), 1e-6);
  // Any other conv still needs one dtype.
  expect_error(
      [&] {
        conv2d(zeros({1, 2, 8, 8}), to(zeros({3, 2, 3, 3}), DType::bf16), Tensor());
      },
      "conv2d: dtype mismatch");
}

TEST(Conv, ErrorsNameOpAndShapes) {
  Tensor x = zeros({1, 4, 8, 8});
  expect_error(
      [&] {
        conv2d(x, zeros({4, 2, 3, 3}), Tensor(), 1, 1, 2);
      },
      "conv2d: groups = 2 is not supported");
  expect_error([&] { conv2d(x, zeros({4, 3, 3, 3}), Tensor()); }, "input [1, 4, 8, 8] has 4");
  expect_error([&] { conv2d(x, zeros({4, 4, 3, 3}), Tensor(), 1, 0, 3); }, "conv2d: groups = 3");
  expect_error([&] { conv2d(x, zeros({5, 4, 3, 3}), zeros({4})); }, "must be [5]");
  expect_error([&] { conv2d(x, zeros({5, 4, 9, 9}), Tensor()); }, "is larger than the padded");
  expect_error(
      [&] {
        conv2d(zeros({4, 8, 8}), zeros({5, 4, 3, 3}), Tensor());
      },
      "conv2d: input must be [B, C, H, W]");
}

}  // namespace
}  // namespace hd
