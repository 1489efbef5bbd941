#include "vilahd/qwen2_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/error.h"

namespace hd::vilahd {

using nlohmann::json;

void Qwen2Config::validate(const std::string& origin) const {
  auto positive = [&](const char* field, int64_t v) {
    HD_CHECK(v > 0, origin, ": ", field, " must be positive, got ", v);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("max_position_embeddings", max_position_embeddings);
  HD_CHECK(hidden_size % num_attention_heads == 0, origin, ": hidden_size ", hidden_size,
           " is not divisible by num_attention_heads ", num_attention_heads);
  HD_CHECK(head_dim() % 2 == 0, origin, ": head_dim ", head_dim(), " must be even for RoPE");
  HD_CHECK(num_attention_heads % num_key_value_heads == 0, origin, ": num_attention_heads ",
           num_attention_heads, " is not a multiple of num_key_value_heads ", num_key_value_heads);
  HD_CHECK(rms_norm_eps > 0 && rope_theta > 0, origin,
           ": rms_norm_eps and rope_theta must be positive");
}

Qwen2Config Qwen2Config::tiny(int64_t vocab_size) {
  Qwen2Config c;
  c.vocab_size = vocab_size;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 4096;
  c.rope_theta = 1000000.0;
  c.tie_word_embeddings = true;
  return c;
}

Qwen2Config Qwen2Config::small(int64_t vocab_size) {
  Qwen2Config c;
  c.vocab_size = vocab_size;
  c.hidden_size = 512;
  c.intermediate_size = 2816;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 8192;
  c.rope_theta = 1000000.0;
  c.tie_word_embeddings = true;
  return c;
}

Qwen2Config Qwen2Config::qwen2_0_5b() {
  Qwen2Config c;
  c.vocab_size = 151936;
  c.hidden_size = 896;
  c.intermediate_size = 4864;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 131072;
  c.rope_theta = 1000000.0;
  c.tie_word_embeddings = true;
  c.bos_token_id = 151643;
  c.eos_token_id = 151643;
  return c;
}

Qwen2Config Qwen2Config::qwen2_7b() {
  Qwen2Config c;
  c.vocab_size = 152064;
  c.hidden_size = 3584;
  c.intermediate_size = 18944;
  c.num_hidden_layers = 28;
  c.num_attention_heads = 28;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 32768;
  c.rope_theta = 1000000.0;
  c.tie_word_embeddings = false;
  c.bos_token_id = 151643;
  c.eos_token_id = 151645;
  return c;
}

Qwen2Config Qwen2Config::preset(const std::string& name) {
  if (name == "tiny") return tiny();
  if (name == "small") return small();
  if (name == "qwen2-0.5b") return qwen2_0_5b();
  if (name == "qwen2-7b") return qwen2_7b();
  throw Error("unknown Qwen2 preset '" + name + "' (known: tiny, small, qwen2-0.5b, qwen2-7b)");
}

namespace {

template <class T>
void read_field(const json& j, const char* key, T& out, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return;
  try {
    out = j[key].get<T>();
  } catch (const json::exception& e) {
    throw Error(origin + ": field '" + key + "' has the wrong type: " + e.what());
  }
}

void read_optional_id(const json& j, const char* key, std::optional<int64_t>& out,
                      const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return;
  // eos_token_id may be a list in some configs; the first entry is the model's own stop token.
  const json& v = j[key].is_array() && !j[key].empty() ? j[key][0] : j[key];
  HD_CHECK(v.is_number_integer(), origin, ": field '", key, "' must be an integer token id");
  out = v.get<int64_t>();
}

}  // namespace

Qwen2Config qwen2_config_from_json(const std::string& json_text, const std::string& origin) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(origin + ": not valid JSON: " + e.what());
  }
  HD_CHECK(j.is_object(), origin, ": expected a JSON object");
  // A VILA checkpoint's llm/config.json says qwen2; a llama config would differ in biases.
  if (j.contains("model_type")) {
    const std::string type = j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
    HD_CHECK(type == "qwen2", origin, ": model_type is '", type,
             "'; only Qwen2 (\"qwen2\") LLMs are supported");
  }
  Qwen2Config c;
  read_field(j, "vocab_size", c.vocab_size, origin);
  read_field(j, "hidden_size", c.hidden_size, origin);
  read_field(j, "intermediate_size", c.intermediate_size, origin);
  read_field(j, "num_hidden_layers", c.num_hidden_layers, origin);
  read_field(j, "num_attention_heads", c.num_attention_heads, origin);
  c.num_key_value_heads = c.num_attention_heads;  // HF: None -> = heads
  read_field(j, "num_key_value_heads", c.num_key_value_heads, origin);
  read_field(j, "max_position_embeddings", c.max_position_embeddings, origin);
  read_field(j, "rms_norm_eps", c.rms_norm_eps, origin);
  read_field(j, "rope_theta", c.rope_theta, origin);
  read_field(j, "tie_word_embeddings", c.tie_word_embeddings, origin);
  read_field(j, "initializer_range", c.initializer_range, origin);
  read_optional_id(j, "bos_token_id", c.bos_token_id, origin);
  read_optional_id(j, "eos_token_id", c.eos_token_id, origin);
  read_optional_id(j, "pad_token_id", c.pad_token_id, origin);

  std::string act = "silu";
  read_field(j, "hidden_act", act, origin);
  HD_CHECK(act == "silu", origin, ": hidden_act '", act, "' is not supported (Qwen2 uses silu)");
  bool sliding = false;
  read_field(j, "use_sliding_window", sliding, origin);
  HD_CHECK(!sliding, origin,
           ": use_sliding_window is true; sliding-window attention is not implemented (every "
           "released Qwen2 config has it false, qwen2-reference.md §4)");
  HD_CHECK(!j.contains("rope_scaling") || j["rope_scaling"].is_null(), origin,
           ": rope_scaling is set; only the default RoPE is implemented");
  c.validate(origin);
  return c;
}

Qwen2Config load_qwen2_config(const std::filesystem::path& config_json) {
  std::ifstream in(config_json);
  HD_CHECK(in.good(), "cannot open Qwen2 config '", config_json.string(), "'");
  std::stringstream text;
  text << in.rdbuf();
  return qwen2_config_from_json(text.str(), config_json.string());
}

std::string qwen2_config_to_json(const Qwen2Config& c) {
  json j = {{"architectures", {"Qwen2ForCausalLM"}},
            {"model_type", "qwen2"},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_key_value_heads},
            {"max_position_embeddings", c.max_position_embeddings},
            {"rms_norm_eps", c.rms_norm_eps},
            {"rope_theta", c.rope_theta},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"hidden_act", "silu"},
            {"use_sliding_window", false},
            {"sliding_window", nullptr},
            {"rope_scaling", nullptr},
            {"attention_dropout", 0.0},
            {"initializer_range", c.initializer_range},
            {"torch_dtype", "float32"}};
  j["bos_token_id"] = c.bos_token_id ? json(*c.bos_token_id) : json(nullptr);
  j["eos_token_id"] = c.eos_token_id ? json(*c.eos_token_id) : json(nullptr);
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  return j.dump(2) + "\n";
}

}  // namespace hd::vilahd
