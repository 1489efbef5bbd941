// Stage defaults, validation and overrides (see stage_config.h).
#include "launcher/stage_config.h"

#include <google/protobuf/text_format.h>

#include <cstdio>
#include <set>
#include <sstream>

#include "autograd/error.h"
#include "launcher/config.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;
namespace pb = google::protobuf;

[[noreturn]] void invalid(int i, const std::string& field, const std::string& rule) {
  throw Error("config: stages[" + std::to_string(i) + "]." + field + " " + rule);
}

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

const std::set<std::string> kParts = {"llm", "projector", "top_down_selection", "vision_tower"};

}  // namespace

bool is_vila_stage(const proto::StageConfig& s) {
  return s.kind() == "vilahd_align" || s.kind() == "vilahd_sft";
}

void resolve_stage_defaults(proto::RunConfig& c) {
  const std::string dir = c.data().dir();
  for (auto& s : *c.mutable_stages()) {
    if (is_vila_stage(s)) {
      if (s.trainable().empty())
        s.set_trainable(s.kind() == "vilahd_align" ? "projector,top_down_selection"
                                                   : "llm,projector,top_down_selection");
      if (s.sft().empty() && !dir.empty()) s.set_sft(dir + "/sft.jsonl");
      if (s.max_length() == 0) s.set_max_length(2048);
      if (!s.has_grad_clip()) s.set_grad_clip(1.0);
      if (!s.has_weight_decay()) s.set_weight_decay(0.0);
    }
    if (s.kind() == "eval") {
      if (s.mc().empty() && !dir.empty()) s.set_mc(dir + "/eval_mc.jsonl");
      if (s.max_look_close() == 0) s.set_max_look_close(2);
    }
  }
  auto* v = c.mutable_vilahd();
  if (v->llm_preset().empty()) v->set_llm_preset("tiny");
  if (v->look_close_mode().empty()) v->set_look_close_mode("after_prompt");
}

