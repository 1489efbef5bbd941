// Autoregressive generation with the KV cache: one prefill over the prompt, then one token per
// step, each step attending to the cached keys instead of recomputing the prefix (O(T) per step,
// not O(T^2)). Greedy (temperature 0) or sampling with temperature, top-k and top-p, stopping at
// a stop token or after max_new_tokens.
//
// One sequence at a time: `hdtrain vilahd ask` and the evaluations answer one question per
// call; batched generation would need per-row positions under left padding (§5).
#pragma once

#include <cstdint>
#include <vector>

#include "vilahd/qwen2.h"

namespace hd::vilahd {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (argmax, first index on ties)
  int64_t top_k = 0;         // 0: no top-k cut
  double top_p = 1.0;        // nucleus: smallest set of tokens whose probability reaches top_p
  std::vector<int64_t> stop_tokens;  // generation ends after emitting one of them
  uint64_t seed = 0;                 // sampling stream; same seed, same tokens
};

struct GenerationResult {
  std::vector<int64_t> tokens;  // the new tokens (a stop token included when it ended)
  bool stopped = false;         // ended on a stop token (not on max_new_tokens)
};

// prompt: input_ids [1, T] or inputs_embeds [1, T, H] (no mask, no positions, no cache: those
// are generate's own). Runs without gradients.
GenerationResult generate(const Qwen2ForCausalLM& model, const Qwen2Inputs& prompt,
                          const GenerationOptions& options);

// The choice of the next token from one row of logits [V] (f32 on the host); exposed for tests.
int64_t choose_next_token(const std::vector<float>& logits, const GenerationOptions& options,
                          uint64_t& rng_state);

}  // namespace hd::vilahd
