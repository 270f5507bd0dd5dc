// The cachelock command on a Django project's CACHES pasted as it is:
// aliases it does not serve, KEY_FUNCTION, TIMEOUT 0.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cli_support.hpp"
#include "process.hpp"
#include "support.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "memcached_server.hpp"
#endif

namespace fs = std::filesystem;

namespace {

// A directory of its own for the settings and the file locks of one test.
struct Project {
  fs::path dir = fs::temp_directory_path() / test::unique("cachelock-aliases-" + std::to_string(::getpid()));
  std::string settings = (dir / "settings.yaml").string();

  /// `caches`: the settings, where LOCKS stands for a directory for file locks.
  explicit Project(std::string caches) {
    fs::create_directories(dir);
    for (auto at = caches.find("LOCKS"); at != std::string::npos; at = caches.find("LOCKS", at)) {
      caches.replace(at, 5, locks());
    }
    std::ofstream{settings} << caches;
  }
  ~Project() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  Project(const Project&) = delete;
  Project& operator=(const Project&) = delete;

  std::string locks() const { return (dir / "locks").string(); }

  test::Ran run(std::initializer_list<std::string> args) const {
    std::vector<std::string> argv{test::cli(), "--settings", settings};
    argv.insert(argv.end(), args);
    return test::run(argv, {{"CACHELOCK_SETTINGS", nullptr}});
  }
};

// That `ran` exited with `code`, saying only `error` (on stderr).
void check_refused(const test::Ran& ran, int code, const std::string& error) {
  CHECK(ran.code == code);
  CHECK(ran.err == "cachelock: " + error + "\n");
  CHECK(ran.out.empty());
}

const std::string sessions_error =
    ":10:14: CACHES.sessions.BACKEND: alias 'sessions' cannot be used: BACKEND "
    "'django.core.cache.backends.db.DatabaseCache' is not served by cachelock: it does not keep locks in a "
    "database table";
const std::string table_error =
    ":12:14: CACHES.table.BACKEND: alias 'table' cannot be used: BACKEND "
    "'django.core.cache.backends.db.DatabaseCache' is not served by cachelock: it does not keep locks in a "
    "database table";

// `locks` on lines 2-5, then the aliases of sessions_error and table_error.
std::string mixed_caches(const std::string& locks) {
  return "CACHES:\n" + locks +
         "  default:\n    BACKEND: memory\n    TIMEOUT: 60\n"
         "  sessions:\n    BACKEND: django.core.cache.backends.db.DatabaseCache\n"
         "  table:\n    BACKEND: django.core.cache.backends.db.DatabaseCache\n    LOCATION: cache_table\n";
}

}  // namespace

TEST_CASE("cli aliases: unserved aliases are listed by check, refused when used, and others run") {
  std::string locks_lines, locks_kind;
#if CACHELOCK_HAS_MEMCACHED
  auto& server = test::shared_memcached();
  locks_lines = "  locks:\n    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                "    LOCATION: " + server.location() + "\n    TIMEOUT: 60\n";
  locks_kind = "memcached " + server.location();
#else
  locks_lines = "  locks:\n    BACKEND: file\n    LOCATION: LOCKS\n    TIMEOUT: 60\n";
#endif
  Project project{mixed_caches(locks_lines)};
  if (locks_kind.empty()) locks_kind = "file " + project.locks();

  auto check = project.run({"check"});
  CHECK(check.code == 0);
  CHECK(check.out.find("locks: " + locks_kind + ", timeout 60 s, prefix '', version 1: ok, ") != std::string::npos);
  CHECK(check.out.find("\nsessions: not served: " + project.settings + sessions_error + "\n") != std::string::npos);
  CHECK(check.out.find("\ntable: not served: " + project.settings + table_error + "\n") != std::string::npos);

  auto key = test::unique("cli-mixed");
  CHECK(project.run({"--alias", "locks", "run", key, "--", "true"}).code == 0);
  for (const auto& [alias, error] : {std::pair{"sessions", sessions_error}, {"table", table_error}}) {
    CAPTURE(alias);
    for (const auto& ran : {project.run({"--alias", alias, "run", key, "--", "true"}),
                            project.run({"--alias", alias, "status", key}),
                            project.run({"--alias", alias, "release", key, "--force"})}) {
      check_refused(ran, 78, project.settings + error);
    }
  }
}

TEST_CASE("cli aliases: an unserved default alias fails commands without --alias, and check says so") {
  Project project{"CACHES:\n  default:\n    BACKEND: django.core.cache.backends.db.DatabaseCache\n"
                  "  locks:\n    BACKEND: file\n    LOCATION: LOCKS\n"};
  auto error = project.settings +
               ":3:14: CACHES.default.BACKEND: alias 'default' cannot be used: BACKEND "
               "'django.core.cache.backends.db.DatabaseCache' is not served by cachelock: it does not keep locks "
               "in a database table";
  check_refused(project.run({"run", "job", "--", "true"}), 78,
                error + "; it is the default alias: name a served one with DEFAULT_CACHELOCK_ALIAS, or give the "
                        "lock an alias");
  CHECK(project.run({"--alias", "locks", "run", "job", "--", "true"}).code == 0);

  auto check = project.run({"check"});
  CHECK(check.code == 0);
  CHECK(check.out.rfind("default (default): not served: " + error +
                            "\n  commands without --alias fail: name a served alias with DEFAULT_CACHELOCK_ALIAS\n"
                            "locks: file ",
                        0) == 0);
}

TEST_CASE("cli aliases: check fails when no alias is served at all") {
  Project project{"CACHES:\n  default:\n    BACKEND: django.core.cache.backends.db.DatabaseCache\n"};
  auto check = project.run({"check"});
  CHECK(check.code == 78);
  CHECK(check.out.rfind("default (default): not served: ", 0) == 0);
  CHECK(check.err == "cachelock: no alias here is served by cachelock: nothing can lock\n");
}

TEST_CASE("cli aliases: TIMEOUT 0 loads, and run needs --ttl on it") {
  Project project{"CACHES:\n  default:\n    BACKEND: file\n    LOCATION: LOCKS\n    TIMEOUT: 0\n"};
  check_refused(project.run({"run", "job", "--", "true"}), 64,
                "lock 'job' on alias 'default': the cache's TIMEOUT is 0 s, which means expire at once (as in "
                "Django): a lock taken without a ttl would be free as soon as it is taken; give the lock a ttl "
                "with --ttl");
  CHECK(project.run({"run", "job", "--ttl", "5", "--", "true"}).code == 0);
  auto check = project.run({"check"});
  CHECK(check.code == 0);
  CHECK(check.out.find("timeout 0 s") != std::string::npos);
}

TEST_CASE("cli aliases: the command registers no key function, so an alias with KEY_FUNCTION fails") {
  Project project{"CACHES:\n  default:\n    BACKEND: file\n    LOCATION: LOCKS\n"
                  "    KEY_FUNCTION: myproject.cache.make_key\n"};
  auto error = project.settings +
               ":5:19: CACHES.default.KEY_FUNCTION: 'myproject.cache.make_key' is not a registered key function "
               "(registered: none); register it with CacheRegistry::add_key_function before the alias is used";
  check_refused(project.run({"run", "job", "--", "true"}), 78, error);
  auto check = project.run({"check"});
  CHECK(check.code == 69);
  CHECK(check.out.find(": failed: " + error + "\n") != std::string::npos);
}
