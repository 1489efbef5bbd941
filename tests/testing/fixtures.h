// Reader for the PyTorch fixtures in tests/fixtures/*.bin (written by
// tests/fixtures/make_fixtures.py; regenerate with `scripts/make_fixtures.sh`).
//
// Format (little endian): magic "HDFX1\n", then records until EOF, each
//   u32 name_len, name bytes, u8 dtype (hd::DType code), u32 ndim, i64 shape[ndim], raw data.
#pragma once

#include <map>
#include <string>

#include "autograd/tensor.h"

namespace hd::testing {

class Fixture {
 public:
  // Loads tests/fixtures/<file>; throws naming the file if it is missing or malformed.
  static Fixture load(const std::string& file);
  // The tensor called `name`; throws naming the file and the missing name.
  const Tensor& get(const std::string& name) const;
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const std::map<std::string, Tensor>& all() const { return tensors_; }

 private:
  std::string file_;
  std::map<std::string, Tensor> tensors_;
};

// Expects |actual - expected| <= atol + rtol * |expected| elementwise (GoogleTest failures name
// `what` and the first few bad elements).
void expect_close(const Tensor& actual, const Tensor& expected, double atol, double rtol,
                  const std::string& what);

}  // namespace hd::testing
