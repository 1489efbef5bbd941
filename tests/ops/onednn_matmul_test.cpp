// The oneDNN GEMM wrapper ([Note: oneDNN GEMMs] in ops/cpu/onednn_matmul.h). Its layout logic
// (batch collapse, broadcast, row/column-major operands, the primitive cache) is the same for
// f32 and bf16, so it is checked here in f32 against the f64 product: oneDNN can run f32 on any
// CPU. The bf16 cases need a CPU where oneDNN has bf16 kernels (AVX-512-BF16 or AMX) and skip
// elsewhere, saying what oneDNN found.
#include "ops/cpu/onednn_matmul.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <thread>

#include "autograd/random.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/errors.h"

namespace hd {
namespace {

Tensor random(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  Generator g(seed, "onednn_test");
  return to(normal(s, 0, 1, g), dt);
}

double max_rel_error(const Tensor& got, const Tensor& want) {
  Tensor w = to(want, DType::f64);
  double scale = amax(abs(w)).item<double>();
  return amax(abs(sub(to(got, DType::f64), w))).item<double>() / scale;
}

// f64 reference of the broadcast batched product.
Tensor reference(const Tensor& a, const Tensor& b) {
  return matmul(to(a, DType::f64), to(b, DType::f64));
}

Tensor via_onednn(const Tensor& a, const Tensor& b, DType out_dtype) {
  Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                 Shape(b.shape().begin(), b.shape().end() - 2), "test");
  batch.push_back(a.size(-2));
  batch.push_back(b.size(-1));
  Tensor out = Tensor::empty(batch, out_dtype);
  EXPECT_TRUE(cpu::onednn::supports(a, b, out));
  cpu::onednn::matmul(a, b, out);
  return out;
}

struct Case {
  const char* name;
  std::function<std::pair<Tensor, Tensor>(DType)> make;
};

std::vector<Case> cases() {
  return {
      {"plain 2-D",
       [](DType dt) {
         return std::pair{random({37, 19}, 1, dt), random({19, 23}, 2, dt)};
       }},
      {"a transposed (column-major)",
       [](DType dt) {
         return std::pair{transpose(random({19, 37}, 3, dt), 0, 1), random({19, 23}, 4, dt)};
       }},
      {"b transposed, as linear's weight",
       [](DType dt) {
         return std::pair{random({37, 19}, 5, dt), transpose(random({23, 19}, 6, dt), 0, 1)};
       }},
      {"batched 3-D",
       [](DType dt) {
         return std::pair{random({4, 9, 7}, 7, dt), random({4, 7, 5}, 8, dt)};
       }},
      {"b broadcast over the batch",
       [](DType dt) {
         return std::pair{random({4, 9, 7}, 9, dt), random({7, 5}, 10, dt)};
       }},
      {"a broadcast, size-1 batch dim",
       [](DType dt) {
         return std::pair{random({1, 9, 7}, 11, dt), random({3, 7, 5}, 12, dt)};
       }},
      {"two batch dims that collapse",
       [](DType dt) {
         return std::pair{random({2, 3, 6, 4}, 13, dt), random({2, 3, 4, 8}, 14, dt)};
       }},
      {"a row view with a row stride (narrowed columns)",
       [](DType dt) {
         return std::pair{narrow(random({11, 30}, 15, dt), 1, 3, 17), random({17, 6}, 16, dt)};
       }},
      {"single row and column",
       [](DType dt) {
         return std::pair{random({1, 64}, 17, dt), random({64, 1}, 18, dt)};
       }},
  };
}

TEST(OneDnnMatmul, F32MatchesTheF64ProductForEveryLayout) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto [a, b] = c.make(DType::f32);
    Tensor got = via_onednn(a, b, DType::f32);
    EXPECT_LT(max_rel_error(got, reference(a, b)), 1e-5);
    // The second call runs the cached primitive on new buffers: same answer.
    auto [a2, b2] = c.make(DType::f32);
    EXPECT_EQ(via_onednn(a2, b2, DType::f32).to_vector<float>(), got.to_vector<float>());
  }
}

TEST(OneDnnMatmul, BatchStridesThatDoNotCollapseAreRefusedByName) {
  // [2, 3, ...] batch whose two dims are permuted in memory: no single batch stride.
  Tensor a = permute(random({3, 2, 6, 4}, 19), {1, 0, 2, 3}), b = random({2, 3, 4, 5}, 20);
  Tensor out = Tensor::empty({2, 3, 6, 5});
  EXPECT_FALSE(cpu::onednn::supports(a, b, out));
  testing::expect_error([&] { cpu::onednn::matmul(a, b, out); }, "do not collapse into one");
  testing::expect_error(
      [&] {
        Tensor o = Tensor::empty({4, 4}, DType::f64);
        cpu::onednn::matmul(random({4, 4}, 1, DType::f64), random({4, 4}, 2, DType::f64), o);
      },
      "must be f32 or bf16");
}

