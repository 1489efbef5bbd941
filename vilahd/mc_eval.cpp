#include "vilahd/mc_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "autograd/node.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "vilahd/conversation.h"

namespace hd::vilahd {

namespace {

std::vector<double> log_probs(const Tensor& logits_row) {
  std::vector<float> l = to(logits_row, DType::f32).to_vector<float>();
  double top = *std::max_element(l.begin(), l.end()), sum = 0;
  for (float v : l) sum += std::exp(double(v) - top);
  const double lse = top + std::log(sum);
  std::vector<double> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[i] = double(l[i]) - lse;
  return out;
}

std::string trim_lower(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  s = s.substr(i);
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Mean NLL of `ids` after the prompt whose last logits are `first` and whose cache is `cache`.
double option_nll(const Qwen2ForCausalLM& llm, const std::vector<double>& first,
                  const Qwen2KVCache& cache, const std::vector<int64_t>& ids) {
  double nll = -first[size_t(ids[0])];
  if (ids.size() > 1) {
    Qwen2KVCache c = cache;  // tensors are immutable here: cat makes new ones
    Qwen2Inputs in;
    in.input_ids = from_vector<int64_t>(std::vector<int64_t>(ids.begin(), ids.end() - 1),
                                        {1, int64_t(ids.size()) - 1});
    in.cache = &c;
    Tensor logits = llm.forward(in);  // [1, n-1, V]
    for (size_t i = 1; i < ids.size(); ++i)
      nll -= log_probs(reshape(narrow(logits, 1, int64_t(i) - 1, 1), {-1}))[size_t(ids[i])];
  }
  return nll / double(ids.size());
}

}  // namespace

McModeResult evaluate_mc(VilaHdModel& model, const BpeTokenizer& tokenizer,
                         const std::vector<data::McRecord>& records,
                         const std::filesystem::path& root, ImageCache& images,
                         const McMode& mode) {
  const auto start = std::chrono::steady_clock::now();
  NoGradGuard no_grad;
  const VilaHdConfig saved = model.config();
  model.set_look_close_mode(mode.look_close_mode);
  model.set_num_look_close(mode.num_look_close);
  model.set_select_num_each_scale(mode.select_per_scale.empty() ? saved.select_num_each_scale
                                                                : mode.select_per_scale);
  const ps3::VisionConfig& vc = model.config().vision;
  const std::vector<int64_t> stops = chat_stop_tokens(tokenizer);
  std::vector<int64_t> end_ids;
  for (int32_t t : tokenizer.encode("<|im_end|>")) end_ids.push_back(t);

  McModeResult result;
  result.mode = mode;
  double recall_sum = 0, random_sum = 0, tokens_sum = 0;
  int64_t with_recall = 0;
  for (const data::McRecord& r : records) {
    auto image = images.get(root / r.image);
    std::vector<VilaImage> imgs;
    imgs.push_back(vila_image(image));
    VilaSample s = question_sample(tokenizer, r.question, std::move(imgs));
    std::vector<ImageLook> looks;
    Tensor e = model.embed_sample(s, -1, nullptr, &looks);
    Qwen2KVCache cache = model.llm().new_cache();
    Qwen2Inputs in;
    in.inputs_embeds = unsqueeze(e, 0);
    in.cache = &cache;
    Tensor hidden = model.llm().hidden_states(in);
    const std::vector<double> first =
        log_probs(reshape(model.llm().logits(narrow(hidden, 1, hidden.size(1) - 1, 1)), {-1}));

    McQuestion q;
    double best = 1e300;
    for (size_t o = 0; o < r.options.size(); ++o) {
      std::vector<int64_t> ids;
      for (int32_t t : tokenizer.encode(r.options[o])) ids.push_back(t);
      ids.insert(ids.end(), end_ids.begin(), end_ids.end());
      const double nll = option_nll(model.llm(), first, cache, ids);
      if (nll < best) best = nll, q.chosen = int64_t(o);
    }
    q.correct = q.chosen == r.answer;
    GenerationOptions g;
    g.max_new_tokens = 8;
    g.stop_tokens = stops;
    Qwen2Inputs prompt;
    prompt.inputs_embeds = unsqueeze(e, 0);
    GenerationResult gen = generate(model.llm(), prompt, g);
    std::vector<int32_t> ids(gen.tokens.begin(), gen.tokens.end());
    q.generated = tokenizer.decode(ids, true);
    q.exact = trim_lower(q.generated) == trim_lower(r.options[size_t(r.answer)]);
    q.image_tokens = looks[0].projected.tokens.size(0);
    if (r.box && mode.num_look_close > 0 && !looks[0].selection_maps.empty()) {
      std::vector<Tensor> gt = box_gt_maps(*image, *r.box, vc);
      double hit = 0, total = 0, picked = 0, cells = 0;
      for (size_t sc = 0; sc < gt.size(); ++sc) {
        hit += sum(mul(looks[0].selection_maps[sc], gt[sc])).item<float>();
        total += sum(gt[sc]).item<float>();
        picked += sum(looks[0].selection_maps[sc]).item<float>();
        cells += double(gt[sc].numel());
      }
      if (total > 0) {
        q.gt_recall = hit / total;
        q.random_recall = picked / cells;  // a random pick of the same size, in expectation
        recall_sum += q.gt_recall, random_sum += q.random_recall, ++with_recall;
      }
    }
    tokens_sum += double(q.image_tokens);
    result.accuracy += q.correct;
    result.exact_match += q.exact;
    result.questions.push_back(std::move(q));
  }
  const double n = std::max<double>(1, double(records.size()));
  result.accuracy /= n;
  result.exact_match /= n;
  result.mean_image_tokens = tokens_sum / n;
  if (with_recall > 0)
    result.gt_recall = recall_sum / double(with_recall),
    result.random_recall = random_sum / double(with_recall);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  model.set_look_close_mode(saved.look_close_mode);
  model.set_num_look_close(saved.num_look_close);
  model.set_select_num_each_scale(saved.select_num_each_scale);
  return result;
}

std::vector<McMode> default_mc_modes(const VilaHdModel& model, int64_t max_look_close) {
  const VilaHdConfig& c = model.config();
  const bool top_down = model.projector().has_prompt_head();
  const LookCloseMode best = top_down ? LookCloseMode::after_prompt : LookCloseMode::after_image;
  std::vector<McMode> modes;
  modes.push_back({"low-res only", best, 0, {}});
  modes.push_back({"bottom-up", LookCloseMode::after_image, 1, {}});
  if (top_down)
    for (int64_t n = 1; n <= max_look_close; ++n)
      modes.push_back({"top-down x" + std::to_string(n), LookCloseMode::after_prompt, n, {}});
  // Resolution sweep: the same per-step total, spent on the first k scales only.
  std::vector<int64_t> budget = c.select_num_each_scale;
  if (budget.empty()) budget = ps3::split_budget(c.vision.scales, c.vision.max_select);
  int64_t total = 0;
  for (int64_t b : budget) total += b;
  for (size_t k = 1; k <= c.vision.scales.size(); ++k) {
    std::vector<int64_t> first(c.vision.scales.begin(), c.vision.scales.begin() + int64_t(k));
    std::vector<int64_t> split = ps3::split_budget(first, total);
    split.resize(c.vision.scales.size(), 0);
    modes.push_back(
        {std::string(top_down ? "top-down" : "bottom-up") + " @" + std::to_string(first.back()),
         best, 1, split});
  }
  return modes;
}

std::string mc_report_table(const std::vector<McModeResult>& results) {
  std::string out =
      "mode                 accuracy  exact   GT-box recall (random)  image tokens  seconds\n";
  char line[256];
  for (const McModeResult& r : results) {
    std::string recall = r.gt_recall < 0 ? "-" : "";
    if (r.gt_recall >= 0) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.3f (%.3f)", r.gt_recall, r.random_recall);
      recall = buf;
    }
    std::snprintf(line, sizeof(line), "%-20s %7.1f%%  %5.1f%%  %-22s  %12.0f  %7.1f\n",
                  r.mode.name.c_str(), 100 * r.accuracy, 100 * r.exact_match, recall.c_str(),
                  r.mean_image_tokens, r.seconds);
    out += line;
  }
  return out;
}

double mc_chance(const std::vector<data::McRecord>& records) {
  double sum = 0;
  for (const data::McRecord& r : records)
    sum += r.options.empty() ? 0 : 1.0 / double(r.options.size());
  return records.empty() ? 0 : sum / double(records.size());
}

std::string mc_report_json(const std::vector<McModeResult>& results, int64_t questions,
                           double chance) {
  nlohmann::json modes = nlohmann::json::array();
  for (const McModeResult& r : results) {
    nlohmann::json chosen = nlohmann::json::array(), generated = nlohmann::json::array(),
                   correct = nlohmann::json::array(), recall = nlohmann::json::array();
    for (const McQuestion& q : r.questions) {
      chosen.push_back(q.chosen), generated.push_back(q.generated), correct.push_back(q.correct);
      recall.push_back(q.gt_recall);  // -1: no box or no selection
    }
    modes.push_back({{"name", r.mode.name},
                     {"look_close_mode", look_close_mode_name(r.mode.look_close_mode)},
                     {"num_look_close", r.mode.num_look_close},
                     {"select_per_scale", r.mode.select_per_scale},
                     {"accuracy", r.accuracy},
                     {"exact_match", r.exact_match},
                     {"gt_recall", r.gt_recall},
                     {"random_recall", r.random_recall},
                     {"mean_image_tokens", r.mean_image_tokens},
                     {"seconds", r.seconds},
                     {"chosen", chosen},
                     {"correct", correct},
                     {"question_gt_recall", recall},
                     {"generated", generated}});
  }
  return nlohmann::json({{"questions", questions}, {"chance", chance}, {"modes", modes}}).dump(2) +
         "\n";
}

}  // namespace hd::vilahd
