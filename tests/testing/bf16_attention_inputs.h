// Inputs for the tests of the bf16 attention kernels (tests/ops/attention_bf16_test.cpp,
// attention_dpbf16_test.cpp): bf16 leaves q, k, v and an optional prefix, a key mask that hides
// about one key in five but never a row's first own key, and the weight of the loss
// sum(out * weight).
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/random.h"
#include "ops/attention.h"
#include "ops/factory.h"

namespace hd::testing {

struct Bf16AttentionCase {
  const char* name;
  int64_t B, H, Nq, Nk, Np, Dh;
  bool mask, causal;
};

struct Bf16AttentionInputs {
  std::vector<Tensor> leaves;  // q, k, v [, prefix_k, prefix_v]: bf16 leaves
  AttentionOptions o;
  Tensor weight;  // the loss is sum(out * weight)
};

inline Bf16AttentionInputs make_bf16_attention_inputs(const Bf16AttentionCase& c, uint64_t seed,
                                                      const char* stream) {
  Generator gen(seed, stream);
  auto leaf = [&](int64_t n) {
    return uniform({c.B, c.H, n, c.Dh}, -1.5, 1.5, gen, DType::bf16).requires_grad_(true);
  };
  Bf16AttentionInputs in;
  in.leaves = {leaf(c.Nq), leaf(c.Nk), leaf(c.Nk)};
  if (c.Np > 0) {
    in.leaves.push_back(leaf(c.Np));
    in.leaves.push_back(leaf(c.Np));
  }
  if (c.mask) {
    std::vector<bool> m(size_t(c.B * (c.Np + c.Nk)));
    for (size_t i = 0; i < m.size(); ++i) m[i] = (i * 7 + seed) % 5 != 0;
    for (int64_t b = 0; b < c.B; ++b) m[size_t(b * (c.Np + c.Nk) + c.Np)] = true;
    in.o.key_mask = from_vector(m, {c.B, c.Np + c.Nk});
  }
  in.o.causal = c.causal;
  in.weight = uniform({c.B, c.H, c.Nq, c.Dh}, -1, 1, gen);
  return in;
}

}  // namespace hd::testing
