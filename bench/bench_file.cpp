// FileCache locks beside the same work done with raw system calls,
// interleaved (bench/interleave.hpp), in a fresh directory under $TMPDIR
// (else /tmp), removed at exit:
//   - a bare lock file: open(O_CREAT), flock, write the token; release:
//     unlink, close (5 system calls);
//   - the 16 system calls a FileCache cycle makes, without the library:
//     acquire: open(O_CREAT), flock, fstat, stat, fstat, pwrite, ftruncate,
//     close; release: open, flock, fstat, stat, fstat, pread, unlink, close.
// And, with 20,000 other locks held in the directory, the acquire alone
// (each one timed) beside the raw calls of an acquire: the 99th percentile
// and the worst, which show whether one acquire pays for the others (a sweep
// of the whole directory did: 163 ms).
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <cachelock/cachelock.hpp>

#include "interleave.hpp"
#include "ratio_reporter.hpp"

namespace {

std::string directory;  // set in main
std::vector<std::unique_ptr<cachelock::Lock>> held_locks;  // made by held_20000, released in main

// As long as a real owner token on this host.
const std::string& token_sized() {
  static const std::string token = [] {
    cachelock::Lock lock{"token-length", {.cache = std::make_shared<cachelock::MemoryCache>()}};
    return std::string(lock.token().size(), 't');
  }();
  return token;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// A bare lock file: open(O_CREAT), flock, write the token; unlink, close.
struct RawLockFile {
  std::string path = directory + "/raw.lock";

  void operator()() const {
    const auto& token = token_sized();
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) fail("open " + path);
    bool ok = ::flock(fd, LOCK_EX | LOCK_NB) == 0 &&
              ::pwrite(fd, token.data(), token.size(), 0) == static_cast<ssize_t>(token.size()) &&
              ::unlink(path.c_str()) == 0;
    int error = errno;
    ::close(fd);
    errno = error;
    if (!ok) fail("raw lock file " + path);
  }
};

// The system calls of a FileCache cycle, with a record the size FileCache
// writes: a 56-byte header, the stored key, the token.
struct RawSameCalls {
  std::string path = directory + "/raw-same.cachelock";
  std::string record = std::string(56 + std::string{":1:nightly-report"}.size() + token_sized().size(), 'r');
  mutable std::string buffer = std::string(record.size(), '\0');

  // Opens and locks the file, and checks it is still the one at the path.
  int locked(int flags) const {
    int fd = ::open(path.c_str(), flags | O_RDWR | O_CLOEXEC, 0600);
    struct stat by_fd {}, by_path {}, size {};
    if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0 || ::fstat(fd, &by_fd) != 0 ||
        ::stat(path.c_str(), &by_path) != 0 || by_fd.st_ino != by_path.st_ino || ::fstat(fd, &size) != 0) {
      if (fd >= 0) ::close(fd);
      return -1;
    }
    return fd;
  }

  void operator()() const {
    int fd = locked(O_CREAT);
    bool ok = fd >= 0 && ::pwrite(fd, record.data(), record.size(), 0) == static_cast<ssize_t>(record.size()) &&
              ::ftruncate(fd, static_cast<off_t>(record.size())) == 0;
    if (fd >= 0) ::close(fd);
    fd = ok ? locked(0) : -1;
    ok = fd >= 0 && ::pread(fd, buffer.data(), buffer.size(), 0) == static_cast<ssize_t>(buffer.size()) &&
         buffer == record && ::unlink(path.c_str()) == 0;
    if (fd >= 0) ::close(fd);
    if (!ok) fail("raw FileCache system calls on " + path);
  }
};

// The three interleaved (bench/interleave.hpp).
void cycles(benchmark::State& state) {
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = directory});
  bench::interleave(
      state, 1, {"lock", "raw_lock_file", "raw_same_calls"},
      [&] {
        cachelock::Lock lock{"nightly-report", {.cache = cache}};
        benchmark::DoNotOptimize(lock.owns_lock());
      },
      RawLockFile{}, RawSameCalls{});
}
BENCHMARK(cycles);

