// DjangoFileCache: Django's FileBasedCache format on one directory shared
// with Django itself. The conformance suite, then Django and cachelock
// contending for the same files.
//
// Django runs in a child process: tests/django_file_peer.py under the Python
// that has Django (Debian's /usr/bin/python3; meson passes it as
// $CACHELOCK_PYTHON and the script as $CACHELOCK_DJANGO_FILE_PEER), through
// python_peer.hpp.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cache_conformance.hpp"
#include "python_peer.hpp"
#include "scratch.hpp"

using namespace std::chrono_literals;
using cachelock::DjangoFileCache;
using cachelock::Lock;
using cachelock::LockError;
namespace fs = std::filesystem;

namespace {

struct DjangoFileBackend {
  static constexpr const char* name = "django-file";
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return std::make_shared<DjangoFileCache>(cachelock::FileOptions{.directory = test::scratch() + "/conformance"},
                                             std::move(options));
  }
  static constexpr auto short_ttl = 200ms;
  static constexpr auto expired_after = 400ms;
};

// A Django process using FileBasedCache on `location`, KEY_PREFIX and VERSION as given.
struct Django {
  std::string location;
  std::string key_prefix;
  int version = 1;

  // The JSON line Django printed for `command`.
  std::string operator()(std::vector<std::string> command) const {
    std::vector<std::string> argv{test::env_or_fail("CACHELOCK_PYTHON"),
                                  test::env_or_fail("CACHELOCK_DJANGO_FILE_PEER"), location, key_prefix,
                                  std::to_string(version)};
    argv.insert(argv.end(), command.begin(), command.end());
    auto result = test::run_peer(argv);
    INFO("django_file_peer.py " << command.at(0) << " exited " << result.status << ", stderr:\n" << result.err);
    REQUIRE(result.status == 0);
    return result.out;
  }
};

// Our cache and a Django process on a fresh directory, with the same KEY_PREFIX.
struct Shared {
  std::string dir = test::fresh_dir("django-file");
  std::string prefix = test::unique("app");
  std::shared_ptr<DjangoFileCache> ours =
      std::make_shared<DjangoFileCache>(cachelock::FileOptions{.directory = dir}, cachelock::CacheOptions{.key_prefix = prefix});
  Django django{dir, prefix};
};

constexpr const char* refused = R"({"result": false})";
constexpr const char* accepted = R"({"result": true})";

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream{path, std::ios::binary | std::ios::trunc} << bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

}  // namespace

TYPE_TO_STRING(DjangoFileBackend);
CACHELOCK_CONFORMANCE(DjangoFileBackend);

TEST_CASE("django-file: our files have the names Django gives them (md5 of the stored key)") {
  for (int version : {1, 3}) {
    for (std::string prefix : {"", "billing"}) {
      auto dir = test::fresh_dir("names");
      DjangoFileCache ours{{.directory = dir}, {.key_prefix = prefix, .version = version}};
      Django django{dir, prefix, version};
      for (const auto& key : std::vector<std::string>{"k", "nightly-report", "clé-ü-日本", std::string(200, 'x')}) {
        CAPTURE(prefix);
        CAPTURE(key);
        CHECK(django({"file", key}) == R"({"result": ")" + ours.path_for(key) + R"("})");
      }
    }
  }
}

TEST_CASE("django-file: Django's add makes our lock refused, whatever value Django stored") {
  Shared shared;
  // JSON for Django's values: an int, a str, True, None, a float, bytes.
  const std::pair<const char*, const char*> values[] = {
      {"1", "1"}, {R"("text")", "text"}, {"true", "True"}, {"null", "None"}, {"1.5", "1.5"},
      {R"({"bytes": "raw"})", "raw"}};
  for (const auto& [json, shown] : values) {
    CAPTURE(json);
    auto key = test::unique("held");
    REQUIRE(shared.django({"add", key, json}) == accepted);
    CHECK_THROWS_AS(Lock(key, {.cache = shared.ours}), LockError);
    CHECK_FALSE(shared.ours->add(key, "mine"));
    CHECK(shared.ours->get(key) == shown);
    CHECK(shared.django({"has_key", key}) == accepted);
  }
  // A value of a kind we do not decode (a list) is held all the same.
  REQUIRE(shared.django({"add", "list", "[1, 2]"}) == accepted);
  CHECK_THROWS_AS(Lock("list", {.cache = shared.ours}), LockError);
  CHECK(shared.ours->get("list").has_value());
  CHECK_FALSE(shared.ours->erase_if_equals("list", "[1, 2]"));
}

