// `hdtrain ps3 eval` (dispatched by launcher/ps3_cmd.cpp): a PS3 checkpoint on held-out images.
#pragma once

#include <string>
#include <vector>

namespace hd::launcher {

// args: everything after `ps3 eval`. Returns the exit code (0, or 2 for a bad configuration).
int ps3_eval(const std::vector<std::string>& args);

}  // namespace hd::launcher