// The value at fraction `q` (0.99: the 99th percentile) of `samples`.
double percentile(std::vector<double> samples, double q) {
  if (samples.empty()) return 0;
  auto at = static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1));
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(at), samples.end());
  return samples[at];
}

// Acquires, each timed alone, in a directory that holds 20,000 other locks;
// the raw calls of an acquire (RawSameCalls::locked, pwrite, ftruncate)
// interleaved with them as the baseline. Releases are not timed.
void held_20000(benchmark::State& state) {
  constexpr int held = 20'000;
  auto dir = directory + "/held";
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = dir});
  if (held_locks.empty()) {  // made once, kept for every repetition
    for (int i = 0; i < held; ++i) {
      held_locks.push_back(std::make_unique<cachelock::Lock>("held-" + std::to_string(i),
                                                        cachelock::LockOptions{.cache = cache, .ttl = std::chrono::hours{1}}));
    }
  }
  RawSameCalls raw;
  raw.path = dir + "/raw-same.cachelock";
  std::vector<double> lock_ns, raw_ns;
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point start) {
    return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  };
  bool lock_first = false;
  for (auto _ : state) {
    lock_first = !lock_first;  // neither always runs just after the other's release
    for (int turn = 0; turn < 2; ++turn) {
      if ((turn == 0) == lock_first) {
        cachelock::Lock lock{"probe", std::defer_lock, {.cache = cache}};
        auto start = Clock::now();
        bool taken = lock.try_acquire();
        lock_ns.push_back(since(start));
        if (!taken) {
          state.SkipWithError("probe is held");
          return;
        }
      } else {
        auto start = Clock::now();
        int fd = raw.locked(O_CREAT);
        bool ok = fd >= 0 &&
                  ::pwrite(fd, raw.record.data(), raw.record.size(), 0) == static_cast<ssize_t>(raw.record.size()) &&
                  ::ftruncate(fd, static_cast<off_t>(raw.record.size())) == 0;
        if (fd >= 0) ::close(fd);
        raw_ns.push_back(since(start));
        if (!ok || ::unlink(raw.path.c_str()) != 0) {
          state.SkipWithError("raw acquire failed");
          return;
        }
      }
    }
  }
  state.counters["lock_p99_ns"] = percentile(lock_ns, 0.99);
  state.counters["raw_p99_ns"] = percentile(raw_ns, 0.99);
  state.counters["lock_max_ns"] = lock_ns.empty() ? 0 : *std::max_element(lock_ns.begin(), lock_ns.end());
  state.counters["raw_max_ns"] = raw_ns.empty() ? 0 : *std::max_element(raw_ns.begin(), raw_ns.end());
}
BENCHMARK(held_20000);

}  // namespace

int main(int argc, char** argv) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string{tmp && *tmp ? tmp : "/tmp"} + "/cachelock-bench-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror(("bench_file: mkdtemp " + pattern).c_str());
    return 1;
  }
  directory = pattern;
  std::printf("files in %s\n", directory.c_str());
  using bench::Comparison;
  int rc = bench::run(argc, argv, {
      {.label = "file: Lock cycle vs raw open+flock+write+unlink", .subject = "cycles", .baseline = "cycles",
       .subject_counter = "lock_ns", .baseline_counter = "raw_lock_file_ns"},
      {.label = "file: Lock cycle vs its own 16 system calls made raw", .subject = "cycles",
       .baseline = "cycles", .subject_counter = "lock_ns", .baseline_counter = "raw_same_calls_ns"},
      {.label = "file: acquire p99 with 20,000 held vs its system calls made raw", .subject = "held_20000",
       .baseline = "held_20000", .subject_counter = "lock_p99_ns", .baseline_counter = "raw_p99_ns"},
      {.label = "file: worst acquire with 20,000 held vs its system calls made raw", .subject = "held_20000",
       .baseline = "held_20000", .subject_counter = "lock_max_ns", .baseline_counter = "raw_max_ns"},
  });
  held_locks.clear();
  std::error_code ignored;
  std::filesystem::remove_all(directory, ignored);
  return rc;
}
