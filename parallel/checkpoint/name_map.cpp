// Parsing and applying the import name-mapping table (see name_map.h).
#include "parallel/checkpoint/name_map.h"

#include <fstream>
#include <map>
#include <sstream>

#include "autograd/error.h"

namespace hd::parallel::ckpt {
namespace fs = std::filesystem;

namespace {

bool is_prefix_pattern(const std::string& s) {
  return !s.empty() && s.back() == '*';
}

}  // namespace

NameMap NameMap::parse(const std::string& text, const std::string& origin) {
  NameMap map;
  std::istringstream in(text);
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.empty()) continue;
    const std::string where = origin + ":" + std::to_string(lineno);
    HD_CHECK(f.size() == 2, where, ": expected 'SOURCE TARGET' (or 'SOURCE -' to drop), found ",
             f.size(), " field(s)");
    Rule r;
    r.where = where;
    r.prefix = is_prefix_pattern(f[0]);
    r.drop = f[1] == "-";
    r.source = r.prefix ? f[0].substr(0, f[0].size() - 1) : f[0];
    HD_CHECK(r.source.find('*') == std::string::npos, where,
             ": '*' is only allowed at the end of the source (a prefix rule), in '", f[0], "'");
    if (!r.drop) {
      HD_CHECK(is_prefix_pattern(f[1]) == r.prefix, where,
               ": a prefix rule maps 'A*' to 'B*' and an exact rule 'A' to 'B'; got '", f[0],
               "' -> '", f[1], "'");
      r.target = r.prefix ? f[1].substr(0, f[1].size() - 1) : f[1];
      HD_CHECK(r.target.find('*') == std::string::npos, where,
               ": '*' is only allowed at the end of the target, in '", f[1], "'");
      HD_CHECK(r.prefix || !r.target.empty(), where, ": empty target name");
    }
    map.rules_.push_back(std::move(r));
  }
  return map;
}

NameMap NameMap::load(const fs::path& file) {
  std::ifstream in(file);
  HD_CHECK(in.good(), "name map ", file.string(), ": cannot open the file");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), file.string());
}

std::optional<std::string> NameMap::apply(const std::string& name, int* rule_used) const {
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    const bool match = r.prefix ? name.rfind(r.source, 0) == 0 : name == r.source;
    if (!match) continue;
    if (rule_used) *rule_used = int(i);
    if (r.drop) return std::nullopt;
    return r.prefix ? r.target + name.substr(r.source.size()) : r.target;
  }
  if (rule_used) *rule_used = -1;
  return name;
}

std::vector<std::optional<std::string>> NameMap::apply_all(const std::vector<std::string>& names,
                                                           std::vector<Rule>* unused) const {
  std::vector<std::optional<std::string>> out;
  std::vector<bool> used(rules_.size(), false);
  std::map<std::string, std::string> source_of;  // new name -> the name it came from
  for (const std::string& name : names) {
    int rule = -1;
    out.push_back(apply(name, &rule));
    if (rule >= 0) used[size_t(rule)] = true;
    if (!out.back()) continue;
    const auto [it, inserted] = source_of.emplace(*out.back(), name);
    HD_CHECK(inserted, "name map: '", it->second, "' and '", name, "' both map to '", *out.back(),
             "'", rule >= 0 ? " (rule at " + rules_[size_t(rule)].where + ")" : "");
  }
  if (unused)
    for (size_t i = 0; i < rules_.size(); ++i)
      if (!used[i]) unused->push_back(rules_[i]);
  return out;
}

}  // namespace hd::parallel::ckpt
