// The AVX-512 instantiations of the CPU kernels ([Note: AVX-512 kernels], ops/cpu/isa.h) give
// the same bits as the AVX2 baseline. The kernels' ISA is fixed per process (probed once), so
// the test runs the same ops in this process and in a child of the same binary started with
// HD_CPU_AVX512=0, and compares every output and gradient byte for byte. Also checks the math
// the kernels inline (vexp, verf, vtanh, bf16 rounding, lane sums) through both wrappers
// directly, over inputs that reach every branch (-inf, NaN, overflow, denormals).
#include "ops/cpu/isa.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "autograd/random.h"
#include "ops/attention.h"
#include "ops/conv.h"
#include "ops/cpu/adamw.h"
#include "ops/cpu/vec_math.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"

namespace hd {
namespace {

Tensor randn(const Shape& shape, uint64_t seed) {
  Generator g(seed, "isa_test");
  return normal(shape, 0, 1, g);
}

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

std::vector<float> edge_inputs() {
  std::vector<float> x = {-std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          0.0f,
                          -0.0f,
                          1e-40f,
                          -1e-40f,
                          -87.33654f,
                          -87.4f,
                          88.37f,
                          88.8f,
                          -104.0f,
                          4.0f,
                          -4.0f};
  Tensor r = randn({4096}, 12);
  for (int64_t i = 0; i < r.numel(); ++i) x.push_back(r.data<float>()[i] * 30.0f);
  while (x.size() % 64 != 0) x.push_back(0.5f);
  return x;
}

template <class F>
std::vector<uint32_t> bits_of(const std::vector<float>& x, bool wide, F f) {
  std::vector<uint32_t> out(x.size());
  auto body = [&] {
    for (size_t i = 0; i < x.size(); ++i) out[i] = f(x[i]);
  };
  if (wide) {
    cpu::run_avx512(body);
  } else {
    cpu::run_baseline(body);
  }
  return out;
}

TEST(VectorIsa, InlinedMathGivesTheSameBitsInBothInstantiations) {
  if (!cpu_has_avx512()) GTEST_SKIP() << "this CPU has no AVX-512: only the AVX2 kernels exist";
  const std::vector<float> x = edge_inputs();
  auto u32 = [](float v) { return std::bit_cast<uint32_t>(v); };
  auto check = [&](const char* what, auto f) {
    std::vector<uint32_t> a = bits_of(x, true, f), b = bits_of(x, false, f);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(a[i], b[i]) << what << "(" << x[i] << "): AVX-512 and AVX2 differ";
    }
  };
  check("vexp", [&](float v) { return u32(cpu::vexp(v)); });
  check("verf", [&](float v) { return u32(cpu::verf(v)); });
  check("vtanh", [&](float v) { return u32(cpu::vtanh(v)); });
  check("vsigmoid", [&](float v) { return u32(cpu::vsigmoid(v)); });
  check("float_to_bf16", [&](float v) { return uint32_t(float_to_bf16(v).bits); });
  // A row reduction as the kernels write it: lane accumulators over the row.
  std::vector<float> sums_wide(64), sums_base(64);
  auto lane_sums = [&](std::vector<float>& out) {
    return [&] {
      for (size_t r = 0; r < 64; ++r) out[r] = cpu::lane_sum(x.data() + 14 + r * 60, 60 + r);
    };
  };
  auto wide = lane_sums(sums_wide);
  auto base = lane_sums(sums_base);
  cpu::run_avx512(wide);
  cpu::run_baseline(base);
  for (size_t r = 0; r < 64; ++r) {
    EXPECT_EQ(u32(sums_wide[r]), u32(sums_base[r])) << "lane_sum of row " << r;
  }
}

// round_to_bf16 (the CPU's conversion instruction where it has one) equals float_to_bf16 bit
// for bit, denormals (which the instruction flushes), NaNs, infinities and ties included, at
// every offset of a 16-value vector.
TEST(VectorIsa, RoundToBf16EqualsTheSoftwareRounding) {
  std::vector<float> x = edge_inputs();
  for (uint32_t bits : {0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x7f800001u, 0xff800001u,
                        0x00000001u, 0x807fffffu, 0x00800000u, 0x3f80ffffu}) {
    x.push_back(std::bit_cast<float>(bits));  // ties to even both ways, max, sNaN, denormals
  }
  for (int64_t start = 0; start < 17; ++start) {
    const int64_t n = int64_t(x.size()) - start;
    std::vector<bf16_t> got(static_cast<size_t>(n));
    cpu::round_to_bf16(x.data() + start, got.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[size_t(i)].bits, float_to_bf16(x[size_t(start + i)]).bits)
          << "value " << x[size_t(start + i)] << " (bits " << std::hex
          << std::bit_cast<uint32_t>(x[size_t(start + i)]) << std::dec << ") at offset " << start
          << "; conversion: " << cpu::vector_isa().name;
    }
  }
}

