// `hdtrain vilahd ask`: one question about one image through a VILA-HD folder, printing the
// answer (and, with --selection-png, where the model looked); `hdtrain vilahd init`: a fresh
// VILA-HD folder (random weights, or PS3 weights from a PS3 checkpoint) that training starts from.
//
// Exit codes: 0 answered; 2 anything the user gave is wrong (an option, a path, the image, the
// checkpoint folder or its config), with a message naming it, before any model work; 1 a failure
// while running.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "autograd/error.h"
#include "launcher/command.h"
#include "launcher/config.h"
#include "launcher/model_config.h"
#include "launcher/ps3_weights.h"
#include "launcher/vilahd_init.h"
#include "launcher/vilahd_tools.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/device_probe.h"
#endif
#include "ops/shape.h"
#include "ps3/data/image.h"
#include "ps3/image_inputs.h"
#include "ps3/selection_png.h"
#include "vilahd/conversation.h"
#include "vilahd/vila_checkpoint.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;

constexpr const char* kOverview =
    "usage: hdtrain vilahd <subcommand> [options]   (hdtrain vilahd <subcommand> --help)\n"
    "  hdtrain vilahd ask   answer a question about an image with a VILA-HD folder\n"
    "  hdtrain vilahd init  write a fresh VILA-HD folder (random weights) to start training from\n"
    "  hdtrain vilahd train SFT of a VILA-HD folder on one process (alignment or full)\n"
    "  hdtrain vilahd eval  multiple-choice questions on held-out images, every ablation\n"
    "\n";

constexpr const char* kAskUsage =
    "usage: hdtrain vilahd ask --checkpoint DIR --image FILE --question TEXT\n"
    "                          [--config FILE.json] [--look-close N]\n"
    "                          [--mode after_prompt|after_image] [--selection-png OUT.png]\n"
    "                          [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K]\n"
    "                          [--seed S] [--device cpu|cuda]\n"
    "  Answers one question about one image (one process, no mpirun) and prints the answer.\n"
    "  --checkpoint     a VILA-HD folder: config.json, llm/ (Qwen2 config.json, safetensors,\n"
    "                   tokenizer.json), mm_projector/, vision_tower/ (hdtrain vilahd init and\n"
    "                   training write this layout; so does VILA)\n"
    "  --config         a VILA-HD config.json to use instead of the folder's (same weights)\n"
    "  --image          a JPEG or PNG; squash-resized to PS3's largest scale like training does\n"
    "  --question       the user's text; \"<image>\\n\" is put in front unless it has <image>\n"
    "  --look-close N   look-close steps (default: the config's num_look_close); each step\n"
    "                   selects the per-scale budget (select_num_each_scale, or PS3's split)\n"
    "  --mode           after_prompt: the LLM's last question token picks the patches\n"
    "                   (top-down; needs a model with a prompt head); after_image: PS3's\n"
    "                   prior picks them (bottom-up). Default: the config's look_close_mode\n"
    "  --selection-png  also draw where the model looked: the image (longer side at most\n"
    "                   1024 px) with each scale's selected patches in its own colour\n"
    "  --max-new-tokens answer length limit (default 64); generation also stops at <|im_end|>\n"
    "  --temperature    0 (default) is greedy; > 0 samples, with --top-p (default 1) and\n"
    "                   --top-k (default 0 = off), reproducibly for a --seed (default 0)\n"
    "  --device         cpu (default) or cuda (the first GPU; needs a CUDA build and a GPU)\n";

constexpr const char* kInitUsage =
    "usage: hdtrain vilahd init --out DIR --tokenizer tokenizer.json [--preset tiny]\n"
    "                           [--mode after_prompt|after_image] [--seed S]\n"
    "                           [--ps3 CHECKPOINT [--ps3-config FILE.textproto]]\n"
    "  Writes a VILA-HD folder with freshly initialised weights (what training starts from):\n"
    "  the tiny preset is a 2-layer Qwen2 (hidden 64) over the tokenizer's vocabulary on the\n"
    "  demo PS3 tower (width 64, scales 756/1512/3780), 2x2 mlp_downsample projector, mlp prompt\n"
    "  head. The tokenizer (a Qwen2-layout tokenizer.json) is copied to DIR/llm/.\n"
    "  --ps3         PS3 weights for the vision tower: a PS3 run folder (its newest complete\n"
    "                checkpoint; the vision config from its config.textproto), a checkpoint\n"
    "                step folder or a .safetensors file (then --ps3-config gives the run\n"
    "                config whose model section describes it)\n";

