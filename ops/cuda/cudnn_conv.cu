// conv2d through cuDNN (legacy convolution API): forward, backward data, backward filter.
//
// Why it is here and off by default: issue 18 asks for cuDNN "where it beats our kernels". Our
// GPU convs are reshapes around cuBLAS GEMMs (patch embedding, 1x1), im2col + cuBLAS, and a
// direct depthwise kernel (ops/cuda/conv.cu); which of them cuDNN beats is a GPU measurement
// (`hd_bench_cuda_ops` prints both, docs/cuda.md) that no session has been able to take yet.
// Until it has, conv2d uses cuDNN only when asked (HD_CUDNN_CONV=1 or set_use_cudnn_conv, a
// registry setting like set_allow_tf32), and CudnnConv tests compare it with our kernels.
// Choices: NCHW contiguous tensors; f32 (TF32 only when set_allow_tf32), f64, bf16/f16 with f32
// compute; algorithms from the *_v7 heuristics, the first deterministic one whose workspace fits
// 1 GiB (determinism: same seed, same losses); workspace from our stream-ordered allocator;
// one handle per (thread, device) bound to the current stream before every call.
#include <cudnn.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "autograd/error.h"
#include "ops/cpu/conv.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/runtime.h"

namespace hd::cuda {
namespace {

constexpr size_t kMaxWorkspace = size_t(1) << 30;

void check_cudnn(cudnnStatus_t s, const char* call, const Tensor& x, const Tensor& w) {
  if (s != CUDNN_STATUS_SUCCESS) {
    throw Error(detail::concat("conv2d (cuDNN) on ", x.str(), " with weight ", w.str(), ": ", call,
                               " failed: ", cudnnGetErrorString(s)));
  }
}

cudnnDataType_t data_type(DType dt) {
  switch (dt) {
    case DType::f32:
      return CUDNN_DATA_FLOAT;
    case DType::f64:
      return CUDNN_DATA_DOUBLE;
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    case DType::f16:
      return CUDNN_DATA_HALF;
    default:
      throw Error(detail::concat("conv2d (cuDNN): unsupported dtype ", dtype_name(dt)));
  }
}

cudnnHandle_t handle_for(int device) {
  thread_local std::map<int, std::unique_ptr<cudnnContext, cudnnStatus_t (*)(cudnnHandle_t)>>
      handles;
  auto it = handles.find(device);
  if (it == handles.end()) {
    DeviceGuard g(device);
    cudnnHandle_t h = nullptr;
    cudnnStatus_t s = cudnnCreate(&h);
    if (s != CUDNN_STATUS_SUCCESS)
      throw Error(detail::concat("cudnnCreate on cuda:", device, ": ", cudnnGetErrorString(s)));
    it = handles.emplace(device, decltype(handles)::mapped_type(h, cudnnDestroy)).first;
  }
  cudnnSetStream(it->second.get(), current_stream(device).handle());
  return it->second.get();
}

// The descriptors of one problem: x [B, C, H, W], w [K, C/groups, kh, kw], y [B, K, oh, ow].
struct Descriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Descriptors(const Shape& xs, const Shape& ws, const Shape& ys, DType dt, int64_t stride,
              int64_t pad, int64_t groups, const Tensor& xt, const Tensor& wt) {
    const cudnnDataType_t t = data_type(dt);
    const cudnnDataType_t compute = dt == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    check_cudnn(cudnnCreateTensorDescriptor(&x), "cudnnCreateTensorDescriptor", xt, wt);
    check_cudnn(cudnnCreateTensorDescriptor(&y), "cudnnCreateTensorDescriptor", xt, wt);
    check_cudnn(cudnnCreateFilterDescriptor(&w), "cudnnCreateFilterDescriptor", xt, wt);
    check_cudnn(cudnnCreateConvolutionDescriptor(&conv), "cudnnCreateConvolutionDescriptor", xt,
                wt);
    check_cudnn(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, t, int(xs[0]), int(xs[1]),
                                           int(xs[2]), int(xs[3])),
                "cudnnSetTensor4dDescriptor(x)", xt, wt);
    check_cudnn(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, t, int(ys[0]), int(ys[1]),
                                           int(ys[2]), int(ys[3])),
                "cudnnSetTensor4dDescriptor(y)", xt, wt);
    check_cudnn(cudnnSetFilter4dDescriptor(w, t, CUDNN_TENSOR_NCHW, int(ws[0]), int(ws[1]),
                                           int(ws[2]), int(ws[3])),
                "cudnnSetFilter4dDescriptor", xt, wt);
    check_cudnn(cudnnSetConvolution2dDescriptor(conv, int(pad), int(pad), int(stride), int(stride),
                                                1, 1, CUDNN_CROSS_CORRELATION, compute),
                "cudnnSetConvolution2dDescriptor", xt, wt);
    check_cudnn(cudnnSetConvolutionGroupCount(conv, int(groups)), "cudnnSetConvolutionGroupCount",
                xt, wt);
    // f32 without TF32 unless allowed (cuDNN's default math would use it); tensor cores for
    // 16-bit inputs.
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
    if (dt == DType::f32) math = allow_tf32() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    if (dt == DType::bf16 || dt == DType::f16) math = CUDNN_TENSOR_OP_MATH;
    check_cudnn(cudnnSetConvolutionMathType(conv, math), "cudnnSetConvolutionMathType", xt, wt);
  }
  ~Descriptors() {
    cudnnDestroyConvolutionDescriptor(conv);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(x);
  }
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
};

