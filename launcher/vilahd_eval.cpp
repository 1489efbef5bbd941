// `hdtrain vilahd eval`: the multiple-choice benchmark (vilahd/mc_eval.h) of a VILA-HD folder on
// held-out questions, with the ablations in one report: a table on the console and a JSON file.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "autograd/error.h"
#include "launcher/command.h"
#include "launcher/vilahd_tools.h"
#include "ps3/data/bad_input.h"
#include "vilahd/eval_plot.h"
#include "vilahd/mc_eval.h"
#include "vilahd/vila_checkpoint.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;

constexpr const char* kEvalUsage =
    "usage: hdtrain vilahd eval --checkpoint DIR --data DIR [--mc FILE] [--max-questions N]\n"
    "                           [--max-look-close N] [--out FILE.json] [--plot FILE.png]\n"
    "  Multiple-choice questions about held-out images (default DATA/eval_mc.jsonl; images\n"
    "  relative to DATA), in every mode of one report: low-res only, bottom-up, top-down with\n"
    "  look-close 1..N (default 2), and the resolution sweep 756/1512/3780 at the same budget.\n"
    "  Per mode: accuracy by the options' likelihood, exact match of the greedy answer, the share\n"
    "  of the question's GT-box patches selected (and a random pick's share), image tokens.\n"
    "  Chance is the mean of 1 / options. --out writes the report as JSON (default: no file);\n"
    "  --plot draws accuracy against resolution, one line per swept mode, low-res only and\n"
    "  chance as flat lines (default: --out with .png for .json; none without --out).\n";

}  // namespace

int vilahd_eval(const std::vector<std::string>& args) {
  for (const std::string& a : args)
    if (a == "--help" || a == "-h") {
      std::fputs(kEvalUsage, stdout);
      return 0;
    }
  std::unique_ptr<vilahd::VilaHdModel> model;
  std::unique_ptr<vilahd::BpeTokenizer> tokenizer;
  std::vector<data::McRecord> records;
  fs::path data_dir, out, plot;
  int64_t max_look_close = 2;
  try {
    Args a(args, {"checkpoint", "data", "mc", "max-questions", "max-look-close", "out", "plot"},
           {});
    const fs::path dir = a.require("checkpoint");
    data_dir = a.require("data");
    const fs::path mc = a.get("mc", (data_dir / "eval_mc.jsonl").string());
    out = a.get("out", "");
    plot = a.get("plot", out.empty() ? "" : fs::path(out).replace_extension(".png").string());
    const int64_t max_q = a.get_int("max-questions", 0);
    max_look_close = a.get_int("max-look-close", 2);
    HD_CHECK(max_q >= 0 && max_look_close >= 1, "--max-questions >= 0 and --max-look-close >= 1");
    HD_CHECK(fs::is_directory(dir), "--checkpoint '", dir.string(), "' is not a folder");
    HD_CHECK(fs::is_regular_file(dir / "llm" / "tokenizer.json"), "--checkpoint '", dir.string(),
             "' has no llm/tokenizer.json");
    HD_CHECK(fs::is_regular_file(mc), "questions file '", mc.string(), "' does not exist");
    data::BadInputLog log;
    records = data::read_mc(mc.string(), log);
    HD_CHECK(!records.empty(), "questions file '", mc.string(), "' has no usable question");
    if (max_q > 0 && int64_t(records.size()) > max_q) records.resize(size_t(max_q));
    // Every image exists before any model work (a missing one is the data's fault: exit 2).
    for (size_t i = 0; i < records.size(); ++i)
      HD_CHECK(fs::is_regular_file(data_dir / records[i].image), "questions file '", mc.string(),
               "': question ", i + 1, " names image '", records[i].image, "', which is not in ",
               data_dir.string());
    tokenizer = std::make_unique<vilahd::BpeTokenizer>(
        vilahd::BpeTokenizer::load(dir / "llm" / "tokenizer.json"));
    model = vilahd::load_vila_folder(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hdtrain vilahd eval: error: %s\n", e.what());
    return 2;
  }
  vilahd::ImageCache images(model->config().vision, 16);
  std::vector<vilahd::McModeResult> results;
  for (const vilahd::McMode& mode : vilahd::default_mc_modes(*model, max_look_close)) {
    results.push_back(vilahd::evaluate_mc(*model, *tokenizer, records, data_dir, images, mode));
    std::fprintf(stderr, "  %s: %.1f%% (%.0f s)\n", mode.name.c_str(),
                 100 * results.back().accuracy, results.back().seconds);
  }
  const double chance = vilahd::mc_chance(records);
  std::printf("%zu questions, chance %.1f%%\n%s", records.size(), 100 * chance,
              vilahd::mc_report_table(results).c_str());
  try {
    if (!out.empty()) {
      if (out.has_parent_path()) fs::create_directories(out.parent_path());
      std::ofstream f(out);
      f << vilahd::mc_report_json(results, int64_t(records.size()), chance);
      HD_CHECK(f.good(), "cannot write the report '", out.string(), "'");
      std::printf("report: %s\n", out.c_str());
    }
    if (!plot.empty()) {
      if (plot.has_parent_path()) fs::create_directories(plot.parent_path());
      vilahd::write_accuracy_plot(
          results, chance,
          "multiple choice, " + std::to_string(records.size()) + " held-out questions",
          plot.string());
      std::printf("plot: %s\n", plot.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hdtrain vilahd eval: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace hd::launcher