void validate_stages(const proto::RunConfig& c, int world) {
  if (c.run_dir().empty()) throw Error("config: run_dir is empty: set the run folder");
  if (c.stages().empty())
    throw Error(std::string("config: stages is empty: list the stages to run (") + kStageKinds +
                "); `hdtrain pretrain` runs PS3 pre-training alone");
  bool seen_vila = false;
  bool needs_built_model = false;
  for (int i = 0; i < c.stages_size(); ++i) {
    const proto::StageConfig& s = c.stages(i);
    const std::string& k = s.kind();
    const bool vila = is_vila_stage(s), ps3 = k == "ps3_pretrain", eval = k == "eval";
    if (!vila && !ps3 && !eval) invalid(i, "kind", "= '" + k + "' is not one of " + kStageKinds);
    if (ps3 || vila) {
      if (s.steps() < 1) invalid(i, "steps", "= " + num(s.steps()) + " must be >= 1");
      if (s.global_batch() < 1)
        invalid(i, "global_batch", "= " + num(s.global_batch()) + " must be >= 1");
      if (world > 0 && s.global_batch() % world != 0)
        invalid(i, "global_batch",
                "= " + num(s.global_batch()) + " is not divisible by the world size " + num(world));
      if (!(s.lr() > 0)) invalid(i, "lr", "= " + num(s.lr()) + " must be > 0");
      if (s.warmup_steps() < 0 || s.warmup_steps() >= s.steps())
        invalid(i, "warmup_steps",
                "= " + num(s.warmup_steps()) + " must be in [0, steps = " + num(s.steps()) + ")");
      if (s.min_lr() < 0 || s.min_lr() > s.lr())
        invalid(i, "min_lr", "= " + num(s.min_lr()) + " must be in [0, lr = " + num(s.lr()) + "]");
      if (s.stop_at_step() < 0)
        invalid(i, "stop_at_step", "= " + num(s.stop_at_step()) + " must be >= 0 (0: off)");
      if (s.micro_batches() < 0)
        invalid(i, "micro_batches", "= " + num(s.micro_batches()) + " must be >= 0 (0: default)");
      if (vila && s.micro_batches() > 1 && world > 0 &&
          s.global_batch() % (world * s.micro_batches()) != 0)
        invalid(i, "micro_batches",
                "= " + num(s.micro_batches()) + ": global_batch " + num(s.global_batch()) +
                    " is not divisible by the world size x micro_batches = " +
                    num(world * s.micro_batches()));
    } else {
      for (const char* f : {"steps", "global_batch", "lr", "warmup_steps", "min_lr", "stop_at_step",
                            "checkpoint_every", "trainable", "sft", "micro_batches"}) {
        const pb::FieldDescriptor* d = proto::StageConfig::descriptor()->FindFieldByName(f);
        if (proto::StageConfig::GetReflection()->HasField(s, d))
          invalid(i, f, "is set, but an eval stage does not train");
      }
    }
    if (!vila) {
      for (const char* f :
           {"trainable", "sft", "max_length", "checkpoint_every", "selection_weight", "grad_clip",
            "weight_decay", "train_w_gt_selection_map", "memoize_vision"}) {
        const pb::FieldDescriptor* d = proto::StageConfig::descriptor()->FindFieldByName(f);
        if (proto::StageConfig::GetReflection()->HasField(s, d))
          invalid(i, f, "applies to VILA-HD stages (vilahd_align, vilahd_sft) only, not " + k);
      }
    }
    if (!eval && (!s.mc().empty() || s.max_questions() != 0 || s.max_look_close() != 0))
      invalid(i, s.mc().empty() ? (s.max_questions() ? "max_questions" : "max_look_close") : "mc",
              "applies to eval stages only, not " + k);
    if (ps3) {
      if (seen_vila)
        invalid(i, "kind",
                "= ps3_pretrain comes after a VILA-HD stage; PS3 pre-training runs first");
      try {
        validate_config(ps3_stage_config(c, i, stage_dir(c, i)), world);
      } catch (const Error& e) {
        throw Error("config: stages[" + std::to_string(i) + "] (ps3_pretrain, the train section " +
                    "with the stage's overrides): " + std::string(e.what()).substr(8));
      }
    }
    if (vila) {
      std::stringstream in(s.trainable());
      std::string part;
      int parts = 0;
      while (std::getline(in, part, ',')) {
        if (part.empty()) continue;
        if (!kParts.count(part))
          invalid(
              i, "trainable",
              "names '" + part + "', not one of llm, projector, top_down_selection, vision_tower");
        if (s.memoize_vision() && (part == "vision_tower" || part == "top_down_selection"))
          invalid(i, "memoize_vision",
                  "needs PS3 frozen, but trainable names '" + part +
                      "' (its outputs would change from step to step)");
        ++parts;
      }
      if (parts == 0) invalid(i, "trainable", "is empty");
      if (s.prompt_pass_grad() && s.memoize_vision())
        invalid(i, "prompt_pass_grad", "needs the prompt pass, which memoize_vision skips");
      if (s.prompt_pass_grad() && (s.trainable().find("llm") == std::string::npos ||
                                   s.trainable().find("top_down_selection") == std::string::npos))
        invalid(i, "prompt_pass_grad",
                "trains the LLM from the selection loss: trainable must name llm and "
                "top_down_selection, not '" +
                    s.trainable() + "'");
      if (s.sft().empty()) invalid(i, "sft", "is empty (and data.dir is not set)");
      if (s.max_length() < 1)
        invalid(i, "max_length", "= " + num(s.max_length()) + " must be >= 1");
      if (s.grad_clip() < 0) invalid(i, "grad_clip", "= " + num(s.grad_clip()) + " must be >= 0");
      if (s.weight_decay() < 0)
        invalid(i, "weight_decay", "= " + num(s.weight_decay()) + " must be >= 0");
      if (s.checkpoint_every() < 0)
        invalid(i, "checkpoint_every", "= " + num(s.checkpoint_every()) + " must be >= 0");
      if (s.has_selection_weight() && s.selection_weight() < 0)
        invalid(i, "selection_weight", "= " + num(s.selection_weight()) + " must be >= 0");
      if (!seen_vila && s.init_from().empty()) needs_built_model = true;
    }
    if (eval) {
      if (!seen_vila && s.init_from().empty())
        invalid(i, "init_from",
                "is empty and no VILA-HD stage comes before this eval stage: "
                "there is no model to evaluate");
      if (s.mc().empty()) invalid(i, "mc", "is empty (and data.dir is not set)");
      if (s.max_questions() < 0)
        invalid(i, "max_questions", "= " + num(s.max_questions()) + " must be >= 0 (0: all)");
      if (s.max_look_close() < 1)
        invalid(i, "max_look_close", "= " + num(s.max_look_close()) + " must be >= 1");
    }
    seen_vila = seen_vila || vila;
  }
  if (needs_built_model) {
    const auto& v = c.vilahd();
    if (v.tokenizer().empty())
      throw Error(
          "config: vilahd.tokenizer is empty: the first VILA-HD stage has no init_from, so the "
          "model is built, and its LLM needs a Qwen2-layout tokenizer.json");
    static const std::set<std::string> presets = {"tiny", "small", "qwen2-0.5b", "qwen2-7b"};
    if (v.llm_from().empty() && !presets.count(v.llm_preset()))
      throw Error("config: vilahd.llm_preset = '" + v.llm_preset() +
                  "' is not one of tiny, small, qwen2-0.5b, qwen2-7b");
    if (v.look_close_mode() != "after_prompt" && v.look_close_mode() != "after_image")
      throw Error("config: vilahd.look_close_mode = '" + v.look_close_mode() +
                  "' is not one of after_prompt, after_image");
    if (v.has_num_look_close() && v.num_look_close() < 1)
      throw Error("config: vilahd.num_look_close = " + num(v.num_look_close()) + " must be >= 1");
    for (int64_t n : v.select_num_each_scale())
      if (n < 0)
        throw Error("config: vilahd.select_num_each_scale holds " + num(n) + "; must be >= 0");
    static const std::set<std::string> ps3_presets = {"demo", "ps3-1.5k", "ps3-4k"};
    if (!ps3_presets.count(c.model().preset()))
      throw Error("config: model.preset = '" + c.model().preset() +
                  "' is not one of demo, ps3-1.5k, ps3-4k (the VILA-HD vision tower is built "
                  "from the model section)");
  }
}

