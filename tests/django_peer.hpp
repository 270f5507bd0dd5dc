// A Django process for the interoperability tests (test helper): one
// cache command of tests/django_peer.py, run under the Python that has
// Django, pymemcache and pylibmc (see python_peer.hpp).
#pragma once

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "python_peer.hpp"

namespace test {

// One Django process using the alias {BACKEND, LOCATION, KEY_PREFIX, VERSION}.
// `locations` is comma-separated, or LOCATION itself as JSON (a list or a
// string, given to Django as it is).
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
