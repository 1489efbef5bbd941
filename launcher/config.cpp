// Parsing, overrides, defaults and validation of RunConfig (see config.h for the why).
//
// Unknown-field messages are rewritten from protobuf's 'Message type "hd.proto.TrainConfig" has
// no field named "stpes"' into "unknown field 'stpes' in train (did you mean 'steps'?)": the
// dotted section is what a user writes, the type name is not. Overrides walk the descriptor by
// reflection, so every field of the schema can be overridden without a table to maintain.
#include "launcher/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "autograd/error.h"

namespace hd::launcher {
namespace {

namespace pb = google::protobuf;

// Dotted section of every message type reachable from RunConfig ("hd.proto.TrainConfig" ->
// "train"); the root is "".
const std::map<std::string, std::string>& section_names() {
  static const std::map<std::string, std::string> names = [] {
    std::map<std::string, std::string> out;
    std::vector<std::pair<const pb::Descriptor*, std::string>> todo = {
        {proto::RunConfig::descriptor(), ""}};
    while (!todo.empty()) {
      auto [d, path] = todo.back();
      todo.pop_back();
      if (out.count(d->full_name())) continue;
      out[d->full_name()] = path;
      for (int i = 0; i < d->field_count(); ++i) {
        const pb::FieldDescriptor* f = d->field(i);
        if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE)
          todo.push_back({f->message_type(), path.empty() ? f->name() : path + "." + f->name()});
      }
    }
    return out;
  }();
  return names;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// "unknown field 'x' in train (did you mean 'y'?)" / "(fields: a, b, c)".
std::string unknown_field_message(const pb::Descriptor* d, const std::string& name) {
  std::string section =
      section_names().count(d->full_name()) ? section_names().at(d->full_name()) : d->full_name();
  std::string msg = "unknown field '" + name + "'" +
                    (section.empty() ? std::string(" at the top level") : " in " + section);
  std::string best;
  size_t best_d = std::string::npos;
  std::string all;
  for (int i = 0; i < d->field_count(); ++i) {
    const std::string& f = d->field(i)->name();
    size_t dist = edit_distance(name, f);
    if (dist < best_d) best_d = dist, best = f;
    all += (all.empty() ? "" : ", ") + f;
  }
  if (best_d <= std::max<size_t>(2, name.size() / 3))
    return msg + " (did you mean '" + best + "'?)";
  return msg + " (fields: " + all + ")";
}

class Collector : public pb::io::ErrorCollector {
 public:
  Collector(std::string source, const std::string& text) : source_(std::move(source)) {
    std::stringstream ss(text);
    for (std::string l; std::getline(ss, l);) lines_.push_back(l);
  }
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    add(line, column, message);
  }
  void AddWarning(int line, pb::io::ColumnNumber column, const std::string& message) override {
    add(line, column, "warning: " + message);
  }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  void add(int line, int column, const std::string& message) {
    static const std::regex unknown(R"(Message type \"([\w.]+)\" has no field named \"(\w+)\"\.?)");
    std::string text = message;
    std::smatch m;
    if (std::regex_match(message, m, unknown)) {
      const pb::Descriptor* d =
          pb::DescriptorPool::generated_pool()->FindMessageTypeByName(m[1].str());
      if (d) text = unknown_field_message(d, m[2].str());
      // protobuf reports the column after the name; point at the name itself.
      if (line >= 0 && size_t(line) < lines_.size()) {
        size_t at = lines_[line].rfind(m[2].str(), size_t(std::max(column, 0)));
        if (at != std::string::npos) column = int(at);
      }
    }
    // protobuf counts from 0; editors and compilers from 1.
    errors_.push_back(source_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) +
                      ": " + text);
  }
  std::string source_;
  std::vector<std::string> lines_;
  std::vector<std::string> errors_;
};

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// One scalar value of `f` from `text` into `msg` (appended when f is repeated).
void set_scalar(pb::Message& msg, const pb::FieldDescriptor* f, const std::string& text,
                const std::string& where) {
  const pb::Reflection* r = msg.GetReflection();
  bool rep = f->is_repeated();
  auto fail = [&](const char* what) {
    throw Error(where + ": " + f->full_name().substr(std::string("hd.proto.").size()) + " needs " +
                what + ", got '" + text + "'");
  };
  auto as_int = [&]() -> long long {
    try {
      size_t used = 0;
      long long v = std::stoll(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    fail("an integer");
    return 0;
  };
  auto as_double = [&]() -> double {
    try {
      size_t used = 0;
      double v = std::stod(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    fail("a number");
    return 0;
  };
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      long long v = as_int();
      if (v < INT32_MIN || v > INT32_MAX) fail("a 32-bit integer");
      rep ? r->AddInt32(&msg, f, int32_t(v)) : r->SetInt32(&msg, f, int32_t(v));
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      long long v = as_int();
      rep ? r->AddInt64(&msg, f, v) : r->SetInt64(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32:
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      long long v = as_int();
      if (v < 0) fail("a non-negative integer");
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32)
        rep ? r->AddUInt32(&msg, f, uint32_t(v)) : r->SetUInt32(&msg, f, uint32_t(v));
      else
        rep ? r->AddUInt64(&msg, f, uint64_t(v)) : r->SetUInt64(&msg, f, uint64_t(v));
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      rep ? r->AddDouble(&msg, f, as_double()) : r->SetDouble(&msg, f, as_double());
      break;
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      rep ? r->AddFloat(&msg, f, float(as_double())) : r->SetFloat(&msg, f, float(as_double()));
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      bool v = false;
      if (text == "true" || text == "1") {
        v = true;
      } else if (text != "false" && text != "0") {
        fail("true or false");
      }
      rep ? r->AddBool(&msg, f, v) : r->SetBool(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string v = text;
      if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
        v = v.substr(1, v.size() - 2);
      rep ? r->AddString(&msg, f, v) : r->SetString(&msg, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumValueDescriptor* e = f->enum_type()->FindValueByName(text);
      if (!e) fail("an enum value name");
      rep ? r->AddEnum(&msg, f, e) : r->SetEnum(&msg, f, e);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      throw Error(where + ": " + f->name() + " is a message; set its fields (" + f->name() +
                  ".FIELD=VALUE)");
  }
}

[[noreturn]] void invalid(const std::string& field, const std::string& rule) {
  throw Error("config: " + field + " " + rule);
}

}  // namespace

proto::RunConfig parse_config_text(const std::string& text, const std::string& source) {
  proto::RunConfig config;
  Collector collector(source, text);
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  bool ok = parser.ParseFromString(text, &config);
  if (!ok || !collector.errors().empty()) {
    std::string all;
    for (const auto& e : collector.errors()) all += (all.empty() ? "" : "\n") + e;
    if (all.empty()) all = source + ": could not parse the config";
    throw Error(all);
  }
  return config;
}

proto::RunConfig read_config_file(const std::string& path) {
  std::ifstream in(path);
  HD_CHECK(in.good(), "config file '", path, "' cannot be read (missing or not readable)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config_text(ss.str(), path);
}

void apply_override(proto::RunConfig& config, const std::string& assignment) {
  std::string where = "--set " + assignment;
  size_t eq = assignment.find('=');
  HD_CHECK(eq != std::string::npos && eq > 0, where, ": expected FIELD=VALUE, e.g. train.steps=20");
  std::string path = trim(assignment.substr(0, eq));
  std::string value = trim(assignment.substr(eq + 1));
  pb::Message* msg = &config;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string name =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const pb::FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(name);
    if (!f) throw Error(where + ": " + unknown_field_message(msg->GetDescriptor(), name));
    if (dot == std::string::npos) {
      if (f->is_repeated()) {
        msg->GetReflection()->ClearField(msg, f);
        std::string list = value;
        if (!list.empty() && list.front() == '[' && list.back() == ']')
          list = list.substr(1, list.size() - 2);
        std::stringstream ss(list);
        std::string item;
        while (std::getline(ss, item, ','))
          if (!trim(item).empty()) set_scalar(*msg, f, trim(item), where);
      } else {
        set_scalar(*msg, f, value, where);
      }
      return;
    }
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated())
      throw Error(where + ": '" + name + "' is not a section (it has no field '" +
                  path.substr(dot + 1) + "')");
    msg = msg->GetReflection()->MutableMessage(msg, f);
    start = dot + 1;
  }
}

void resolve_defaults(proto::RunConfig& c) {
  auto* m = c.mutable_model();
  if (!m->has_init_logit_scale()) m->set_init_logit_scale(std::log(10.0));
  if (!m->has_init_logit_bias()) m->set_init_logit_bias(-10.0);

  auto* d = c.mutable_data();
  auto under = [&](const char* leaf) { return d->dir().empty() ? "" : d->dir() + "/" + leaf; };
  if (d->train_dir().empty()) d->set_train_dir(under("train"));
  if (d->eval_dir().empty()) d->set_eval_dir(under("eval"));
  if (d->tokenizer().empty()) d->set_tokenizer(under("tokenizer.model"));
  if (!d->has_tokenizer_vocab()) d->set_tokenizer_vocab(1000);
  if (!d->has_loader_threads()) d->set_loader_threads(2);
  if (!d->has_prefetch_batches()) d->set_prefetch_batches(2);
  if (!d->has_global_caption_prob()) d->set_global_caption_prob(0.25);
  if (d->synthesize().threads() == 0) d->mutable_synthesize()->set_threads(2);

  if (c.model().device().empty()) c.mutable_model()->set_device("cpu");

  auto* t = c.mutable_train();
  if (!t->has_micro_batches()) t->set_micro_batches(1);
  if (!t->has_weight_decay()) t->set_weight_decay(3e-4);
  if (!t->has_beta1()) t->set_beta1(0.9);
  if (!t->has_beta2()) t->set_beta2(0.95);
  if (!t->has_eps()) t->set_eps(1e-8);
  if (!t->has_look_close_steps()) t->set_look_close_steps(1);
  if (!t->has_gt_forcing()) t->set_gt_forcing(true);
  if (!t->has_pool_gt_only()) t->set_pool_gt_only(true);
  if (!t->has_prior_weight()) t->set_prior_weight(1.0);
  if (t->selection_loss().empty()) t->set_selection_loss("bce");
  if (t->precision().empty()) t->set_precision("fp32");
  if (t->posterior_target().empty()) t->set_posterior_target("caption_box");
  if (!t->has_selection_lr_scale()) t->set_selection_lr_scale(1.0);
  if (t->prior_target().empty()) t->set_prior_target("caption_box");
  if (!t->has_posterior_weight()) t->set_posterior_weight(1.0);
  if (!t->has_max_nonfinite_in_a_row()) t->set_max_nonfinite_in_a_row(5);

  auto* k = c.mutable_checkpoint();
  if (!k->has_keep_last()) k->set_keep_last(3);
  if (k->on_corrupt().empty()) k->set_on_corrupt("fallback");

  auto* o = c.mutable_monitoring();
  if (!o->has_port_base()) o->set_port_base(9470);
  if (!o->has_serve()) o->set_serve(true);
  if (!o->has_progress()) o->set_progress(true);
  if (o->jsonl().empty() && !c.run_dir().empty())
    o->set_jsonl(c.run_dir() + "/metrics_rank{rank}.jsonl");

  auto* e = c.mutable_eval();
  if (!e->has_at_end()) e->set_at_end(true);
  if (!e->has_max_images()) e->set_max_images(0);
  if (!e->has_look_close_steps()) e->set_look_close_steps(t->look_close_steps());
}

void validate_config(const proto::RunConfig& c, int world_size) {
  auto str = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  if (c.run_dir().empty())
    invalid("run_dir", "is empty: set the run folder (checkpoints, metrics)");
  static const std::vector<std::string> presets = {"demo", "ps3-1.5k", "ps3-4k"};
  if (std::find(presets.begin(), presets.end(), c.model().preset()) == presets.end())
    invalid("model.preset", "= '" + c.model().preset() + "' is not one of demo, ps3-1.5k, ps3-4k");
  const std::string& device = c.model().device();
  if (device != "cpu" && device != "cuda" && device != "auto" && device != "cpu:1")
    invalid("model.device", "= '" + device + "' is not one of cpu, cuda, auto");

  const auto& d = c.data();
  if (d.train_dir().empty()) invalid("data.dir", "is empty (and data.train_dir is not set)");
  if (d.tokenizer().empty()) invalid("data.tokenizer", "is empty (and data.dir is not set)");
  if (d.tokenizer_vocab() < 16)
    invalid("data.tokenizer_vocab", "= " + str(d.tokenizer_vocab()) + " must be >= 16");
  if (d.loader_threads() < 1)
    invalid("data.loader_threads", "= " + str(d.loader_threads()) + " must be >= 1");
  if (d.prefetch_batches() < 1)
    invalid("data.prefetch_batches", "= " + str(d.prefetch_batches()) + " must be >= 1");
  if (d.global_caption_prob() < 0 || d.global_caption_prob() > 1)
    invalid("data.global_caption_prob", "= " + str(d.global_caption_prob()) + " must be in [0, 1]");
  if (d.cache_mb() < 0)
    invalid("data.cache_mb", "= " + str(d.cache_mb()) + " must be >= 0 (0: off)");
  if (d.synthesize().enabled()) {
    if (d.dir().empty()) invalid("data.synthesize", "needs data.dir (where to write the dataset)");
    if (d.synthesize().images() < 1)
      invalid("data.synthesize.images", "= " + str(d.synthesize().images()) + " must be >= 1");
    if (d.synthesize().eval_images() < 0)
      invalid("data.synthesize.eval_images",
              "= " + str(d.synthesize().eval_images()) + " must be >= 0");
    if (d.synthesize().resolution() < 128)
      invalid("data.synthesize.resolution",
              "= " + str(d.synthesize().resolution()) + " must be >= 128");
    const std::string& layout = d.synthesize().layout();
    if (!layout.empty() && layout != "boards" && layout != "tiny_signs" && layout != "patterns" &&
        layout != "one_pattern")
      invalid("data.synthesize.layout",
              "= '" + layout + "' must be boards, tiny_signs, patterns or one_pattern");
    const int max_regions = d.synthesize().max_regions();
    if (max_regions < 0 || max_regions > 5)
      invalid("data.synthesize.max_regions",
              "= " + str(max_regions) + " must be in [1, 5] (0: the default, 5)");
  }

  const auto& t = c.train();
  if (t.steps() < 1) invalid("train.steps", "= " + str(t.steps()) + " must be >= 1");
  if (t.global_batch() < 1)
    invalid("train.global_batch", "= " + str(t.global_batch()) + " must be >= 1");
  if (t.micro_batches() < 1)
    invalid("train.micro_batches", "= " + str(t.micro_batches()) + " must be >= 1");
  if (t.global_batch() % t.micro_batches() != 0)
    invalid("train.global_batch",
            "= " + str(t.global_batch()) +
                " is not divisible by train.micro_batches = " + str(t.micro_batches()));
  if (world_size > 0 && (t.global_batch() / t.micro_batches()) % world_size != 0)
    invalid("train.global_batch",
            "= " + str(t.global_batch()) + " is not divisible by world size " +
                std::to_string(world_size) + " x train.micro_batches " + str(t.micro_batches()));
  if (!(t.lr() > 0)) invalid("train.lr", "= " + str(t.lr()) + " must be > 0");
  if (t.min_lr() < 0 || t.min_lr() > t.lr())
    invalid("train.min_lr",
            "= " + str(t.min_lr()) + " must be in [0, train.lr = " + str(t.lr()) + "]");
  if (t.warmup_steps() < 0 || t.warmup_steps() >= t.steps())
    invalid("train.warmup_steps",
            "= " + str(t.warmup_steps()) + " must be in [0, train.steps = " + str(t.steps()) + ")");
  if (t.weight_decay() < 0)
    invalid("train.weight_decay", "= " + str(t.weight_decay()) + " must be >= 0");
  if (t.beta1() < 0 || t.beta1() >= 1)
    invalid("train.beta1", "= " + str(t.beta1()) + " must be in [0, 1)");
  if (t.beta2() < 0 || t.beta2() >= 1)
    invalid("train.beta2", "= " + str(t.beta2()) + " must be in [0, 1)");
  if (!(t.eps() > 0)) invalid("train.eps", "= " + str(t.eps()) + " must be > 0");
  if (t.grad_clip() < 0)
    invalid("train.grad_clip", "= " + str(t.grad_clip()) + " must be >= 0 (0: off)");
  if (t.look_close_steps() < 1)
    invalid("train.look_close_steps", "= " + str(t.look_close_steps()) + " must be >= 1");
  if (t.selection_loss() != "bce" && t.selection_loss() != "balanced" &&
      t.selection_loss() != "balanced_rank")
    invalid("train.selection_loss",
            "= '" + t.selection_loss() +
                "' is not one of bce (the reference), balanced, balanced_rank");
  if (t.prior_target() != "caption_box" && t.prior_target() != "all_regions")
    invalid("train.prior_target",
            "= '" + t.prior_target() + "' is not one of caption_box (the reference), all_regions");
  if (t.posterior_target() != "caption_box" && t.posterior_target() != "all_regions")
    invalid(
        "train.posterior_target",
        "= '" + t.posterior_target() + "' is not one of caption_box (the reference), all_regions");
  parse_activation_checkpointing(t.activation_checkpointing());
  if (t.precision() != "fp32" && t.precision() != "bf16")
    invalid("train.precision", "= '" + t.precision() + "' is not one of fp32, bf16");
  if (!(t.selection_lr_scale() > 0))
    invalid("train.selection_lr_scale", "= " + str(t.selection_lr_scale()) + " must be > 0");
  if (t.prior_weight() < 0)
    invalid("train.prior_weight", "= " + str(t.prior_weight()) + " must be >= 0");
  if (t.posterior_weight() < 0)
    invalid("train.posterior_weight", "= " + str(t.posterior_weight()) + " must be >= 0");
  if (t.max_nonfinite_in_a_row() < 1)
    invalid("train.max_nonfinite_in_a_row",
            "= " + str(t.max_nonfinite_in_a_row()) + " must be >= 1");
  if (t.stop_at_step() < 0)
    invalid("train.stop_at_step", "= " + str(t.stop_at_step()) + " must be >= 0 (0: off)");
  for (int64_t s : t.debug_nonfinite_steps())
    if (s < 0) invalid("train.debug_nonfinite_steps", "holds " + str(s) + "; steps are >= 0");

  const auto& k = c.checkpoint();
  if (k.every_steps() < 0)
    invalid("checkpoint.every_steps",
            "= " + str(k.every_steps()) + " must be >= 0 (0: only at the end)");
  if (k.keep_last() < 1)
    invalid("checkpoint.keep_last", "= " + str(k.keep_last()) + " must be >= 1");
  if (k.keep_every() < 0)
    invalid("checkpoint.keep_every", "= " + str(k.keep_every()) + " must be >= 0");
  if (k.on_corrupt() != "fallback" && k.on_corrupt() != "error")
    invalid("checkpoint.on_corrupt", "= '" + k.on_corrupt() + "' is not one of fallback, error");

  const auto& o = c.monitoring();
  if (o.port_base() < 1 || o.port_base() + std::max(world_size, 1) > 65535)
    invalid("monitoring.port_base",
            "= " + str(o.port_base()) + " must leave room for one port per rank below 65536");

  const auto& e = c.eval();
  if (e.max_images() < 0)
    invalid("eval.max_images", "= " + str(e.max_images()) + " must be >= 0 (0: all)");
  if (e.look_close_steps() < 1)
    invalid("eval.look_close_steps", "= " + str(e.look_close_steps()) + " must be >= 1");
}

RecomputedTowers parse_activation_checkpointing(const std::string& list) {
  RecomputedTowers towers;
  if (list.empty()) return towers;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    const std::string name = list.substr(start, comma - start);
    if (name == "vision") {
      towers.vision = true;
    } else if (name == "text") {
      towers.text = true;
    } else if (name == "llm") {
      towers.llm = true;
    } else {
      invalid("train.activation_checkpointing",
              "= '" + list + "': '" + name +
                  "' is not one of vision, text, llm (a comma list; empty: none)");
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return towers;
}

std::string to_text(const proto::RunConfig& config) {
  std::string out;
  pb::TextFormat::Printer printer;
  printer.PrintToString(config, &out);
  return out;
}

proto::RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                                 int world_size) {
  proto::RunConfig c = read_config_file(path);
  for (const auto& o : overrides) apply_override(c, o);
  resolve_defaults(c);
  validate_config(c, world_size);
  return c;
}

proto::RunConfig load_model_config(const std::string& path,
                                   const std::vector<std::string>& overrides) {
  proto::RunConfig c = read_config_file(path);
  for (const auto& o : overrides) apply_override(c, o);
  resolve_defaults(c);
  static const std::vector<std::string> presets = {"demo", "ps3-1.5k", "ps3-4k"};
  if (std::find(presets.begin(), presets.end(), c.model().preset()) == presets.end())
    invalid("model.preset", "= '" + c.model().preset() + "' is not one of demo, ps3-1.5k, ps3-4k");
  if (c.eval().look_close_steps() < 1)
    invalid("eval.look_close_steps",
            "= " + std::to_string(c.eval().look_close_steps()) + " must be >= 1");
  return c;
}

}  // namespace hd::launcher
