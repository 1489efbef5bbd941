#include "ps3/data/records.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/error.h"
#include "ps3/data/image.h"
#include "ps3/data/tar.h"

namespace hd::data {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A box is 4 finite numbers; empty (zero area) and inverted boxes are rejected here because no
// transform can repair them. Clipping against the image happens at load time (size known then).
std::optional<Box> parse_box(const json& j, const std::string& where, BadInputLog& log) {
  if (!j.is_array() || j.size() != 4 || !std::all_of(j.begin(), j.end(), [](const json& v) {
        return v.is_number() && std::isfinite(v.get<double>());
      })) {
    log.report(where, "box must be 4 finite numbers [x1, y1, x2, y2], got " + j.dump());
    return std::nullopt;
  }
  Box b{j[0].get<float>(), j[1].get<float>(), j[2].get<float>(), j[3].get<float>()};
  if (b.x2 <= b.x1 || b.y2 <= b.y1) {
    log.report(where,
               std::string(b.x2 < b.x1 || b.y2 < b.y1 ? "inverted" : "empty") + " box " + j.dump());
    return std::nullopt;
  }
  return b;
}

json box_json(const Box& b) {
  return json::array({b.x1, b.y1, b.x2, b.y2});
}

bool is_image_ext(std::string ext) {
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// "malformed JSON at line L, column C: <the parser's reason>" for text that does not parse
// (without "line L" when `with_line` is false: a JSON-lines record, whose line is in `where`).
std::string json_syntax_error(const std::string& text, bool with_line = true) {
  try {
    (void)json::parse(text);
    return "malformed JSON";
  } catch (const json::parse_error& e) {
    // e.byte: 1-based offset of the character the parser stopped at.
    const size_t at = std::min(text.size(), e.byte > 0 ? size_t(e.byte - 1) : size_t(0));
    int64_t line = 1, column = 1;
    for (size_t i = 0; i < at; ++i) {
      if (text[i] == '\n')
        ++line, column = 1;
      else
        ++column;
    }
    std::string why = e.what();
    // nlohmann's text: "[json.exception.parse_error.101] parse error at line 1, column 5: why".
    if (size_t colon = why.find(": "); colon != std::string::npos) why = why.substr(colon + 2);
    return "malformed JSON at " + (with_line ? "line " + std::to_string(line) + ", " : "") +
           "column " + std::to_string(column) + ": " + why;
  } catch (const std::exception& e) {
    return std::string("malformed JSON: ") + e.what();
  }
}

// Both JSON (one array) and JSON lines; each element goes to fn with its index for messages.
void for_each_json_record(const std::string& path, BadInputLog& log,
                          const std::function<void(const json&, const std::string&)>& fn) {
  std::ifstream f(path);
  if (!f) {
    log.report(path, "cannot open");
    return;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    json all = json::parse(text, nullptr, false);
    if (all.is_discarded()) {
      log.report(path, json_syntax_error(text));
      return;
    }
    for (size_t i = 0; i < all.size(); ++i) fn(all[i], path + " record " + std::to_string(i));
    return;
  }
  std::istringstream lines(text);
  std::string line;
  for (int64_t n = 1; std::getline(lines, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = path + " line " + std::to_string(n);
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      log.report(where, json_syntax_error(line, false));
      continue;
    }
    fn(j, where);
  }
}

}  // namespace

std::optional<ImageRecord> parse_ps3_json(const std::string& text, const std::string& where,
                                          BadInputLog& log) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    log.report(where, json_syntax_error(text));
    return std::nullopt;
  }
  if (!j.is_object()) {
    log.report(where, "malformed JSON: expected an object, got " + std::string(j.type_name()));
    return std::nullopt;
  }
  ImageRecord r;
  r.json_where = where;
  bool has_text = j.contains("text"), has_box = j.contains("box");
  if (has_text != has_box || (!has_text && !j.contains("global_text"))) {
    log.report(where, std::string("missing key \"") +
                          (has_text  ? "box"
                           : has_box ? "text"
                                     : "text") +
                          "\" (need text+box and/or global_text)");
    return std::nullopt;
  }
  if (j.contains("global_text")) {
    if (!j["global_text"].is_string()) {
      log.report(where, "\"global_text\" must be a string");
      return std::nullopt;
    }
    r.global_text = j["global_text"].get<std::string>();
  }
  if (has_text) {
    const json &t = j["text"], &b = j["box"];
    if (!t.is_array() || !b.is_array() || t.size() != b.size()) {
      log.report(where, "\"text\" and \"box\" must be lists of the same length");
      return std::nullopt;
    }
    for (size_t i = 0; i < t.size(); ++i) {
      std::string bw = where + " box " + std::to_string(i);
      if (!t[i].is_string()) {
        log.report(bw, "caption is not a string");
        continue;
      }
      if (auto box = parse_box(b[i], bw, log)) {
        r.texts.push_back(t[i].get<std::string>());
        r.boxes.push_back(*box);
      }
    }
  }
  if (r.texts.empty() && r.global_text.empty()) {
    log.report(where, "no usable caption");
    return std::nullopt;
  }
  return r;
}

