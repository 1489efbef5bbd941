// hdtrain ps3 eval: the held-out evaluation of a trained PS3 checkpoint (ps3/evaluate.h), the
// same one a run prints at its end, on any dataset folder. One process, no mpirun.
#include "launcher/ps3_eval.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "autograd/error.h"
#include "launcher/command.h"
#include "launcher/config.h"
#include "launcher/model_config.h"
#include "launcher/ps3_weights.h"
#include "ps3/data/bad_input.h"
#include "ps3/data/records.h"
#include "ps3/evaluate.h"
#include "ps3/pretrain.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: hdtrain ps3 eval --config FILE.textproto [--set FIELD=VALUE ...]\n"
    "                        --checkpoint PATH [--data DIR] [--max-images N]\n"
    "                        [--look-close N] [--retrieval-images N] [--out FILE.json]\n"
    "                        [--selection-png DIR [--png-count N]]\n"
    "  Evaluates a PS3 checkpoint on held-out images (one process, no mpirun) and prints, per\n"
    "  scale and overall, the recall of GT-box patches and the precision of the selected\n"
    "  patches for top-down (each caption's prompt) and bottom-up (the prior) selection, each\n"
    "  against a random pick of the same size; the selection probability inside vs outside the\n"
    "  boxes (mean, max, AUC); where top-down looks first (the caption's own box, another\n"
    "  region of the image, or elsewhere); and retrieval top-1 with GT forcing (caption ->\n"
    "  region) and without (top-down selection, caption -> image), each against chance.\n"
    "  --config, --set       the run configuration (model shape, data.tokenizer, eval.*)\n"
    "  --checkpoint          a checkpoint step folder, a run folder (its newest complete\n"
    "                        checkpoint) or a .safetensors file\n"
    "  --data DIR            a dataset folder in the PS3 layout (default: data.eval_dir)\n"
    "  --max-images N        images to evaluate (default: eval.max_images; 0: all)\n"
    "  --look-close N        look-close steps (default: eval.look_close_steps)\n"
    "  --retrieval-images N  images for top-down retrieval (default:\n"
    "                        eval.retrieval_max_images; 0: all evaluated)\n"
    "  --out FILE.json       the results as JSON (default: eval.json in the current folder)\n"
    "  --selection-png DIR   draw where the model looked for the first --png-count captions\n"
    "                        (td_<image>_<caption>.png, with the caption's box) and on their\n"
    "                        images bottom-up (bu_<image>.png)\n"
    "  --png-count N         captions to draw (default 8)\n"
    "  Exit codes: 0 done, 2 bad arguments or configuration, 1 any other error.\n";

}  // namespace

int ps3_eval(const std::vector<std::string>& args) {
  const ConfigArgs parsed = split_config_args(args);
  if (parsed.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  // Bad arguments, configuration and paths exit 2 before any work; later failures exit 1.
  proto::RunConfig config;
  std::unique_ptr<Args> args_ptr;
  std::string data_dir, tok_path;
  WeightsSource src;
  try {
    HD_CHECK(!parsed.config_path.empty(),
             "missing required option --config (see hdtrain ps3 eval --help)");
    config =
        load_model_config(parsed.config_path, parsed.overrides);  // checks what evaluation reads
    args_ptr = std::make_unique<Args>(
        parsed.rest,
        std::vector<std::string>{"checkpoint", "data", "max-images", "look-close",
                                 "retrieval-images", "out", "selection-png", "png-count"},
        std::vector<std::string>{});
    data_dir = args_ptr->get("data", config.data().eval_dir());
    HD_CHECK(!data_dir.empty(), "no dataset to evaluate: pass --data DIR or set data.eval_dir");
    HD_CHECK(fs::is_directory(data_dir), "--data '", data_dir, "' is not a folder");
    tok_path = config.data().tokenizer();
    HD_CHECK(fs::exists(tok_path), "data.tokenizer '", tok_path,
             "' does not exist (needed to tokenize the captions; set data.dir or data.tokenizer "
             "to the run's)");
    src = resolve_checkpoint(args_ptr->require("checkpoint"));
  } catch (const Error& e) {
    std::fprintf(stderr, "hdtrain ps3 eval: error: %s\n", e.what());
    return 2;
  }
  const Args& a = *args_ptr;
  const fs::path out_path = a.get("out", "eval.json");
  data::Tokenizer tokenizer(tok_path);
  ps3::PS3Config mcfg = to_ps3_config(config.model(), tokenizer.vocab_size());
  data::Tokenizer tok(tok_path, mcfg.text.context);

  ps3::PS3CLIP model(mcfg);
  load_weights(model, src, /*need_text=*/true);

  data::BadInputLog log(config.data().strict());
  data::Dataset eval_set = data::open_dataset(data_dir, log);
  HD_CHECK(!eval_set.records.empty(), "--data '", data_dir,
           "' holds no usable image/caption pairs to evaluate on");
  ps3::EvalOptions eo;
  const int64_t max_images = a.get_int("max-images", config.eval().max_images());
  eo.max_images = max_images > 0 ? max_images : int64_t(eval_set.records.size());
  eo.look_close_steps = a.get_int("look-close", config.eval().look_close_steps());
  HD_CHECK(eo.look_close_steps >= 1, "--look-close ", eo.look_close_steps, " must be >= 1");
  eo.retrieval_max_images = a.get_int("retrieval-images", config.eval().retrieval_max_images());
  eo.loader.image_size = mcfg.vision.image_size();
  eo.loader.low_res = mcfg.vision.low_res;
  eo.loader.selection_res = mcfg.vision.selection_res;
  eo.loader.sentence_masking = false;
  eo.png_dir = a.get("selection-png", "");
  eo.png_count = a.get_int("png-count", 8);

  auto t0 = std::chrono::steady_clock::now();
  ps3::EvalResult r = ps3::evaluate_ps3(model, eval_set, tok, eo);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path());
  {
    std::ofstream f(out_path);
    f << ps3::eval_json(r);
    HD_CHECK(f.good(), "cannot write --out '", out_path.string(), "'");
  }
  std::printf("== %s on %s (%lld images, %lld local captions, look-close %lld; %.1f s; %s) ==\n%s",
              src.path.c_str(), data_dir.c_str(), static_cast<long long>(r.images),
              static_cast<long long>(r.queries), static_cast<long long>(eo.look_close_steps), sec,
              out_path.c_str(), ps3::eval_table(r).c_str());
  return 0;
}

}  // namespace hd::launcher
