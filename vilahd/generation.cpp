#include "vilahd/generation.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/node.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd::vilahd {

namespace {

// splitmix64: a tiny, portable stream (std:: distributions differ between standard libraries).
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform01(uint64_t& state) {
  return double(next_random(state) >> 11) * 0x1.0p-53;
}

}  // namespace

int64_t choose_next_token(const std::vector<float>& logits, const GenerationOptions& o,
                          uint64_t& rng_state) {
  HD_CHECK(!logits.empty(), "generate: empty logits");
  if (o.temperature <= 0) {
    return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates sorted by logit (ties by index, so the order is deterministic).
  std::vector<int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  size_t keep = order.size();
  if (o.top_k > 0) keep = std::min(keep, size_t(o.top_k));
  const double top = logits[size_t(order[0])];
  std::vector<double> prob(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    prob[i] = std::exp((double(logits[size_t(order[i])]) - top) / o.temperature);
    total += prob[i];
  }
  if (o.top_p < 1.0) {
    double mass = 0;
    size_t n = 0;
    while (n < keep && mass < o.top_p * total) mass += prob[n++];
    keep = std::max<size_t>(n, 1);
    total = mass;
  }
  double u = uniform01(rng_state) * total;
  for (size_t i = 0; i < keep; ++i) {
    if (u < prob[i]) return order[i];
    u -= prob[i];
  }
  return order[keep - 1];
}

GenerationResult generate(const Qwen2ForCausalLM& model, const Qwen2Inputs& prompt,
                          const GenerationOptions& o) {
  HD_CHECK(!prompt.cache && !prompt.attention_mask.defined() && !prompt.position_ids.defined(),
           "generate: the prompt must come without cache, mask or positions");
  const Tensor& first = prompt.input_ids.defined() ? prompt.input_ids : prompt.inputs_embeds;
  HD_CHECK(first.defined() && first.size(0) == 1, "generate: one sequence at a time, got ",
           first.defined() ? first.str() : std::string("nothing"));
  HD_CHECK(o.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");
  HD_CHECK(o.temperature >= 0 && o.top_p > 0 && o.top_p <= 1.0 && o.top_k >= 0,
           "generate: temperature >= 0, 0 < top_p <= 1 and top_k >= 0 are required");
  NoGradGuard no_grad;
  Qwen2KVCache cache = model.new_cache();
  uint64_t rng = o.seed;
  GenerationResult result;

  Qwen2Inputs step = prompt;
  step.cache = &cache;
  const Device device = first.device();
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    Tensor hidden = model.hidden_states(step);
    Tensor last = narrow(hidden, 1, hidden.size(1) - 1, 1);  // only the last position's logits
    std::vector<float> logits = to(model.logits(last), DType::f32).to_vector<float>();
    const int64_t token = choose_next_token(logits, o, rng);
    result.tokens.push_back(token);
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), token) != o.stop_tokens.end()) {
      result.stopped = true;
      break;
    }
    step = Qwen2Inputs{};
    step.input_ids = from_vector<int64_t>({token}, {1, 1}, DType::i64);
    if (device != Device::cpu()) step.input_ids = to(step.input_ids, device);
    step.cache = &cache;
  }
  return result;
}

}  // namespace hd::vilahd
