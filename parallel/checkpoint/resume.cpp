// Invalid folders moved aside, and the collective resume with fallback (see resume.h for why).
#include "parallel/checkpoint/resume.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <regex>
#include <tuple>

#include "autograd/error.h"
#include "parallel/checkpoint/layout.h"
#include "proto/checkpoint.pb.h"

namespace hd::parallel::ckpt {
namespace fs = std::filesystem;
using ::hd::detail::concat;

namespace {

// "20240601T120000Z": UTC, sortable, and free of characters that need quoting in a shell.
std::string utc_stamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

enum Status : int64_t { kLoaded = 0, kCorrupt = 1, kIncompatible = 2 };

// The first rank whose outcome is `status`, as "rank R: message".
std::string first_with(const std::vector<internal::RankOutcome>& all, int64_t status) {
  for (size_t r = 0; r < all.size(); ++r)
    if (all[r].status == status) return concat("rank ", r, ": ", all[r].message);
  return "";
}

}  // namespace

fs::path move_aside(const fs::path& step_path, const std::string& why) {
  const std::string base = step_path.string() + ".invalid-" + utc_stamp();
  fs::path target = base;
  for (int n = 2; fs::exists(target); ++n) target = base + "-" + std::to_string(n);
  std::error_code ec;
  fs::rename(step_path, target, ec);
  HD_CHECK(!ec, "checkpoint: cannot move ", step_path.string(), " aside to ", target.string(), ": ",
           ec.message());
  std::fprintf(stderr,
               "hdtrain: warning: checkpoint: moved %s aside to %s (%s); it is no longer used "
               "for resume, saves or retention, and can be deleted once looked at\n",
               step_path.string().c_str(), target.string().c_str(), why.c_str());
  std::fflush(stderr);
  return target;
}

std::vector<fs::path> move_aside_invalid(const fs::path& dir) {
  const std::regex pattern(R"(step_(\d{8}))");
  std::vector<std::tuple<int64_t, fs::path, std::string>> invalid;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || !std::regex_match(name, m, pattern)) continue;
    proto::Manifest man;
    std::string why;
    const auto state = internal::check_manifest(e.path(), man, why);
    if (state == internal::ManifestState::missing || state == internal::ManifestState::corrupt)
      invalid.emplace_back(std::stoll(m[1].str()), e.path(), concat(e.path().string(), ": ", why));
    else if (state == internal::ManifestState::other_format)
      std::fprintf(stderr, "hdtrain: warning: checkpoint: leaving %s alone: %s\n",
                   e.path().string().c_str(), why.c_str());
  }
  HD_CHECK(!ec, "checkpoint: cannot list ", dir.string(), ": ", ec.message());
  std::sort(invalid.begin(), invalid.end());
  std::vector<fs::path> moved;
  for (const auto& [step, path, why] : invalid) moved.push_back(move_aside(path, why));
  return moved;
}

namespace {

// Rank 0, after move_aside_invalid: step folders newer than `step` that latest_complete passed
// over can only hold a manifest of another format version (written by another hdtrain). Resuming
// from an older step would silently drop their training, so that is an error naming them.
std::string newer_of_other_format(const fs::path& dir, int64_t step) {
  const std::regex pattern(R"(step_(\d{8}))");
  std::string found;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || !std::regex_match(name, m, pattern) || std::stoll(m[1].str()) <= step)
      continue;
    proto::Manifest man;
    std::string why;
    if (internal::check_manifest(e.path(), man, why) == internal::ManifestState::other_format)
      found += concat(found.empty() ? "" : "; ", e.path().string(), ": ", why);
  }
  return found.empty() ? ""
                       : concat("newer checkpoints of another format: ", found,
                                " (resume with the hdtrain that wrote them, or move them away)");
}

}  // namespace

ResumeResult resume_training(const fs::path& dir, const std::vector<ShardRef>& shards,
                             ProcessGroup& pg, const ResumeOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  ResumeResult result;
  // Rank 0 alone touches the folder; an error here (e.g. the folder cannot be listed) must reach
  // every rank as an agreed ResumeError rather than leave the others in the broadcast.
  std::string setup_error;
  if (pg.rank() == 0) {
    try {
      if (fs::exists(dir)) move_aside_invalid(dir);
    } catch (const std::exception& e) {
      setup_error = e.what();
    }
  }
  Tensor step_t = Tensor::empty({1}, DType::i64);
  for (;;) {
    // Rank 0 picks the candidate: the newest folder with a valid manifest, or -1 (none), or -2.
    int64_t step = -1;
    if (pg.rank() == 0 && !setup_error.empty()) {
      step = -2;
    } else if (pg.rank() == 0 && fs::exists(dir)) {
      try {
        // The folder's own number: step_dir(dir, step) must name this very folder.
        if (auto latest = latest_complete(dir))
          step = std::stoll(latest->filename().string().substr(5));
        setup_error = newer_of_other_format(dir, step);
        if (!setup_error.empty()) step = -2;
      } catch (const std::exception& e) {
        setup_error = e.what(), step = -2;
      }
    }
    step_t.data<int64_t>()[0] = step;
    pg.broadcast(step_t, 0).wait();
    step = step_t.data<int64_t>()[0];
    if (step == -2)
      throw ResumeError(concat("resume from ", dir.string(), ": ",
                               pg.rank() == 0 ? setup_error : "rank 0 could not prepare it"));
    if (step < 0) break;

    const fs::path path = step_dir(dir, step);
    int64_t status = kLoaded;
    std::string message;
    try {
      result.loaded = load_training_checkpoint(path, shards);
    } catch (const CorruptCheckpoint& e) {
      status = kCorrupt, message = e.what();
    } catch (const std::exception& e) {
      status = kIncompatible, message = e.what();
    }
    const std::vector<internal::RankOutcome> all = internal::exchange_outcomes(pg, status, message);
    const bool corrupt = std::any_of(all.begin(), all.end(), [](const internal::RankOutcome& o) {
      return o.status == kCorrupt;
    });
    const std::string incompatible = first_with(all, kIncompatible);
    if (!incompatible.empty())
      throw ResumeError(concat("cannot resume from ", path.string(), ": ", incompatible));
    if (!corrupt) {
      result.path = path;
      result.shards_dirty = false;  // every entry was overwritten by this load
      break;
    }
    // Damaged data: any rank may have written part of it into its shards.
    result.shards_dirty = true;
    const std::string why = first_with(all, kCorrupt);
    if (options.on_corrupt == OnCorrupt::error)
      throw ResumeError(concat(
          "checkpoint ", path.string(), " is damaged (", why,
          "); checkpoint.on_corrupt = error: stopping (fallback would move it aside and resume "
          "from the previous checkpoint)"));
    if (pg.rank() == 0) {
      std::fprintf(stderr,
                   "\nhdtrain: WARNING: ================================================\n"
                   "hdtrain: WARNING: checkpoint %s is damaged and cannot be resumed from:\n"
                   "hdtrain: WARNING:   %s\n"
                   "hdtrain: WARNING: falling back to the previous checkpoint "
                   "(checkpoint.on_corrupt = fallback)\n"
                   "hdtrain: WARNING: ================================================\n",
                   path.string().c_str(), why.c_str());
      try {
        move_aside(path, "damaged: " + why);
      } catch (const std::exception& e) {
        setup_error = e.what();  // reported on every rank by the next broadcast
      }
    }
    result.corrupt.push_back(path);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace hd::parallel::ckpt
