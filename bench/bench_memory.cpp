// MemoryCache locks beside a std::mutex-guarded std::unordered_map doing the
// same work (insert-if-absent, then erase-if-equal), interleaved; threads on
// distinct keys; and two threads handing one key to each other.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>

#include <cachelock/cachelock.hpp>

#include "interleave.hpp"
#include "ratio_reporter.hpp"

namespace {

using namespace std::chrono_literals;

// The baseline: the least a lock in a map can cost.
struct MutexMap {
  std::mutex mutex;
  std::unordered_map<std::string, std::string> map;

  bool add(const std::string& key, const std::string& value) {
    std::lock_guard lock{mutex};
    return map.try_emplace(key, value).second;
  }
  bool erase_if_equals(const std::string& key, const std::string& value) {
    std::lock_guard lock{mutex};
    auto it = map.find(key);
    if (it == map.end() || it->second != value) return false;
    map.erase(it);
    return true;
  }
};

// The baseline plus what expiry needs at the least: each entry stamped with
// a deadline read off the precise monotonic clock, as MemoryCache does so
// that no entry goes before its timeout. It shows how much of a Lock
// cycle's ratio the clock alone takes.
struct DeadlineMap {
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::string value;
    Clock::time_point expires;
  };
  std::mutex mutex;
  std::unordered_map<std::string, Entry> map;

  bool add(const std::string& key, const std::string& value) {
    auto expires = Clock::now() + 300s;
    std::lock_guard lock{mutex};
    return map.try_emplace(key, Entry{value, expires}).second;
  }
  bool erase_if_equals(const std::string& key, const std::string& value) {
    std::lock_guard lock{mutex};
    auto it = map.find(key);
    if (it == map.end() || it->second.value != value) return false;
    map.erase(it);
    return true;
  }
};

// As long as a real owner token on this host, so both sides copy the same bytes.
const std::string& token_sized() {
  static const std::string token = [] {
    cachelock::Lock lock{"token-length", {.cache = std::make_shared<cachelock::MemoryCache>()}};
    return std::string(lock.token().size(), 't');
  }();
  return token;
}

// One lock cycle each way, interleaved (bench/interleave.hpp): the baseline;
// the baseline with a deadline per entry; Lock through the default alias and
// through a given cache; the Cache calls of a Lock cycle without the guard
// (no token drawn, no options or alias: what the backend itself costs); a
// once call.
void cycles(benchmark::State& state) {
  cachelock::CacheRegistry::global().reset();
  MutexMap map;
  DeadlineMap deadline_map;
  auto cache = std::make_shared<cachelock::MemoryCache>();
  auto bare = std::make_shared<cachelock::MemoryCache>();
  auto job = cachelock::once("nightly-{0}", [](int day) { return day; });
  const std::string key = "nightly-report";
  const auto& token = token_sized();
  bench::interleave(
      state, 256, {"baseline", "baseline_deadline", "lock", "lock_given_cache", "cache_calls", "once"},
      [&] {
        bool taken = map.add(key, token);
        benchmark::DoNotOptimize(taken);
        map.erase_if_equals(key, token);
      },
      [&] {
        bool taken = deadline_map.add(key, token);
        benchmark::DoNotOptimize(taken);
        deadline_map.erase_if_equals(key, token);
      },
      [&] {
        cachelock::Lock lock{key};
        benchmark::DoNotOptimize(lock.owns_lock());
      },
      [&] {
        cachelock::Lock lock{key, {.cache = cache}};
        benchmark::DoNotOptimize(lock.owns_lock());
      },
      [&] {
        bool taken = bare->add(key, token, 300s);
        benchmark::DoNotOptimize(taken);
        bare->erase_if_equals(key, token);
      },
      [&] {
        auto result = job(27);
        benchmark::DoNotOptimize(result);
      });
}
BENCHMARK(cycles);

