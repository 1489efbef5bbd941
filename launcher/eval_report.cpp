// Held-out evaluation at the end of a run (see eval_report.h for why rank 0 evaluates a copy).
#include "launcher/eval_report.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/error.h"
#include "ops/shape.h"
#include "ps3/data/records.h"
#include "ps3/evaluate.h"
#include "ps3/pretrain.h"

namespace hd::launcher {

void evaluate_and_report(const proto::RunConfig& c, const ps3::PS3Config& mcfg,
                         parallel::FSDP& fsdp, const data::Tokenizer& tokenizer,
                         parallel::ProcessGroup& pg) {
  auto full = fsdp.full_parameters();  // collective: every rank takes part
  if (pg.rank() != 0) return;

  auto t0 = std::chrono::steady_clock::now();
  ps3::PS3CLIP copy(mcfg);
  for (auto& [name, p] : copy.named_parameters()) {
    auto it = full.find(name);
    HD_CHECK(it != full.end(), "evaluation: parameter ", name, " missing from the trained model");
    HD_CHECK(it->second.numel() == p.numel(), "evaluation: parameter ", name, " has ",
             it->second.numel(), " elements, the copy ", p.numel());
    const Tensor host = to(it->second, Device::cpu());  // the trained shards may be on a device
    std::memcpy(p.data<float>(), host.data<float>(), size_t(p.numel()) * sizeof(float));
  }
  data::BadInputLog log(c.data().strict());
  data::Dataset eval_set = data::open_dataset(c.data().eval_dir(), log);
  HD_CHECK(!eval_set.records.empty(), "data.eval_dir '", c.data().eval_dir(),
           "' holds no usable image/caption pairs to evaluate on");
  ps3::EvalOptions eo;
  eo.max_images = c.eval().max_images() > 0 ? c.eval().max_images()
                                            : int64_t(eval_set.records.size());  // 0: all
  eo.look_close_steps = c.eval().look_close_steps();
  eo.loader.image_size = mcfg.vision.image_size();
  eo.loader.low_res = mcfg.vision.low_res;
  eo.loader.selection_res = mcfg.vision.selection_res;
  eo.loader.threads = c.data().loader_threads();
  eo.loader.sentence_masking = false;  // evaluate on the full captions
  eo.retrieval_max_images = c.eval().retrieval_max_images();
  eo.png_dir = (std::filesystem::path(c.run_dir()) / "selection").string();
  ps3::EvalResult r = ps3::evaluate_ps3(copy, eval_set, tokenizer, eo);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::filesystem::path json = std::filesystem::path(c.run_dir()) / "eval.json";
  {
    std::ofstream f(json);
    f << ps3::eval_json(r);
    HD_CHECK(f.good(), "evaluation: cannot write ", json.string());
  }
  std::printf(
      "\n== what the model learned (held-out: %lld images, %lld local captions, look-close %lld; "
      "%.1f s; %s; pictures in %s) ==\n%s",
      static_cast<long long>(r.images), static_cast<long long>(r.queries),
      static_cast<long long>(eo.look_close_steps), sec, json.string().c_str(), eo.png_dir.c_str(),
      ps3::eval_table(r).c_str());
  std::fflush(stdout);
}

}  // namespace hd::launcher
