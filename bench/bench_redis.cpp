// Redis locks beside raw hiredis doing the same commands (SET NX PX, then
// EVALSHA compare-and-delete), interleaved, against one redis-server: the one
// given with --redis=redis://HOST:PORT, else one this program starts on a
// free loopback port (tests/redis_server.hpp).
//
// A bare PING is one round trip; a cycle's time divided by it reads as the
// cycle's length in round trips.
#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <cachelock/cachelock.hpp>

#include "../src/redis_scripts.hpp"
#include "../tests/redis_server.hpp"
#include "interleave.hpp"
#include "ratio_reporter.hpp"

namespace {

cachelock::RedisServer server;

// As long as our pickled owner token on this host, so both sides send the same bytes.
const std::string& token_sized() {
  static const std::string token = [] {
    cachelock::Lock lock{"token-length", {.cache = std::make_shared<cachelock::MemoryCache>()}};
    return std::string(lock.token().size() + 15, 't');  // pickle's header and end: 15 bytes
  }();
  return token;
}

// One hiredis connection, as a RedisCache connection is set up.
struct Raw {
  redisContext* context = nullptr;
  Raw() {
    timeval limit{1, 0};
    context = redisConnectWithTimeout(server.host.c_str(), server.port, limit);
    if (context == nullptr || context->err) throw std::runtime_error("raw: cannot connect");
    redisSetTimeout(context, limit);
    expect(command({"SCRIPT", "LOAD", std::string{cachelock::detail::redis::release.text}}), REDIS_REPLY_STRING, "load");
  }
  ~Raw() { redisFree(context); }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  redisReply* command(const std::vector<std::string>& args) { return test::send_command(context, args); }
  static void expect(redisReply* reply, int type, const char* what) {
    bool ok = reply != nullptr && reply->type == type;
    freeReplyObject(reply);
    if (!ok) throw std::runtime_error(std::string{"raw "} + what + " failed");
  }

  // SET NX PX, then EVALSHA compare-and-delete: what a Lock cycle sends.
  void cycle(const std::string& key) {
    expect(command({"SET", key, token_sized(), "NX", "PX", "300000"}), REDIS_REPLY_STATUS, "set");
    expect(command({"EVALSHA", std::string{cachelock::detail::redis::release.sha1}, "1", key, token_sized()}),
           REDIS_REPLY_INTEGER, "evalsha");
  }
  void ping() { expect(command({"PING"}), REDIS_REPLY_STATUS, "ping"); }
};

// Each cycle and its baselines interleaved (bench/interleave.hpp): a raw
// PING, our get miss, the raw SET NX PX + EVALSHA, a Lock cycle.
void cycles(benchmark::State& state) {
  Raw raw;
  auto cache = std::make_shared<cachelock::RedisCache>(cachelock::RedisOptions{.server = server});
  const std::string key = "nightly-report";
  bench::interleave(
      state, 1, {"raw_ping", "get_miss", "raw_cycle", "lock"}, [&] { raw.ping(); },
      [&] {
        auto value = cache->get("missing");
        benchmark::DoNotOptimize(value);
      },
      [&] { raw.cycle(":1:raw-" + key); },
      [&] {
        cachelock::Lock lock{key, {.cache = cache}};
        benchmark::DoNotOptimize(lock.owns_lock());
      });
}
BENCHMARK(cycles)->UseRealTime();

// A Lock cycle alone, for bench/redis_peer_bench.py, which times it between
// redis-py's Lock cycles.
void lock_cycle(benchmark::State& state) {
  auto cache = std::make_shared<cachelock::RedisCache>(cachelock::RedisOptions{.server = server});
  for (auto _ : state) {
    cachelock::Lock lock{"nightly-report", {.cache = cache}};
    benchmark::DoNotOptimize(lock.owns_lock());
  }
}
BENCHMARK(lock_cycle)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<test::RedisProcess> own;
  try {
    if (auto given = bench::take_flag(argc, argv, "redis")) {
      server = cachelock::RedisServer::parse(*given);
    } else {
      own = std::make_unique<test::RedisProcess>();
      server = own->server();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_redis: %s\n", e.what());
    return 1;
  }
  std::printf("redis at %s\n", server.to_string().c_str());
  auto row = [](std::string label, std::string subject, std::string baseline, double target = 0) {
    return bench::Comparison{.label = "redis: " + std::move(label), .subject = "cycles/real_time",
                             .baseline = "cycles/real_time", .target = target,
                             .subject_counter = std::move(subject), .baseline_counter = std::move(baseline)};
  };
  return bench::run(argc, argv, {
      row("Lock cycle vs raw SET NX PX + EVALSHA", "lock_ns", "raw_cycle_ns", 1.1),
      row("Lock cycle in round trips (/ raw PING)", "lock_ns", "raw_ping_ns", 2.2),
      row("raw SET NX PX + EVALSHA in round trips (/ raw PING)", "raw_cycle_ns", "raw_ping_ns"),
      row("get miss vs raw PING", "get_miss_ns", "raw_ping_ns"),
  });
}
