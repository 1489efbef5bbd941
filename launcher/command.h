// The `hdtrain` subcommand registry. A subcommand is one file, launcher/<name>_cmd.cpp, that
// defines a static HD_REGISTER_COMMAND: CMake globs *_cmd.cpp, so adding one (ckpt, ps3, train)
// touches no other file.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace hd::launcher {

// args: everything after the subcommand name. Returns the process exit code.
using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string summary;
  CommandFn run;
};

std::map<std::string, Command>& commands();

struct Registrar {
  Registrar(const std::string& name, const std::string& summary, CommandFn fn) {
    commands()[name] = {summary, std::move(fn)};
  }
};

// --key value / --flag parsing shared by subcommands. Unknown options are errors, so a typo
// never silently falls back to a default.
class Args {
 public:
  Args(const std::vector<std::string>& args, const std::vector<std::string>& known_options,
       const std::vector<std::string>& known_flags);
  std::string get(const std::string& key, const std::string& fallback) const;
  std::string require(const std::string& key) const;
  long long get_int(const std::string& key, long long fallback) const;
  double get_double(const std::string& key, double fallback) const;
  bool flag(const std::string& key) const;

 private:
  std::map<std::string, std::string> values_;
};

// The --config FILE and repeated --set FIELD=VALUE of a config-driven tool, split from the tool's
// own options (`rest`, for Args). `help`: --help or -h was given (the tool prints its usage).
struct ConfigArgs {
  std::string config_path;
  std::vector<std::string> overrides, rest;
  bool help = false;
};
ConfigArgs split_config_args(const std::vector<std::string>& args);

}  // namespace hd::launcher

#define HD_REGISTER_COMMAND(name, summary, fn) \
  static ::hd::launcher::Registrar hd_command_registrar_##name(#name, summary, fn)
