// What the torture cases share (test helper): a run's directory of
// histories and counter, the checker processes, and the verdict on them.
#pragma once

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <cachelock/cachelock.hpp>

#include "../process.hpp"
#include "../support.hpp"

namespace torture {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

inline double seconds_per_run() {
  const char* text = std::getenv("CACHELOCK_TORTURE_SECONDS");
  double value = text ? std::atof(text) : 2.0;
  return value > 0 ? value : 2.0;
}

inline std::string checker_path() {
  const char* path = std::getenv("CACHELOCK_CHECKER");
  REQUIRE_MESSAGE(path != nullptr, "CACHELOCK_CHECKER is not set; run the tests through meson test");
  return path;
}

struct Figures {
  long sections = 0, cache_errors = 0, lost = 0, max_call_us = 0, calls = 0;
};

inline Figures parse_figures(const std::string& line) {
  Figures f;
  std::sscanf(line.c_str(), "sections=%ld cache_errors=%ld lost=%ld max_call_us=%ld calls=%ld", &f.sections,
              &f.cache_errors, &f.lost, &f.max_call_us, &f.calls);
  return f;
}

struct Verdict {
  long sections = 0;  // lines in the histories
  long counter = 0;
  long overlaps = 0;
  long lost_updates() const { return sections - counter; }
};

// A run's directory: counter, one history per process, a lock directory.
struct Run {
  std::string dir;
  explicit Run(std::string_view name) {
    std::string pattern = (fs::temp_directory_path() / ("cachelock-torture-" + std::string{name} + "-XXXXXX")).string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir = pattern;
  }
  ~Run() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  std::string counter() const { return dir + "/counter"; }
  std::string history(int process) const { return dir + "/history-" + std::to_string(process); }

  std::vector<std::string> args(int process, const std::string& backend, const std::string& target, int threads,
                                double seconds, std::vector<std::string> extra = {}) const {
    std::vector<std::string> all{checker_path(), "--backend", backend, "--target", target,
                                 "--counter", counter(), "--history", history(process), "--threads",
                                 std::to_string(threads), "--seconds", std::to_string(seconds)};
    all.insert(all.end(), extra.begin(), extra.end());
    return all;
  }