// Every length from 0 to 40 (the last partial vector is a masked load and store): the first n
// values rounded as float_to_bf16, a denormal in the tail included, and nothing written past n.
TEST(VectorIsa, RoundToBf16WritesExactlyNValues) {
  const bf16_t sentinel{0x7777};
  for (int64_t n = 0; n <= 40; ++n) {
    std::vector<float> x(static_cast<size_t>(n) + 16);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 1.0f + 0.37f * float(i) * (i % 2 ? -1.0f : 1.0f);
    if (n > 0) x[static_cast<size_t>(n - 1)] = std::bit_cast<float>(0x00000003u);  // denormal
    std::vector<bf16_t> got(x.size(), sentinel);
    cpu::round_to_bf16(x.data(), got.data(), n);
    for (int64_t i = 0; i < int64_t(x.size()); ++i) {
      const uint16_t want = i < n ? float_to_bf16(x[size_t(i)]).bits : sentinel.bits;
      ASSERT_EQ(got[size_t(i)].bits, want)
          << "index " << i << " of a row of " << n << "; " << cpu::vector_isa().name;
    }
  }
}

// The ops whose CPU kernels have AVX-512 instantiations, forward and backward, in f32 and bf16;
// every result's bytes, in a fixed order.
struct OpBytes {
  std::vector<char> bytes;
  std::vector<std::pair<std::string, size_t>> ends;  // (tensor, end offset) in order
};

OpBytes run_ops() {
  OpBytes r;
  std::vector<char>& bytes = r.bytes;
  auto append = [&](const std::string& name, const Tensor& t) {
    Tensor c = contiguous(t);
    const char* p = static_cast<const char*>(c.raw_data());
    bytes.insert(bytes.end(), p, p + c.numel() * int64_t(dtype_size(c.dtype())));
    r.ends.emplace_back(name + " (" + dtype_name(c.dtype()) + ")", bytes.size());
  };
  for (DType dt : {DType::f32, DType::bf16}) {
    auto leaf = [&](const Shape& s, uint64_t seed) {
      return to(randn(s, seed), dt).requires_grad_(true);
    };
    // Attention at a ragged length (partial tiles), with a key mask.
    Tensor q = leaf({2, 3, 150, 32}, 1);
    Tensor k = leaf({2, 3, 150, 32}, 2);
    Tensor v = leaf({2, 3, 150, 32}, 3);
    AttentionOptions opts;
    opts.key_mask = gt(randn({2, 150}, 4), -1.0);
    // The tiled kernels, whose loops have both instantiations (the bf16 dot-product kernel for
    // head dims 16/32/64 has no AVX2 twin: tests/ops/attention_dpbf16_test.cpp holds it to the
    // f64 kernel and to these).
    Tensor o = detail::scaled_dot_product_attention_dpbf16(q, k, v, opts, false);
    o.backward(to(randn(o.shape(), 5), dt));
    append("attention out", o);
    append("attention dq", q.grad());
    append("attention dk", k.grad());
    append("attention dv", v.grad());
    // Layer norm, GELU, softmax, a residual add, and a bias-gradient-like column sum.
    Tensor x = leaf({300, 192}, 6), w = leaf({192}, 7), b = leaf({192}, 8);
    Tensor ln = layer_norm(x, w, b, 1e-6);
    Tensor act = gelu(ln);
    Tensor sm = softmax(act, -1);
    Tensor y = add(sm, x);
    Tensor s = sum(y, {0});
    s.backward(to(randn(s.shape(), 9), dt));
    append("layer_norm", ln);
    append("gelu", act);
    append("softmax", sm);
    append("add", y);
    append("column sum", s);
    append("dx", x.grad());
    append("dweight", w.grad());
    append("dbias", b.grad());
    append("conversion", to(randn({1000}, 10), dt));
    // Strided maps (ops/cpu/strided_loop.h): an NCHW operand read as NHWC, a per-channel scale
    // over rows of 32, a head view's rows of 16.
    Tensor nhwc = to(randn({2, 9, 7, 32}, 11), dt);
    append("add across layouts",
           add(nhwc, permute(to(randn({2, 32, 9, 7}, 12), dt), {0, 2, 3, 1})));
    append("per-channel scale", mul(nhwc, to(randn({32}, 13), dt)));
    append("head view gelu", gelu(permute(to(randn({2, 29, 4, 16}, 14), dt), {0, 2, 1, 3})));
    // A layer norm over short rows: statistics of sixteen rows at a time, then a tail row.
    Tensor xs = leaf({33, 32}, 15), ws = leaf({32}, 16), bs = leaf({32}, 17);
    Tensor ys = layer_norm(xs, ws, bs, 1e-6);
    ys.backward(to(randn(ys.shape(), 18), dt));
    append("short-row layer_norm", ys);
    append("short-row dx", xs.grad());
    append("short-row dweight", ws.grad());
    append("short-row dbias", bs.grad());
    // Depthwise 7x7 convolutions of stride 1 (ConvNeXt's): the AVX-512 7-tap kernels against
    // the plain loops, at an odd row count (an unpaired last row), a partial last vector, and a
    // row of five vectors (two column chunks).
    for (const Shape& shape : {Shape{2, 3, 11, 21}, Shape{1, 2, 9, 70}}) {
      const int64_t C = shape[1];
      Tensor xc = leaf(shape, 24), wc = leaf({C, 1, 7, 7}, 25), bc = leaf({C}, 26);
      Tensor yc = conv2d(xc, wc, bc, 1, 3, C);
      yc.backward(to(randn(yc.shape(), 27), dt));
      append("depthwise 7x7 out", yc);
      append("depthwise 7x7 dx", xc.grad());
      append("depthwise 7x7 dweight", wc.grad());
    }
  }
  Tensor p = randn({5000}, 20), g = randn({5000}, 21), m = randn({5000}, 22);
  Tensor vsq = mul(randn({5000}, 23), randn({5000}, 23));
  cpu::adamw_step(p, g, m, vsq, {1e-3, 0.9, 0.999, 1e-8, 0.05, 3});
  append("adamw param", p);
  append("adamw exp_avg", m);
  append("adamw exp_avg_sq", vsq);
  return r;
}

