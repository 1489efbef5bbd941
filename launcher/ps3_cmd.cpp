// hdtrain ps3 encode: one image through a trained PS3 vision model (and, with --prompt, the text
// tower's top-down prompt), written to HDF5 for inspection and for comparison with other
// implementations (e.g. the reference PyTorch code on released weights).
//
// Why the image goes through the same ps3/data calls as the loader (decode_image, the squash
// resize with Pillow's antialiased bicubic to the largest scale, the non-antialiased views,
// Batch::patches with the loader's default normalisation): a feature file is only comparable
// with what training saw if the pixels are identical, so nothing here re-implements them.
//
// Why weights are loaded strictly (launcher/ps3_weights.h): every parameter the encoding uses
// must be in the checkpoint with the same shape, so a config that does not match the checkpoint
// fails naming the tensor instead of encoding with half-initialised weights. What the reference's
// save_pretrained writes also loads: no logit_scale/logit_bias (init values, with a note), and
// a vision-only file when there is no --prompt (the text tower is loaded only for a prompt).
//
// Why the config is checked only for what encoding reads (load_model_config): a model is
// described by its model section; run_dir, data.dir and train belong to training runs.
//
// Why object time tracking is off in the HDF5 file: HDF5 stamps object headers with the creation
// time by default, which would make two encodings of the same input differ in bytes; without it
// the output is a pure function of (config, weights, image, prompt) and byte-comparable.
#include <hdf5.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autograd/error.h"
#include "autograd/node.h"
#include "launcher/command.h"
#include "launcher/config.h"
#include "launcher/model_config.h"
#include "launcher/ps3_eval.h"
#include "launcher/ps3_weights.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "ps3/data/image.h"
#include "ps3/data/loader.h"
#include "ps3/data/records.h"
#include "ps3/data/resize.h"
#include "ps3/data/text.h"
#include "ps3/image_inputs.h"
#include "ps3/pretrain.h"
#include "ps3/selection_png.h"
#include "ps3/text_tower.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;

constexpr const char* kOverview =
    "usage: hdtrain ps3 <subcommand> [options]   (hdtrain ps3 <subcommand> --help: its options)\n"
    "  hdtrain ps3 encode  one image through a PS3 checkpoint -> features in HDF5 (and a\n"
    "                      selection PNG)\n"
    "  hdtrain ps3 eval    a PS3 checkpoint on held-out images: selection recall/precision,\n"
    "                      retrieval\n"
    "\n";

constexpr const char* kUsage =
    "usage: hdtrain ps3 encode --config FILE.textproto [--set FIELD=VALUE ...]\n"
    "                          --checkpoint PATH --image FILE [--prompt TEXT]\n"
    "                          [--look-close N] --out FILE.h5\n"
    "                          [--selection-png OUT.png [--box X1,Y1,X2,Y2]]\n"
    "  Runs one image through the PS3 model of the config (one process, no mpirun) and writes\n"
    "  its features to HDF5:\n"
    "    /low_res_tokens [T, W]   /low_res_pooled [W]   (T = (low_res / 14)^2, 729 at 378)\n"
    "    /high_res_tokens [M, W]  /high_res_positions [M] (int64, ascending; index into the\n"
    "        flattened scale grids, scale 0 row-major first)   /high_res_pooled [W]\n"
    "    /prior_probs/scale_<s> [g, g]  /posterior_probs/scale_<s> (with --prompt)\n"
    "    /selection_maps/scale_<s> [g, g] (0/1, sums to M over the scales)\n"
    "    attributes: config, checkpoint, image, prompt (after caption processing),\n"
    "        prompt_clean (what the tokenizer saw), scales, grids, look_close_steps, ...\n"
    "  --config, --set  a run configuration; only its model section (the shape) is used, and\n"
    "                   data.tokenizer (or data.dir) for --prompt: run_dir, data.dir and train\n"
    "                   may be absent\n"
    "  --checkpoint     a checkpoint step folder, a run folder (its newest complete\n"
    "                   checkpoint), a .safetensors file or a folder holding model.safetensors\n"
    "                   (what the reference's save_pretrained writes: logit_scale/logit_bias\n"
    "                   may be missing, and the text tower when there is no --prompt)\n"
    "  --image          a JPEG or PNG; squash-resized to the largest scale like training does\n"
    "  --prompt         caption for top-down selection (text tower + prompt head); without\n"
    "                   it selection is bottom-up only\n"
    "  --look-close N   look-close steps (default: the config's eval.look_close_steps)\n"
    "  --selection-png  also draw where the model looked: the image (longer side at most\n"
    "                   1024 px) with each scale's selected patches in its own colour (legend\n"
    "                   below) and the GT box in yellow when known\n"
    "  --box            the GT box, in pixels of the image file; without it, when the image has\n"
    "                   a sibling .json record (the PS3 dataset layout) with a caption equal to\n"
    "                   --prompt, that caption's box is drawn\n";