  // Reads every history and checks it against the counter.
  Verdict verdict(int processes) const {
    struct Interval {
      long long start, end;
    };
    std::vector<Interval> intervals;
    for (int p = 0; p < processes; ++p) {
      std::ifstream in{history(p)};
      for (std::string line; std::getline(in, line);) {
        std::istringstream fields{line};
        long pid, tid;
        Interval i{};
        fields >> pid >> tid >> i.start >> i.end;
        intervals.push_back(i);
      }
    }
    std::sort(intervals.begin(), intervals.end(), [](auto& a, auto& b) { return a.start < b.start; });
    Verdict v;
    v.sections = static_cast<long>(intervals.size());
    long long latest_end = 0;
    for (const auto& i : intervals) {
      if (i.start < latest_end) ++v.overlaps;
      latest_end = std::max(latest_end, i.end);
    }
    std::ifstream{counter()} >> v.counter;
    return v;
  }
};

inline void report(const char* name, const Verdict& v, const Figures& f, std::string_view faults, long timeout_ms) {
  auto limit = timeout_ms > 0 ? " (timeout " + std::to_string(timeout_ms) + " ms)" : std::string{};
  std::printf("torture: %-42s sections %6ld  overlaps %ld  lost updates %ld  cache errors %ld  lost locks %ld"
              "  longest call %.1f ms%s  faults: %.*s\n",
              name, v.sections, v.overlaps, v.lost_updates(), f.cache_errors, f.lost, f.max_call_us / 1000.0,
              limit.c_str(), static_cast<int>(faults.size()), faults.data());
  std::fflush(stdout);
}

inline Figures total(std::vector<std::unique_ptr<test::Process>>& processes) {
  Figures sum;
  for (auto& p : processes) {
    p->wait();
    auto f = parse_figures(p->out());
    sum.sections += f.sections;
    sum.cache_errors += f.cache_errors;
    sum.lost += f.lost;
    sum.calls += f.calls;
    sum.max_call_us = std::max(sum.max_call_us, f.max_call_us);
  }
  return sum;
}

// P processes x T threads on one key; checks and reports.
inline Verdict plain_run(const char* name, const std::string& backend, const std::string& target, int processes,
                  int threads, long timeout_ms = 500) {
  Run run{backend};
  std::vector<std::unique_ptr<test::Process>> checkers;
  for (int p = 0; p < processes; ++p) {
    checkers.push_back(std::make_unique<test::Process>(
        run.args(p, backend, target.empty() ? run.dir + "/locks" : target, threads, seconds_per_run(),
                 {"--timeout-ms", std::to_string(timeout_ms)})));
  }
  auto figures = total(checkers);
  for (auto& c : checkers) CHECK(c->wait() == 0);
  auto v = run.verdict(processes);
  report(name, v, figures, "none", timeout_ms);
  CHECK(v.sections > 0);
  CHECK(v.overlaps == 0);
  CHECK(v.lost_updates() == 0);
  CHECK(figures.sections == v.sections);
  CHECK(figures.lost == 0);
  return v;
}

// One checker stalls inside its section and is killed with SIGKILL; the
// others must wait out the dead holder's ttl, then carry on, never overlapping.
inline void killed_holder(const char* name, const std::string& backend, const std::string& target, long ttl_ms) {
  Run run{backend + "-kill"};
  auto lock_target = target.empty() ? run.dir + "/locks" : target;
  auto marker = run.dir + "/stalled";
  // Long enough for the survivors to wait out the dead holder's lock (memcached
  // keeps it up to two seconds past its ttl) and then work on.
  double seconds = seconds_per_run() + 2 * ttl_ms / 1000.0 + 3;
  std::vector<std::unique_ptr<test::Process>> checkers;
  // The victim works alone until it stalls in a section: among busy pollers
  // it could wait long for its turn (locks are not fair). The others then
  // start, find the key held, and are waiting for it when the holder dies.
  checkers.push_back(std::make_unique<test::Process>(
      run.args(0, backend, lock_target, 1, seconds,
               {"--ttl-ms", std::to_string(ttl_ms), "--stall-after", "20", "--stall-marker", marker})));
  REQUIRE(test::eventually([&] { return fs::exists(marker); }, test::slow(30s)));
  for (int p = 1; p < 3; ++p) {
    checkers.push_back(std::make_unique<test::Process>(
        run.args(p, backend, lock_target, 2, seconds, {"--ttl-ms", std::to_string(ttl_ms)})));
  }
  std::this_thread::sleep_for(test::slow(200ms));
  checkers[0]->signal(SIGKILL);
  auto killed_at = run.verdict(3).sections;
  CHECK(checkers[0]->wait() == 128 + SIGKILL);
  std::vector<std::unique_ptr<test::Process>> survivors;
  survivors.push_back(std::move(checkers[1]));
  survivors.push_back(std::move(checkers[2]));
  auto figures = total(survivors);
  auto v = run.verdict(3);
  report(name, v, figures, "a holder killed with SIGKILL mid-section", 0);
  CHECK(v.sections > killed_at);  // the others went on after the ttl
  CHECK(v.overlaps == 0);
  CHECK(v.lost_updates() == 0);
  CHECK(figures.lost == 0);
}

// 3 checkers x 2 threads on `backend` at `target`; after 1 s `stop` cuts the
// server off for 1.5 s, then `resume` brings it back. Sections stop during
// the outage (acquires fail within their timeout, never a false "acquired"),
// resume after it, and none overlaps another.
template <class Stop, class Resume>
void outage(const char* name, std::string_view faults, const std::string& backend, const std::string& target,
            Stop stop, Resume resume) {
  constexpr long timeout_ms = 300;
  Run run{backend + "-outage"};
  std::vector<std::unique_ptr<test::Process>> checkers;
  for (int p = 0; p < 3; ++p) {
    checkers.push_back(std::make_unique<test::Process>(
        run.args(p, backend, target, 2, seconds_per_run() + 4, {"--timeout-ms", std::to_string(timeout_ms)})));
  }
  std::this_thread::sleep_for(1s);
  stop();
  auto before = run.verdict(3).sections;
  std::this_thread::sleep_for(1500ms);
  auto during = run.verdict(3).sections;
  resume();
  auto figures = total(checkers);
  auto v = run.verdict(3);
  report(name, v, figures, faults, timeout_ms);
  CHECK(before > 0);
  CHECK(during - before <= 6);      // at most the sections under way when it stopped
  CHECK(v.sections > during);       // sections resumed after it
  CHECK(figures.cache_errors > 0);  // acquires failed meanwhile: never a false "acquired"
  CHECK(v.overlaps == 0);
  CHECK(v.lost_updates() == 0);
  CHECK(figures.max_call_us < (2 * timeout_ms + 500) * 1000);
}

// A holder whose section outlives its ttl: it learns so from extend() and
// release(), and never deletes the next owner's lock.
inline void outlived_ttl(const std::shared_ptr<cachelock::Cache>& cache, std::chrono::milliseconds ttl,
                  std::chrono::milliseconds expired_after) {
  cachelock::Lock late{"job", {.cache = cache, .ttl = ttl}};
  std::this_thread::sleep_for(expired_after);
  cachelock::Lock next{"job", {.cache = cache}};
  CHECK_FALSE(late.extend());
  CHECK_FALSE(late.release());
  CHECK(cache->get("job") == next.token());
  CHECK(next.release());
}

// fork() while holding: the child's copies of the guards do nothing to the
// parent's lock, whatever the child does with them.
inline void fork_while_holding(const std::shared_ptr<cachelock::Cache>& cache) {
  auto lock = std::make_unique<cachelock::Lock>("job", cachelock::LockOptions{.cache = cache});
  cachelock::Mutex mutex{"mutex-job", {.cache = cache}};
  mutex.lock();
  auto token = lock->token();
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int code = 0;
    try {
      if (lock->release()) code = 10;  // must not release the parent's lock
      if (lock->extend()) code = 11;
      mutex.unlock();
      lock.reset();
    } catch (...) {
      code = 12;
    }
    ::_exit(code);  // and no destructor of a parent's guard runs here either
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(cache->get("job") == token);
  CHECK(cache->get("mutex-job").has_value());
  CHECK(lock->release());
  mutex.unlock();
  CHECK_FALSE(cache->get("mutex-job").has_value());
}

}  // namespace torture
