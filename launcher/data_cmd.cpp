// hdtrain data synth | tokenizer | check
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "autograd/error.h"
#include "launcher/command.h"
#include "ps3/data/geometry.h"
#include "ps3/data/image.h"
#include "ps3/data/records.h"
#include "ps3/data/synth.h"
#include "ps3/data/text.h"

namespace hd::launcher {
namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  hdtrain data synth --out DIR [--images N] [--eval-images M] [--resolution R] [--seed S]\n"
    "                     [--threads T] [--tar] [--shard-size K] [--png] [--layout L]\n"
    "                     [--max-regions N]\n"
    "      the synthetic 4K dataset: N training images (DIR/train) and M held-out ones\n"
    "      (DIR/eval) at R x R with captioned boxes, in the PS3 layout (JPEG; --png for PNG;\n"
    "      --tar for webdataset shards of K images); --layout boards (default: details on\n"
    "      coloured signs), tiny_signs (the first generator), patterns (each sign carries a\n"
    "      fine stripe or checker pattern) or one_pattern (one such sign per image: the staged\n"
    "      demo's questions); --max-regions N (1..5, default 5): each image of the multi-sign\n"
    "      layouts gets min(2, N)..N salient signs\n"
    "  hdtrain data tokenizer --data DIR [--out PREFIX] [--vocab V]\n"
    "      a SentencePiece model (PREFIX.model, default DIR/tokenizer) trained on the captions,\n"
    "      cleaned like the tokenizer cleans them (docs/data.md)\n"
    "  hdtrain data check --data DIR [--strict] [--no-decode]\n"
    "      reads a dataset folder as training does: every record, every image decoded (skip\n"
    "      with --no-decode), every box checked against its image; counts images, boxes and\n"
    "      bad inputs, exit 1 if there is any (--strict: the first bad input is an error)\n";

// --help or -h anywhere: the caller prints the usage (a subcommand's parser would reject it).
bool wants_help(const std::vector<std::string>& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}

int synth(const std::vector<std::string>& argv) {
  Args a(argv,
         {"out", "images", "eval-images", "resolution", "seed", "threads", "shard-size", "layout",
          "max-regions"},
         {"tar", "png"});
  data::SynthOptions o;
  o.out = a.require("out");
  o.images = a.get_int("images", o.images);
  o.eval_images = a.get_int("eval-images", o.eval_images);
  o.resolution = a.get_int("resolution", o.resolution);
  o.seed = uint64_t(a.get_int("seed", 0));
  o.threads = int(a.get_int("threads", o.threads));
  o.shard_size = a.get_int("shard-size", o.shard_size);
  o.tar = a.flag("tar");
  o.png = a.flag("png");
  o.layout = data::parse_synth_layout(a.get("layout", "boards"));
  o.max_regions = int(a.get_int("max-regions", o.max_regions));
  auto t0 = std::chrono::steady_clock::now();
  data::synth_dataset(o);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("hdtrain data synth: %lld images at %lld^2 in %s (%.1f s)\n",
              static_cast<long long>(o.images), static_cast<long long>(o.resolution), o.out.c_str(),
              s);
  return 0;
}

// Trains on every caption of the training split plus the SFT and evaluation questions/answers.
int tokenizer(const std::vector<std::string>& argv) {
  Args a(argv, {"data", "out", "vocab"}, {});
  namespace fs = std::filesystem;
  fs::path dir = a.require("data");
  std::string prefix = a.get("out", (dir / "tokenizer").string());
  data::BadInputLog log;
  std::vector<std::string> texts;
  fs::path train = fs::is_directory(dir / "train") ? dir / "train" : dir;
  for (const auto& r : data::open_dataset(train.string(), log).records) {
    for (const auto& t : r.texts) texts.push_back(t);
    if (!r.global_text.empty()) texts.push_back(r.global_text);
  }
  if (fs::exists(dir / "sft.jsonl"))
    for (const auto& r : data::read_sft((dir / "sft.jsonl").string(), log))
      for (const auto& [from, value] : r.conversations) texts.push_back(value);
  if (fs::exists(dir / "eval_mc.jsonl"))
    for (const auto& r : data::read_mc((dir / "eval_mc.jsonl").string(), log)) {
      texts.push_back(r.question);
      for (const auto& o : r.options) texts.push_back(o);
    }
  data::train_tokenizer(texts, prefix, a.get_int("vocab", 1000));
  data::Tokenizer tok(prefix + ".model");
  std::printf("hdtrain data tokenizer: %zu texts -> %s.model (%lld pieces)\n", texts.size(),
              prefix.c_str(), static_cast<long long>(tok.vocab_size()));
  return 0;
}

// Reads a dataset the way training does: every record parsed, every image read and decoded
// (a truncated JPEG or random bytes named .jpg are found here, not at the step that draws them),
// every box checked against its image (entirely outside: skipped in training too).
int check(const std::vector<std::string>& argv) {
  Args a(argv, {"data"}, {"strict", "no-decode"});
  data::BadInputLog log(a.flag("strict"));
  auto ds = data::open_dataset(a.require("data"), log);
  const bool decode = !a.flag("no-decode");
  size_t boxes = 0, usable_boxes = 0, images_ok = 0;
  for (const auto& r : ds.records) {
    boxes += r.boxes.size();
    if (!decode) continue;
    const std::string where = r.source.describe();
    data::Image img;
    try {
      img = data::decode_image(data::read_image_bytes(r.source), where);
    } catch (const std::exception& e) {
      log.report(where, e.what());
      continue;
    }
    ++images_ok;
    const data::Crop whole{0, 0, img.height, img.width};
    for (size_t k = 0; k < r.boxes.size(); ++k) {
      std::string why;
      if (data::transform_box(r.boxes[k], whole, img.width, why))
        ++usable_boxes;
      else
        log.report(r.json_where + " box " + std::to_string(k),
                   why + " (" + std::to_string(img.width) + " x " + std::to_string(img.height) +
                       " image)");
    }
  }
  if (decode)
    std::printf(
        "hdtrain data check: %zu images (%zu decode), %zu boxes (%zu inside their image), %lld "
        "bad inputs\n",
        ds.records.size(), images_ok, boxes, usable_boxes, static_cast<long long>(log.count()));
  else
    std::printf("hdtrain data check: %zu images (not decoded), %zu boxes, %lld bad inputs\n",
                ds.records.size(), boxes, static_cast<long long>(log.count()));
  return log.count() > 0 ? 1 : 0;
}

int run(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (wants_help(args)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "synth") return synth(rest);
  if (args[0] == "tokenizer") return tokenizer(rest);
  if (args[0] == "check") return check(rest);
  std::fprintf(stderr, "hdtrain data: unknown subcommand '%s'\n%s", args[0].c_str(), kUsage);
  return 2;
}

}  // namespace

HD_REGISTER_COMMAND(data, "datasets: synth (generate the 4K synthetic set), tokenizer, check", run);

}  // namespace hd::launcher
