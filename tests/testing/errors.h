// expect_error(f, needle): f must throw hd::Error whose message contains `needle` (errors name
// the op and the shapes at fault; tests check that they do).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "autograd/error.h"

namespace hd::testing {

inline void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace hd::testing
