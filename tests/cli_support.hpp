// What the command-line suites (test_cli*.cpp) share: the command's path and
// a private sandbox of settings and lock directories for each test.
#pragma once

#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"

namespace test {

/// The cachelock command under test.
inline std::string cli() {
  const char* path = std::getenv("CACHELOCK_CLI");
  REQUIRE_MESSAGE(path != nullptr, "CACHELOCK_CLI is not set; run the tests through meson test");
  return path;
}

/// This machine's name, as owner tokens carry it.
inline std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

/// A private runtime directory and settings file per test.
struct Sandbox {
  std::string dir;
  std::string settings;
  std::map<std::string, const char*> env;

  Sandbox() {
    std::string pattern = (std::filesystem::temp_directory_path() / "cachelock-cli-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir = pattern;
    settings = dir + "/settings.yaml";
    std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: file\n    LOCATION: " << dir
                            << "/locks\n    TIMEOUT: 60\n  other:\n    BACKEND: file\n    LOCATION: " << dir
                            << "/other\n";
    env = {{"CACHELOCK_SETTINGS", settings.c_str()}, {"XDG_RUNTIME_DIR", dir.c_str()}};
  }
  ~Sandbox() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }

  std::vector<std::string> args(std::initializer_list<std::string> rest) const {
    std::vector<std::string> all{cli()};
    all.insert(all.end(), rest);
    return all;
  }
  Ran run(std::initializer_list<std::string> rest) const { return test::run(args(rest), env); }
  bool held(const std::string& key) const { return run({"status", key}).code == 1; }
  std::string read(const std::string& name) const {
    std::ifstream in{dir + "/" + name};
    return {std::istreambuf_iterator<char>{in}, {}};
  }
  // The pids a program wrote to `name`, one a line, once it has written `count`.
  std::vector<pid_t> pids(const std::string& name, std::size_t count) const {
    std::vector<pid_t> found;
    eventually([&] {
      std::istringstream lines{read(name)};
      found.clear();
      for (pid_t pid; lines >> pid;) found.push_back(pid);
      return found.size() >= count;
    });
    REQUIRE(found.size() >= count);
    return found;
  }
};

}  // namespace test
