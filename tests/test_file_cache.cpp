// FileCache: the conformance suite, plus what only the file backend does:
// sharing between processes, surviving SIGKILL, cleaning up.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "cache_conformance.hpp"
#include "process.hpp"
#include "scratch.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

using test::fresh_dir;
using test::scratch;

struct FileBackend {
  static constexpr const char* name = "file";
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = scratch() + "/conformance"},
                                                  std::move(options));
  }
  static constexpr auto short_ttl = 200ms;
  static constexpr auto expired_after = 400ms;
};

std::size_t files_in(const std::string& dir) {
  std::size_t n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) n += entry.path().extension() == ".cachelock";
  return n;
}

}  // namespace

TYPE_TO_STRING(FileBackend);
CACHELOCK_CONFORMANCE(FileBackend);

TEST_CASE("file: the directory is made on first use, mode 0700") {
  auto dir = fresh_dir("made") + "/nested/deeper";
  cachelock::FileCache cache{{.directory = dir}};
  CHECK_FALSE(fs::exists(dir));  // nothing happens at construction
  CHECK_FALSE(cache.get("k").has_value());
  CHECK_FALSE(fs::exists(dir));  // nor on a read of a missing key
  cache.set("k", "v");
  REQUIRE(fs::is_directory(dir));
  struct stat info {};
  REQUIRE(::stat(dir.c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0700);
  REQUIRE(::stat(cache.path_for("k").c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  CHECK(files_in(dir) == 1);
}

TEST_CASE("file: options are checked, and a LOCATION that is a file fails clearly") {
  CHECK_THROWS_WITH_AS(cachelock::FileCache({.directory = ""}),
                       "file cache: the directory (LOCATION) is empty", cachelock::ConfigError);
  CHECK_THROWS_WITH_AS(cachelock::FileCache({.directory = "/tmp/x", .timeout = 0ms}),
                       "file cache '/tmp/x': the timeout must be positive, got 0 ms", cachelock::ConfigError);
  auto dir = fresh_dir("plain");
  fs::create_directories(dir);
  auto file = dir + "/not-a-directory";
  std::ofstream{file} << "x";
  cachelock::FileCache cache{{.directory = file + "/below"}};
  // A setting to change (78 from the command line), not a backend failure.
  CHECK_THROWS_WITH_AS(cache.set("k", "v"),
                       doctest::Contains(("'" + file + "' is a regular file, not a directory; choose another LOCATION").c_str()),
                       cachelock::ConfigError);
  cachelock::Lock refused{"job", std::defer_lock, {.cache = std::make_shared<cachelock::FileCache>(
                                                       cachelock::FileOptions{.directory = file + "/below"})}};
  CHECK_THROWS_AS(refused.try_acquire(), cachelock::ConfigError);
  CHECK_FALSE(refused.owns_lock());
}

TEST_CASE("file: a lock taken in one process is seen by another") {
  auto dir = fresh_dir("shared");
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = dir});
  cachelock::Lock mine{"job", {.cache = cache}};
  CHECK(test::exit_code_in_child([&] {
          cachelock::FileCache other{{.directory = dir}};
          try {
            cachelock::Lock theirs{"job", {.cache = std::make_shared<cachelock::FileCache>(
                                               cachelock::FileOptions{.directory = dir})}};
            return 10;  // taken twice
          } catch (const cachelock::LockError&) {
          }
          return other.get("job") ? 0 : 11;
        }) == 0);
  CHECK(mine.release());
  CHECK(test::exit_code_in_child([&] {
          cachelock::Lock theirs{"job", {.cache = std::make_shared<cachelock::FileCache>(
                                             cachelock::FileOptions{.directory = dir})}};
          return theirs.owns_lock() ? 0 : 12;
        }) == 0);
}

TEST_CASE("file: a holder killed with SIGKILL leaves the key until its ttl, then free") {
  auto dir = fresh_dir("killed");
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = dir});
  int status = test::exit_code_in_child([&] {
    cachelock::Lock held{"job", {.cache = cache, .ttl = 700ms}};
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  CHECK(status == 128 + SIGKILL);
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), cachelock::LockError);
  std::this_thread::sleep_for(900ms);
  cachelock::Lock next{"job", {.cache = cache}};
  CHECK(next.owns_lock());
}

