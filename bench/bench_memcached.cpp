// memcached locks beside raw libmemcached doing the same operations (add,
// then gets and cas), in one run against one memcached that this program
// starts on a free loopback port (tests/memcached_server.hpp).
//
// A bare `get` miss is one round trip; the cycle's time divided by it reads
// as the cycle's length in round trips.
#include <benchmark/benchmark.h>
#include <libmemcached/memcached.h>

#include <cstdio>
#include <memory>
#include <string>

#include <cachelock/cachelock.hpp>

#include "../tests/memcached_server.hpp"
#include "ratio_reporter.hpp"

namespace {

test::MemcachedProcess* server = nullptr;

cachelock::MemcachedOptions options(bool binary) {
  return {.servers = {server->server()}, .binary = binary};
}

// As long as an owner token ("host:pid:unix_ms:16 hex digits"), so both
// sides send the same bytes.
const std::string token_sized(45, 't');

// A libmemcached handle configured as MemcachedCache configures its own.
struct Raw {
  memcached_st* handle = memcached_create(nullptr);
  explicit Raw(bool binary) {
    memcached_server_add(handle, "127.0.0.1", static_cast<in_port_t>(server->port()));
    memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, binary);
    memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
    memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 1000);
    memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 1000);
  }
  ~Raw() { memcached_free(handle); }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  // add, gets, cas with an expiry in the past: what a Lock cycle sends.
  bool cycle(const std::string& key, benchmark::State& state) {
    if (memcached_add(handle, key.data(), key.size(), token_sized.data(), token_sized.size(), 300, 0) !=
        MEMCACHED_SUCCESS) {
      state.SkipWithError("raw add failed");
      return false;
    }
    const char* keys[] = {key.data()};
    const std::size_t lengths[] = {key.size()};
    memcached_return_t rc = memcached_mget(handle, keys, lengths, 1);
    memcached_result_st result;
    memcached_result_create(handle, &result);
    std::uint64_t cas = 0;
    bool equal = false;
    while (memcached_fetch_result(handle, &result, &rc) != nullptr) {
      cas = memcached_result_cas(&result);
      equal = std::string_view{memcached_result_value(&result), memcached_result_length(&result)} ==
              token_sized;
    }
    memcached_result_free(&result);
    if (!equal ||
        memcached_cas(handle, key.data(), key.size(), token_sized.data(), token_sized.size(), 2592001, 0,
                      cas) != MEMCACHED_SUCCESS) {
      state.SkipWithError("raw gets/cas failed");
      return false;
    }
    return true;
  }
};

void raw_get_miss(benchmark::State& state) {
  Raw raw{state.range(0) != 0};
  const std::string key = ":1:missing";
  for (auto _ : state) {
    std::size_t length = 0;
    std::uint32_t flags = 0;
    memcached_return_t rc;
    char* value = memcached_get(raw.handle, key.data(), key.size(), &length, &flags, &rc);
    if (rc != MEMCACHED_NOTFOUND) state.SkipWithError("raw get did not miss");
    std::free(value);
  }
}
BENCHMARK(raw_get_miss)->Arg(0)->Arg(1)->UseRealTime();

void get_miss(benchmark::State& state) {
  cachelock::MemcachedCache cache{options(state.range(0) != 0)};
  for (auto _ : state) {
    auto value = cache.get("missing");
    benchmark::DoNotOptimize(value);
  }
}
BENCHMARK(get_miss)->Arg(0)->Arg(1)->UseRealTime();

void raw_cycle(benchmark::State& state) {
  Raw raw{state.range(0) != 0};
  const std::string key = ":1:nightly-report";
  for (auto _ : state) {
    if (!raw.cycle(key, state)) break;
  }
}
BENCHMARK(raw_cycle)->Arg(0)->Arg(1)->UseRealTime();

void lock_cycle(benchmark::State& state) {
  auto cache = std::make_shared<cachelock::MemcachedCache>(options(state.range(0) != 0));
  for (auto _ : state) {
    cachelock::Lock lock{"nightly-report", {.cache = cache}};
    benchmark::DoNotOptimize(lock.owns_lock());
  }
}
BENCHMARK(lock_cycle)->Arg(0)->Arg(1)->UseRealTime();

void lock_cycle_default_alias(benchmark::State& state) {
  auto& registry = cachelock::CacheRegistry::global();
  registry.reset();
  registry.add("default", std::make_shared<cachelock::MemcachedCache>(options(false)));
  for (auto _ : state) {
    cachelock::Lock lock{"nightly-report"};
    benchmark::DoNotOptimize(lock.owns_lock());
  }
  registry.reset();
}
BENCHMARK(lock_cycle_default_alias)->UseRealTime();

void once_call(benchmark::State& state) {
  auto cache = std::make_shared<cachelock::MemcachedCache>(options(false));
  auto job = cachelock::once("nightly-{0}", {.cache = cache}, [](int day) { return day; });
  for (auto _ : state) {
    auto result = job(27);
    if (!result) state.SkipWithError("once did not run");
    benchmark::DoNotOptimize(result);
  }
}
BENCHMARK(once_call)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  test::MemcachedProcess memcached;
  server = &memcached;
  std::printf("memcached %s on %s\n", memcached.command("version\r\n").substr(8, 6).c_str(),
              memcached.location().c_str());
  using bench::Comparison;
  return bench::run(argc, argv, {
      {"memcached text: Lock cycle vs raw add+gets+cas", "lock_cycle/0/real_time",
       "raw_cycle/0/real_time", Comparison::Kind::time, 1.15},
      {"memcached binary: Lock cycle vs raw add+gets+cas", "lock_cycle/1/real_time",
       "raw_cycle/1/real_time", Comparison::Kind::time, 1.15},
      {"memcached text: Lock cycle (default alias) vs raw", "lock_cycle_default_alias/real_time",
       "raw_cycle/0/real_time", Comparison::Kind::time, 1.15},
      {"memcached text: once call vs raw add+gets+cas", "once_call/real_time", "raw_cycle/0/real_time",
       Comparison::Kind::time, 1.15},
      {"memcached text: get miss vs raw get miss", "get_miss/0/real_time", "raw_get_miss/0/real_time",
       Comparison::Kind::time, 1.15},
      {"memcached text: Lock cycle in round trips (/ raw get miss)", "lock_cycle/0/real_time",
       "raw_get_miss/0/real_time", Comparison::Kind::plain},
      {"memcached text: raw cycle in round trips (/ raw get miss)", "raw_cycle/0/real_time",
       "raw_get_miss/0/real_time", Comparison::Kind::plain},
      {"memcached binary: Lock cycle in round trips (/ raw get miss)", "lock_cycle/1/real_time",
       "raw_get_miss/1/real_time", Comparison::Kind::plain},
  });
}
