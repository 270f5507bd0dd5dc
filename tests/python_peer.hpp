// Running the Python peers of the interoperability tests (django_peer.py,
// once_peer.py) under the Python that has Django, pymemcache and pylibmc:
// Debian's /usr/bin/python3, which meson passes as $CACHELOCK_PYTHON (and
// django_peer.py's path as $CACHELOCK_DJANGO_PEER; the other peers sit beside it).
#pragma once

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "process.hpp"

namespace test {

struct PeerOutput {
  int status = -1;
  std::string out, err;
};

/// Runs `argv` with the environment minus Python path overrides, and
/// collects its output (without the newlines that end it).
inline PeerOutput run_peer(const std::vector<std::string>& argv) {
  Process process{argv, {{"PYTHONPATH", nullptr}, {"PYTHONHOME", nullptr}}};
  PeerOutput result{process.wait(), process.out(), process.err()};
  if (result.status < 0) result.err = "cannot run " + process.start_error();
  while (!result.out.empty() && result.out.back() == '\n') result.out.pop_back();
  return result;
}

/// The environment variable `name`; fails the test, saying what to install, if unset.
inline std::string env_or_fail(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) {
    FAIL(std::string{name} << " is not set: run the tests through meson, with Django, pymemcache and pylibmc "
                 "installed (apt-get install python3-django python3-pymemcache python3-pylibmc; "
                 "scripts/setup test does)");
  }
  return value;
}

}  // namespace test