TEST_CASE("django-file: while we hold a lock, Django's add fails and its get returns our token as a str") {
  Shared shared;
  {
    Lock lock{"job", {.cache = shared.ours}};
    CHECK(shared.django({"add", "job", "1"}) == refused);
    CHECK(shared.django({"get", "job"}) == R"({"result": ")" + lock.token() + R"(", "type": "str"})");
    CHECK(shared.ours->get("job") == lock.token());  // Django's failed add changed nothing
  }
  // Released: Django takes it, and then we cannot.
  CHECK(shared.django({"add", "job", "1"}) == accepted);
  CHECK_THROWS_AS(Lock("job", {.cache = shared.ours}), LockError);
  CHECK(shared.django({"delete", "job"}) == accepted);
  CHECK_NOTHROW(Lock("job", {.cache = shared.ours}));
}

TEST_CASE("django-file: Django reads the values we write, and we read Django's") {
  Shared shared;
  shared.ours->set("text", "hello, wörld");
  CHECK(shared.django({"get", "text"}) == R"({"result": "hello, w\u00f6rld", "type": "str"})");
  shared.ours->set("binary", std::string{"\xff\x00z", 3});
  CHECK(shared.django({"get", "binary"}) == R"({"result": "\u00ff\u0000z", "type": "bytes"})");
  // incr keeps Django's int an int, so Django's own incr goes on working.
  REQUIRE(shared.django({"set", "n", "41"}) == R"({"result": null})");
  CHECK(shared.ours->incr("n") == 42);
  CHECK(shared.django({"incr", "n"}) == R"({"result": 43})");
  CHECK(shared.ours->get("n") == "43");
  // Our never-expiring entry reads as never expiring to Django (expiry None).
  shared.ours->set("forever", "v", cachelock::Timeout::never());
  CHECK(shared.django({"get", "forever"}) == R"({"result": "v", "type": "str"})");
}

TEST_CASE("django-file: Django's clear() removes our locks, which are then free") {
  Shared shared;
  Lock lock{"job", {.cache = shared.ours}};
  Lock other{"other", {.cache = shared.ours}};
  REQUIRE(shared.django({"clear"}) == R"({"result": null})");
  CHECK(shared.django({"has_key", "job"}) == refused);
  CHECK_FALSE(shared.ours->get("job").has_value());
  Lock next{"job", {.cache = shared.ours}};
  CHECK_FALSE(lock.release());  // ours was cleared: the next owner's lock stays
  CHECK(shared.ours->get("job") == next.token());
  CHECK(shared.django({"add", "other", "1"}) == accepted);
  CHECK_FALSE(other.release());
  CHECK(shared.ours->get("other") == "1");
}

TEST_CASE("django-file: expiry is honoured both ways") {
  Shared shared;
  SUBCASE("ours expires for Django") {
    auto start = std::chrono::steady_clock::now();
    Lock lock{"job", {.cache = shared.ours, .ttl = 3s}};
    auto answer = shared.django({"add", "job", "1"});
    if (test::elapsed_ms(start) < 3000) CHECK(answer == refused);
    std::this_thread::sleep_until(start + 3200ms);
    CHECK(shared.django({"add", "job", "1"}) == accepted);
    CHECK_FALSE(lock.release());
  }
  SUBCASE("Django's expires for us") {
    REQUIRE(shared.django({"add", "job", "1", "3"}) == accepted);
    // Django took its time when it added: it expires no later than 3 s after it returned.
    auto added = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(Lock("job", {.cache = shared.ours}), LockError);
    std::this_thread::sleep_until(added + 3200ms);
    CHECK_NOTHROW(Lock("job", {.cache = shared.ours}));
  }
  SUBCASE("Django's expired file is free, and Django's timeout 0 writes nothing live") {
    REQUIRE(shared.django({"set", "gone", "1", "0"}) == R"({"result": null})");
    CHECK_NOTHROW(Lock("gone", {.cache = shared.ours}));
  }
}