int user_error(const char* cmd, const std::exception& e) {
  std::fprintf(stderr, "hdtrain vilahd %s: error: %s\n", cmd, e.what());
  return 2;
}

int ask(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kAskUsage, stdout);
    return 0;
  }
  // Everything the user gave is checked (and the model loaded) before any model work.
  std::unique_ptr<vilahd::VilaHdModel> model;
  std::unique_ptr<vilahd::BpeTokenizer> tokenizer;
  std::unique_ptr<ps3::PreparedImage> prepared;
  std::string question, png_path;
  vilahd::GenerationOptions gen;
  Device device = Device::cpu();
  try {
    for (const std::string& a : args)
      if (a == "--help" || a == "-h") {
        std::fputs(kAskUsage, stdout);
        return 0;
      }
    Args a(args,
           {"checkpoint", "config", "image", "question", "look-close", "mode", "selection-png",
            "max-new-tokens", "temperature", "top-p", "top-k", "seed", "device"},
           {});
    const fs::path dir = a.require("checkpoint"), image_path = a.require("image");
    question = a.require("question");
    png_path = a.get("selection-png", "");
    HD_CHECK(png_path.empty() || fs::path(png_path).extension() == ".png", "--selection-png '",
             png_path, "' must end in .png");
    gen.max_new_tokens = a.get_int("max-new-tokens", 64);
    HD_CHECK(gen.max_new_tokens >= 1, "--max-new-tokens must be >= 1");
    gen.temperature = a.get_double("temperature", 0);
    gen.top_p = a.get_double("top-p", 1);
    gen.top_k = a.get_int("top-k", 0);
    gen.seed = uint64_t(a.get_int("seed", 0));
    HD_CHECK(gen.temperature >= 0, "--temperature must be >= 0");
    HD_CHECK(gen.top_p > 0 && gen.top_p <= 1, "--top-p must be in (0, 1]");
    HD_CHECK(gen.top_k >= 0, "--top-k must be >= 0");
    const std::string device_name = a.get("device", "cpu");
    HD_CHECK(device_name == "cpu" || device_name == "cuda", "--device '", device_name,
             "' is not one of cpu, cuda");
    if (device_name == "cuda") {
#ifdef HD_HAVE_CUDA
      const cuda::DeviceProbe probe = cuda::probe_devices();
      HD_CHECK(probe.device_count > 0, "--device cuda: no usable GPU (", probe.reason, ")");
      device = Device::cuda(0);
#else
      throw Error("--device cuda: this hdtrain was built without CUDA (-DHD_CUDA=OFF)");
#endif
    }

    HD_CHECK(fs::is_directory(dir), "--checkpoint '", dir.string(), "' is not a folder");
    const fs::path tok_path = dir / "llm" / "tokenizer.json";
    HD_CHECK(fs::is_regular_file(tok_path), "--checkpoint '", dir.string(),
             "' has no llm/tokenizer.json (the Qwen2 tokenizer the answer is decoded with)");
    HD_CHECK(fs::is_regular_file(image_path), "--image '", image_path.string(), "' does not exist");
    const std::string config_override = a.get("config", "");
    HD_CHECK(config_override.empty() || fs::is_regular_file(config_override), "--config '",
             config_override, "' does not exist");

    tokenizer = std::make_unique<vilahd::BpeTokenizer>(vilahd::BpeTokenizer::load(tok_path));
    model = vilahd::load_vila_folder(dir, config_override);
    if (!a.get("mode", "").empty())
      model->set_look_close_mode(vilahd::parse_look_close_mode(a.get("mode", "")));
    const long long steps = a.get_int("look-close", model->config().num_look_close);
    HD_CHECK(steps >= 1, "--look-close ", steps, " must be >= 1");
    model->set_num_look_close(steps);
    gen.stop_tokens = vilahd::chat_stop_tokens(*tokenizer);
    data::Image img = data::decode_image(data::read_file(image_path.string()), image_path.string());
    prepared = std::make_unique<ps3::PreparedImage>(
        ps3::prepare_image(std::move(img), model->config().vision));
  } catch (const std::exception& e) {
    return user_error("ask", e);
  }

  vilahd::VilaImage image;
  image.inputs = ps3::vision_inputs(*prepared);
  if (device != Device::cpu()) {
    model->to_(device, DType::f32);
    image.inputs.low_res = to(image.inputs.low_res, device);
    image.inputs.selection = to(image.inputs.selection, device);
    ps3::PatchSource host = image.inputs.patches;
    image.inputs.patches = [host, device](int64_t b, int64_t s, const std::vector<int64_t>& idx) {
      return to(host(b, s, idx), device);
    };
  }
  std::vector<vilahd::VilaImage> images;
  images.push_back(std::move(image));
  vilahd::VilaSample prompt = vilahd::question_sample(*tokenizer, question, std::move(images));
  vilahd::VilaHdModel::Answer answer = model->answer(prompt, gen);

  std::vector<int32_t> ids(answer.tokens.begin(), answer.tokens.end());
  std::printf("%s\n", tokenizer->decode(ids, /*skip_special=*/true).c_str());
  const vilahd::ImageLook& look = answer.looks.at(0);
  std::fprintf(stderr, "(%s, %lld look-close step(s), %lld image tokens: %lld low-res",
               vilahd::look_close_mode_name(model->config().look_close_mode),
               static_cast<long long>(model->config().num_look_close),
               static_cast<long long>(look.projected.tokens.size(0)),
               static_cast<long long>(look.projected.low_res_tokens));
  for (size_t s = 0; s < look.projected.kept_counts.size(); ++s)
    std::fprintf(stderr, " + %lld at %lld", static_cast<long long>(look.projected.kept_counts[s]),
                 static_cast<long long>(model->config().vision.scales[s]));
  std::fprintf(stderr, "%s; %zu answer tokens%s)\n",
               look.projected.placeholder ? " (placeholder)" : "", answer.tokens.size(),
               answer.stopped ? "" : ", stopped at --max-new-tokens");
  if (!png_path.empty()) {
    std::vector<Tensor> maps;
    for (const Tensor& m : look.selection_maps) maps.push_back(to(select(m, 0, 0), Device::cpu()));
    if (fs::path(png_path).has_parent_path())
      fs::create_directories(fs::path(png_path).parent_path());
    ps3::write_selection_png(*prepared->original, maps, std::nullopt, png_path);
    std::fprintf(stderr, "selection picture: %s\n", png_path.c_str());
  }
  return 0;
}