proto::RunConfig ps3_stage_config(const proto::RunConfig& c, int index, const fs::path& dir) {
  const proto::StageConfig& s = c.stages(index);
  proto::RunConfig out = c;
  out.clear_stages();
  out.set_run_dir(dir.string());
  auto* t = out.mutable_train();
  t->set_steps(s.steps());
  t->set_global_batch(s.global_batch());
  t->set_lr(s.lr());
  t->set_warmup_steps(s.warmup_steps());
  t->set_min_lr(s.min_lr());
  t->set_stop_at_step(s.stop_at_step());
  if (s.micro_batches() > 0) t->set_micro_batches(s.micro_batches());
  out.mutable_monitoring()->set_jsonl((dir / "metrics_rank{rank}.jsonl").string());
  if (!s.init_from().empty()) out.mutable_checkpoint()->set_init_from(s.init_from());
  return out;
}

fs::path stage_dir(const proto::RunConfig& c, int index) {
  char name[16];
  std::snprintf(name, sizeof(name), "%02d_", index);
  return fs::path(c.run_dir()) / "stages" / (name + c.stages(index).kind());
}

void apply_run_override(proto::RunConfig& c, const std::string& assignment) {
  const std::string where = "--set " + assignment;
  if (assignment.rfind("stages.", 0) != 0) return apply_override(c, assignment);
  const size_t dot = assignment.find('.', 7), eq = assignment.find('=');
  HD_CHECK(dot != std::string::npos && eq != std::string::npos && dot < eq, where,
           ": expected stages.N.FIELD=VALUE, e.g. stages.1.steps=20");
  int index = -1;
  try {
    index = std::stoi(assignment.substr(7, dot - 7));
  } catch (const std::exception&) {
  }
  HD_CHECK(index >= 0 && index < c.stages_size(), where, ": stage index '",
           assignment.substr(7, dot - 7), "' is not one of 0..", c.stages_size() - 1);
  const std::string field = assignment.substr(dot + 1, eq - dot - 1);
  std::string value = assignment.substr(eq + 1);
  const pb::FieldDescriptor* f = proto::StageConfig::descriptor()->FindFieldByName(field);
  HD_CHECK(f, where, ": stages have no field '", field, "'");
  if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    std::string quoted = "\"";
    for (char ch : value)
      quoted += ch == '"' || ch == '\\' ? std::string("\\") + ch : std::string(1, ch);
    value = quoted + "\"";
  }
  proto::StageConfig patch;
  HD_CHECK(pb::TextFormat::ParseFromString(field + ": " + value, &patch), where, ": '",
           assignment.substr(eq + 1), "' is not a valid value for stages[", index, "].", field);
  // Copied by reflection, not MergeFrom: a merge skips proto3 defaults, so "steps=0" would be
  // silently ignored instead of being validated (and rejected).
  proto::StageConfig* stage = c.mutable_stages(index);
  const pb::Reflection* from = patch.GetReflection();
  const pb::Reflection* to = stage->GetReflection();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT64:
      to->SetInt64(stage, f, from->GetInt64(patch, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      to->SetDouble(stage, f, from->GetDouble(patch, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_STRING:
      to->SetString(stage, f, from->GetString(patch, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      to->SetBool(stage, f, from->GetBool(patch, f));
      break;
    default:
      throw Error(where + ": stages[" + std::to_string(index) + "]." + field +
                  " cannot be set from the command line");
  }
}

proto::RunConfig load_staged_config(const std::string& path,
                                    const std::vector<std::string>& overrides, int world_size) {
  proto::RunConfig c = read_config_file(path);
  for (const auto& o : overrides) apply_run_override(c, o);
  resolve_defaults(c);
  resolve_stage_defaults(c);
  validate_stages(c, world_size);
  return c;
}

}  // namespace hd::launcher