TEST_CASE("django-file: a file we cannot decode is held by someone else, never free, never a crash") {
  Shared shared;
  REQUIRE(shared.django({"set", "model", R"("a str of some length")", "300"}) == R"({"result": null})");
  const auto whole = read_file(shared.ours->path_for("model"));
  REQUIRE(whole.size() > 30);
  const std::pair<const char*, std::string> cases[] = {
      {"garbage", "this is not a pickle at all"},
      {"digits, not a pickle", "123"},
      {"cut in the expiry", whole.substr(0, 7)},
      {"cut in the value", whole.substr(0, whole.size() - 5)},
      {"a value that is not zlib", whole.substr(0, 21) + "not zlib"},
      {"bytes after the zlib stream (Python's zlib.decompress ignores them)", whole + "more"},
      {"an expiry that is a str", std::string{"\x80\x05\x8c\x03" "abc\x94."} + whole.substr(21)},
  };
  for (const auto& [what, bytes] : cases) {
    CAPTURE(what);
    auto key = test::unique("broken");
    write_file(shared.ours->path_for(key), bytes);
    CHECK_FALSE(shared.ours->add(key, "mine"));
    CHECK_THROWS_AS(Lock(key, {.cache = shared.ours}), LockError);
    CHECK(shared.ours->get(key).has_value());
    CHECK_FALSE(shared.ours->erase_if_equals(key, "mine"));
    CHECK_FALSE(shared.ours->replace_if_equals(key, "mine", "again"));
    CHECK_THROWS_WITH_AS(shared.ours->incr(key), doctest::Contains("cannot read as Django's format"),
                         cachelock::CacheError);
    CHECK(read_file(shared.ours->path_for(key)) == bytes);  // left as it was
  }
  SUBCASE("an empty file has expired, as Django reads it") {
    write_file(shared.ours->path_for("empty"), "");
    CHECK(shared.django({"has_key", "empty"}) == refused);
    write_file(shared.ours->path_for("empty"), "");
    CHECK(shared.ours->add("empty", "mine"));
  }
}

TEST_CASE("django-file: of many processes adding one key, exactly one wins each round") {
  auto dir = test::fresh_dir("race");
  constexpr int processes = 8;
  constexpr int rounds = 40;
  auto start = std::chrono::system_clock::now() + 500ms;
  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int wins = 0;
      try {
        DjangoFileCache cache{{.directory = dir}};
        std::this_thread::sleep_until(start);
        for (int round = 0; round < rounds; ++round) wins += cache.add("race-" + std::to_string(round), "p");
      } catch (...) {
        ::_exit(255);
      }
      ::_exit(wins);
    }
    children.push_back(pid);
  }
  int total = 0;
  for (auto pid : children) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) != 255);
    total += WEXITSTATUS(status);
  }
  CHECK(total == rounds);
  DjangoFileCache cache{{.directory = dir}};
  for (int round = 0; round < rounds; ++round) CHECK(cache.get("race-" + std::to_string(round)) == "p");
  // No temporary file is left behind, and no file but the entries.
  std::size_t names = 0;
  for (const auto& entry : fs::directory_iterator(dir)) names += entry.path().extension() == ".djcache" ? 1 : 100;
  CHECK(names == rounds);
}