Dataset read_folder(const std::string& dir, BadInputLog& log) {
  HD_CHECK(fs::is_directory(dir), "read_folder: ", dir, " is not a directory");
  std::map<std::string, std::string> images, jsons;  // key -> path
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    fs::path p = e.path();
    std::string key = fs::relative(p, dir).replace_extension().string();
    if (p.extension() == ".json")
      jsons[key] = p.string();
    else if (is_image_ext(p.extension().string()))
      images[key] = p.string();
  }
  Dataset ds;
  for (const auto& [key, path] : jsons) {
    auto img = images.find(key);
    if (img == images.end()) {
      log.report(path, "missing pair: no image with key " + key);
      continue;
    }
    std::string text;
    try {
      auto bytes = read_file(path);
      text.assign(bytes.begin(), bytes.end());
    } catch (const Error& e) {
      log.report(path, e.what());
      continue;
    }
    if (auto r = parse_ps3_json(text, path, log)) {
      r->key = key;
      r->source.path = img->second;
      ds.records.push_back(std::move(*r));
    }
  }
  for (const auto& [key, path] : images)
    if (!jsons.count(key)) log.report(path, "missing pair: no JSON with key " + key);
  return ds;
}

Dataset read_shards(const std::string& dir, BadInputLog& log) {
  Dataset ds;
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    // images_00000.tar (this repo) or image_00000.tar (the PS3 README's spelling).
    if (e.path().extension() == ".tar" && name.rfind("image", 0) == 0) shards.push_back(name);
  }
  std::sort(shards.begin(), shards.end());
  for (const std::string& name : shards) {
    std::string suffix = name.substr(name.find('_'));
    std::string img_path = (fs::path(dir) / name).string();
    std::string txt_path = (fs::path(dir) / ("text_box" + suffix)).string();
    if (!fs::exists(txt_path)) {
      log.report(img_path, "missing pair: no " + txt_path);
      continue;
    }
    std::string err;
    std::map<std::string, TarMember> members;
    for (auto& m : list_tar(img_path, err)) {
      fs::path p(m.name);
      if (is_image_ext(p.extension().string()))
        members[fs::path(m.name).replace_extension().string()] = m;
    }
    if (!err.empty()) log.report(img_path, "damaged shard (later members lost): " + err);
    std::map<std::string, bool> seen;
    for_each_tar_member(
        txt_path,
        [&](const std::string& member, std::vector<uint8_t> bytes) {
          std::string where = txt_path + ":" + member;
          if (fs::path(member).extension() != ".json") return;
          std::string key = fs::path(member).replace_extension().string();
          seen[key] = true;
          auto img = members.find(key);
          if (img == members.end()) {
            log.report(where, "missing pair: no image member with key " + key);
            return;
          }
          if (auto r = parse_ps3_json(std::string(bytes.begin(), bytes.end()), where, log)) {
            r->key = name.substr(0, name.size() - 4) + "/" + key;
            r->source = {img_path, img->second.name, img->second.offset, img->second.size};
            ds.records.push_back(std::move(*r));
          }
        },
        [&](const std::string& member, const std::string& why) {
          log.report(txt_path + ":" + member, why);
        },
        err);
    if (!err.empty()) log.report(txt_path, "damaged shard: " + err);
    for (const auto& [key, m] : members)
      if (!seen.count(key)) log.report(img_path + ":" + m.name, "missing pair: no JSON member");
  }
  std::sort(ds.records.begin(), ds.records.end(),
            [](const ImageRecord& a, const ImageRecord& b) { return a.key < b.key; });
  return ds;
}

