// Overhead of hd::monitoring on a training step: the same tiny-ViT step (width 64, depth 2,
// batch 16, 28x28 images, AdamW) run (a) without metrics, (b) with StepTimer + Monitor::on_step
// (metrics, no file/console), (c) as (b) while a client scrapes /metrics every second. The three
// alternate in rounds (this VM's timing noise is large; compare medians). Also times on_step +
// phase timers alone, which is the real added cost and is far below the step's noise.
//
//   hd_bench_monitoring_overhead [rounds=7] [steps_per_round=150]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "autograd/optimizer.h"
#include "monitoring/monitor.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/loss.h"
#include "ops/nn/vit.h"
#include "ops/reduce.h"
#include "tests/monitoring/http_client.h"

using namespace hd;
using namespace hd::monitoring;
using Clock = std::chrono::steady_clock;

namespace {

// Each round's median, then the minimum over rounds: other load on the machine only ever adds
// time, so the least-disturbed round is the fairest comparison.
double best(const std::vector<double>& v) {
  return *std::min_element(v.begin(), v.end());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Model : Module {
  std::shared_ptr<nn::VisionTransformer> vit;
  std::shared_ptr<nn::Linear> head;
  explicit Model(const nn::ViTConfig& c) {
    vit = register_module("vit", std::make_shared<nn::VisionTransformer>(c));
    head = register_module("head", std::make_shared<nn::Linear>(c.width, 4));
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 150;
  nn::ViTConfig config{.image_size = 28,
                       .patch = 7,
                       .channels = 3,
                       .width = 64,
                       .depth = 2,
                       .heads = 4,
                       .mlp_hidden = 128};
  Model model(config);
  model.initialize(1);
  AdamW opt(param_groups(model, 0.01), {.lr = 1e-3});
  Generator gen(3, "bench");
  Tensor x = normal({16, 3, 28, 28}, 0, 1, gen);
  Tensor y = from_vector(std::vector<int64_t>(16, 1), {16});

  MonitorConfig mc;
  mc.labels.run = "bench";
  mc.info.loss_terms = {"total"};
  mc.server.port_base = 0;
  mc.progress = false;
  Monitor mon(mc);
  const int port = mon.server()->port();

  auto run = [&](bool metrics) {
    std::vector<double> times;
    for (int s = 0; s < steps; ++s) {
      const auto t0 = Clock::now();
      StepTimer timer;
      Tensor loss;
      if (metrics) {
        {
          auto p = timer.phase(Phase::forward);
          loss = cross_entropy(model.head->forward(mean(model.vit->forward(x), {1})), y);
        }
        {
          auto p = timer.phase(Phase::backward);
          opt.zero_grad();
          loss.backward();
        }
        {
          auto p = timer.phase(Phase::optimizer);
          opt.step();
        }
        StepReport r;
        r.step = s;
        r.samples = 16;
        r.losses = {{"total", loss.item<float>()}};
        r.learning_rate = 1e-3;
        r.timing = timer.finish();
        mon.on_step(r);
      } else {
        loss = cross_entropy(model.head->forward(mean(model.vit->forward(x), {1})), y);
        opt.zero_grad();
        loss.backward();
        opt.step();
        (void)loss.item<float>();
      }
      times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return median(times);
  };

  std::atomic<bool> scraping{false}, done{false};
  std::atomic<int> scrapes{0};
  std::thread scraper([&] {
    while (!done.load()) {
      if (!scraping.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      if (!testing::http_get(port).empty()) scrapes.fetch_add(1);  // at once, then every 1 s
      for (int i = 0; i < 100 && scraping.load() && !done.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  });
  run(false);  // warm-up (allocator cache, thread pool)
  std::vector<double> base, with, scraped;
  for (int r = 0; r < rounds; ++r) {
    base.push_back(run(false));
    with.push_back(run(true));
    scraping.store(true);
    scraped.push_back(run(true));
    scraping.store(false);
  }
  done.store(true);
  scraper.join();

  // The added cost itself: phase timers + on_step (metrics only), averaged over many calls.
  StepReport r;
  r.losses = {{"total", 1.0}};
  const int n = 200000;
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    StepTimer timer;
    for (int p = 0; p < int(kPhaseCount); ++p) {
      auto s = timer.phase(Phase(p));
    }
    r.step = i;
    r.timing = timer.finish();
    mon.metrics().on_step(r);
    mon.metrics().update_host_memory();
  }
  const double per_call = std::chrono::duration<double>(Clock::now() - t0).count() / n;
  // A scrape's cost (serialize + HTTP on loopback), which runs on the server thread once a second:
  // on a machine whose cores are all busy with the step it is stolen from the step.
  const auto s0 = Clock::now();
  for (int i = 0; i < 100; ++i) testing::http_get(port);
  const double per_scrape = std::chrono::duration<double>(Clock::now() - s0).count() / 100;
  const double step = best(base);
  std::printf(
      "step time (best round median) over %d rounds x %d steps: no metrics %.3f ms | metrics %.3f "
      "ms (%+.2f%%)"
      " | metrics + scrape every 1 s %.3f ms (%+.2f%%), %d scrapes\n",
      rounds, steps, step * 1e3, best(with) * 1e3, 100 * (best(with) / step - 1),
      best(scraped) * 1e3, 100 * (best(scraped) / step - 1), scrapes.load());
  std::printf(
      "metrics cost per step (5 phase timers + on_step + memory): %.2f us = %.4f%% of the "
      "step\n",
      per_call * 1e6, 100 * per_call / step);
  std::printf(
      "one scrape (serialize + HTTP, %zu bytes): %.1f us, i.e. %.4f%% of one core at 1 "
      "scrape/s\n",
      testing::body_of(testing::http_get(port)).size(), per_scrape * 1e6, 100 * per_scrape / 1.0);
  return 0;
}
