// Which vector width the CPU kernels run at: AVX2 (the build's baseline, x86-64-v3) or AVX-512.
//
// [Note: AVX-512 kernels]
// The elementwise, softmax and norm kernels are plain loops that GCC vectorises. The build
// targets x86-64-v3 so one binary runs on every CI host, and that caps them at 256-bit AVX2 with
// 16 registers: the attention's exponentials spill registers, and a bf16 rounding takes ~10
// integer ops per 8 values. On a CPU with AVX-512 the same loops, compiled for x86-64-v4 with
// 512-bit vectors, run 20-30 % faster (exp + sum + bf16 rounding of a score row: 0.73 -> 0.59
// ns per value on a Zen 4 EPYC; a whole bf16 ViT step built for x86-64-v4: 654-680 -> 629-640
// ms). PyTorch compiles its CPU kernels once per ISA and picks at run time; we do the same for
// the hot loops only, without a second build of the library: a hot loop is written as a lambda
// and handed to run_vectorised(), whose AVX-512 instantiation carries GCC's target attribute.
// The lambda is inlined into it (flatten), so GCC vectorises the loop there with zmm registers;
// the baseline instantiation gets the AVX2 code. Nothing else in the binary changes, and code
// outside these wrappers (and round_to_bf16's AVX512_BF16 path, taken only where the CPU has
// it) never executes an AVX-512 instruction, so a CPU without it is safe.
//
// Same bits either way, where the loops leave GCC no choice: sums use explicit lane
// accumulators (no reassociation), the math (vexp, verf, the bf16 rounding) is the same scalar
// code, and multiply-adds inside reductions are spelled std::fma, because GCC fuses a * b + c
// only where the vector code's shape allows, and the two widths differed there (a layer norm
// was off by an ulp in 0.7 % of its values before). tests/ops/isa_test.cpp checks the ops of a
// transformer step (attention, layer norm, GELU, softmax, add, column sums, casts, AdamW) bit
// for bit against a child process running the AVX2 kernels, and CTest runs the op tests a
// second time with the AVX-512 kernels off (HD_CPU_AVX512=0), so both paths are tested on an
// AVX-512 machine. A given machine always runs the same instantiation, so runs repeat exactly.
//
// Where to use it: inside a thread's chunk (the target applies to the code inlined into the
// wrapper, not to work another thread runs), around a chunk's whole loop rather than each row,
// so short rows pay no call and no branch (for_each_row_vectorised in ops/cpu/strided_loop.h
// wraps each thread's rows of an elementwise map that way).
#pragma once

#include <cstdint>
#include <string>

#include "autograd/dtype.h"

namespace hd::cpu {

struct VectorIsa {
  bool avx512 = false;       // the AVX-512 instantiations run (F, BW, VL and DQ present, not off)
  bool avx512_bf16 = false;  // and round_to_bf16 uses the CPU's f32 -> bf16 instruction
  std::string name;          // "avx512", "avx512+bf16" or "avx2"
  std::string reason;        // why AVX-512 kernels are not used here, when they are not
};

// Probed once per process. HD_CPU_AVX512=0 in the environment keeps the AVX2 kernels on an
// AVX-512 CPU: to test and benchmark both paths on one machine.
const VectorIsa& vector_isa();

// dst[i] = float_to_bf16(src[i]) for i < n, the same bits, at the widest the CPU can: with
// AVX512_BF16 one instruction rounds 16 values (the software rounding of ten integer ops per
// vector was 40 % of the attention's exp + sum + round pass). That instruction flushes denormal
// inputs to zero, so vectors holding any fall back to the software rounding.
void round_to_bf16(const float* src, bf16_t* dst, int64_t n);

#define HD_ISA_FLATTEN __attribute__((flatten))
#define HD_ISA_AVX512 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))

template <class F>
HD_ISA_AVX512 HD_ISA_FLATTEN void run_avx512(F& body) {
  body();
}
template <class F>
HD_ISA_FLATTEN void run_baseline(F& body) {
  body();
}

// Runs body() compiled for the widest vector ISA this CPU has (see the note above).
template <class F>
void run_vectorised(F&& body) {
  if (vector_isa().avx512) {
    run_avx512(body);
  } else {
    run_baseline(body);
  }
}

}  // namespace hd::cpu