TEST_CASE("django-file: BACKEND FileBasedCache makes Django's format, `file` our own") {
  cachelock::CacheRegistry registry;
  registry.load_yaml("CACHES:\n"
                     "  default:\n"
                     "    BACKEND: django.core.cache.backends.filebased.FileBasedCache\n"
                     "    LOCATION: /tmp/cachelock-django-file-settings\n"
                     "    OPTIONS: {MAX_ENTRIES: 50, CULL_FREQUENCY: 2}\n"
                     "  short:\n"
                     "    BACKEND: django-file\n"
                     "    LOCATION: /tmp/cachelock-django-file-settings\n"
                     "  ours:\n"
                     "    BACKEND: file\n"
                     "    LOCATION: /tmp/cachelock-file-settings\n");
  auto django = std::dynamic_pointer_cast<DjangoFileCache>(registry.get("default"));
  REQUIRE(django != nullptr);
  CHECK(django->file_options().directory == "/tmp/cachelock-django-file-settings");
  CHECK(django->options().max_entries == 50);
  CHECK(django->options().cull_frequency == 2);
  CHECK(std::dynamic_pointer_cast<DjangoFileCache>(registry.get("short")) != nullptr);
  CHECK(std::dynamic_pointer_cast<cachelock::FileCache>(registry.get("ours")) != nullptr);
  cachelock::CacheRegistry bad;
  CHECK_THROWS_WITH_AS(bad.load_yaml("CACHES:\n  default:\n    BACKEND: django-file\n"),
                       "<settings>:3:5: CACHES.default: the django-file backend needs LOCATION: a directory",
                       cachelock::ConfigError);
}

TEST_CASE("django-file: MAX_ENTRIES culls as Django's _cull does, and never our hidden files") {
  auto dir = test::fresh_dir("cull");
  DjangoFileCache cache{{.directory = dir}, {.max_entries = 9, .cull_frequency = 3}};
  for (int i = 0; i < 9; ++i) cache.set("k" + std::to_string(i), "v");
  write_file(dir + "/.hidden.djcache", "x");  // Django's glob skips hidden names: so do we
  cache.set("one-more", "v");                 // 9 entries: a third of them go first
  std::size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(dir)) entries += entry.path().extension() == ".djcache";
  CHECK(entries == 9 - 3 + 1 + 1);
  CHECK(fs::exists(dir + "/.hidden.djcache"));
}

TEST_CASE("django-file: an add refused on a held key culls nothing") {
  auto dir = test::fresh_dir("cull-refused");
  DjangoFileCache cache{{.directory = dir}, {.max_entries = 3, .cull_frequency = 3}};
  for (const char* key : {"a", "b", "c"}) REQUIRE(cache.add(key, "held"));
  for (int i = 0; i < 5; ++i) CHECK_FALSE(cache.add("a", "other"));  // as a waiting Lock retries
  for (const char* key : {"a", "b", "c"}) CHECK(cache.get(key) == "held");
}

TEST_CASE("django-file: a group-writable sticky directory is refused, since entries are replaced by rename") {
  auto dir = test::fresh_dir("sticky");
  fs::create_directories(dir);
  REQUIRE(::chmod(dir.c_str(), 03770) == 0);
  DjangoFileCache cache{{.directory = dir}};
  CHECK_THROWS_WITH_AS(cache.add("k", "v"), doctest::Contains("group-writable and sticky (mode 3770)"),
                       cachelock::ConfigError);
  REQUIRE(::chmod(dir.c_str(), 02770) == 0);  // without the sticky bit members replace each other's files
  DjangoFileCache shared{{.directory = dir}};
  CHECK(shared.add("k", "v"));
}

TEST_CASE("django-file: the directory is checked as the file backend's is") {
  auto dir = test::fresh_dir("open");
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::all);
  DjangoFileCache cache{{.directory = dir}};
  CHECK_THROWS_AS(cache.add("k", "v"), cachelock::ConfigError);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace);
  CHECK(cache.add("k", "v"));
  // A link at an entry's name is never followed.
  auto target = test::fresh_dir("target");
  write_file(target, "x");
  fs::create_symlink(target, cache.path_for("linked"));
  CHECK_THROWS_AS(cache.add("linked", "v"), cachelock::CacheError);
  CHECK(read_file(target) == "x");
}