TEST(OneDnnMatmul, ReportsVersionIsaAndBf16Support) {
  const auto& c = cpu::onednn::capability();
  EXPECT_FALSE(c.version.empty());
  EXPECT_FALSE(c.isa.empty());
  if (c.bf16_matmul) {
    EXPECT_FALSE(c.bf16_impl.empty());
  } else {
    EXPECT_NE(c.reason.find(c.isa.substr(0, 3)), std::string::npos) << c.reason;
  }
  std::printf("oneDNN %s, ISA %s, bf16 matmul: %s\n", c.version.c_str(), c.isa.c_str(),
              c.bf16_matmul ? c.bf16_impl.c_str() : c.reason.c_str());
}

TEST(OneDnnMatmul, Bf16AccumulatesInF32) {
  if (!cpu::onednn::capability().bf16_matmul)
    GTEST_SKIP() << "no oneDNN bf16 matmul here: " << cpu::onednn::capability().reason;
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto [a, b] = c.make(DType::bf16);
    // Inputs are exact in bf16; with f32 accumulation the f32 answer is the product to f32
    // rounding, the bf16 answer to bf16 rounding.
    EXPECT_LT(max_rel_error(via_onednn(a, b, DType::f32), reference(a, b)), 1e-5);
    EXPECT_LT(max_rel_error(via_onednn(a, b, DType::bf16), reference(a, b)), 1e-2);
  }
}

// The op's bf16 products: row blocks of oneDNN's bf16 kernels where this CPU has them (one
// block here, M = 32, so the op's answer is exactly one direct tile product), otherwise the f32
// product of the widened operands, rounded. Either way a bit-for-bit equality says which path
// ran.
TEST(OneDnnMatmul, TheMatmulOpTakesTheBf16PathThisCpuHas) {
  Tensor a = random({32, 256}, 21, DType::bf16), b = random({256, 48}, 22, DType::bf16);
  Tensor out = matmul(a, b);
  ASSERT_EQ(out.dtype(), DType::bf16);
  EXPECT_LT(max_rel_error(out, reference(a, b)), 1e-2);
  Tensor want;
  if (cpu::onednn::capability().bf16_matmul) {
    want = Tensor::empty({32, 48}, DType::bf16);
    cpu::onednn::gemm_bf16(false, false, 32, 48, 256, 1.0f, a.data<bf16_t>(), 256, b.data<bf16_t>(),
                           48, 0.0f, want.data<bf16_t>(), 48);
  } else {
    want = to(matmul(to(a, DType::f32), to(b, DType::f32)), DType::bf16);
  }
  EXPECT_EQ(amax(abs(sub(to(out, DType::f32), to(want, DType::f32)))).item<double>(), 0.0)
      << (cpu::onednn::capability().bf16_matmul ? "oneDNN tile product" : "widened product");
}

// Threads of this process, from /proc (libgomp's workers are threads of the process too).
int64_t process_threads() {
  int64_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)entry;
    ++n;
  }
  return n;
}

// Tile products run on the calling thread only: the first one a thread makes must not be sized
// for an OpenMP team (it was, when the thread's primitive cache set OpenMP to the pool's count
// inside the product's one-thread scope: every later run of that primitive then started a team
// beside the pool). A fresh thread's products here would leave libgomp workers behind.
TEST(OneDnnMatmul, TileProductsStartNoOpenMpTeam) {
  if (!cpu::onednn::capability().bf16_matmul)
    GTEST_SKIP() << "no oneDNN bf16 matmul here: " << cpu::onednn::capability().reason;
  Tensor a = random({64, 256}, 31, DType::bf16), b = random({256, 64}, 32, DType::bf16);
  Tensor out = Tensor::empty({64, 64}, DType::f32);
  // Counted inside the thread: libgomp ends a thread's workers when the thread exits.
  int64_t before = 0, after = 0;
  std::thread fresh([&] {
    before = process_threads();
    for (int i = 0; i < 3; ++i) {
      cpu::onednn::gemm_bf16(false, false, 64, 64, 256, 1.0f, a.data<bf16_t>(), 256,
                             b.data<bf16_t>(), 64, 0.0f, out.data<float>(), 64);
    }
    after = process_threads();
  });
  fresh.join();
  EXPECT_EQ(after, before) << "a tile product started OpenMP threads";
  EXPECT_LT(max_rel_error(out, reference(a, b)), 1e-5);
}

}  // namespace
}  // namespace hd
