// Byte copies of rows that are often short: a strided copy's rows (ops/cpu/elementwise.cpp),
// the pieces of a patch gather (ops/cpu/conv.cpp).
#pragma once

#include <cstddef>
#include <cstring>

namespace hd::cpu {

// memcpy for rows that are often short (a patch gather's k elements): up to 64 bytes as two
// overlapping fixed-size moves the compiler inlines, instead of a call into libc's memcpy per
// row (the bf16 gather of PS3's selection stem, 490k rows of 56 bytes: 8.0-8.5 -> 6.1-7.1 ms on
// 2 threads of a Zen 4 EPYC, hd_bench_ops BM_PatchifyCopy; 11.8 ms before the row offsets of
// for_each_row were carried from row to row).
inline void copy_bytes(void* dst, const void* src, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  auto two = [&]<size_t W>() {
    unsigned char head[W], tail[W];
    std::memcpy(head, s, W);
    std::memcpy(tail, s + n - W, W);
    std::memcpy(d, head, W);
    std::memcpy(d + n - W, tail, W);
  };
  if (n > 64) {
    std::memcpy(d, s, n);
  } else if (n >= 32) {
    two.template operator()<32>();
  } else if (n >= 16) {
    two.template operator()<16>();
  } else if (n >= 8) {
    two.template operator()<8>();
  } else {
    for (size_t i = 0; i < n; ++i) d[i] = s[i];
  }
}

}  // namespace hd::cpu
