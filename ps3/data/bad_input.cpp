#include "ps3/data/bad_input.h"

#include <cstdio>

#include "autograd/error.h"

namespace hd::data {

void BadInputLog::report(const std::string& where, const std::string& reason) {
  if (strict_) throw Error(where + ": " + reason);
  count_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mu_);
  // Once per file: a corrupt shard would otherwise flood the log every epoch.
  if (logged_.insert(where).second && !quiet_)
    std::fprintf(stderr, "hdtrain data: skipping %s: %s\n", where.c_str(), reason.c_str());
}

}  // namespace hd::data
