// Gradient checking against central finite differences in f64 (ggml's and PyTorch's habit).
//
// check_gradients(f, inputs) builds L = sum(f(inputs) * W) with a fixed random W (so every
// output element contributes), runs backward, and compares each input's gradient with
// (L(x + eps e_i) - L(x - eps e_i)) / 2 eps for every element i. Inputs should be contiguous
// f64 leaves; to test non-contiguous or broadcast inputs, let `f` permute/slice/expand them.
#pragma once

#include <functional>
#include <vector>

#include "autograd/tensor.h"

namespace hd::testing {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  // 0 checks every element. Otherwise at most this many elements of each input, spread evenly
  // over it (first and last included): for whole-model checks, where every element costs two
  // forward passes of the model and a sample of each tensor finds the same bugs.
  int64_t max_elements_per_input = 0;
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Adds a GoogleTest failure (naming the input and element) for each mismatch; returns true when
// everything matched.
bool check_gradients(const TensorFn& f, const std::vector<Tensor>& inputs,
                     GradcheckOptions options = {});

// A contiguous f64 leaf with values uniform in [lo, hi), requiring grad.
Tensor random_leaf(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0);

// Max |a - b| over elements (a and b converted to f64); shapes must match.
double max_abs_diff(const Tensor& a, const Tensor& b);

}  // namespace hd::testing
