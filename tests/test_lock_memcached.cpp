// Lock and Mutex on a real memcached that stops and comes back: a waiting
// acquire keeps trying through the outage until its deadline.
#include <doctest/doctest.h>

#include <signal.h>

#include <future>
#include <thread>

#include "memcached_server.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {
std::shared_ptr<cachelock::MemcachedCache> cache_on(const test::MemcachedProcess& server) {
  // retry_timeout 0: libmemcached tries a failed server again at once, so the
  // waiter sees the restart at its next attempt.
  return std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{
      .servers = {server.server()}, .connect_timeout = 200ms, .timeout = 200ms, .retry_timeout = 0ms});
}

// Kills the server (as a crash: SIGKILL) and reaps it.
void crash(test::MemcachedProcess& server) {
  ::kill(server.pid(), SIGKILL);
  server.stop();
}
}  // namespace

TEST_CASE("memcached: a waiting Lock takes the key after its server restarts") {
  test::MemcachedProcess server;
  auto cache = cache_on(server);
  CHECK(cache->add("warm", "up"));  // connections open before the crash
  crash(server);
  auto start = std::chrono::steady_clock::now();
  auto waiter = std::async(std::launch::async, [&] {
    cachelock::Lock lock{"job", {.cache = cache, .wait = test::slow(30s)}};
    return std::pair{lock.owns_lock(), std::chrono::steady_clock::now() - start};
  });
  std::this_thread::sleep_for(1500ms);
  server.start();
  auto [owned, after] = waiter.get();
  CHECK(owned);
  CHECK(after >= 1500ms);  // not before the server was back
  CHECK(after < test::slow(5s));
}

TEST_CASE("memcached: a waiting Lock on a dead server throws CacheError at its deadline, not at once") {
  test::MemcachedProcess server;
  auto cache = cache_on(server);
  crash(server);
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache, .wait = 1s}), cachelock::CacheError);
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 1s);
  CHECK(waited < test::slow(3s));
  // Without a wait: at once.
  start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), cachelock::CacheError);
  CHECK(std::chrono::steady_clock::now() - start < test::slow(900ms));
}

TEST_CASE("memcached: Mutex::try_lock_for takes the key after its server restarts") {
  test::MemcachedProcess server;
  auto cache = cache_on(server);
  cachelock::Mutex mutex{"job", {.cache = cache}};
  crash(server);
  auto restart = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(1s);
    server.start();
  });
  CHECK(mutex.try_lock_for(test::slow(30s)));
  restart.get();
  mutex.unlock();
}

TEST_CASE("memcached: a renewing lock needs a ttl of 3 x (connect_timeout + timeout)") {
  test::MemcachedProcess server;
  auto cache = std::make_shared<cachelock::MemcachedCache>(
      cachelock::MemcachedOptions{.servers = {server.server()}, .connect_timeout = 500ms, .timeout = 700ms});
  CHECK(cache->operation_timeout() == 1200ms);
  CHECK_THROWS_WITH_AS(cachelock::Lock("job", {.cache = cache, .ttl = 3599ms, .renew = true}),
                       "lock 'job': a renewing lock needs a ttl of at least 3600 ms (3 x 1200 ms, the longest one "
                       "operation of this cache may take), got 3599 ms",
                       cachelock::ConfigError);
  CHECK_FALSE(cache->get("job").has_value());
  cachelock::Lock renewing{"job", {.cache = cache, .ttl = 3600ms, .renew = true}};
  CHECK(renewing.owns_lock());
}