TEST_CASE("file: a record cut short or followed by old bytes is handled") {
  auto dir = fresh_dir("torn");
  cachelock::FileCache cache{{.directory = dir}};
  cache.set("k", "a fairly long value, longer than the next one");
  auto path = cache.path_for("k");
  auto full = fs::file_size(path);
  SUBCASE("cut short: as if absent, and writable again") {
    fs::resize_file(path, full - 5);
    CHECK_FALSE(cache.get("k").has_value());
    CHECK(cache.add("k", "new"));
    CHECK(cache.get("k") == "new");
  }
  SUBCASE("a flipped byte fails the checksum") {
    std::fstream f{path, std::ios::in | std::ios::out | std::ios::binary};
    f.seekp(static_cast<std::streamoff>(full - 3));
    f.put('#');
    f.close();
    CHECK_FALSE(cache.get("k").has_value());
  }
  SUBCASE("trailing bytes of an older, longer record are ignored") {
    cache.set("k", "short");
    std::ofstream{path, std::ios::app | std::ios::binary} << "leftover bytes";
    CHECK(cache.get("k") == "short");
  }
  SUBCASE("an empty file, as left by a writer killed before writing") {
    fs::resize_file(path, 0);
    CHECK_FALSE(cache.get("k").has_value());
    CHECK(cache.add("k", "v"));
  }
}

TEST_CASE("file: another key's record at a key's path is reported, not used") {
  auto dir = fresh_dir("collision");
  cachelock::FileCache cache{{.directory = dir}};
  cache.set("one", "1");
  fs::rename(cache.path_for("one"), cache.path_for("two"));  // as a hash collision would
  CHECK_THROWS_WITH_AS(cache.get("two"),
                       doctest::Contains(("get ':1:two' failed: " + cache.path_for("two") +
                                          " holds ':1:one' (a hash collision); remove the file")
                                             .c_str()),
                       cachelock::CacheError);
}

TEST_CASE("file: expired entries are removed when touched and by sweeps") {
  auto dir = fresh_dir("sweep");
  cachelock::FileCache cache{{.directory = dir}};
  for (int i = 0; i < 20; ++i) cache.set("short-" + std::to_string(i), "v", 50ms);
  cache.set("kept", "v");
  CHECK(files_in(dir) == 21);
  std::this_thread::sleep_for(100ms);
  CHECK_FALSE(cache.get("short-0").has_value());
  CHECK(files_in(dir) == 20);  // the read removed it
  CHECK(cache.sweep() == 19);
  CHECK(files_in(dir) == 1);
}

TEST_CASE("file: the sweep that writes make examines a bounded number of entries per call") {
  auto dir = fresh_dir("incremental");
  cachelock::FileCache cache{{.directory = dir}};
  constexpr int expired = 2'000;
  for (int i = 0; i < expired; ++i) cache.set("old-" + std::to_string(i), "v", test::slow(400ms));
  std::this_thread::sleep_for(test::slow(500ms));
  auto before = files_in(dir);  // the writes above may have swept some already
  REQUIRE(before > 512 + 100);
  // 256 writes to one key: before, one of them swept the whole directory.
  // Now the 256th write examines 512 names, so at most 512 go.
  for (int i = 0; i < 256; ++i) cache.set("new", "v");
  auto left = files_in(dir);
  CHECK(left + 512 >= before + 1);
  CHECK(left < before + 1);  // but some did go
  // Writes keep sweeping, in steps, until only live entries are left.
  for (int i = 0; i < 8'000 && files_in(dir) > 1; i += 256) {
    for (int j = 0; j < 256; ++j) cache.set("new", "v");
  }
  CHECK(files_in(dir) == 1);
  // A sweep step rewinds at the end of the directory and starts over.
  for (int i = 0; i < 10; ++i) cache.set("again-" + std::to_string(i), "v", 50ms);
  std::this_thread::sleep_for(100ms);
  for (int i = 0; i < 3 * 256; ++i) cache.set("new", "v");
  CHECK(files_in(dir) == 1);
}

