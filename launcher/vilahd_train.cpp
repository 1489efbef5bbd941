// `hdtrain vilahd train`: VILA-HD SFT on one process, from a VILA-HD folder to a VILA-HD folder.
//
// What it is and is not: the SFT step of §3.7 (LM loss on the answers + token_selection_loss_weight
// x (BCE + DICE) on the selection maps of boxed records, a batch all-with-box or all-without),
// trainable parts per run, AdamW with warmup + cosine, gradient clipping, a log line per step and
// the folder written at the end. The multi-rank, checkpointed, resumable staged run (`hdtrain
// run`, issue 17) is not this command; shard_vila (vilahd/parallelize.h) is what it will use.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>

#include "autograd/error.h"
#include "autograd/optimizer.h"
#include "launcher/command.h"
#include "launcher/vilahd_tools.h"
#include "ps3/data/bad_input.h"
#include "vilahd/sft_data.h"
#include "vilahd/trainable_parts.h"
#include "vilahd/vila_checkpoint.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTrainUsage =
    "usage: hdtrain vilahd train --init DIR --data DIR --out DIR [--sft FILE]\n"
    "                            [--steps N] [--batch B] [--lr LR] [--warmup N]\n"
    "                            [--trainable PARTS] [--seed S] [--max-length T]\n"
    "                            [--selection-weight W] [--log-every K]\n"
    "  VILA-HD SFT on one process: starts from the VILA-HD folder --init, trains on the SFT\n"
    "  records (default DATA/sft.jsonl; images relative to DATA), writes the folder --out.\n"
    "  --trainable   comma list of llm, projector, top_down_selection, vision_tower\n"
    "                (default projector,top_down_selection: the alignment stage)\n"
    "  --steps 100, --batch 4, --lr 1e-3 (peak; warmup --warmup 5 then cosine), --seed 0\n"
    "  --max-length  records with more text tokens are skipped and counted (default 2048)\n"
    "  --selection-weight  token_selection_loss_weight (default: the folder's config)\n";

}  // namespace

