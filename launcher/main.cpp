// hdtrain: dispatches `hdtrain <command> ...` to the registered subcommand, and turns an
// hd::Error into a message and exit code 1 (libraries never exit).
#include <cstdio>
#include <exception>

#include "autograd/error.h"
#include "launcher/command.h"

namespace hd::launcher {

std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> registry;  // function-local: safe static-init order
  return registry;
}

Args::Args(const std::vector<std::string>& args, const std::vector<std::string>& known_options,
           const std::vector<std::string>& known_flags) {
  auto has = [](const std::vector<std::string>& v, const std::string& k) {
    for (const auto& x : v)
      if (x == k) return true;
    return false;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    HD_CHECK(a.rfind("--", 0) == 0, "unexpected argument '", a, "'");
    std::string key(a.begin() + 2, a.end());
    if (has(known_flags, key)) {
      values_[key] = std::string(1, '1');  // not = "1": GCC 12 -O3 false -Wrestrict
    } else {
      HD_CHECK(has(known_options, key), "unknown option --", key);
      HD_CHECK(i + 1 < args.size(), "option --", key, " needs a value");
      values_[key] = args[++i];
    }
  }
}

ConfigArgs split_config_args(const std::vector<std::string>& args) {
  ConfigArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      out.help = true;
    } else if ((args[i] == "--set" || args[i] == "--config") && i + 1 < args.size()) {
      (args[i] == "--config" ? out.config_path : out.overrides.emplace_back()) = args[i + 1];
      ++i;
    } else {
      out.rest.push_back(args[i]);
    }
  }
  return out;
}

std::string Args::get(const std::string& key, const std::string& fallback) const {
  auto it = values_.find(key);
  return it == values_.end() ? fallback : it->second;
}
std::string Args::require(const std::string& key) const {
  auto it = values_.find(key);
  HD_CHECK(it != values_.end(), "missing required option --", key);
  return it->second;
}
long long Args::get_int(const std::string& key, long long fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  try {
    size_t used = 0;
    long long v = std::stoll(it->second, &used);
    if (used == it->second.size()) return v;
  } catch (const std::exception&) {
  }
  throw Error("option --" + key + " needs an integer, got '" + it->second + "'");
}
double Args::get_double(const std::string& key, double fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  try {
    size_t used = 0;
    double v = std::stod(it->second, &used);
    if (used == it->second.size()) return v;
  } catch (const std::exception&) {
  }
  throw Error("option --" + key + " needs a number, got '" + it->second + "'");
}
bool Args::flag(const std::string& key) const {
  return values_.count(key) > 0;
}

}  // namespace hd::launcher

int main(int argc, char** argv) {
  using namespace hd::launcher;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || !commands().count(args[0])) {
    // Asked for (or no arguments): the usage on stdout, exit 0. An unknown command: stderr, 2.
    const bool asked = args.empty() || args[0] == "--help" || args[0] == "-h";
    FILE* out = asked ? stdout : stderr;
    if (!asked) std::fprintf(out, "hdtrain: unknown command '%s'\n", args[0].c_str());
    std::fprintf(out,
                 "usage: hdtrain <command> [options]   (hdtrain <command> --help: its options)\n"
                 "commands:\n");
    for (const auto& [name, cmd] : commands())
      std::fprintf(out, "  %-10s %s\n", name.c_str(), cmd.summary.c_str());
    return asked ? 0 : 2;
  }
  try {
    return commands()[args[0]].run({args.begin() + 1, args.end()});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hdtrain %s: error: %s\n", args[0].c_str(), e.what());
    return 1;
  }
}
