// VILA-HD's constant-cost property (the paper's claim for PS3, carried into the MLLM): with the
// same high-res token budget, answering one question costs about the same at 756, 1512 and 3780
// pixels, because PS3 encodes only the selected patches and the LLM sees only the kept windows.
// For each largest scale S, a tiny VILA-HD whose PS3 scales go up to S answers one question
// about the same 3780x3780 image (prepared for S first: that squash-resize is timed apart, it
// is data loading, not model cost). Prints per S the median answer time, the image tokens and
// the ratio to the 756 model; then the SFT step of the same model (a batch of one question, LM
// loss on a 4-token answer + the selection loss on a box, backward through every part) and the
// process's peak resident memory over that S's runs (VmHWM, reset before each S), the figures
// issue 17 asks per rank for the demo config.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "autograd/thread_pool.h"
#include "bench/bench_util.h"
#include "ops/factory.h"
#include "ps3/image_inputs.h"
#include "vilahd/vila_hd.h"

using namespace hd;
using namespace hd::vilahd;
using bench::Clock;
using bench::median;
using bench::ms_since;

using bench::peak_rss_mib;
using bench::reset_peak_rss;

int main(int argc, char** argv) {
  int runs = 3;
  int64_t budget = 256, new_tokens = 16;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--runs=", 0) == 0)
      runs = std::atoi(a.c_str() + 7);
    else if (a.rfind("--budget=", 0) == 0)
      budget = std::atoll(a.c_str() + 9);
    else if (a.rfind("--new-tokens=", 0) == 0)
      new_tokens = std::atoll(a.c_str() + 13);
    else {
      std::fprintf(stderr,
                   "usage: hd_bench_vilahd_resolution [--runs=N] [--budget=K] [--new-tokens=G]\n");
      return 2;
    }
  }
  try {
    data::Image image(3780, 3780);
    for (size_t i = 0; i < image.pixels.size(); ++i)
      image.pixels[i] = uint8_t((i * 2654435761u) >> 24);
    std::printf("threads=%d budget=%lld patches per step, %lld answer tokens, median of %d\n",
                cpu_thread_pool().num_threads(), (long long)budget, (long long)new_tokens, runs);
    double base = 0, step_base = 0;
    for (std::vector<int64_t> scales :
         {std::vector<int64_t>{756}, {756, 1512}, {756, 1512, 3780}}) {
      VilaHdConfig c = VilaHdConfig::tiny(512, 3);
      c.vision.scales = scales;
      c.vision.max_select = budget;
      reset_peak_rss();
      VilaHdModel model(c);
      model.initialize(0);
      auto t0 = Clock::now();
      ps3::PreparedImage prepared = ps3::prepare_image(image, c.vision);
      const double prep = ms_since(t0);
      VilaSample s;
      s.input_ids = {5, 6, kImageToken, 7, 8, 9, 10, 11};
      s.prompt_position = 5;
      s.images.resize(1);
      s.images[0].inputs = ps3::vision_inputs(prepared);
      GenerationOptions o;
      o.max_new_tokens = new_tokens;
      std::vector<double> times;
      int64_t image_tokens = 0;
      for (int r = 0; r < runs + 1; ++r) {
        auto t = Clock::now();
        VilaHdModel::Answer a = model.answer(s, o);
        if (r == 0) continue;  // warm-up
        times.push_back(ms_since(t));
        image_tokens = a.looks[0].projected.tokens.size(0);
      }
      const double m = median(times);
      if (base == 0) base = m;
      // The SFT step: labels on the answer, a box's GT map per scale (a 2 x 2 block of cells).
      VilaSample train = s;
      train.labels = {-100, -100, -100, -100, 8, 9, 10, 11};
      for (size_t k = 0; k < scales.size(); ++k) {
        const int64_t g = c.vision.grid(k);
        std::vector<float> cells(size_t(g * g), 0.f);
        for (int64_t y = g / 2; y < g / 2 + 2; ++y)
          for (int64_t x = g / 2; x < g / 2 + 2; ++x) cells[size_t(y * g + x)] = 1.f;
        train.images[0].gt_maps.push_back(from_vector<float>(cells, {1, g, g}));
      }
      std::vector<double> steps;
      for (int r = 0; r < runs + 1; ++r) {
        auto t = Clock::now();
        VilaOutputs out = model.forward({train});
        out.loss.backward();
        for (auto& [name, p] : model.named_parameters()) p.zero_grad();
        if (r > 0) steps.push_back(ms_since(t));
      }
      const double step = median(steps);
      if (step_base == 0) step_base = step;
      std::printf(
          "S=%lld scales=%zu: answer %.0f ms (x%.2f vs 756), %lld image tokens; SFT step %.0f ms "
          "(x%.2f); peak RSS %.0f MiB; image preparation %.0f ms\n",
          (long long)scales.back(), scales.size(), m, m / base, (long long)image_tokens, step,
          step / step_base, peak_rss_mib(), prep);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hd_bench_vilahd_resolution: %s\n", e.what());
    return 1;
  }
  return 0;
}