int vilahd_train(const std::vector<std::string>& args) {
  for (const std::string& a : args)
    if (a == "--help" || a == "-h") {
      std::fputs(kTrainUsage, stdout);
      return 0;
    }
  fs::path init, data_dir, out, sft_path;
  int64_t steps = 0, batch = 0, warmup = 0, max_length = 0, log_every = 0;
  double lr = 0, weight = -1;
  uint64_t seed = 0;
  std::set<std::string> parts;
  std::unique_ptr<vilahd::VilaHdModel> model;
  std::unique_ptr<vilahd::BpeTokenizer> tokenizer;
  std::vector<data::SftRecord> records;
  try {
    Args a(args,
           {"init", "data", "out", "sft", "steps", "batch", "lr", "warmup", "trainable", "seed",
            "max-length", "selection-weight", "log-every"},
           {});
    init = a.require("init");
    data_dir = a.require("data");
    out = a.require("out");
    sft_path = a.get("sft", (data_dir / "sft.jsonl").string());
    steps = a.get_int("steps", 100);
    batch = a.get_int("batch", 4);
    warmup = a.get_int("warmup", 5);
    max_length = a.get_int("max-length", 2048);
    log_every = a.get_int("log-every", 1);
    seed = uint64_t(a.get_int("seed", 0));
    lr = a.get_double("lr", 1e-3);
    weight = a.get_double("selection-weight", -1);  // -1: the folder's config
    HD_CHECK(steps >= 1 && batch >= 1 && warmup >= 0 && log_every >= 1,
             "--steps, --batch, --log-every must be >= 1");
    HD_CHECK(lr > 0, "--lr must be > 0");
    parts = vilahd::parse_trainable_parts(a.get("trainable", "projector,top_down_selection"));
    HD_CHECK(fs::is_directory(init), "--init '", init.string(), "' is not a folder");
    HD_CHECK(fs::is_regular_file(init / "llm" / "tokenizer.json"), "--init '", init.string(),
             "' has no llm/tokenizer.json");
    HD_CHECK(fs::is_regular_file(sft_path), "SFT file '", sft_path.string(), "' does not exist");
    HD_CHECK(!fs::exists(out / "config.json"), "--out '", out.string(),
             "' already holds a VILA-HD folder");
    tokenizer = std::make_unique<vilahd::BpeTokenizer>(
        vilahd::BpeTokenizer::load(init / "llm" / "tokenizer.json"));
    data::BadInputLog log;
    records = data::read_sft(sft_path.string(), log);
    HD_CHECK(!records.empty(), "SFT file '", sft_path.string(), "' has no usable record");
    // Every image exists before training starts (not at the step that first draws it).
    for (size_t i = 0; i < records.size(); ++i)
      HD_CHECK(fs::is_regular_file(data_dir / records[i].image), "SFT file '", sft_path.string(),
               "': record ", i + 1, " names image '", records[i].image, "', which is not in ",
               data_dir.string());
    model = vilahd::load_vila_folder(init);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hdtrain vilahd train: error: %s\n", e.what());
    return 2;
  }
  const double sel_weight = weight >= 0 ? weight : model->config().token_selection_loss_weight;
  const int64_t trainable = vilahd::freeze_all_but(*model, parts);
  std::vector<ParamGroup> groups;
  {
    ParamGroup g{"trainable", {}, {}, 0.0};
    for (auto& [name, p] : model->named_parameters())
      if (p.requires_grad()) g.names.push_back(name), g.params.push_back(p);
    groups.push_back(g);
  }
  AdamW opt(groups, {lr, 0.9, 0.999, 1e-8});
  WarmupCosine schedule{lr, warmup, steps, 0.0};
  vilahd::ImageCache images(model->config().vision, 32);
  std::printf(
      "vilahd train: %zu records, %lld trainable tensors (%s), %lld steps of %lld\n",
      records.size(), static_cast<long long>(trainable),
      [&] {
        std::string s;
        for (const auto& p : parts) s += (s.empty() ? "" : ",") + p;
        return s;
      }()
          .c_str(),
      static_cast<long long>(steps), static_cast<long long>(batch));

  std::mt19937_64 rng(seed);
  std::vector<size_t> order(records.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  size_t cursor = 0;
  int64_t skipped = 0;
  std::vector<double> step_seconds;
  for (int64_t step = 0; step < steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<vilahd::VilaSample> batch_samples;
    bool all_boxed = true;
    std::vector<const data::SftRecord*> picked;
    while (int64_t(picked.size()) < batch) {
      if (cursor == order.size()) std::shuffle(order.begin(), order.end(), rng), cursor = 0;
      picked.push_back(&records[order[cursor++]]);
      all_boxed = all_boxed && picked.back()->box.has_value();
    }
    for (const data::SftRecord* r : picked) {
      vilahd::VilaSample s = vilahd::sft_sample(*tokenizer, *r, images.get(data_dir / r->image),
                                                model->config().vision, all_boxed);
      if (int64_t(s.input_ids.size()) > max_length) {
        ++skipped;
        continue;
      }
      batch_samples.push_back(std::move(s));
    }
    if (batch_samples.empty()) continue;
    opt.set_lr(schedule.at(step));
    vilahd::VilaOutputs o = model->forward(batch_samples);
    Tensor loss = o.lm_loss;
    if (o.selection_loss.defined() && sel_weight > 0)
      loss = loss.defined() ? add(loss, mul(o.selection_loss, sel_weight))
                            : mul(o.selection_loss, sel_weight);
    loss.backward();
    const double norm = clip_grad_norm(groups[0].params, 1.0);
    opt.step();
    opt.zero_grad();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    step_seconds.push_back(secs);
    if ((step + 1) % log_every == 0 || step + 1 == steps)
      std::printf("step %lld/%lld loss %.4f lm %.4f selection %.4f grad_norm %.3f lr %.2e %.2f s\n",
                  static_cast<long long>(step + 1), static_cast<long long>(steps),
                  loss.item<double>(), o.lm_loss.defined() ? o.lm_loss.item<double>() : 0.0,
                  o.selection_loss.defined() ? o.selection_loss.item<double>() : 0.0, norm,
                  schedule.at(step), secs);
    std::fflush(stdout);
  }
  for (auto& [name, p] : model->named_parameters()) {
    Tensor t = p;
    t.requires_grad_(true);
  }
  vilahd::save_vila_folder(*model, out, init / "llm" / "tokenizer.json");
  std::sort(step_seconds.begin(), step_seconds.end());
  std::printf("wrote %s (median step %.2f s, %lld over-long records skipped)\n", out.c_str(),
              step_seconds.empty() ? 0.0 : step_seconds[step_seconds.size() / 2],
              static_cast<long long>(skipped));
  return 0;
}

}  // namespace hd::launcher
