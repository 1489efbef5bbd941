// hdtrain ckpt inspect | export | import: checkpoint tools (parallel/checkpoint/convert.h does
// the work; this file parses arguments). DIR may be a step folder or a run folder, in which case
// the newest complete checkpoint in it is used.
#include <cstdio>
#include <filesystem>

#include "autograd/error.h"
#include "launcher/command.h"
#include "parallel/checkpoint/convert.h"

namespace hd::launcher {
namespace {
namespace fs = std::filesystem;
namespace ckpt = hd::parallel::ckpt;

constexpr const char* kUsage =
    "usage:\n"
    "  hdtrain ckpt inspect DIR [--verify]\n"
    "      step, world size, trainer state and every tensor (dtype, shape, chunks, bytes);\n"
    "      --verify reads every chunk and checks its CRC32C checksums\n"
    "  hdtrain ckpt export DIR --out FILE.safetensors [--format hdf5|safetensors] [--prefix P]\n"
    "                      [--include-optimizer]\n"
    "      full f32 tensors of the model (and AdamW moments with --include-optimizer) in one\n"
    "      file, names prefixed with P; the format follows --format, else the extension\n"
    "      (.h5/.hdf5: HDF5 with a group per module path, anything else: safetensors)\n"
    "  hdtrain ckpt import FILE.safetensors --out DIR [--map TABLE] [--strip-prefix P]\n"
    "                      [--add-prefix Q]\n"
    "      a safetensors file (F32/BF16/F16/F64 -> f32) as DIR/step_00000000, loadable on any\n"
    "      world size as initialisation; names are renamed or dropped by TABLE (lines\n"
    "      'SOURCE TARGET', 'PREFIX* NEWPREFIX*', 'SOURCE -' to drop; first match wins), then\n"
    "      lose P and gain Q\n"
    "DIR is a step_NNNNNNNN folder, or a run folder (its newest complete checkpoint).\n";

// The first argument is the positional DIR/FILE; the rest are options (command.h's Args).
std::pair<std::string, std::vector<std::string>> split(const std::vector<std::string>& argv,
                                                       const char* what) {
  HD_CHECK(!argv.empty() && argv[0].rfind("--", 0) != 0, "ckpt: missing ", what,
           " (see hdtrain ckpt --help)");
  return {argv[0], {argv.begin() + 1, argv.end()}};
}

fs::path resolve_step(const fs::path& dir) {
  if (fs::exists(dir / ckpt::kManifestName) || dir.filename().string().rfind("step_", 0) == 0)
    return dir;
  // A run folder (the trainer writes RUN/checkpoints/step_*) or a checkpoints folder.
  auto latest = ckpt::latest_complete(dir);
  if (!latest && fs::is_directory(dir / "checkpoints"))
    latest = ckpt::latest_complete(dir / "checkpoints");
  HD_CHECK(latest.has_value(), "ckpt: no complete checkpoint in ", dir.string(), " or ",
           (dir / "checkpoints").string());
  return *latest;
}

int inspect(const std::vector<std::string>& argv) {
  auto [dir, rest] = split(argv, "DIR");
  Args a(rest, {}, {"verify"});
  const fs::path step = resolve_step(dir);
  std::fputs(ckpt::describe_checkpoint(step).c_str(), stdout);
  if (a.flag("verify")) {
    const int64_t bytes = ckpt::verify_checkpoint(step);
    std::printf("  verified: every checksum matches (%lld bytes read)\n",
                static_cast<long long>(bytes));
  }
  return 0;
}

int export_cmd(const std::vector<std::string>& argv) {
  auto [dir, rest] = split(argv, "DIR");
  Args a(rest, {"out", "prefix", "format"}, {"include-optimizer"});
  const fs::path out = a.require("out");
  const std::string ext = out.extension().string();
  const std::string format =
      a.get("format", ext == ".h5" || ext == ".hdf5" ? "hdf5" : "safetensors");
  HD_CHECK(format == "safetensors" || format == "hdf5", "ckpt export: --format '", format,
           "' is not supported (hdf5 or safetensors)");
  ckpt::ExportOptions o;
  o.prefix = a.get("prefix", "");
  o.include_optimizer = a.flag("include-optimizer");
  const fs::path step = resolve_step(dir);
  const int64_t n =
      format == "hdf5" ? ckpt::export_hdf5(step, out, o) : ckpt::export_safetensors(step, out, o);
  std::printf("hdtrain ckpt export: %lld tensors of %s -> %s (%s)\n", static_cast<long long>(n),
              step.string().c_str(), out.string().c_str(), format.c_str());
  return 0;
}

int import_cmd(const std::vector<std::string>& argv) {
  auto [file, rest] = split(argv, "FILE");
  Args a(rest, {"out", "strip-prefix", "add-prefix", "map"}, {});
  ckpt::ImportOptions o;
  if (!a.get("map", "").empty()) o.name_map = ckpt::NameMap::load(a.get("map", ""));
  o.strip_prefix = a.get("strip-prefix", "");
  o.add_prefix = a.get("add-prefix", "");
  auto pg = parallel::make_mpi_group();  // a world of one: save_checkpoint is collective
  const fs::path out = ckpt::import_safetensors(file, a.require("out"), *pg, o);
  std::printf("hdtrain ckpt import: %s -> %s\n", file.c_str(), out.string().c_str());
  return 0;
}

int run(const std::vector<std::string>& args) {
  // --help or -h anywhere (e.g. `ckpt export DIR --help`): the usage, nothing else.
  bool help = args.empty();
  for (const auto& a : args) help = help || a == "--help" || a == "-h";
  if (help) {
    std::fputs(kUsage, stdout);
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "inspect") return inspect(rest);
  if (args[0] == "export") return export_cmd(rest);
  if (args[0] == "import") return import_cmd(rest);
  std::fprintf(stderr, "hdtrain ckpt: unknown subcommand '%s'\n%s", args[0].c_str(), kUsage);
  return 2;
}

}  // namespace

HD_REGISTER_COMMAND(ckpt,
                    "checkpoints: inspect (--verify), export to HDF5/safetensors, import from "
                    "safetensors",
                    run);

}  // namespace hd::launcher