// Threads locking distinct keys through the default alias, as workers do.
void lock_cycle_distinct_keys(benchmark::State& state) {
  if (state.thread_index() == 0) cachelock::CacheRegistry::global().reset();
  const std::string key = "worker-" + std::to_string(state.thread_index());
  for (auto _ : state) {
    cachelock::Lock lock{key};
    benchmark::DoNotOptimize(lock.owns_lock());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(lock_cycle_distinct_keys)->Threads(1)->Threads(2)->UseRealTime();

// Two threads taking one key, each waiting for the other (Lock's `wait`: on
// MemoryCache the waiter sleeps until the key is freed and is woken then).
// A handoff is an acquire by the thread that did not hold the key last.
// The critical section is empty.
std::atomic<int> last_holder{-1};

std::shared_ptr<cachelock::Cache> handoff_cache() {
  static const auto cache = std::make_shared<cachelock::MemoryCache>();
  return cache;
}

void lock_handoffs(benchmark::State& state) {
  std::int64_t handoffs = 0;
  std::int64_t errors = 0;
  const int me = state.thread_index();
  const auto cache = handoff_cache();
  for (auto _ : state) {
    try {
      cachelock::Lock lock{"handoff", {.cache = cache, .wait = 60s}};
      if (last_holder.exchange(me, std::memory_order_relaxed) != me) ++handoffs;
    } catch (const cachelock::Error&) {
      ++errors;
    }
  }
  state.SetItemsProcessed(state.iterations() - errors);
  state.counters["handoffs_per_second"] = benchmark::Counter(static_cast<double>(handoffs),
                                                             benchmark::Counter::kIsRate);
  state.counters["errors"] = static_cast<double>(errors);
}
BENCHMARK(lock_handoffs)->Threads(2)->UseRealTime();

// The same with a std::mutex: how often the kernel's futex hands it over.
std::mutex handoff_mutex;

void baseline_handoffs(benchmark::State& state) {
  std::int64_t handoffs = 0;
  const int me = state.thread_index();
  for (auto _ : state) {
    std::lock_guard lock{handoff_mutex};
    if (last_holder.exchange(me, std::memory_order_relaxed) != me) ++handoffs;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["handoffs_per_second"] = benchmark::Counter(static_cast<double>(handoffs),
                                                             benchmark::Counter::kIsRate);
}
BENCHMARK(baseline_handoffs)->Threads(2)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  using bench::Comparison;
  return bench::run(argc, argv, {
      // The targets are against the map that stamps a deadline: a lock must
      // expire, and a map that never expires anything is no lock.
      {.label = "memory: Lock cycle (default alias) vs mutex+map stamping a deadline", .subject = "cycles",
       .baseline = "cycles", .target = 2.0, .subject_counter = "lock_ns", .baseline_counter = "baseline_deadline_ns"},
      {.label = "memory: Lock cycle (given cache) vs mutex+map stamping a deadline", .subject = "cycles",
       .baseline = "cycles", .target = 2.0, .subject_counter = "lock_given_cache_ns",
       .baseline_counter = "baseline_deadline_ns"},
      {.label = "memory: Lock cycle (default alias) vs mutex+map", .subject = "cycles", .baseline = "cycles",
       .subject_counter = "lock_ns", .baseline_counter = "baseline_ns"},
      {.label = "memory: once call vs mutex+map", .subject = "cycles", .baseline = "cycles", .target = 2.0,
       .subject_counter = "once_ns", .baseline_counter = "baseline_ns"},
      {.label = "memory: Cache add+erase_if_equals, no Lock (the backend's share) vs mutex+map",
       .subject = "cycles", .baseline = "cycles", .subject_counter = "cache_calls_ns",
       .baseline_counter = "baseline_ns"},
      {.label = "memory: mutex+map stamping a deadline per entry (the clock read expiry needs) vs mutex+map",
       .subject = "cycles", .baseline = "cycles", .subject_counter = "baseline_deadline_ns",
       .baseline_counter = "baseline_ns"},
      {.label = "memory: 2 threads vs 1 on distinct keys (cycles/s)",
       .subject = "lock_cycle_distinct_keys/real_time/threads:2",
       .baseline = "lock_cycle_distinct_keys/real_time/threads:1", .kind = Comparison::Kind::throughput,
       .target = 1.6},
      {.label = "memory: 2 threads on one key with wait: handoffs/s vs std::mutex",
       .subject = "lock_handoffs/real_time/threads:2", .baseline = "baseline_handoffs/real_time/threads:2",
       .kind = Comparison::Kind::throughput, .subject_counter = "handoffs_per_second",
       .baseline_counter = "handoffs_per_second"},
  });
}
