// Parity with PyTorch (tests/fixtures/make_attention.py): f32 outputs and gradients of
// attention (prefix, mask, causal, an all-masked row, tiles crossed) and RoPE.
#include <gtest/gtest.h>

#include <string>

#include "ops/attention.h"
#include "ops/rope.h"
#include "ops/shape.h"
#include "tests/testing/fixtures.h"

namespace hd {
namespace {

using testing::expect_close;
using testing::Fixture;

const Fixture& fixture() {
  static Fixture f = Fixture::load("attention.bin");
  return f;
}

Tensor leaf(const std::string& name) {
  Tensor t = clone(fixture().get(name));
  t.requires_grad_(true);
  return t;
}

void check_attention_case(const std::string& name, bool permuted_inputs) {
  const Fixture& f = fixture();
  std::vector<double> params = f.get(name + ".params").to_vector<double>();
  std::vector<std::string> names = {"q", "k", "v"};
  if (f.has(name + ".prefix_k")) names.insert(names.end(), {"prefix_k", "prefix_v"});
  std::vector<Tensor> leaves;
  for (const std::string& n : names) leaves.push_back(leaf(name + "." + n));
  // Optionally feed heads-strided views ([B, N, H, D] storage), as the ViT does.
  auto input = [&](size_t i) {
    if (!permuted_inputs) return leaves[i];
    return transpose(contiguous(transpose(leaves[i], 1, 2)), 1, 2);
  };
  AttentionOptions o;
  o.scale = params[0];
  o.causal = params[1] != 0;
  if (names.size() > 3) {
    o.prefix_k = input(3);
    o.prefix_v = input(4);
  }
  if (f.has(name + ".mask")) o.key_mask = f.get(name + ".mask");
  Tensor out = scaled_dot_product_attention(input(0), input(1), input(2), o);
  expect_close(out, f.get(name + ".out"), 2e-6, 1e-5, name + ".out");
  out.backward(f.get(name + ".grad_out"));
  for (size_t i = 0; i < names.size(); ++i) {
    expect_close(leaves[i].grad(), f.get(name + ".grad_" + names[i]), 1e-5, 1e-4,
                 name + ".grad_" + names[i]);
  }
}

TEST(AttentionParity, AcrossTilesWithPrefixAndMask) {
  check_attention_case("tiles", false);
}
TEST(AttentionParity, CausalPrefixMaskAllMaskedRow) {
  check_attention_case("causal", false);
}
TEST(AttentionParity, Plain) {
  check_attention_case("plain", false);
}
TEST(AttentionParity, StridedInputs) {
  check_attention_case("tiles", true);
  check_attention_case("causal", true);
}

TEST(AttentionParity, Rope) {
  const Fixture& f = fixture();
  Tensor x = leaf("rope.x");
  RopeTables t = rope_tables(x.size(2), x.size(3), 10000.0, DType::f32);
  expect_close(t.cos, f.get("rope.cos"), 1e-7, 1e-6, "rope.cos");
  expect_close(t.sin, f.get("rope.sin"), 1e-7, 1e-6, "rope.sin");
  Tensor y = apply_rope(x, t);
  expect_close(y, f.get("rope.out"), 1e-6, 1e-5, "rope.out");
  y.backward(f.get("rope.grad_out"));
  expect_close(x.grad(), f.get("rope.grad_x"), 1e-6, 1e-5, "rope.grad_x");
}

}  // namespace
}  // namespace hd
