// memcached locks beside raw libmemcached doing the same operations (add,
// then gets and cas), interleaved, against one memcached: the one given with
// --memcached=HOST:PORT (scripts/bench starts it), else one this program
// starts on a free loopback port (tests/memcached_server.hpp).
//
// Run memcached with one worker thread (-t 1), as both do: with several,
// each connection stays on the worker it was given, and how the kernel places
// those threads made one connection's round trips up to 1.7x another's on a
// 2-core machine, whichever client used it.
//
// A bare `get` miss is one round trip; the cycle's time divided by it reads
// as the cycle's length in round trips.
#include <benchmark/benchmark.h>
#include <libmemcached/memcached.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <cachelock/cachelock.hpp>
#include <cachelock/once.hpp>

#include "../tests/memcached_server.hpp"
#include "interleave.hpp"
#include "ratio_reporter.hpp"

namespace {

cachelock::MemcachedServer server;

cachelock::MemcachedOptions options(bool binary) {
  return {.servers = {server}, .binary = binary};
}

// As long as a real owner token on this host, so both sides send the same bytes.
const std::string& token_sized() {
  static const std::string token = [] {
    cachelock::Lock lock{"token-length", {.cache = std::make_shared<cachelock::MemoryCache>()}};
    return std::string(lock.token().size(), 't');
  }();
  return token;
}

// A libmemcached handle configured as MemcachedCache configures its own.
struct Raw {
  memcached_st* handle = memcached_create(nullptr);
  explicit Raw(bool binary) {
    memcached_server_add(handle, server.host.c_str(), server.port);
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
  // Throws std::runtime_error if a step fails.
  void cycle(const std::string& key) {
    const auto& token = token_sized();
    auto rc = memcached_add(handle, key.data(), key.size(), token.data(), token.size(), 300, 0);
    if (rc != MEMCACHED_SUCCESS) fail("add", rc);
    const char* keys[] = {key.data()};
    const std::size_t lengths[] = {key.size()};
    rc = memcached_mget(handle, keys, lengths, 1);
    if (rc != MEMCACHED_SUCCESS) fail("gets", rc);
    memcached_result_st result;
    memcached_result_create(handle, &result);
    std::uint64_t cas = 0;
    bool equal = false;
    while (memcached_fetch_result(handle, &result, &rc) != nullptr) {
      cas = memcached_result_cas(&result);
      equal = std::string_view{memcached_result_value(&result), memcached_result_length(&result)} == token;
    }
    memcached_result_free(&result);
    if (!equal) throw std::runtime_error("raw gets did not find the token");
    rc = memcached_cas(handle, key.data(), key.size(), token.data(), token.size(), 2592001, 0, cas);
    if (rc != MEMCACHED_SUCCESS) fail("cas", rc);
  }

  [[noreturn]] void fail(const char* op, memcached_return_t rc) const {
    throw std::runtime_error(std::string{"raw "} + op + " failed: " + memcached_strerror(handle, rc));
  }
};

// A plain socket doing the meta protocol's owner-safe cycle: `ms ... ME c`
// (add, returning the CAS id), then `md ... C<cas>`. What a Lock cycle on
// the meta path sends, with nothing around it.
struct RawMeta {
  int fd = test::connect_loopback(server.port);
  RawMeta() {
    if (fd < 0) throw std::runtime_error("raw meta: cannot connect");
    int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  }
  ~RawMeta() { ::close(fd); }
  RawMeta(const RawMeta&) = delete;
  RawMeta& operator=(const RawMeta&) = delete;

  std::string round_trip(const std::string& request) {
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
      throw std::runtime_error("raw meta: send failed");
    }
    std::string reply;
    char buffer[512];
    while (!reply.ends_with("\r\n")) {
      auto n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) throw std::runtime_error("raw meta: recv failed");
      reply.append(buffer, static_cast<std::size_t>(n));
    }
    return reply;
  }

  void cycle(const std::string& key) {
    const auto& token = token_sized();
    auto added = round_trip("ms " + key + " " + std::to_string(token.size()) + " T300 ME c\r\n" + token + "\r\n");
    if (!added.starts_with("HD c")) throw std::runtime_error("raw meta add failed: " + added);
    auto cas = added.substr(4, added.size() - 6);
    if (round_trip("md " + key + " C" + cas + "\r\n") != "HD\r\n") throw std::runtime_error("raw meta delete failed");
  }
};

