#include "ops/cpu/onednn_matmul.h"

#include <omp.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>

#include "autograd/error.h"
#include "autograd/thread_pool.h"

namespace hd::cpu::onednn {
namespace {

using dnnl::memory;

// The engine and the names of the kernels oneDNN picked: part of the device registry (the one
// global state the design allows), made on first use.
struct Registry {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mutex;
  std::map<std::string, std::string> implementations;  // by Problem::key
};

Registry& registry() {
  static Registry r;
  return r;
}

// A tile product's primitive key: transposes, M, N, K, lda, ldb, ldc, beta, C's type; alpha's
// bits.
using TileKey = std::array<int64_t, 11>;

// A tile product ready to run: its primitive and memory objects whose pointers are reset per
// call (cheaper than new memory objects for products that take microseconds).
struct TileProduct {
  dnnl::matmul primitive;
  memory a, b, c;
};

// The primitives of one thread (see the header: a primitive runs where it was made) and its
// stream. No OpenMP setting here: this is first made inside a tile product's one-thread scope
// (run_tile), and setting the pool's count there sized that thread's first tile primitive for
// an OpenMP team, so every later run of it started a team beside the pool (oversubscribed
// cores; 35 us for a [2, 64] x [64, 256] product that needs one).
struct ThreadPrimitives {
  std::map<std::string, std::shared_ptr<dnnl::matmul>> products;  // by Problem::key
  std::map<TileKey, TileProduct> tiles;
  dnnl::stream stream{registry().engine};
};

ThreadPrimitives& thread_primitives() {
  thread_local ThreadPrimitives t;
  return t;
}

memory::data_type data_type(DType dt, const char* what) {
  switch (dt) {
    case DType::f32:
      return memory::data_type::f32;
    case DType::bf16:
      return memory::data_type::bf16;
    default:
      throw Error(
          detail::concat("onednn::matmul: ", what, " must be f32 or bf16, got ", dtype_name(dt)));
  }
}

// A 3-D [batch, rows, cols] layout for oneDNN: dims, strides and element type.
struct Layout3 {
  memory::dims dims, strides;
  memory::data_type type;
  memory::desc desc() const { return memory::desc(dims, type, strides); }
};

// One operand: its batch dims (aligned to out's; broadcast ones have stride 0) must all be
// broadcast (batch 1) or all stored and collapse into one stride.
Layout3 operand_layout(const Tensor& t, const Shape& out_batch, const char* what) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t lead = int64_t(out_batch.size()) - (t.dim() - 2);
  Shape strides(out_batch.size(), 0);
  for (int64_t i = 0; i < t.dim() - 2; ++i) {
    if (t.shape()[size_t(i)] != 1) strides[size_t(lead + i)] = t.strides()[size_t(i)];
  }
  bool stored = false, broadcast = false;
  int64_t batch_stride = rows * cols, outer_expected = -1;
  for (size_t d = out_batch.size(); d-- > 0;) {  // innermost batch dim first
    if (out_batch[d] == 1) continue;
    if (strides[d] == 0) {
      broadcast = true;
      continue;
    }
    HD_CHECK(outer_expected < 0 || strides[d] == outer_expected, "onednn::matmul: ", what, " ",
             t.str(), " has batch strides that do not collapse into one");
    if (!stored) batch_stride = strides[d];
    stored = true;
    outer_expected = strides[d] * out_batch[d];
  }
  HD_CHECK(!(stored && broadcast), "onednn::matmul: ", what, " ", t.str(),
           " mixes broadcast and stored batch dims");
  // Rows and columns: row-major (unit column stride) or column-major; a dim of size 1 gets
  // the stride a dense layout would have, whatever the view says.
  const bool row_major = t.stride(-1) == 1 || cols == 1;
  const int64_t ld =
      row_major ? (rows == 1 ? cols : t.stride(-2)) : (cols == 1 ? rows : t.stride(-1));
  Layout3 l;
  l.dims = {stored ? shape_numel(out_batch) : 1, rows, cols};
  l.strides = row_major ? memory::dims{batch_stride, ld, 1} : memory::dims{batch_stride, 1, ld};
  l.type = data_type(t.dtype(), what);
  return l;
}

struct Problem {
  Layout3 a, b, c;
  std::string key;  // the primitive cache's key: every dim, stride and type
};

Problem describe(const Tensor& a, const Tensor& bm, const Tensor& out) {
  HD_CHECK(out.dim() >= 2 && out.is_contiguous(), "onednn::matmul: out must be contiguous, got ",
           out.str());
  Shape batch(out.shape().begin(), out.shape().end() - 2);
  Problem p;
  p.a = operand_layout(a, batch, "a");
  p.b = operand_layout(bm, batch, "b");
  const int64_t M = out.size(-2), N = out.size(-1);
  p.c = {{shape_numel(batch), M, N}, {M * N, N, 1}, data_type(out.dtype(), "out")};
  std::ostringstream key;
  for (const Layout3* l : {&p.a, &p.b, &p.c}) {
    key << int(l->type) << ':';
    for (auto v : l->dims) key << v << ',';
    for (auto v : l->strides) key << v << ',';
    key << ';';
  }
  p.key = key.str();
  return p;
}

std::shared_ptr<dnnl::matmul> primitive(const Problem& p, const Tensor& a, const Tensor& bm) {
  auto& cache = thread_primitives().products;
  auto it = cache.find(p.key);
  if (it != cache.end()) return it->second;
  Registry& r = registry();
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p.a.desc(), p.b.desc(), p.c.desc()),
                                    r.engine);
    auto prim = std::make_shared<dnnl::matmul>(pd);
    {
      std::lock_guard<std::mutex> lock(r.mutex);
      r.implementations[p.key] = pd.impl_info_str();
    }
    cache[p.key] = prim;
    return prim;
  } catch (const dnnl::error& e) {
    throw Error(detail::concat("onednn::matmul: oneDNN cannot make a matmul for ", a.str(), " @ ",
                               bm.str(), " on this CPU (", e.what(), ")"));
  }
}

