// AVX-512 kernels for the stride-1 depthwise convolution with 7 taps per row (ConvNeXt's 7x7),
// over the zero-bordered f32 planes of ops/cpu/conv.cpp's stride-1 path.
//
// Why: that path's plain loops keep one block of outputs in four AVX2 accumulators, so every
// tap waits on the previous tap's multiply-add (4 dependent chains for a 4-cycle latency) and
// loads two vectors per multiply-add in the weight gradient; on PS3's selection ConvNeXt
// (bf16 [2, 32, 54, 54]) a block's forward ran at ~35 GMAC/s on 2 threads. Here the forward
// (and backward-input) computes two output rows at once, so each input row loaded serves two
// taps and eight chains run side by side, and the weight gradient accumulates all seven taps of
// a kernel row at once (fourteen chains, the gradient row loaded once for seven taps).
//
// Same bits as the plain loops (conv.cpp spells its multiply-adds std::fma): each output and
// each weight-gradient lane sums its products in the same order, so the machine's ISA never
// changes a result.
#pragma once

#include <cstdint>

namespace hd::cpu::depthwise7 {

// out[oy][x] for x < 16 * ceil(ow / 16) (rows out_ld apart) = sum over ky < kh, kx < 7 (in that
// order) of taps[ky * 7 + kx] * padded[(oy + ky) * row_len + x + kx], for oy < oh. padded has
// oh + kh - 1 rows of row_len >= 16 * ceil(ow / 16) + 6 values.
void correlate_rows(const float* padded, int64_t row_len, const float* taps, int64_t kh, int64_t oh,
                    int64_t ow, float* out, int64_t out_ld);

// acc[kx][i] (32 lanes per tap, kx < 7) += sum over oy < oh, then blocks ox0 = 0, 32, ... below
// width, of grad[oy * grad_ld + ox0 + i] * x[(oy + ky) * row_len + ox0 + i + kx]: the weight
// gradient's lane sums of kernel row ky. width is a multiple of 32.
void weight_lanes_row(const float* grad, int64_t grad_ld, const float* x, int64_t row_len,
                      int64_t ky, int64_t oh, int64_t width, float* acc);

}  // namespace hd::cpu::depthwise7