TEST_CASE("file: caches that make one write each still sweep now and then (as one `run` per process)") {
  auto dir = fresh_dir("fewwrites");
  cachelock::FileCache first{{.directory = dir}};
  first.set("old", "v", 50ms);
  auto old = first.path_for("old");
  std::this_thread::sleep_for(100ms);
  // One write per cache: a step comes with about one in 256; before, never.
  // 3,000 caches miss it with a chance of e^-11.7.
  int caches = 0;
  for (; caches < 3'000 && fs::exists(old); ++caches) cachelock::FileCache{{.directory = dir}}.set("new", "v");
  MESSAGE("the expired entry went after " << caches << " caches");
  CHECK_FALSE(fs::exists(old));
}

TEST_CASE("file: a sweep step that finds the previous one stopped at the last name rewinds and goes on") {
  auto dir = fresh_dir("rewind");
  cachelock::FileCache maker{{.directory = dir}};
  // 509 entries, "new" and the two names "." and "..": the 512 names one step examines.
  for (int i = 0; i < 509; ++i) maker.set("old-" + std::to_string(i), "v", test::slow(400ms));
  std::this_thread::sleep_for(test::slow(500ms));
  cachelock::FileCache cache{{.directory = dir}};
  // Any 256 writes make exactly one step: this one reads every name and stops at the last.
  for (int i = 0; i < 256; ++i) cache.set("new", "v");
  REQUIRE(files_in(dir) == 1);
  for (int i = 0; i < 10; ++i) maker.set("again-" + std::to_string(i), "v", test::slow(400ms));
  std::this_thread::sleep_for(test::slow(500ms));
  // The next step reads the end of the directory first: before, it rewound and examined nothing.
  for (int i = 0; i < 256; ++i) cache.set("new", "v");
  CHECK(files_in(dir) == 1);
}

TEST_CASE("file: a link, FIFO or hard link at an entry's name is refused, never written through") {
  auto dir = fresh_dir("planted");
  cachelock::FileCache cache{{.directory = dir}};
  cache.set("first", "makes the directory");
  auto entry = cache.path_for("k");
  auto target = dir + "/../planted-target";
  std::ofstream{target} << "untouched";
  auto content = [&] {
    std::ifstream in{target};
    return std::string{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  };
  SUBCASE("symbolic link") {
    fs::create_symlink(target, entry);
    CHECK_THROWS_WITH_AS(cache.add("k", "v"),
                         ("file cache '" + dir + "': add ':1:k' failed: " + entry +
                          " is a symbolic link, which is never followed; remove it")
                             .c_str(),
                         cachelock::CacheError);
    CHECK_THROWS_AS(cache.get("k"), cachelock::CacheError);
    CHECK(content() == "untouched");
    cache.sweep();
    CHECK(fs::is_symlink(entry));  // not the sweep's to judge either
  }
  SUBCASE("FIFO") {
    REQUIRE(::mkfifo(entry.c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(cache.set("k", "v"), doctest::Contains("is not a regular file (a FIFO); remove it"),
                         cachelock::CacheError);
    cache.sweep();
  }
  SUBCASE("hard link") {
    REQUIRE(::link(target.c_str(), entry.c_str()) == 0);
    CHECK_THROWS_WITH_AS(cache.set("k", "v"),
                         doctest::Contains("has 2 hard links, so writing it would change another file; remove it"),
                         cachelock::CacheError);
    CHECK(cache.sweep() == 0);
    CHECK(content() == "untouched");
  }
  fs::remove(target);
}

TEST_CASE("file: a directory others could write to is refused with ConfigError") {
  auto dir = fresh_dir("open");
  fs::create_directories(dir);
  ::chmod(dir.c_str(), 0777);
  cachelock::FileCache cache{{.directory = dir}};
  CHECK_THROWS_AS(cache.add("k", "v"), cachelock::ConfigError);
  CHECK_THROWS_AS(cache.get("k"), cachelock::ConfigError);
  CHECK_THROWS_AS(cache.sweep(), cachelock::ConfigError);
  CHECK(fs::is_empty(dir));
  ::chmod(dir.c_str(), 0750);  // group-readable, not writable: private files
  cachelock::FileCache fixed{{.directory = dir}};
  CHECK(fixed.add("k", "v"));
  struct stat info {};
  REQUIRE(::stat(fixed.path_for("k").c_str(), &info) == 0);
  CHECK((info.st_mode & 07777) == 0600);
}

TEST_CASE("file: in a group-writable directory entries are 0660 and of its group, whatever the umask") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: giving the directory another group needs root");
    return;
  }
  auto dir = fresh_dir("group");
  fs::create_directories(dir);
  constexpr gid_t group = 65534;  // nogroup: any group but ours
  REQUIRE(::chown(dir.c_str(), 0, group) == 0);
  REQUIRE(::chmod(dir.c_str(), 0770) == 0);
  auto old_mask = ::umask(077);
  cachelock::FileCache cache{{.directory = dir}};
  CHECK(cache.add("k", "v"));
  ::umask(old_mask);
  struct stat info {};
  REQUIRE(::stat(cache.path_for("k").c_str(), &info) == 0);
  CHECK((info.st_mode & 07777) == 0660);
  CHECK(info.st_gid == group);
}

TEST_CASE("file: a directory removed while in use is made again, and shared with new processes") {
  auto dir = fresh_dir("removed");
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = dir});
  CHECK(cache->add("before", "v"));
  fs::remove_all(dir);
  CHECK_FALSE(cache->get("before").has_value());
  cachelock::Lock mine{"job", {.cache = cache}};
  CHECK(fs::exists(cache->path_for("job")));
  CHECK(test::exit_code_in_child([&] {
          cachelock::FileCache other{{.directory = dir}};
          return other.get("job") ? 0 : 1;
        }) == 0);
}

