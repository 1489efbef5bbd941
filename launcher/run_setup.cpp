// Dataset, tokenizer and run folder preparation (see run_setup.h for why rank 0 alone writes,
// under temporary names, while the other ranks poll).
#include "launcher/run_setup.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "autograd/error.h"
#include "autograd/tensor.h"
#include "ps3/data/records.h"
#include "ps3/data/synth.h"
#include "ps3/data/text.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;

void synthesize(const proto::RunConfig& c) {
  const auto& s = c.data().synthesize();
  fs::path dir = c.data().dir();
  HD_CHECK(!fs::exists(dir) || fs::is_empty(dir), "data.dir '", dir.string(),
           "' exists but has no train/ folder (", c.data().train_dir(),
           "); refusing to synthesize into a non-empty folder: remove it or point data.dir "
           "elsewhere");
  fs::path tmp = dir.string() + ".partial";
  std::error_code ec;
  fs::remove_all(tmp, ec);  // a previous attempt that died midway
  data::SynthOptions o;
  o.out = tmp.string();
  o.images = s.images();
  o.eval_images = s.eval_images() > 0 ? s.eval_images() : -1;
  o.resolution = s.resolution();
  o.seed = s.seed();
  o.threads = s.threads();
  o.layout = data::parse_synth_layout(s.layout());
  if (s.max_regions() > 0) o.max_regions = s.max_regions();
  auto t0 = std::chrono::steady_clock::now();
  std::printf("[setup] synthesizing %lld + %lld images at %lld^2 into %s ...\n",
              static_cast<long long>(o.images),
              static_cast<long long>(o.eval_images > 0 ? o.eval_images
                                                       : std::max<int64_t>(4, o.images / 8)),
              static_cast<long long>(o.resolution), dir.string().c_str());
  std::fflush(stdout);
  data::synth_dataset(o);
  if (fs::exists(dir)) fs::remove(dir);  // empty (checked above)
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path());
  fs::rename(tmp, dir);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[setup] dataset ready in %.1f s\n", sec);
}

void train_tokenizer_for(const proto::RunConfig& c) {
  fs::path model = c.data().tokenizer();
  HD_CHECK(model.extension() == ".model", "data.tokenizer '", model.string(),
           "' does not exist and cannot be trained there: the name must end in .model");
  data::BadInputLog log;
  log.set_quiet(true);  // the trainer opens the dataset next and reports what it drops, once
  std::vector<std::string> texts;
  for (const auto& r : data::open_dataset(c.data().train_dir(), log).records) {
    for (const auto& t : r.texts) texts.push_back(t);
    if (!r.global_text.empty()) texts.push_back(r.global_text);
  }
  HD_CHECK(!texts.empty(), "data.train_dir '", c.data().train_dir(),
           "' has no captions to train data.tokenizer on");
  if (model.has_parent_path()) fs::create_directories(model.parent_path());
  fs::path stem = model;
  stem.replace_extension();
  std::string tmp = stem.string() + ".partial";
  data::train_tokenizer(texts, tmp, c.data().tokenizer_vocab());
  fs::rename(tmp + ".vocab", stem.string() + ".vocab");
  std::error_code ec;
  fs::remove(tmp + ".corpus.txt", ec);  // train_tokenizer's input file, not needed after
  fs::rename(tmp + ".model", model);    // last: its presence means "ready"
  std::printf("[setup] tokenizer trained on %zu captions -> %s\n", texts.size(),
              model.string().c_str());
}

void write_config(const proto::RunConfig& c, const std::string& text) {
  fs::create_directories(c.run_dir());
  fs::path first = fs::path(c.run_dir()) / "config.textproto";
  fs::path path = fs::exists(first) ? fs::path(c.run_dir()) / "config.resumed.textproto" : first;
  fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << "# Resolved configuration of run '" << c.name() << "' (hdtrain pretrain)\n" << text;
    HD_CHECK(out.good(), "cannot write ", tmp.string());
  }
  fs::rename(tmp, path);
}

}  // namespace

void prepare_run(const proto::RunConfig& c, const std::string& config_text,
                 parallel::ProcessGroup& pg) {
  const auto& d = c.data();
  if (pg.rank() == 0) {
    if (!fs::exists(d.train_dir())) {
      HD_CHECK(d.synthesize().enabled(), "data.train_dir '", d.train_dir(),
               "' does not exist (set data.synthesize.enabled to generate the synthetic set, or "
               "point data.dir at a dataset)");
      HD_CHECK(d.train_dir() == d.dir() + "/train",
               "data.synthesize writes data.dir/train, but "
               "data.train_dir is '",
               d.train_dir(), "'");
      synthesize(c);
    }
    if (!fs::exists(d.tokenizer())) train_tokenizer_for(c);
    write_config(c, config_text);
    std::fflush(stdout);
  } else {
    // Poll (see run_setup.h): the tokenizer is written last, after the dataset's rename.
    while (!(fs::exists(d.train_dir()) && fs::exists(d.tokenizer())))
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  pg.barrier().wait();
}

bool lock_run_dir(const std::string& run_dir, parallel::ProcessGroup& pg,
                  std::unique_ptr<RunLock>& lock, const std::string& command) {
  Tensor ok = Tensor::empty({1}, DType::i64);
  ok.data<int64_t>()[0] = 1;
  if (pg.rank() == 0) {
    try {
      std::string notice;
      lock = RunLock::acquire(run_dir, &notice);
      if (!notice.empty()) std::fprintf(stderr, "hdtrain: warning: %s\n", notice.c_str());
    } catch (const Error& e) {  // busy, or run_dir cannot be created: every rank exits 2
      std::fprintf(stderr, "hdtrain %s: error: %s\n", command.c_str(), e.what());
      ok.data<int64_t>()[0] = 0;
    }
  }
  pg.broadcast(ok, 0).wait();
  return ok.data<int64_t>()[0] == 1;
}

}  // namespace hd::launcher
