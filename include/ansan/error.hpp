// ansan/error.hpp - how ansan reports bad input and failed CUDA calls.
//
// Host entry points validate their arguments before touching any output and throw
// std::invalid_argument with a message of the form
//     ansan::<function>: <argument> is <seen>, expected <expected>
// so a caller can tell which argument was wrong without reading our source.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ansan {

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

// Throws std::invalid_argument naming the function, the argument, the value seen and the
// value expected.
template <class Argument, class Seen, class Expected>
[[noreturn]] void fail(const char* function, const Argument& argument, const Seen& seen,
                       const Expected& expected) {
  throw std::invalid_argument(detail::concat("ansan::", function, ": ", argument, " is ", seen,
                                             ", expected ", expected));
}

// fail(...) unless `ok` holds. Its arguments are evaluated either way: per-element checks in
// loops write `if (!ok) fail(...)` so that the message is only built for bad input.
template <class Seen, class Expected>
void require(bool ok, const char* function, const char* argument, const Seen& seen,
             const Expected& expected) {
  if (!ok) fail(function, argument, seen, expected);
}

}  // namespace ansan
