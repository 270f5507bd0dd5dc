// Where the settings suites find their files (meson test sets the variables).
#pragma once

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <string_view>

namespace test {

/// The directory named by environment variable `name`.
inline std::string env_dir(const char* name) {
  const char* dir = std::getenv(name);
  REQUIRE_MESSAGE(dir != nullptr, name << " is not set; run the tests through meson test");
  return dir;
}

/// An example settings file in config/.
inline std::string config_file(std::string_view name) {
  return env_dir("CACHELOCK_CONFIG_DIR") + "/" + std::string{name};
}

/// A malformed settings file in tests/data/bad/, by its stem.
inline std::string bad_file(std::string_view name) {
  return env_dir("CACHELOCK_TEST_DATA") + "/bad/" + std::string{name} + ".yaml";
}

}  // namespace test
