// Loader throughput at 4K: images/s through the full loader (read, decode, views, text) with N
// threads, and peak memory per image in flight. Prints figures; asserts nothing.
//
//   hd_bench_data_loader [--data DIR] [--threads 2] [--batch 8] [--batches 6]
// Without --data it generates 24 synthetic 3780^2 images under $TMPDIR first.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "ps3/data/loader.h"
#include "ps3/data/synth.h"

using namespace hd::data;
using Clock = std::chrono::steady_clock;

namespace {
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
// Resident set size now and its high-water mark, from /proc (MiB).
std::pair<double, double> rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  double now = 0, peak = 0;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) now = std::stod(line.substr(6)) / 1024;
    if (line.rfind("VmHWM:", 0) == 0) peak = std::stod(line.substr(6)) / 1024;
  }
  return {now, peak};
}
}  // namespace

int main(int argc, char** argv) {
  std::string data;
  int threads = 2, batch = 8, batches = 6;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--data")) data = argv[i + 1];
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batches")) batches = std::atoi(argv[i + 1]);
  }
  if (data.empty()) {
    data = (std::filesystem::temp_directory_path() / "hd_bench_data_3780").string();
    if (!std::filesystem::exists(data + "/train/00000023.json")) {
      SynthOptions o;
      o.out = data, o.images = 24, o.eval_images = 0, o.threads = threads;
      auto t = Clock::now();
      synth_dataset(o);
      std::printf("synth: 24 images at 3780^2 in %.1f s (%d threads)\n", seconds_since(t), threads);
    }
  }
  BadInputLog log;
  Dataset ds = open_dataset(data + "/train", log);
  std::vector<int64_t> nb;
  std::vector<bool> ng;
  for (const auto& r : ds.records) nb.push_back(int64_t(r.texts.size())), ng.push_back(true);

  // Stage costs on one image, single thread.
  {
    auto bytes = read_image_bytes(ds.records[0].source);
    auto t = Clock::now();
    Image img = decode_image(bytes, "bench");
    double dec = seconds_since(t);
    std::vector<float> low(3 * 378 * 378), sel(3 * 1512 * 1512), patch(3 * 14 * 14 * 100);
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < 100; ++i) idx.push_back(i * 7);
    // Warm the per-size tap tables (built once per process) so only steady-state work is timed.
    resample_region(img, 378, 378, 0, 14, 0, 14, {}, low.data());
    resample_region(img, 1512, 1512, 0, 14, 0, 14, {}, sel.data());
    extract_patches(img, 756, {0}, {}, patch.data());
    t = Clock::now();
    resample_region(img, 378, 378, 0, 378, 0, 378, {}, low.data());
    double tl = seconds_since(t);
    t = Clock::now();
    resample_region(img, 1512, 1512, 0, 1512, 0, 1512, {}, sel.data());
    double ts = seconds_since(t);
    t = Clock::now();
    extract_patches(img, 756, idx, {}, patch.data());
    double tp = seconds_since(t);
    std::printf(
        "stages (1 thread, %lldx%lld): decode %.1f ms, low-res 378 %.1f ms, "
        "selection 1512 %.1f ms, 100 patches at 756 %.2f ms\n",
        static_cast<long long>(img.height), static_cast<long long>(img.width), dec * 1e3, tl * 1e3,
        ts * 1e3, tp * 1e3);
  }

  Sampler sampler(nb, ng, batch, 0);
  LoaderOptions o;
  o.threads = threads;
  double base = rss_mib().first;
  Loader loader(ds, sampler, nullptr, o, log);
  loader.next();  // warm-up: fills the prefetch queue
  auto t = Clock::now();
  int64_t images = 0;
  for (int i = 0; i < batches; ++i) images += loader.next().batch_size();
  double s = seconds_since(t);
  auto [now, peak] = rss_mib();
  // In flight at most: the prefetch_batches batches queued or being filled (the bench drops each
  // delivered batch at once). Each holds per image the uint8 S x S image and the f32 378/1512
  // views: 42.9 + 1.7 + 27.4 MB = 72 MB at 3780, plus one decode buffer per worker.
  int64_t in_flight = int64_t(o.prefetch_batches) * batch;
  std::printf("loader: %lld images at 3780 in %.2f s with %d threads: %.2f images/s\n",
              static_cast<long long>(images), s, threads, double(images) / s);
  std::printf(
      "memory: RSS before loader %.0f MiB, peak %.0f MiB, <= %lld images in flight: "
      "%.1f MiB per image in flight\n",
      base, peak, static_cast<long long>(in_flight), (peak - base) / double(in_flight));
  std::printf("bad inputs skipped: %lld\n", static_cast<long long>(log.count()));
  return 0;
}
