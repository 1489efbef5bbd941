// hdtrain's side of the Qwen2 LLM comparison (bench/vilahd_llm_compare.py runs it next to HF
// transformers): forward+backward of the LM loss on a [B, T] batch of random tokens, then greedy
// generation with the KV cache. Prints one line per timed step, "fwd_bwd_ms=<>", one per
// generation, "gen_ms=<> tokens=<>", then a summary with medians, tokens/s and the allocator's
// peak over the training steps. --recompute runs the decoder layers with activation
// checkpointing (train.activation_checkpointing = llm): run it beside a plain run to compare.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/thread_pool.h"
#include "bench/bench_util.h"
#include "ops/factory.h"
#include "vilahd/generation.h"
#include "vilahd/qwen2.h"

using namespace hd;
using namespace hd::vilahd;
using bench::Clock;
using bench::median;
using bench::ms_since;

int main(int argc, char** argv) {
  std::string preset = "tiny";
  int steps = 5, warmup = 2, gens = 3;
  int64_t batch = 4, seq = 256, prompt = 64, new_tokens = 64;
  bool recompute = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      std::string f = std::string(flag) + "=";
      return a.rfind(f, 0) == 0 ? argv[i] + f.size() : nullptr;
    };
    if (auto v = value("--config"))
      preset = v;
    else if (auto v = value("--steps"))
      steps = std::atoi(v);
    else if (auto v = value("--warmup"))
      warmup = std::atoi(v);
    else if (auto v = value("--gens"))
      gens = std::atoi(v);
    else if (auto v = value("--batch"))
      batch = std::atoll(v);
    else if (auto v = value("--seq"))
      seq = std::atoll(v);
    else if (auto v = value("--prompt"))
      prompt = std::atoll(v);
    else if (auto v = value("--new-tokens"))
      new_tokens = std::atoll(v);
    else if (a == "--recompute")
      recompute = true;
    else {
      std::fprintf(stderr,
                   "hd_bench_vilahd_llm: unknown argument '%s'\nusage: hd_bench_vilahd_llm "
                   "[--config=tiny|small] [--steps=N] [--warmup=N] [--gens=N] [--batch=B] "
                   "[--seq=T] [--prompt=P] [--new-tokens=G] [--recompute]\n",
                   argv[i]);
      return 2;
    }
  }
  try {
    Qwen2Config c = Qwen2Config::preset(preset);
    Qwen2ForCausalLM model(c);
    model.initialize(0);
    model.set_activation_checkpointing(recompute);
    std::vector<int64_t> ids(size_t(batch * seq));
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = int64_t((i * 7919 + 13) % uint64_t(c.vocab_size));
    Qwen2Inputs in;
    in.input_ids = from_vector<int64_t>(ids, {batch, seq});
    std::vector<double> step_ms;
    int64_t peak = 0;
    for (int s = 0; s < warmup + steps; ++s) {
      model.zero_grad();
      allocator_for(Device::cpu()).reset_peak();
      auto t0 = Clock::now();
      Tensor loss = causal_lm_loss(model.forward(in), in.input_ids);
      loss.backward();
      const double t = ms_since(t0);
      peak = std::max(peak, allocator_for(Device::cpu()).stats().peak_bytes);
      if (s < warmup) continue;
      step_ms.push_back(t);
      std::printf("fwd_bwd_ms=%.1f loss=%.4f\n", t, loss.item<float>());
      std::fflush(stdout);
    }
    std::vector<double> gen_ms;
    Qwen2Inputs p;
    p.input_ids =
        from_vector<int64_t>(std::vector<int64_t>(ids.begin(), ids.begin() + prompt), {1, prompt});
    GenerationOptions o;
    o.max_new_tokens = new_tokens;
    for (int g = 0; g < gens + 1; ++g) {
      auto t0 = Clock::now();
      GenerationResult r = generate(model, p, o);
      const double t = ms_since(t0);
      if (g == 0) continue;  // warm-up
      gen_ms.push_back(t);
      std::printf("gen_ms=%.1f tokens=%zu\n", t, r.tokens.size());
      std::fflush(stdout);
    }
    const double step = median(step_ms), gen = median(gen_ms);
    std::printf(
        "summary: config=%s params=%.2fM threads=%d batch=%lld seq=%lld median_fwd_bwd_ms=%.1f "
        "train_tokens_per_s=%.0f prompt=%lld new_tokens=%lld median_gen_ms=%.1f "
        "gen_tokens_per_s=%.1f recompute=%d peak_train_MiB=%.1f\n",
        preset.c_str(), double(model.num_parameters()) / 1e6, cpu_thread_pool().num_threads(),
        (long long)batch, (long long)seq, step, double(batch * seq) / (step / 1e3),
        (long long)prompt, (long long)new_tokens, gen, double(new_tokens) / (gen / 1e3),
        int(recompute), double(peak) / (1 << 20));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hd_bench_vilahd_llm: %s\n", e.what());
    return 1;
  }
  return 0;
}
