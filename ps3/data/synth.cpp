// Writes the synthetic dataset: images generated in parallel (each a pure function of its
// index), files written in index order so output bytes do not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "autograd/error.h"
#include "ps3/data/synth.h"
#include "ps3/data/tar.h"

namespace hd::data {
namespace fs = std::filesystem;

namespace {

struct Encoded {
  std::vector<uint8_t> image;
  std::string json;
  std::vector<SynthRegion> regions;
};

// Generates and encodes images [first, last) with `threads` workers.
std::vector<Encoded> generate(const SynthOptions& opt, int64_t first, int64_t last) {
  std::vector<Encoded> out(static_cast<size_t>(last - first));
  std::atomic<int64_t> next{first};
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&] {
    try {
      for (int64_t i; (i = next.fetch_add(1)) < last;) {
        SynthImage s = synth_image(i, opt.resolution, opt.seed, opt.layout, opt.max_regions);
        Encoded& e = out[size_t(i - first)];
        e.image = opt.png ? encode_png(s.image, 1) : encode_jpeg(s.image, 92);
        ImageRecord rec;
        for (const auto& r : s.regions) rec.texts.push_back(r.caption), rec.boxes.push_back(r.box);
        rec.global_text = s.global_caption;
        e.json = ps3_to_json(rec);
        e.regions = std::move(s.regions);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, opt.threads); ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

std::string key_of(int64_t i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08lld", static_cast<long long>(i));
  return buf;
}

// One split (train or eval): images [first, last) under out/<split>. Returns the regions of each
// image with the image's path relative to out.
std::vector<std::pair<std::string, std::vector<SynthRegion>>> write_split(const SynthOptions& opt,
                                                                          const std::string& split,
                                                                          int64_t first,
                                                                          int64_t last) {
  fs::path dir = fs::path(opt.out) / split;
  fs::create_directories(dir);
  std::string ext = opt.png ? ".png" : ".jpg";
  std::vector<std::pair<std::string, std::vector<SynthRegion>>> regions;
  int64_t chunk = opt.tar ? opt.shard_size : std::max<int64_t>(8, opt.threads * 4);
  for (int64_t c = first, shard = 0; c < last; c += chunk, ++shard) {
    std::vector<Encoded> enc = generate(opt, c, std::min(last, c + chunk));
    char name[32];
    std::snprintf(name, sizeof name, "_%05lld.tar", static_cast<long long>(shard));
    std::unique_ptr<TarWriter> images, texts;
    if (opt.tar) {
      images = std::make_unique<TarWriter>((dir / (std::string("images") + name)).string());
      texts = std::make_unique<TarWriter>((dir / (std::string("text_box") + name)).string());
    }
    for (size_t k = 0; k < enc.size(); ++k) {
      std::string key = key_of(c + int64_t(k));
      std::vector<uint8_t> json(enc[k].json.begin(), enc[k].json.end());
      if (opt.tar) {
        images->add(key + ext, enc[k].image);
        texts->add(key + ".json", json);
        // SFT/MC records name tar members as shard:member.
        regions.emplace_back(split + "/images" + name + ":" + key + ext, std::move(enc[k].regions));
      } else {
        write_file((dir / (key + ext)).string(), enc[k].image);
        write_file((dir / (key + ".json")).string(), json);
        regions.emplace_back(split + "/" + key + ext, std::move(enc[k].regions));
      }
    }
    if (opt.tar) images->close(), texts->close();
  }
  return regions;
}

}  // namespace

SynthLayout parse_synth_layout(const std::string& name) {
  if (name.empty() || name == "boards") return SynthLayout::kBoards;
  if (name == "tiny_signs") return SynthLayout::kTinySigns;
  if (name == "patterns") return SynthLayout::kPatterns;
  if (name == "one_pattern") return SynthLayout::kOnePattern;
  throw Error(detail::concat("synth: unknown layout '", name,
                             "' (boards | tiny_signs | patterns | one_pattern)"));
}

void synth_dataset(const SynthOptions& opt) {
  HD_CHECK(!opt.out.empty(), "synth: --out is required");
  HD_CHECK(opt.images >= 1, "synth: --images must be >= 1, got ", opt.images);
  HD_CHECK(opt.resolution >= 128 && opt.resolution <= kMaxImageSide, "synth: --resolution ",
           opt.resolution, " outside [128, ", kMaxImageSide, "]");
  HD_CHECK(opt.max_regions >= 1 && opt.max_regions <= 5, "synth: --max-regions ", opt.max_regions,
           " outside [1, 5]");
  int64_t n_eval = opt.eval_images >= 0 ? opt.eval_images : std::max<int64_t>(4, opt.images / 8);
  fs::create_directories(opt.out);
  auto train = write_split(opt, "train", 0, opt.images);
  // Held-out images continue the index sequence: same distribution, never seen in training.
  auto eval = write_split(opt, "eval", opt.images, opt.images + n_eval);

  std::ofstream sft(fs::path(opt.out) / "sft.jsonl");
  for (const auto& [image, regions] : train)
    for (const auto& r : regions) {
      SftRecord rec{image, r.box, {{"human", "<image>\n" + r.question}, {"gpt", r.detail}}};
      sft << sft_to_json(rec) << '\n';
    }
  std::ofstream mc(fs::path(opt.out) / "eval_mc.jsonl");
  for (const auto& [image, regions] : eval)
    for (const auto& r : regions) {
      McRecord rec;
      rec.image = image;
      rec.question = r.question;
      std::copy_n(r.options.begin(), 4, rec.options.begin());
      rec.answer = r.answer;
      rec.box = r.box;
      mc << mc_to_json(rec) << '\n';
    }
  HD_CHECK(sft && mc, "synth: cannot write the JSON-lines files under ", opt.out);
}

}  // namespace hd::data
