// A Django process for the interoperability tests: tests/django_peer.py run
// under the Python that has Django, pymemcache and pylibmc (Debian's
// /usr/bin/python3; meson passes it as $CACHELOCK_PYTHON and the script as
// $CACHELOCK_DJANGO_PEER).
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

// Runs `argv` with the environment minus Python path overrides, and
// collects its output.
inline PeerOutput run_peer(const std::vector<std::string>& argv) {
  Process process{argv, {{"PYTHONPATH", nullptr}, {"PYTHONHOME", nullptr}}};
  PeerOutput result{process.wait(), process.out(), process.err()};
  if (result.status < 0) result.err = "cannot run " + process.start_error();
  while (!result.out.empty() && result.out.back() == '\n') result.out.pop_back();
  return result;
}

inline std::string env_or_fail(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) {
    FAIL(std::string{name} << " is not set: run the tests through meson, with Django, pymemcache and pylibmc "
                 "installed (apt-get install python3-django python3-pymemcache python3-pylibmc; "
                 "scripts/setup test does)");
  }
  return value;
}

// One Django process using the alias {BACKEND, LOCATION, KEY_PREFIX, VERSION}.
struct Django {
  std::string backend;  // PyMemcacheCache or PyLibMCCache
  std::string locations;
  std::string key_prefix;
  int version;
  std::string options = "{}";  // OPTIONS, as JSON

  // The JSON line Django printed for `command`.
  std::string operator()(std::vector<std::string> command) const {
    std::vector<std::string> argv{env_or_fail("CACHELOCK_PYTHON"), env_or_fail("CACHELOCK_DJANGO_PEER"),
                                  backend, locations, key_prefix, std::to_string(version), options};
    argv.insert(argv.end(), command.begin(), command.end());
    auto result = run_peer(argv);
    INFO("django_peer.py " << command.at(0) << " exited " << result.status << ", stderr:\n" << result.err);
    REQUIRE(result.status == 0);
    return result.out;
  }
};

}  // namespace test