// The first deterministic algorithm of the heuristic's ranking whose workspace fits.
template <class Perf>
std::pair<decltype(Perf{}.algo), size_t> pick(const Perf* perf, int n, const char* what,
                                              const Tensor& x, const Tensor& w) {
  for (int i = 0; i < n; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
        perf[i].memory <= kMaxWorkspace) {
      return {perf[i].algo, perf[i].memory};
    }
  }
  throw Error(detail::concat("conv2d (cuDNN) on ", x.str(), " with weight ", w.str(),
                             ": no deterministic ", what, " algorithm within 1 GiB of workspace"));
}

// alpha = 1 and beta = 0 in the type cuDNN reads for the data type (double for f64, else float).
struct Blend {
  double one_d = 1, zero_d = 0;
  float one_f = 1, zero_f = 0;
  bool f64;
  explicit Blend(DType dt) : f64(dt == DType::f64) {}
  const void* one() const { return f64 ? static_cast<const void*>(&one_d) : &one_f; }
  const void* zero() const { return f64 ? static_cast<const void*>(&zero_d) : &zero_f; }
};

Tensor workspace(size_t bytes, Device device);

// One cuDNN convolution call: `rank` fills the heuristic's ranking of algorithms, the first
// deterministic one whose workspace fits is picked, and `run(algo, workspace, bytes)` calls it.
template <class Perf, int kCount, class Rank, class Run>
void with_algorithm(const char* what, const Tensor& a, const Tensor& b, Rank&& rank, Run&& run) {
  Perf perf[kCount];
  int n = 0;
  check_cudnn(rank(kCount, &n, perf), "cudnnGetConvolution*Algorithm_v7", a, b);
  auto [algo, bytes] = pick(perf, n, what, a, b);
  Tensor ws = workspace(bytes, a.device());
  check_cudnn(run(algo, ws.raw_data(), bytes), what, a, b);
}

// Workspace bytes as an f32 tensor from the stream-ordered allocator (freed on the stream after
// the call that used it).
Tensor workspace(size_t bytes, Device device) {
  return Tensor::empty({int64_t((std::max<size_t>(bytes, 4) + 3) / 4)}, DType::f32, device);
}

std::atomic<bool>& use_cudnn_conv_setting() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("HD_CUDNN_CONV");
    return v != nullptr && std::string(v) == "1";
  }()};
  return on;
}

}  // namespace

void set_use_cudnn_conv(bool on) {
  use_cudnn_conv_setting().store(on);
}
bool use_cudnn_conv() {
  return use_cudnn_conv_setting().load();
}

void cudnn_conv_forward(const Tensor& x, const Tensor& w, int64_t stride, int64_t pad,
                        int64_t groups, Tensor& y) {
  cudnnHandle_t h = handle_for(x.device().index);
  Descriptors d(x.shape(), w.shape(), y.shape(), x.dtype(), stride, pad, groups, x, w);
  const Blend blend(x.dtype());
  with_algorithm<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>(
      "forward", x, w,
      [&](int count, int* n, auto* perf) {
        return cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, count, n, perf);
      },
      [&](auto algo, void* ws, size_t bytes) {
        return cudnnConvolutionForward(h, blend.one(), d.x, x.raw_data(), d.w, w.raw_data(), d.conv,
                                       algo, ws, bytes, blend.zero(), d.y, y.raw_data());
      });
}

void cudnn_conv_backward_data(const Tensor& gy, const Tensor& w, int64_t stride, int64_t pad,
                              int64_t groups, Tensor& gx) {
  cudnnHandle_t h = handle_for(gy.device().index);
  Descriptors d(gx.shape(), w.shape(), gy.shape(), gy.dtype(), stride, pad, groups, gx, w);
  const Blend blend(gy.dtype());
  with_algorithm<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>(
      "backward-data", gx, w,
      [&](int count, int* n, auto* perf) {
        return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, count, n,
                                                           perf);
      },
      [&](auto algo, void* ws, size_t bytes) {
        return cudnnConvolutionBackwardData(h, blend.one(), d.w, w.raw_data(), d.y, gy.raw_data(),
                                            d.conv, algo, ws, bytes, blend.zero(), d.x,
                                            gx.raw_data());
      });
}

void cudnn_conv_backward_filter(const Tensor& gy, const Tensor& x, int64_t stride, int64_t pad,
                                int64_t groups, Tensor& gw) {
  cudnnHandle_t h = handle_for(gy.device().index);
  Descriptors d(x.shape(), gw.shape(), gy.shape(), gy.dtype(), stride, pad, groups, x, gw);
  const Blend blend(gy.dtype());
  with_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>(
      "backward-filter", x, gw,
      [&](int count, int* n, auto* perf) {
        return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, count, n,
                                                             perf);
      },
      [&](auto algo, void* ws, size_t bytes) {
        return cudnnConvolutionBackwardFilter(h, blend.one(), d.x, x.raw_data(), d.y, gy.raw_data(),
                                              d.conv, algo, ws, bytes, blend.zero(), d.w,
                                              gw.raw_data());
      });
}

}  // namespace hd::cuda
