// MemoryCache locks beside a std::mutex-guarded std::unordered_map doing the
// same work (insert-if-absent, then erase), in one run.
#include <benchmark/benchmark.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include <cachelock/cachelock.hpp>

#include "ratio_reporter.hpp"

namespace {

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

// As long as an owner token, so both sides copy the same bytes.
const std::string token_sized(45, 't');

void baseline_cycle(benchmark::State& state) {
  MutexMap map;
  const std::string key = "nightly-report";
  for (auto _ : state) {
    bool taken = map.add(key, token_sized);
    benchmark::DoNotOptimize(taken);
    map.erase_if_equals(key, token_sized);
  }
}
BENCHMARK(baseline_cycle);

void lock_cycle(benchmark::State& state) {
  cachelock::CacheRegistry::global().reset();
  for (auto _ : state) {
    cachelock::Lock lock{"nightly-report"};
    benchmark::DoNotOptimize(lock.owns_lock());
  }
}
BENCHMARK(lock_cycle);

void lock_cycle_given_cache(benchmark::State& state) {
  auto cache = std::make_shared<cachelock::MemoryCache>();
  for (auto _ : state) {
    cachelock::Lock lock{"nightly-report", {.cache = cache}};
    benchmark::DoNotOptimize(lock.owns_lock());
  }
}
BENCHMARK(lock_cycle_given_cache);

void once_call(benchmark::State& state) {
  cachelock::CacheRegistry::global().reset();
  auto job = cachelock::once("nightly-{0}", [](int day) { return day; });
  for (auto _ : state) {
    auto result = job(27);
    benchmark::DoNotOptimize(result);
  }
}
BENCHMARK(once_call);

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

}  // namespace

int main(int argc, char** argv) {
  using bench::Comparison;
  return bench::run(argc, argv, {
      {"memory: Lock cycle (default alias) vs mutex+map", "lock_cycle", "baseline_cycle",
       Comparison::Kind::time, 2.0},
      {"memory: Lock cycle (given cache) vs mutex+map", "lock_cycle_given_cache", "baseline_cycle",
       Comparison::Kind::time, 2.0},
      {"memory: once call vs mutex+map", "once_call", "baseline_cycle", Comparison::Kind::time, 2.0},
      {"memory: 2 threads vs 1 on distinct keys (throughput)",
       "lock_cycle_distinct_keys/real_time/threads:2", "lock_cycle_distinct_keys/real_time/threads:1",
       Comparison::Kind::throughput, 1.6},
  });
}