// A bare get of a missing key through a handle: one round trip.
void raw_get_miss(Raw& raw) {
  static const std::string key = ":1:missing";
  std::size_t length = 0;
  std::uint32_t flags = 0;
  memcached_return_t rc;
  char* value = memcached_get(raw.handle, key.data(), key.size(), &length, &flags, &rc);
  std::free(value);
  if (rc != MEMCACHED_NOTFOUND) throw std::runtime_error("raw get did not miss");
}

// Each cycle and its baselines interleaved (bench/interleave.hpp), one
// protocol per benchmark (0: text, 1: binary): a get miss, raw and ours; the
// raw add+gets+cas; a Lock cycle through a given cache and, in text, through
// the default alias, and a once call.
void cycles(benchmark::State& state) {
  const bool binary = state.range(0) != 0;
  Raw raw{binary};
  auto cache = std::make_shared<cachelock::MemcachedCache>(options(binary));
  auto& registry = cachelock::CacheRegistry::global();
  registry.reset();
  registry.add("default", std::make_shared<cachelock::MemcachedCache>(options(binary)));
  auto job = cachelock::once("nightly-{0}", {.cache = cache}, [](int day) { return day; });
  const std::string key = "nightly-report";
  const std::string stored_key = ":1:" + key;
  auto raw_cycle = [&] { raw.cycle(stored_key); };
  RawMeta meta;
  auto raw_meta_cycle = [&] { meta.cycle(":1:meta-report"); };
  cachelock::Lock held{"held-report", {.cache = cache, .ttl = std::chrono::seconds{300}}};
  auto extend = [&] {
    if (!held.extend()) throw std::runtime_error("extend failed");
  };
  auto without_meta = std::make_shared<cachelock::MemcachedCache>([&] {
    auto o = options(binary);
    o.meta_protocol = false;
    return o;
  }());
  auto lock_without_meta = [&] {
    cachelock::Lock lock{key, {.cache = without_meta}};
    benchmark::DoNotOptimize(lock.owns_lock());
  };
  auto lock_cycle = [&] {
    cachelock::Lock lock{key, {.cache = cache}};
    benchmark::DoNotOptimize(lock.owns_lock());
  };
  auto get_miss = [&] {
    auto value = cache->get("missing");
    benchmark::DoNotOptimize(value);
  };
  if (binary) {
    bench::interleave(state, 1,
                      {"raw_get_miss", "get_miss", "raw_cycle", "raw_meta_cycle", "lock", "lock_without_meta",
                       "extend"},
                      [&] { raw_get_miss(raw); }, get_miss, raw_cycle, raw_meta_cycle, lock_cycle, lock_without_meta,
                      extend);
  } else {
    bench::interleave(
        state, 1,
        {"raw_get_miss", "get_miss", "raw_cycle", "raw_meta_cycle", "lock", "lock_without_meta", "extend",
         "lock_default_alias", "once"},
        [&] { raw_get_miss(raw); }, get_miss, raw_cycle, raw_meta_cycle, lock_cycle, lock_without_meta, extend,
        [&] {
          cachelock::Lock lock{"alias-report"};
          benchmark::DoNotOptimize(lock.owns_lock());
        },
        [&] {
          auto result = job(27);
          if (!result) throw std::runtime_error("once did not run");
        });
  }
  registry.reset();
}
BENCHMARK(cycles)->Arg(0)->Arg(1)->UseRealTime();

// A Lock cycle alone, for bench/django_peer_bench.py, which times it between
// Django's cycles.
void lock_cycle(benchmark::State& state) {
  auto cache = std::make_shared<cachelock::MemcachedCache>(options(state.range(0) != 0));
  for (auto _ : state) {
    cachelock::Lock lock{"nightly-report", {.cache = cache}};
    benchmark::DoNotOptimize(lock.owns_lock());
  }
}
BENCHMARK(lock_cycle)->Arg(0)->UseRealTime();

