// `hdtrain vilahd train` and `hdtrain vilahd eval` (dispatched from vilahd_cmd.cpp).
#pragma once

#include <string>
#include <vector>

namespace hd::launcher {

int vilahd_train(const std::vector<std::string>& args);
int vilahd_eval(const std::vector<std::string>& args);

}  // namespace hd::launcher
