// Memory per held lock: 1,000,000 distinct keys taken in one MemoryCache and
// held all at once, beside a std::mutex-guarded std::unordered_map holding
// the same keys and token-sized values. Bytes per lock = (peak RSS - RSS
// before) / keys, each measurement in a child process of its own (fork), so
// that one measurement's peak is not another's.
//
//   bench_scale [--keys=N] [--repetitions=N] [--rows_out=FILE]
//
// Cases: `locks` holds a cachelock::Lock per key (what a program holding
// them pays); `entries` makes the same Cache::add calls without Lock guards
// (what the MemoryCache itself keeps); `baseline` is the mutex+map.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <cachelock/cachelock.hpp>

#include "rows.hpp"

namespace {

using namespace std::chrono_literals;

enum class Case { locks, entries, baseline };
const char* const case_names[] = {"locks", "entries", "baseline"};

// A field of /proc/self/status ("VmRSS", "VmHWM"), in bytes; -1 if unknown.
long long status_bytes(const std::string& field) {
  std::ifstream status{"/proc/self/status"};
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with(field + ":")) return std::atoll(line.c_str() + field.size() + 1) * 1024;
  }
  return -1;
}

std::string key_of(std::size_t i) { return "job-" + std::to_string(i); }

// Bytes per key of one case, measured in this (child) process; -1 on failure.
double measure(Case what, std::size_t keys) {
  auto cache = std::make_shared<cachelock::MemoryCache>();
  std::string token;
  {
    cachelock::Lock probe{"probe", {.cache = cache}};
    token = probe.token();
  }
  std::unordered_map<std::string, std::string> map;
  std::mutex mutex;
  std::vector<cachelock::Lock> held;
  auto before = status_bytes("VmRSS");
  std::size_t stored = 0;
  switch (what) {
    case Case::locks:
      held.reserve(keys);
      for (std::size_t i = 0; i < keys; ++i) held.emplace_back(key_of(i), cachelock::LockOptions{.cache = cache});
      stored = cache->size();
      break;
    case Case::entries:
      for (std::size_t i = 0; i < keys; ++i) stored += cache->add(key_of(i), token, 300s) ? 1 : 0;
      break;
    case Case::baseline:
      for (std::size_t i = 0; i < keys; ++i) {
        std::lock_guard lock{mutex};
        stored += map.try_emplace(":1:" + key_of(i), token).second ? 1 : 0;
      }
      break;
  }
  auto peak = status_bytes("VmHWM");
  if (before < 0 || peak < 0 || stored != keys) return -1;
  return static_cast<double>(peak - before) / static_cast<double>(keys);
}

// Runs measure() in a child process and reads its result back.
double measure_apart(Case what, std::size_t keys) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return -1;
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::close(pipe_fds[0]);
    double result = -1;
    try {
      result = measure(what, keys);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_scale %s: %s\n", case_names[static_cast<int>(what)], e.what());
    }
    auto written = ::write(pipe_fds[1], &result, sizeof result);
    ::_exit(written == sizeof result ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  double result = -1;
  if (::read(pipe_fds[0], &result, sizeof result) != sizeof result) result = -1;
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return result;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  auto n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

std::string with_commas(std::size_t n) {
  auto digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  auto rows_out = bench::take_flag(argc, argv, "rows_out").value_or("");
  auto keys = static_cast<std::size_t>(std::atoll(bench::take_flag(argc, argv, "keys").value_or("1000000").c_str()));
  auto repetitions = std::atoi(bench::take_flag(argc, argv, "repetitions").value_or("3").c_str());
  if (argc > 1 || keys == 0 || repetitions < 1) {
    std::fprintf(stderr, "usage: bench_scale [--keys=N] [--repetitions=N] [--rows_out=FILE]\n");
    return 2;
  }
  std::printf("sizeof(cachelock::Lock) = %zu bytes\n", sizeof(cachelock::Lock));

  // Interleaved, so that a disturbance hits all cases alike.
  std::vector<double> results[3];
  bool failed = false;
  for (int r = 0; r < repetitions; ++r) {
    for (int c = 0; c < 3; ++c) {
      double bytes = measure_apart(static_cast<Case>(c), keys);
      std::printf("%-8s repetition %d: %.1f bytes per key\n", case_names[c], r + 1, bytes);
      if (bytes < 0) failed = true;
      results[c].push_back(bytes);
    }
  }
  std::fflush(stdout);

  auto count = with_commas(keys);
  std::vector<bench::Row> rows;
  auto row = [&](std::string label, int c, std::string target, double limit) {
    bench::Row out{.label = std::move(label)};
    if (failed) {
      out.error = "a measurement failed";
    } else {
      out.unit = "B";
      out.ours = median(results[c]);
      out.baseline = median(results[static_cast<int>(Case::baseline)]);
      out.ratio = out.ours / out.baseline;
      out.target = std::move(target);
      if (limit > 0) out.verdict = out.ours <= limit ? "met" : "missed";
    }
    rows.push_back(out);
  };
  row("scale: " + count + " held Locks in MemoryCache, bytes per lock (peak RSS delta / keys) vs mutex+map",
      static_cast<int>(Case::locks), "<= 200 B", 200);
  row("scale: the same keys as Cache::add entries, no Lock guards (the cache's share) vs mutex+map",
      static_cast<int>(Case::entries), "<= 200 B", 200);

  std::printf("\n| case | ours | baseline | ratio | target | verdict |\n|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    if (!r.error.empty()) {
      std::printf("| %s | not run: %s | | | | |\n", r.label.c_str(), r.error.c_str());
    } else {
      std::printf("| %s | %.0f B | %.0f B | %.2fx | %s | %s |\n", r.label.c_str(), r.ours, r.baseline, r.ratio,
                  r.target.empty() ? "-" : r.target.c_str(), r.verdict.empty() ? "-" : r.verdict.c_str());
    }
  }
  std::vector<std::string> lines;
  for (const auto& r : rows) lines.push_back(bench::to_json(r));
  bool written = bench::write_lines(rows_out, lines);
  return failed || !written ? 1 : 0;
}
