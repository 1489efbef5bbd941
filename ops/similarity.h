// Vector normalisation and cosine similarity (PyTorch F.normalize / F.cosine_similarity rules).
#pragma once

#include "autograd/tensor.h"

namespace hd {

// x / max(||x||_2, eps) along dim.
Tensor l2_normalize(const Tensor& x, int64_t dim = -1, double eps = 1e-12);
// sum(a*b, dim) / max(||a|| * ||b||, eps); a and b broadcast.
Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim = -1, double eps = 1e-8);

}  // namespace hd
