// Errors are exceptions with context: the op, the shapes, the file or the rank at fault.
// Libraries never exit() or abort(); the launcher turns an hd::Error into an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace hd {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class T>
void append(std::ostringstream& s, const T& v) {
  s << v;
}
template <class T>
void append(std::ostringstream& s, const std::vector<T>& v) {
  s << '[';
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << ']';
}
template <class... A>
std::string concat(const A&... a) {
  std::ostringstream s;
  (append(s, a), ...);
  return s.str();
}
}  // namespace detail

}  // namespace hd

// HD_CHECK(cond, parts...): throws hd::Error built from the parts (vectors print as [a, b]).
#define HD_CHECK(cond, ...)                                             \
  do {                                                                  \
    if (!(cond)) throw ::hd::Error(::hd::detail::concat(__VA_ARGS__)); \
  } while (0)