std::string isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other (" + std::to_string(int(isa)) + ")";
  }
}

Capability probe() {
  Capability c;
  const dnnl_version_t* v = dnnl_version();
  c.version = detail::concat(v->major, ".", v->minor, ".", v->patch);
  c.isa = isa_name(dnnl::get_effective_cpu_isa());
  if (const char* off = std::getenv("HD_ONEDNN_BF16"); off && std::string(off) == "0") {
    c.reason = "oneDNN bf16 products turned off (HD_ONEDNN_BF16=0) on ISA " + c.isa;
    return c;
  }
  try {
    const memory::dims dims{1, 64, 64};
    memory::desc bf(dims, memory::data_type::bf16, memory::dims{64 * 64, 64, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(bf, bf, bf), registry().engine);
    c.bf16_impl = pd.impl_info_str();
    // A reference kernel would make bf16 slower than converting for OpenBLAS.
    c.bf16_matmul = c.bf16_impl.rfind("ref", 0) != 0;
    if (!c.bf16_matmul) c.reason = "only oneDNN's reference kernel (" + c.bf16_impl + ")";
  } catch (const dnnl::error& e) {
    c.reason = detail::concat("oneDNN ", c.version, " has no bf16 matmul for ISA ", c.isa, " (",
                              e.what(), ")");
  }
  return c;
}

}  // namespace

const Capability& capability() {
  static const Capability c = probe();
  return c;
}

namespace {
// Sets the calling thread's OpenMP team size for one scope and restores it.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

// A whole product on an OpenMP team of the pool's size (its primitive is sized for the team
// when made, so the team is set before the cache lookup).
void run(const Problem& p, const Tensor& a, const Tensor& bm, Tensor& out) {
  OmpThreads team(cpu_thread_pool().num_threads());
  std::shared_ptr<dnnl::matmul> prim = primitive(p, a, bm);
  Registry& r = registry();
  memory ma(p.a.desc(), r.engine, const_cast<void*>(a.raw_data()));
  memory mb(p.b.desc(), r.engine, const_cast<void*>(bm.raw_data()));
  memory mc(p.c.desc(), r.engine, out.raw_data());
  dnnl::stream& stream = thread_primitives().stream;
  prim->execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  stream.wait();
}

void check_operands(const Tensor& a, const Tensor& bm) {
  HD_CHECK(a.dtype() == bm.dtype(), "onednn::matmul: operands differ in dtype: ", a.str(), " @ ",
           bm.str());
  HD_CHECK(a.size(-1) == bm.size(-2), "onednn::matmul: inner dims differ: ", a.str(), " @ ",
           bm.str());
}

// Empty products and K = 0 (which oneDNN rejects): done here, true when nothing is left to do.
bool trivial(const Tensor& a, Tensor& out) {
  if (out.numel() == 0) return true;
  if (a.size(-1) != 0) return false;
  std::memset(out.raw_data(), 0, out.nbytes());
  return true;
}
}  // namespace

