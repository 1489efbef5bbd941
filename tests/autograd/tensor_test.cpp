#include "autograd/tensor.h"

#include <gtest/gtest.h>

#include "autograd/allocator.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd {
namespace {

TEST(Tensor, ContiguousStridesAndMetadata) {
  Tensor t = zeros({2, 3, 4});
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.str(), "f32[2, 3, 4] cpu");
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_THROW(t.size(3), Error);
}

TEST(Tensor, ViewsShareStorageWithoutCopy) {
  Tensor t = from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = transpose(t, 0, 1);
  EXPECT_EQ(tt.storage(), t.storage());
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor s = slice(t, 1, 0, 3, 2);
  EXPECT_EQ(s.storage(), t.storage());
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{0, 2, 3, 5}));
  Tensor e = expand(unsqueeze(from_vector<float>({7, 8}, {2}), 0), {3, 2});
  EXPECT_EQ(e.strides(), (Shape{0, 1}));
  EXPECT_EQ(e.to_vector<float>(), (std::vector<float>{7, 8, 7, 8, 7, 8}));
  Tensor r = reshape(t, {3, -1});
  EXPECT_EQ(r.storage(), t.storage());
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  Tensor sq = squeeze(unsqueeze(t, 1), 1);
  EXPECT_EQ(sq.shape(), t.shape());
  EXPECT_EQ(select(t, 1, 2).to_vector<float>(), (std::vector<float>{2, 5}));
}

TEST(Tensor, ReshapeOfNonContiguousCopiesAndViewRefuses) {
  Tensor t = transpose(zeros({2, 3}), 0, 1);
  EXPECT_THROW(view(t, {6}), Error);
  Tensor r = reshape(t, {6});
  EXPECT_NE(r.storage(), t.storage());
}

TEST(Tensor, ContiguousCopiesOnlyWhenNeeded) {
  Tensor t = zeros({2, 3});
  EXPECT_EQ(contiguous(t).storage(), t.storage());
  Tensor c = contiguous(transpose(t, 0, 1));
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), t.storage());
}

TEST(Tensor, ShapeErrorsNameTheOpAndShapes) {
  Tensor t = zeros({2, 3});
  try {
    reshape(t, {4, 2});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reshape: cannot reshape [2, 3]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(narrow(t, 1, 2, 2), Error);
  EXPECT_THROW(permute(t, {0, 0}), Error);
  EXPECT_THROW(expand(t, {4, 3}), Error);
}

TEST(Tensor, DTypeConversions) {
  Tensor t = from_vector<double>({1.5, -2.25, 3}, {3});
  EXPECT_EQ(to(t, DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(to(t, DType::f32).to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 3.f}));
  EXPECT_EQ(to(t, DType::boolean).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 1, 1}));
  EXPECT_EQ(to(t, DType::bf16).dtype(), DType::bf16);
  EXPECT_EQ(to(to(t, DType::bf16), DType::f64).to_vector<double>(), (std::vector<double>{1.5, -2.25, 3}));
}

TEST(Tensor, FactoriesAndCatStackPad) {
  EXPECT_EQ(arange(0, 5, 2).to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(full({2}, 3.5).to_vector<float>(), (std::vector<float>{3.5, 3.5}));
  Tensor a = from_vector<float>({1, 2}, {1, 2}), b = from_vector<float>({3, 4, 5, 6}, {2, 2});
  EXPECT_EQ(cat({a, b}, 0).to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(stack({a, a}, 0).shape(), (Shape{2, 1, 2}));
  Tensor p = pad(a, {1, 2}, -1.0);
  EXPECT_EQ(p.to_vector<float>(), (std::vector<float>{-1, 1, 2, -1, -1}));
  std::vector<Tensor> parts = chunk(arange(0, 5, 1, DType::f32), 2, 0);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[1].to_vector<float>(), (std::vector<float>{3, 4}));
  EXPECT_THROW(cat({a, zeros({2, 3})}, 0), Error);
}

TEST(Tensor, AllocatorIsAlignedAndCountsBytes) {
  Allocator& alloc = allocator_for(Device::cpu());
  int64_t before = alloc.stats().current_bytes;
  {
    Tensor t = zeros({1000}, DType::f64);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
    EXPECT_EQ(alloc.stats().current_bytes - before, 8000);
    EXPECT_GE(alloc.stats().peak_bytes, before + 8000);
  }
  EXPECT_EQ(alloc.stats().current_bytes, before);
}

}  // namespace
}  // namespace hd

namespace hd {
namespace {

TEST(Allocator, LargeBlocksAreCachedAndReused) {
  CpuAllocator alloc;
  EXPECT_EQ(CpuAllocator::size_class(100), 128u);
  EXPECT_EQ(CpuAllocator::size_class(1 << 20), size_t(1) << 20);
  EXPECT_EQ(CpuAllocator::size_class((1 << 20) + 1), (size_t(1) << 20) + (size_t(1) << 17));
  void* a = alloc.allocate(3'000'000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(alloc.stats().current_bytes, 3'000'000);
  alloc.deallocate(a, 3'000'000);
  EXPECT_EQ(alloc.stats().current_bytes, 0);
  EXPECT_GT(alloc.stats().cached_bytes, 0);
  void* b = alloc.allocate(2'900'000);  // same size class: the cached block comes back
  EXPECT_EQ(a, b);
  EXPECT_EQ(alloc.stats().cached_bytes, 0);
  EXPECT_EQ(alloc.stats().peak_bytes, 3'000'000);
  alloc.deallocate(b, 2'900'000);
  alloc.empty_cache();
  EXPECT_EQ(alloc.stats().cached_bytes, 0);
}

}  // namespace
}  // namespace hd