TEST_CASE("file: max_entries culls, as Django's FileBasedCache") {
  auto dir = fresh_dir("cull");
  cachelock::FileCache cache{{.directory = dir}, {.max_entries = 30}};
  for (int i = 0; i < 100; ++i) cache.set("k-" + std::to_string(i), "v");
  CHECK(files_in(dir) <= 30);
  CHECK(files_in(dir) >= 15);
  cachelock::FileCache unbounded{{.directory = fresh_dir("nocull")}};
  for (int i = 0; i < 100; ++i) unbounded.set("k-" + std::to_string(i), "v");
  CHECK(files_in(unbounded.file_options().directory) == 100);
}

TEST_CASE("file: 4 processes x 2 threads x 5,000 increments of a counter file lose no update") {
  auto dir = fresh_dir("counter");
  fs::create_directories(dir);
  const std::string counter = dir + "/counter.txt";
  const std::string inside = dir + "/inside";
  std::ofstream{counter} << 0;
  constexpr int processes = 4, threads = 2, iterations = 5'000;

  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 0;
      try {
        auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = dir});
        std::atomic<int> failures{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([&] {
            cachelock::Mutex m{"counter", {.cache = cache}};
            for (int i = 0; i < iterations; ++i) {
              std::lock_guard guard{m};
              // A marker that only one holder at a time may create.
              int marker = ::open(inside.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
              if (marker < 0) ++failures;
              long value = 0;
              std::ifstream{counter} >> value;
              std::ofstream{counter, std::ios::trunc} << value + 1;
              if (marker >= 0) {
                ::close(marker);
                ::unlink(inside.c_str());
              }
            }
          });
        }
        for (auto& thread : pool) thread.join();
        code = failures.load() == 0 ? 0 : 3;
      } catch (...) {
        code = 4;
      }
      ::_exit(code);
    }
    children.push_back(pid);
  }
  for (auto pid : children) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);  // 3: two holders at once; 4: an error
  }
  long value = 0;
  std::ifstream{counter} >> value;
  CHECK(value == long{processes} * threads * iterations);
}