// Owns one HDF5 id and closes it.
struct H5 {
  hid_t id;
  herr_t (*close)(hid_t);
  H5(hid_t i, herr_t (*c)(hid_t), const std::string& what) : id(i), close(c) {
    HD_CHECK(id >= 0, "ps3 encode: HDF5 could not ", what);
  }
  ~H5() { close(id); }
  H5(const H5&) = delete;
  H5& operator=(const H5&) = delete;
  operator hid_t() const { return id; }
};

// HDF5 writer of the output file (the datasets of kUsage).
class Out {
 public:
  explicit Out(const fs::path& path)
      : path_(path),
        file_(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
              "create " + path.string()),
        dcpl_(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "make a property list"),
        gcpl_(H5Pcreate(H5P_GROUP_CREATE), H5Pclose, "make a property list") {
    H5Pset_obj_track_times(dcpl_, false);  // byte-identical output (see the note at the top)
    H5Pset_obj_track_times(gcpl_, false);
  }
  void group(const std::string& name) {
    H5 g(H5Gcreate2(file_, name.c_str(), H5P_DEFAULT, gcpl_, H5P_DEFAULT), H5Gclose,
         "create group " + name + " in " + path_.string());
  }
  // `t` is written in logical order with its own shape (f32 or i64).
  void dataset(const std::string& name, const Tensor& t) {
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    H5 space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose,
             "make a dataspace for " + name);
    const bool i64 = t.dtype() == DType::i64;
    H5 ds(H5Dcreate2(file_, name.c_str(), i64 ? H5T_STD_I64LE : H5T_IEEE_F32LE, space, H5P_DEFAULT,
                     dcpl_, H5P_DEFAULT),
          H5Dclose, "create dataset " + name + " in " + path_.string());
    herr_t rc = i64 ? H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                               t.to_vector<int64_t>().data())
                    : H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                               t.to_vector<float>().data());
    HD_CHECK(rc >= 0, "ps3 encode: HDF5 could not write ", name, " to ", path_.string());
  }
  void attr(const std::string& name, const std::string& value) {
    H5 type(H5Tcopy(H5T_C_S1), H5Tclose, "make a string type");
    H5Tset_size(type, value.size() + 1);  // NUL-terminated
    H5 space(H5Screate(H5S_SCALAR), H5Sclose, "make a dataspace");
    H5 a(H5Acreate2(file_, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
         "create attribute " + name);
    HD_CHECK(H5Awrite(a, type, value.c_str()) >= 0, "ps3 encode: HDF5 could not write attribute ",
             name);
  }
  void attr(const std::string& name, const std::vector<int64_t>& values) {
    hsize_t n = values.size();
    H5 space(H5Screate_simple(1, &n, nullptr), H5Sclose, "make a dataspace");
    H5 a(H5Acreate2(file_, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
         "create attribute " + name);
    HD_CHECK(H5Awrite(a, H5T_NATIVE_INT64, values.data()) >= 0,
             "ps3 encode: HDF5 could not write attribute ", name);
  }
  void finish() {
    HD_CHECK(H5Fflush(file_, H5F_SCOPE_GLOBAL) >= 0, "ps3 encode: could not flush ",
             path_.string());
  }

 private:
  fs::path path_;
  H5 file_, dcpl_, gcpl_;
};

// --box "X1,Y1,X2,Y2" (pixels of the image file).
data::Box parse_box(const std::string& text) {
  std::vector<float> v;
  size_t pos = 0;
  while (pos <= text.size() && v.size() < 5) {
    size_t comma = text.find(',', pos);
    const std::string part = text.substr(pos, comma == std::string::npos ? comma : comma - pos);
    try {
      size_t used = 0;
      v.push_back(std::stof(part, &used));
      HD_CHECK(used == part.size(), "");
    } catch (const std::exception&) {
      throw Error("--box '" + text + "': '" + part + "' is not a number (expected X1,Y1,X2,Y2)");
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  HD_CHECK(v.size() == 4, "--box '", text, "' needs four numbers X1,Y1,X2,Y2");
  HD_CHECK(v[2] > v[0] && v[3] > v[1], "--box '", text,
           "' is empty or inverted (needs X2 > X1 and Y2 > Y1)");
  return data::Box{v[0], v[1], v[2], v[3]};
}

// The box of the caption equal to `prompt` in the image's sibling .json record (the PS3 dataset
// layout), compared as the tokenizer sees them (processed and cleaned); nullopt when there is no
// record or no such caption. `from` names the record.
std::optional<data::Box> box_from_record(const fs::path& image, const std::string& prompt,
                                         std::string& from) {
  fs::path json = image;
  json.replace_extension(".json");
  if (!fs::is_regular_file(json)) return std::nullopt;
  data::BadInputLog log;
  log.set_quiet(true);
  const std::vector<uint8_t> bytes = data::read_file(json.string());
  auto rec = data::parse_ps3_json(std::string(bytes.begin(), bytes.end()), json.string(), log);
  if (!rec) return std::nullopt;
  auto key = [](const std::string& t) {
    return data::canonicalize_text(data::process_caption(t, false, 0));
  };
  const std::string want = key(prompt);
  for (size_t i = 0; i < rec->texts.size() && i < rec->boxes.size(); ++i)
    if (key(rec->texts[i]) == want) {
      from = json.filename().string() + " text " + std::to_string(i);
      return rec->boxes[i];
    }
  return std::nullopt;
}

int encode(const std::vector<std::string>& args) {
  const ConfigArgs parsed = split_config_args(args);
  if (parsed.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  Args a(parsed.rest,
         {"checkpoint", "image", "prompt", "look-close", "out", "selection-png", "box"}, {});
  HD_CHECK(!parsed.config_path.empty(),
           "missing required option --config (see hdtrain ps3 encode --help)");
  const fs::path out_path = a.require("out"), image_path = a.require("image");
  const std::string prompt = a.get("prompt", "");
  const bool has_prompt = !prompt.empty();
  const std::string png_path = a.get("selection-png", "");
  HD_CHECK(png_path.empty() || fs::path(png_path).extension() == ".png", "--selection-png '",
           png_path, "' must end in .png");
  std::optional<data::Box> box_arg;
  if (!a.get("box", "").empty()) {
    HD_CHECK(!png_path.empty(), "--box is only used with --selection-png");
    box_arg = parse_box(a.get("box", ""));
  }

  proto::RunConfig config;
  try {
    config = load_model_config(parsed.config_path, parsed.overrides);
  } catch (const Error& e) {
    std::fprintf(stderr, "hdtrain ps3 encode: error: %s\n", e.what());
    return 2;
  }
  const int64_t look_close = a.get_int("look-close", config.eval().look_close_steps());
  HD_CHECK(look_close >= 1, "--look-close ", look_close, " must be >= 1");

  // Checked before anything is built: a vision-only checkpoint with --prompt is the user's
  // likeliest mistake with reference checkpoints, and the tokenizer would be asked for first.
  const WeightsSource src = resolve_checkpoint(a.require("checkpoint"));
  HD_CHECK(!has_prompt || has_text_tower(src), "--checkpoint ", src.path.string(),
           " has no text tower (no text_model.* tensors: a vision-only checkpoint, e.g. "
           "PS3VisionModel.save_pretrained), and --prompt needs it: encode without --prompt "
           "(bottom-up selection) or pass a checkpoint with the text tower");

  // The tokenizer: needed for --prompt. Without one the text tower is neither loaded nor run, so
  // the demo preset's vocabulary (sized from the tokenizer) only has to be valid.
  const std::string tok_path = config.data().tokenizer();
  std::unique_ptr<data::Tokenizer> tok;
  if (has_prompt) {
    HD_CHECK(!tok_path.empty(),
             "data.tokenizer is not set, and --prompt needs the run's SentencePiece model (set "
             "data.tokenizer, or data.dir to the dataset folder holding tokenizer.model)");
    HD_CHECK(fs::exists(tok_path), "data.tokenizer '", tok_path,
             "' does not exist (needed to tokenize --prompt; set data.dir or data.tokenizer to "
             "the run's)");
  }
  if (!tok_path.empty() && fs::exists(tok_path)) tok = std::make_unique<data::Tokenizer>(tok_path);
  ps3::PS3Config mcfg = to_ps3_config(config.model(), tok ? tok->vocab_size() : 1);
  const auto& vc = mcfg.vision;

  ps3::PS3CLIP model(mcfg);
  load_weights(model, src, /*need_text=*/has_prompt);
  NoGradGuard no_grad;

  // The image, prepared as data::Loader prepares a training sample (no crop, no boxes).
  HD_CHECK(fs::is_regular_file(image_path), "--image '", image_path.string(), "' does not exist");
  data::Image img = data::decode_image(data::read_file(image_path), image_path.string());
  const std::vector<int64_t> source_hw = {img.height, img.width};
  const int64_t S = vc.image_size(), L = vc.low_res;
  // The file's own image is kept for --selection-png (drawn with its aspect ratio).
  const ps3::PreparedImage prepared = ps3::prepare_image(std::move(img), vc);
  const auto& original = prepared.original;
  ps3::VisionInputs in = ps3::vision_inputs(prepared, look_close);
  std::string processed_prompt;
  if (has_prompt) {
    data::Tokenizer t(tok_path, mcfg.text.context);
    processed_prompt = data::process_caption(prompt, false, 0);  // as the evaluation does
    Tensor tokens = from_vector<int32_t>(t.encode(processed_prompt), {1, mcfg.text.context});
    in.prompt = model.text().forward(tokens).prompt;
  }
  ps3::VisionOutputs v = model.vision().forward(in);

  // Write under a temporary name: a failed encode never leaves a file that looks complete.
  if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path());
  const fs::path tmp = out_path.string() + ".partial";
  {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our messages instead of HDF5's stack
    Out o(tmp);
    o.dataset("/low_res_tokens", select(v.low_res_tokens, 0, 0));
    o.dataset("/low_res_pooled", select(v.low_res_pooled, 0, 0));
    o.dataset("/high_res_tokens", select(v.high_res_tokens, 0, 0));
    o.dataset("/high_res_positions", select(v.high_res_positions, 0, 0));
    o.dataset("/high_res_pooled", select(v.high_res_pooled, 0, 0));
    std::vector<int64_t> grids;
    for (const char* g : {"/prior_probs", "/posterior_probs", "/selection_maps"})
      if (std::string(g) != "/posterior_probs" || !v.posterior_probs.empty()) o.group(g);
    for (size_t s = 0; s < vc.scales.size(); ++s) {
      const std::string name = "/scale_" + std::to_string(vc.scales[s]);
      grids.push_back(vc.grid(s));
      o.dataset("/prior_probs" + name, select(v.prior_probs[s], 0, 0));
      if (!v.posterior_probs.empty())
        o.dataset("/posterior_probs" + name, select(v.posterior_probs[s], 0, 0));
      o.dataset("/selection_maps" + name, select(v.selection_maps[s], 0, 0));
    }
    o.attr("config", config.name());
    o.attr("config_file", parsed.config_path);
    o.attr("checkpoint", fs::absolute(src.path).lexically_normal().string());
    o.attr("checkpoint_format", src.safetensors ? "safetensors" : "hdtrain");
    o.attr("image", image_path.string());
    o.attr("image_source_hw", source_hw);
    o.attr("image_size", std::vector<int64_t>{S});
    o.attr("low_res", std::vector<int64_t>{L});
    o.attr("prompt", processed_prompt);
    o.attr("prompt_clean", data::canonicalize_text(processed_prompt));
    o.attr("scales", vc.scales);
    o.attr("grids", grids);
    o.attr("look_close_steps", std::vector<int64_t>{look_close});
    o.attr("max_select", std::vector<int64_t>{vc.max_select});
    o.attr("hdtrain_version", HD_VERSION);
    o.finish();
  }
  fs::rename(tmp, out_path);
  if (!png_path.empty()) {
    std::string box_from = box_arg ? "--box" : "";
    std::optional<data::Box> box = box_arg;
    if (!box && has_prompt) box = box_from_record(image_path, prompt, box_from);
    std::vector<Tensor> maps;
    for (const Tensor& m : v.selection_maps) maps.push_back(select(m, 0, 0));
    if (fs::path(png_path).has_parent_path())
      fs::create_directories(fs::path(png_path).parent_path());
    ps3::write_selection_png(*original, maps, box, png_path);
    std::printf("hdtrain ps3 encode: selection -> %s (%s)\n", png_path.c_str(),
                box ? ("GT box from " + box_from).c_str() : "no GT box known");
  }
  const int64_t m = v.high_res_positions.size(1);
  std::printf("hdtrain ps3 encode: %s -> %s (%lld low-res tokens, %lld high-res tokens over scales",
              image_path.c_str(), out_path.c_str(),
              static_cast<long long>(v.low_res_tokens.size(1)), static_cast<long long>(m));
  for (int64_t s : vc.scales) std::printf(" %lld", static_cast<long long>(s));
  std::printf("%s; weights %s)\n", has_prompt ? ", top-down prompt" : ", bottom-up",
              src.path.c_str());
  return 0;
}

int run(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    FILE* out = args.empty() ? stderr : stdout;
    std::fputs(kOverview, out);
    std::fputs(kUsage, out);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "encode") return encode({args.begin() + 1, args.end()});
  if (args[0] == "eval") return ps3_eval({args.begin() + 1, args.end()});
  std::fprintf(stderr, "hdtrain ps3: unknown subcommand '%s'\n%s", args[0].c_str(), kOverview);
  return 2;
}

}  // namespace

HD_REGISTER_COMMAND(ps3,
                    "encode: one image -> features in HDF5; eval: held-out selection and "
                    "retrieval of a checkpoint",
                    run);

}  // namespace hd::launcher
