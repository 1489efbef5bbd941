#include "tests/testing/fixtures.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

namespace hd::testing {

Fixture Fixture::load(const std::string& file) {
  std::string path = std::string(HD_FIXTURE_DIR) + "/" + file;
  std::ifstream in(path, std::ios::binary);
  HD_CHECK(in, "fixture file not found: ", path,
           " (regenerate with scripts/make_fixtures.sh, which needs python3-torch)");
  char magic[6];
  in.read(magic, 6);
  HD_CHECK(in && std::memcmp(magic, "HDFX1\n", 6) == 0, "fixture ", path, ": bad magic");
  Fixture f;
  f.file_ = path;
  for (;;) {
    uint32_t name_len;
    if (!in.read(reinterpret_cast<char*>(&name_len), 4)) break;
    HD_CHECK(name_len < 4096, "fixture ", path, ": corrupt record (name length ", name_len, ")");
    std::string name(name_len, '\0');
    uint8_t code;
    uint32_t ndim;
    in.read(name.data(), name_len);
    in.read(reinterpret_cast<char*>(&code), 1);
    in.read(reinterpret_cast<char*>(&ndim), 4);
    HD_CHECK(in && code <= uint8_t(DType::boolean) && ndim <= 8, "fixture ", path,
             ": corrupt header for '", name, "'");
    Shape shape(ndim);
    in.read(reinterpret_cast<char*>(shape.data()), std::streamsize(8 * ndim));
    Tensor t = Tensor::empty(shape, DType(code));
    in.read(static_cast<char*>(t.raw_data()), std::streamsize(t.nbytes()));
    HD_CHECK(in, "fixture ", path, ": truncated data for '", name, "'");
    f.tensors_[name] = t;
  }
  return f;
}

const Tensor& Fixture::get(const std::string& name) const {
  auto it = tensors_.find(name);
  HD_CHECK(it != tensors_.end(), "fixture ", file_, " has no tensor '", name, "'");
  return it->second;
}

void expect_close(const Tensor& actual, const Tensor& expected, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what << ": shape mismatch";
  std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double err = std::abs(a[i] - e[i]);
    bool ok = err <= atol + rtol * std::abs(e[i]) || (std::isinf(a[i]) && a[i] == e[i]);
    if (!ok) {
      worst = std::max(worst, std::isnan(err) ? INFINITY : err);
      if (bad++ < 5) {
        ADD_FAILURE() << what << ": element " << i << " is " << a[i] << ", expected " << e[i]
                      << " (|diff| " << err << ")";
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.size()
                    << " elements out of tolerance, worst |diff| " << worst;
}

}  // namespace hd::testing