TEST(VectorIsa, OpsGiveTheSameBitsWithAndWithoutAvx512) {
  if (const char* out = std::getenv("HD_ISA_TEST_OUT")) {  // the child: write and stop
    std::vector<char> b = run_ops().bytes;
    std::ofstream(out, std::ios::binary).write(b.data(), std::streamsize(b.size()));
    return;
  }
  if (!cpu_has_avx512()) GTEST_SKIP() << "this CPU has no AVX-512: only the AVX2 kernels exist";
  if (!cpu::vector_isa().avx512) {
    GTEST_SKIP() << "AVX-512 kernels are off in this process (" << cpu::vector_isa().reason
                 << "); the comparison needs them on";
  }
  const OpBytes ops = run_ops();
  const std::vector<char>& wide = ops.bytes;
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("hd_isa_test_" + std::to_string(getpid()) + ".bin");
  const pid_t child = fork();
  ASSERT_GE(child, 0) << "fork failed";
  if (child == 0) {
    setenv("HD_CPU_AVX512", "0", 1);
    setenv("HD_ISA_TEST_OUT", file.c_str(), 1);
    execl("/proc/self/exe", "/proc/self/exe",
          "--gtest_filter=VectorIsa.OpsGiveTheSameBitsWithAndWithoutAvx512", nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the AVX2 child failed";
  std::ifstream in(file, std::ios::binary);
  std::vector<char> base((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(file);
  ASSERT_EQ(wide.size(), base.size());
  size_t begin = 0;
  for (const auto& [name, end] : ops.ends) {
    size_t differing = 0;
    for (size_t i = begin; i < end; ++i) differing += wide[i] != base[i];
    EXPECT_EQ(differing, 0u) << name << ": " << differing << " of " << end - begin
                             << " bytes differ between the AVX-512 and AVX2 kernels";
    begin = end;
  }
}

TEST(VectorIsa, ReportsWhatRuns) {
  const cpu::VectorIsa& isa = cpu::vector_isa();
  EXPECT_EQ(isa.name, isa.avx512_bf16 ? "avx512+bf16" : isa.avx512 ? "avx512" : "avx2");
  if (isa.avx512_bf16) {
    EXPECT_TRUE(isa.avx512);
  }
  const char* off = std::getenv("HD_CPU_AVX512");
  if (off && std::string(off) == "0") {
    EXPECT_FALSE(isa.avx512);
    EXPECT_NE(isa.reason.find("HD_CPU_AVX512=0"), std::string::npos) << isa.reason;
  } else {
    EXPECT_EQ(isa.avx512, cpu_has_avx512()) << isa.reason;
  }
  if (!isa.avx512) {
    EXPECT_FALSE(isa.reason.empty());
  }
}

}  // namespace
}  // namespace hd
