#include "ops/cpu/isa.h"

#include <cstdlib>

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
  isa.name = isa.avx512 ? "avx512" : "avx2";
  return isa;
}

}  // namespace

const VectorIsa& vector_isa() {
  static const VectorIsa isa = probe();
  return isa;
}

}  // namespace hd::cpu