void matmul(const Tensor& a, const Tensor& bm, Tensor& out) {
  check_operands(a, bm);
  if (trivial(a, out)) return;
  run(describe(a, bm, out), a, bm, out);
}

bool supports(const Tensor& a, const Tensor& bm, const Tensor& out) {
  try {
    describe(a, bm, out);
    return true;
  } catch (const Error&) {
    return false;
  }
}

namespace {

// One tile product: 2-D operands with the BLAS layouts, alpha as an output scale, beta = 1 as a
// sum post-op. Tiles come in a few shapes (full ones and the ragged edges), so the cache stays
// small.
TileProduct& tile_product(const TileKey& key, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                          float alpha, int64_t lda, int64_t ldb, float beta, int64_t ldc,
                          memory::data_type c_type) {
  auto& cache = thread_primitives().tiles;
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const auto bf16 = memory::data_type::bf16;
  memory::desc a({M, K}, bf16, ta ? memory::dims{1, lda} : memory::dims{lda, 1});
  memory::desc b({K, N}, bf16, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  memory::desc c({M, N}, c_type, memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
  }
  try {
    const dnnl::engine& engine = registry().engine;
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine);
    return cache
        .emplace(key, TileProduct{dnnl::matmul(pd), memory(a, engine, DNNL_MEMORY_NONE),
                                  memory(b, engine, DNNL_MEMORY_NONE),
                                  memory(c, engine, DNNL_MEMORY_NONE)})
        .first->second;
  } catch (const dnnl::error& e) {
    throw Error(detail::concat("onednn::gemm_bf16: oneDNN cannot make a ", M, "x", K, " @ ", K, "x",
                               N, " bf16 product on this CPU (", e.what(), ")"));
  }
}

}  // namespace

namespace {
void run_tile(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
              int64_t lda, const bf16_t* B, int64_t ldb, float beta, void* C, int64_t ldc,
              memory::data_type c_type) {
  HD_CHECK(beta == 0.0f || beta == 1.0f, "onednn::gemm_bf16: beta must be 0 or 1, got ", beta);
  HD_CHECK(M >= 0 && N >= 0 && K > 0, "onednn::gemm_bf16: needs M, N >= 0 and K > 0, got ", M, "x",
           K, " @ ", K, "x", N);
  if (M == 0 || N == 0) return;
  uint32_t alpha_bits;
  std::memcpy(&alpha_bits, &alpha, 4);
  const TileKey key{
      ta, tb, M, N, K, lda, ldb, ldc, beta != 0.0f, int64_t(c_type), int64_t(alpha_bits)};
  // One thread from here on: oneDNN sizes a primitive's parallel loop when it makes it, and
  // runs that many threads whatever OpenMP is set to later.
  OmpThreads single(1);
  TileProduct& t = tile_product(key, ta, tb, M, N, K, alpha, lda, ldb, beta, ldc, c_type);
  t.a.set_data_handle(const_cast<bf16_t*>(A));
  t.b.set_data_handle(const_cast<bf16_t*>(B));
  t.c.set_data_handle(C);
  dnnl::stream& stream = thread_primitives().stream;
  t.primitive.execute(stream, {{DNNL_ARG_SRC, t.a}, {DNNL_ARG_WEIGHTS, t.b}, {DNNL_ARG_DST, t.c}});
  stream.wait();
}
}  // namespace

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
               int64_t lda, const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  run_tile(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, memory::data_type::f32);
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
               int64_t lda, const bf16_t* B, int64_t ldb, float beta, bf16_t* C, int64_t ldc) {
  run_tile(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, memory::data_type::bf16);
}

std::string implementation(const Tensor& a, const Tensor& bm, const Tensor& out) {
  Problem p = describe(a, bm, out);
  primitive(p, a, bm);
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.implementations[p.key];
}

}  // namespace hd::cpu::onednn
