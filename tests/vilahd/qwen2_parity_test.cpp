// The Qwen2 LLM against HF transformers 4.46.3 (tests/fixtures/make_qwen2.py): two tiny random
// models saved with save_pretrained (one sharded with an index, one single-file and tied) are
// loaded through our HF import, run on a batch with a full, a right-padded and a left-padded row,
// and compared: logits and final hidden states at every real position, the LM loss, and the
// gradient of every parameter (fp32, 1e-5 relative). Also RoPE's inv_freq and a greedy
// continuation through the KV cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "tests/testing/fixtures.h"
#include "vilahd/generation.h"
#include "vilahd/qwen2_hf.h"

namespace hd::vilahd {
namespace {

using hd::testing::expect_close;
using hd::testing::Fixture;

const Fixture& fixture() {
  static Fixture f = Fixture::load("qwen2.bin");
  return f;
}

std::string folder(const std::string& c) {
  return std::string(HD_FIXTURE_DIR) + "/" + c;
}

// Zeroes the padded positions of [B, T, ...] so only real tokens are compared (HF's outputs at
// padded queries are arbitrary, qwen2-reference.md §3.4).
Tensor real_positions(const Tensor& x, const Tensor& mask) {
  Shape s = mask.shape();
  while (int64_t(s.size()) < x.dim()) s.push_back(1);
  return mul(x, to(reshape(mask, s), x.dtype()));
}

// Within 1e-5 of the tensor's scale: |a - e| <= 1e-5 (|e| + max |e|). fp32 rounding of sums over
// O(1) terms leaves ~1e-6 absolute error on logits near zero, which a purely relative bound
// would flag although both sides agree to 6e-7 of the largest logit.
void expect_close_to_scale(const Tensor& actual, const Tensor& expected, const std::string& what) {
  std::vector<float> e = to(expected, DType::f32).to_vector<float>();
  double scale = 0;
  for (float v : e) scale = std::max(scale, double(std::fabs(v)));
  expect_close(actual, expected, 1e-5 * scale, 1e-5, what);
}

class Qwen2Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Qwen2Parity, LogitsHiddenLossAndEveryGradientMatchHF) {
  const std::string c = GetParam();
  auto model = load_hf_qwen2(folder(c));
  const Fixture& f = fixture();
  const Tensor& mask = f.get(c + ".attention_mask");
  Qwen2Inputs in;
  in.input_ids = f.get(c + ".input_ids");
  in.attention_mask = mask;
  Tensor hidden = model->hidden_states(in);
  Tensor logits = model->logits(hidden);
  expect_close_to_scale(real_positions(logits, mask), real_positions(f.get(c + ".logits"), mask),
                        c + " logits");
  expect_close_to_scale(real_positions(hidden, mask),
                        real_positions(f.get(c + ".hidden_last"), mask), c + " hidden_states[-1]");
  Tensor loss = causal_lm_loss(logits, f.get(c + ".labels"));
  expect_close(loss, f.get(c + ".loss"), 1e-6, 1e-5, c + " loss");

  loss.backward();
  int compared = 0;
  for (const auto& [name, p] : model->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    expect_close_to_scale(p.grad(), f.get(c + ".grad." + name), c + " grad " + name);
    ++compared;
  }
  EXPECT_EQ(compared, 3 + 12 * model->config().num_hidden_layers - (model->lm_head ? 0 : 1));
}

TEST_P(Qwen2Parity, RopeInverseFrequenciesEqualTorch) {
  const std::string c = GetParam();
  const Qwen2Config config = load_qwen2_config(folder(c) + "/config.json");
  std::vector<float> ours = qwen2_inv_freq(config.head_dim(), config.rope_theta);
  std::vector<float> torch = fixture().get(c + ".inv_freq").to_vector<float>();
  ASSERT_EQ(ours.size(), torch.size());
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_EQ(ours[i], torch[i]) << "inv_freq[" << i << "]";
}

TEST_P(Qwen2Parity, GreedyGenerationWithTheCacheEqualsHFFullRecompute) {
  const std::string c = GetParam();
  auto model = load_hf_qwen2(folder(c));
  std::vector<int64_t> expected = fixture().get(c + ".generated").to_vector<int64_t>();
  Qwen2Inputs prompt;
  prompt.input_ids =
      reshape(narrow(narrow(fixture().get(c + ".input_ids"), 0, 0, 1), 1, 0, 5), {1, 5});
  GenerationOptions o;
  o.max_new_tokens = int64_t(expected.size()) - 5;
  GenerationResult r = generate(*model, prompt, o);
  EXPECT_EQ(r.tokens, std::vector<int64_t>(expected.begin() + 5, expected.end()));
  EXPECT_FALSE(r.stopped);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Qwen2Parity, ::testing::Values("qwen2_gqa", "qwen2_tied"));

}  // namespace
}  // namespace hd::vilahd
