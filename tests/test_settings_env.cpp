// $CACHELOCK_SETTINGS: read by the global registry at its first use, unless
// the program configured it before. Each case runs in a child process, so
// that it meets a global registry nobody has used yet.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <string>

#include <cachelock/cachelock.hpp>

namespace {

using cachelock::CacheRegistry;

std::string config_file(const char* name) {
  const char* dir = std::getenv("CACHELOCK_CONFIG_DIR");
  REQUIRE(dir != nullptr);
  return std::string{dir} + "/" + name;
}

// Runs `check` in a fresh child process with $CACHELOCK_SETTINGS set to
// `settings` (unset when null); returns what it reports ("" = all good).
std::string in_child(const char* settings, const std::function<std::string()>& check) {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    if (settings) {
      ::setenv("CACHELOCK_SETTINGS", settings, 1);
    } else {
      ::unsetenv("CACHELOCK_SETTINGS");
    }
    std::string report;
    try {
      report = check();
    } catch (const std::exception& e) {
      report = std::string{"unexpected exception: "} + e.what();
    }
    auto written = ::write(pipe_fds[1], report.data(), report.size());
    ::_exit(written == static_cast<ssize_t>(report.size()) ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  std::string report;
  char buffer[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) report.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  return report;
}

std::string expect(bool ok, const std::string& what) { return ok ? "" : what; }

}  // namespace

TEST_CASE("without $CACHELOCK_SETTINGS the built-in default stands") {
  CHECK(in_child(nullptr, [] {
          auto& registry = CacheRegistry::global();
          return expect(registry.aliases() == std::vector<std::string>{"default"} &&
                            std::dynamic_pointer_cast<cachelock::MemoryCache>(registry.get()) != nullptr,
                        "not the built-in default");
        }) == "");
}

TEST_CASE("$CACHELOCK_SETTINGS is loaded at the first use") {
  auto path = config_file("cachelock.yaml");
  CHECK(in_child(path.c_str(), [] {
          auto& registry = CacheRegistry::global();
          if (registry.aliases() != std::vector<std::string>{"default", "host", "off"}) {
            return std::string{"aliases"};
          }
          cachelock::Lock off{"job", {.alias = "off"}};
          return expect(off.owns_lock(), "lock on the dummy alias");
        }) == "");
}

TEST_CASE("an explicit load before the first use wins over $CACHELOCK_SETTINGS") {
  CHECK(in_child("/nonexistent/settings.yaml", [] {
          auto& registry = CacheRegistry::global();
          registry.load_yaml("CACHES:\n  mine:\n    BACKEND: memory\nDEFAULT_CACHELOCK_ALIAS: mine\n");
          return expect(registry.aliases() == std::vector<std::string>{"mine"}, "explicit load lost");
        }) == "");
}

TEST_CASE("aliases added in code join the settings from $CACHELOCK_SETTINGS") {
  auto path = config_file("cachelock.yaml");
  CHECK(in_child(path.c_str(), [] {
          auto& registry = CacheRegistry::global();
          registry.add("extra", std::make_shared<cachelock::MemoryCache>());
          return expect(registry.aliases() == std::vector<std::string>{"default", "extra", "host", "off"},
                        "aliases lost");
        }) == "");
}

TEST_CASE("a broken $CACHELOCK_SETTINGS fails every use; it never falls back to memory") {
  CHECK(in_child("/nonexistent/settings.yaml", [] {
          const std::string expected =
              "$CACHELOCK_SETTINGS: /nonexistent/settings.yaml: cannot open the settings file: No such "
              "file or directory";
          for (int attempt = 0; attempt < 2; ++attempt) {
            try {
              cachelock::Lock lock{"job"};
              return std::string{"a lock was taken without settings"};
            } catch (const cachelock::ConfigError& e) {
              if (e.what() != expected) return std::string{"message: "} + e.what();
            }
          }
          try {
            CacheRegistry::global().default_alias();
            return std::string{"default_alias() worked without settings"};
          } catch (const cachelock::ConfigError&) {
          }
          // Fixing it explicitly ends the errors.
          CacheRegistry::global().reset();
          cachelock::Lock lock{"job"};
          return expect(lock.owns_lock(), "no lock after reset");
        }) == "");
}

TEST_CASE("load_settings: an explicit file, else $CACHELOCK_SETTINGS, else nothing loaded") {
  auto path = config_file("cachelock.yaml");
  CHECK(in_child(nullptr, [] {
          auto& registry = CacheRegistry::global();
          return expect(!registry.load_settings("") && registry.aliases() == std::vector<std::string>{"default"},
                        "loaded something without a file");
        }) == "");
  CHECK(in_child(path.c_str(), [] {
          auto& registry = CacheRegistry::global();
          return expect(registry.load_settings("") &&
                            registry.aliases() == std::vector<std::string>{"default", "host", "off"},
                        "$CACHELOCK_SETTINGS not loaded");
        }) == "");
  CHECK(in_child("/nonexistent/settings.yaml", [&path] {
          auto& registry = CacheRegistry::global();
          return expect(registry.load_settings(path) &&
                            registry.aliases() == std::vector<std::string>{"default", "host", "off"},
                        "the explicit file lost to $CACHELOCK_SETTINGS");
        }) == "");
  CHECK(in_child("/nonexistent/settings.yaml", [] {
          try {
            CacheRegistry::global().load_settings("");
            return std::string{"a broken $CACHELOCK_SETTINGS loaded"};
          } catch (const cachelock::ConfigError& e) {
            return expect(std::string{e.what()}.starts_with("$CACHELOCK_SETTINGS: /nonexistent/settings.yaml: "),
                          std::string{"message: "} + e.what());
          }
        }) == "");
}
