#include "ops/cpu/isa.h"

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <cstring>

namespace hd::cpu {
namespace {

VectorIsa probe() {
  VectorIsa isa;
  __builtin_cpu_init();
  const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const char* off = std::getenv("HD_CPU_AVX512");
  if (!has) {
    isa.reason = "the CPU lacks AVX-512 F/BW/VL/DQ";
  } else if (off && std::string(off) == "0") {
    isa.reason = "turned off (HD_CPU_AVX512=0)";
  } else {
    isa.avx512 = true;
  }
  isa.avx512_bf16 = isa.avx512 && __builtin_cpu_supports("avx512bf16");
  isa.name = isa.avx512_bf16 ? "avx512+bf16" : isa.avx512 ? "avx512" : "avx2";
  return isa;
}

__attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16"))) void round_to_bf16_instruction(
    const float* src, bf16_t* dst, int64_t n) {
  const __m512 smallest_normal = _mm512_set1_ps(FLT_MIN);
  // The last partial vector goes through masked loads and stores, so short rows (a patch
  // gather's 28 values, a score row's 729 = 45 x 16 + 9) need no scalar tail.
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(lanes, src + i);
    const __m512 ax = _mm512_abs_ps(x);
    const __mmask16 denormal = _mm512_cmp_ps_mask(ax, smallest_normal, _CMP_LT_OQ) &
                               _mm512_cmp_ps_mask(ax, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    if (denormal) {
      for (int64_t k = i; k < std::min<int64_t>(i + 16, n); ++k) dst[k] = float_to_bf16(src[k]);
      continue;
    }
    const __m256bh y = _mm512_cvtneps_pbh(x);
    __m256i bits;
    std::memcpy(&bits, &y, sizeof(bits));
    _mm256_mask_storeu_epi16(dst + i, lanes, bits);
  }
}

}  // namespace

void round_to_bf16(const float* src, bf16_t* dst, int64_t n) {
  if (vector_isa().avx512_bf16) {
    round_to_bf16_instruction(src, dst, n);
    return;
  }
  auto body = [&] {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
  };
  run_vectorised(body);
}

const VectorIsa& vector_isa() {
  static const VectorIsa isa = probe();
  return isa;
}

}  // namespace hd::cpu