Dataset open_dataset(const std::string& dir, BadInputLog& log) {
  HD_CHECK(fs::is_directory(dir), "open_dataset: ", dir, " is not a directory");
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tar") return read_shards(dir, log);
  return read_folder(dir, log);
}

std::vector<uint8_t> read_image_bytes(const ImageSource& src) {
  if (src.member.empty()) return read_file(src.path);
  return read_tar_member(src.path, {src.member, src.offset, src.size});
}

std::vector<SftRecord> read_sft(const std::string& path, BadInputLog& log) {
  std::vector<SftRecord> out;
  for_each_json_record(path, log, [&](const json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("image") || !j["image"].is_string() ||
        !j.contains("conversations") || !j["conversations"].is_array()) {
      log.report(where, "missing key \"image\" or \"conversations\"");
      return;
    }
    SftRecord r;
    r.image = j["image"].get<std::string>();
    if (j.contains("box")) {
      r.box = parse_box(j["box"], where + " box", log);
      if (!r.box) return;
    }
    for (const json& c : j["conversations"]) {
      if (!c.is_object() || !c.contains("from") || !c.contains("value") || !c["from"].is_string() ||
          !c["value"].is_string()) {
        log.report(where, "conversation turn needs string \"from\" and \"value\"");
        return;
      }
      r.conversations.emplace_back(c["from"].get<std::string>(), c["value"].get<std::string>());
    }
    out.push_back(std::move(r));
  });
  return out;
}

std::string sft_to_json(const SftRecord& r) {
  json j = {{"image", r.image}, {"conversations", json::array()}};
  if (r.box) j["box"] = box_json(*r.box);
  for (const auto& [from, value] : r.conversations)
    j["conversations"].push_back({{"from", from}, {"value", value}});
  return j.dump();
}

std::vector<McRecord> read_mc(const std::string& path, BadInputLog& log) {
  std::vector<McRecord> out;
  for_each_json_record(path, log, [&](const json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("image") || !j.contains("question") ||
        !j.contains("options") || !j.contains("answer")) {
      log.report(where, "missing key (need image, question, options, answer)");
      return;
    }
    McRecord r;
    const json& o = j["options"];
    std::string a = j["answer"].is_string() ? j["answer"].get<std::string>() : "";
    if (!j["image"].is_string() || !j["question"].is_string() || !o.is_array() || o.size() != 4 ||
        a.size() != 1 || a[0] < 'A' || a[0] > 'D') {
      log.report(where, "need string image/question, 4 options and answer A-D");
      return;
    }
    r.image = j["image"].get<std::string>();
    r.question = j["question"].get<std::string>();
    for (size_t i = 0; i < 4; ++i) {
      if (!o[i].is_string()) {
        log.report(where, "option " + std::to_string(i) + " is not a string");
        return;
      }
      r.options[i] = o[i].get<std::string>();
    }
    r.answer = a[0] - 'A';
    if (j.contains("box")) {
      r.box = parse_box(j["box"], where + " box", log);
      if (!r.box) return;
    }
    out.push_back(std::move(r));
  });
  return out;
}

std::string mc_to_json(const McRecord& r) {
  json j = {{"image", r.image},
            {"question", r.question},
            {"options", r.options},
            {"answer", std::string(1, char('A' + r.answer))}};
  if (r.box) j["box"] = box_json(*r.box);
  return j.dump();
}

std::string ps3_to_json(const ImageRecord& r) {
  json j = {{"text", r.texts}, {"box", json::array()}, {"global_text", r.global_text}};
  for (const Box& b : r.boxes) j["box"].push_back(box_json(b));
  return j.dump();
}

}  // namespace hd::data