int init(const std::vector<std::string>& args) {
  for (const std::string& a : args)
    if (a == "--help" || a == "-h") {
      std::fputs(kInitUsage, stdout);
      return 0;
    }
  VilaInitSpec spec;
  fs::path out;
  try {
    Args a(args, {"out", "tokenizer", "preset", "mode", "seed", "ps3", "ps3-config"}, {});
    out = a.require("out");
    spec.tokenizer = a.require("tokenizer");
    const std::string preset = a.get("preset", "tiny");
    HD_CHECK(preset == "tiny", "--preset '", preset, "' is not known (known: tiny)");
    spec.seed = uint64_t(a.get_int("seed", 0));
    spec.mode = a.get("mode", "");
    spec.ps3 = a.get("ps3", "");
    spec.ps3_config = a.get("ps3-config", "");
    HD_CHECK(fs::is_regular_file(spec.tokenizer), "--tokenizer '", spec.tokenizer.string(),
             "' does not exist");
    HD_CHECK(!fs::exists(out / "config.json"), "--out '", out.string(),
             "' already holds a VILA-HD folder (config.json); choose another folder");
    HD_CHECK(!spec.ps3.empty() || spec.ps3_config.empty(), "--ps3-config is only used with --ps3");
    if (!spec.ps3.empty()) resolve_checkpoint(spec.ps3);  // a bad path: exit 2 before any work
    vila_init_config(spec);
  } catch (const std::exception& e) {
    return user_error("init", e);
  }
  int64_t parameters = 0;
  try {
    parameters = write_vila_init_folder(spec, out);
  } catch (const std::exception& e) {
    return user_error("init", e);
  }
  if (!spec.ps3.empty()) std::printf("vision tower: PS3 weights from %s\n", spec.ps3.c_str());
  std::printf("wrote %s (%lld parameters)\n", out.c_str(), static_cast<long long>(parameters));
  return 0;
}

int run(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    FILE* out = args.empty() ? stderr : stdout;
    std::fputs(kOverview, out);
    std::fputs(kAskUsage, out);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "ask") return ask({args.begin() + 1, args.end()});
  if (args[0] == "init") return init({args.begin() + 1, args.end()});
  if (args[0] == "train") return vilahd_train({args.begin() + 1, args.end()});
  if (args[0] == "eval") return vilahd_eval({args.begin() + 1, args.end()});
  std::fprintf(stderr, "hdtrain vilahd: unknown subcommand '%s'\n%s", args[0].c_str(), kOverview);
  return 2;
}

}  // namespace

HD_REGISTER_COMMAND(vilahd,
                    "ask: answer a question about an image with VILA-HD; init: a fresh model", run);

}  // namespace hd::launcher
