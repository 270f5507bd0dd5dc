// Scratch directories for the file backends' tests (test helper).
#pragma once

#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "support.hpp"

namespace test {

/// A directory of our own under $TMPDIR, removed when the program ends.
inline const std::string& scratch() {
  static const struct Scratch {
    std::string path;
    Scratch() {
      auto base = std::filesystem::temp_directory_path() / "cachelock-test-XXXXXX";
      std::string pattern = base.string();
      REQUIRE(::mkdtemp(pattern.data()) != nullptr);
      path = pattern;
    }
    ~Scratch() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } dir;
  return dir.path;
}

/// A path under scratch() that nobody else in this process uses.
inline std::string fresh_dir(std::string_view name) { return scratch() + "/" + unique(name); }

}  // namespace test