// Threads sharing one MemcachedCache (so its pool of pool_size connections),
// each locking its own key. Every failure is counted, none is retried.
std::shared_ptr<cachelock::MemcachedCache> shared_cache;

void shared_cache_threads(benchmark::State& state) {
  const std::string key = "worker-" + std::to_string(state.thread_index());
  std::int64_t errors = 0;
  for (auto _ : state) {
    try {
      cachelock::Lock lock{key, {.cache = shared_cache}};
      benchmark::DoNotOptimize(lock.owns_lock());
    } catch (const std::exception& e) {
      if (errors++ == 0) std::fprintf(stderr, "thread %d: %s\n", state.thread_index(), e.what());
    }
  }
  state.SetItemsProcessed(state.iterations() - errors);
  state.counters["errors"] = static_cast<double>(errors);
}
BENCHMARK(shared_cache_threads)->Threads(1)->Threads(64)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<test::MemcachedProcess> own;
  try {
    if (auto given = bench::take_flag(argc, argv, "memcached")) {
      server = cachelock::MemcachedServer::parse(*given);
    } else {
      own = std::make_unique<test::MemcachedProcess>(std::vector<std::string>{"-t", "1"});
      server = own->server();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_memcached: %s\n", e.what());
    return 1;
  }
  std::printf("memcached at %s\n", server.to_string().c_str());
  shared_cache = std::make_shared<cachelock::MemcachedCache>(options(false));
  auto pool = std::to_string(shared_cache->memcached_options().pool_size);
  using bench::Comparison;
  auto text = [](std::string label, std::string subject, std::string baseline, double target = 0) {
    return Comparison{.label = "memcached text: " + std::move(label), .subject = "cycles/0/real_time",
                      .baseline = "cycles/0/real_time", .target = target,
                      .subject_counter = std::move(subject), .baseline_counter = std::move(baseline)};
  };
  auto binary = [](std::string label, std::string subject, std::string baseline, double target = 0) {
    return Comparison{.label = "memcached binary: " + std::move(label), .subject = "cycles/1/real_time",
                      .baseline = "cycles/1/real_time", .target = target,
                      .subject_counter = std::move(subject), .baseline_counter = std::move(baseline)};
  };
  int rc = bench::run(argc, argv, {
      text("Lock cycle vs raw socket ms ME + md C", "lock_ns", "raw_meta_cycle_ns", 1.1),
      binary("Lock cycle vs raw socket ms ME + md C", "lock_ns", "raw_meta_cycle_ns", 1.1),
      text("Lock cycle without meta vs raw add+gets+cas", "lock_without_meta_ns", "raw_cycle_ns", 1.15),
      binary("Lock cycle without meta vs raw add+gets+cas", "lock_without_meta_ns", "raw_cycle_ns", 1.15),
      text("Lock cycle (default alias) vs raw socket ms ME + md C", "lock_default_alias_ns", "raw_meta_cycle_ns", 1.1),
      text("once call vs raw socket ms ME + md C", "once_ns", "raw_meta_cycle_ns", 1.1),
      text("get miss vs raw get miss", "get_miss_ns", "raw_get_miss_ns"),
      text("Lock cycle in round trips (/ raw get miss)", "lock_ns", "raw_get_miss_ns", 2.2),
      binary("Lock cycle in round trips (/ raw get miss)", "lock_ns", "raw_get_miss_ns", 2.2),
      text("extend in round trips (/ raw get miss)", "extend_ns", "raw_get_miss_ns", 1.1),
      binary("extend in round trips (/ raw get miss)", "extend_ns", "raw_get_miss_ns", 1.1),
      text("Lock cycle without meta in round trips (/ raw get miss)", "lock_without_meta_ns", "raw_get_miss_ns"),
      text("raw add+gets+cas in round trips (/ raw get miss)", "raw_cycle_ns", "raw_get_miss_ns"),
      {.label = "memcached text: 64 threads vs 1 sharing one MemcachedCache (pool_size " + pool + "), cycles/s",
       .subject = "shared_cache_threads/real_time/threads:64",
       .baseline = "shared_cache_threads/real_time/threads:1", .kind = Comparison::Kind::throughput,
       .zero_counter = "errors"},
  });
  shared_cache.reset();
  return rc;
}
