// Lock: the scoped guard, on the global registry's default alias.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "process.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

using cachelock::Lock;
using cachelock::LockError;
using cachelock::LockOptions;

namespace {
std::shared_ptr<cachelock::Cache> default_cache() { return cachelock::CacheRegistry::global().get(); }

// Whether `key` holds `lock`'s current token. Read between two equal reads
// of the token: a renewal stores a new one under the lock's mutex, which
// token() takes too, so one in between shows as two different reads.
bool holds_token(cachelock::Cache& cache, const std::string& key, const Lock& lock) {
  for (;;) {
    auto before = lock.token();
    auto stored = cache.get(key);
    if (lock.token() == before) return stored == before;
  }
}
}  // namespace

TEST_CASE("a held key raises LockError") {
  test::FreshRegistry fresh;
  default_cache()->set("foo", "1");
  CHECK_THROWS_WITH_AS(Lock{"foo"}, "lock 'foo' on alias 'default' is already held", LockError);
  CHECK(default_cache()->get("foo") == "1");  // the other owner's value is untouched
}

TEST_CASE("a free key is taken and freed at scope exit") {
  test::FreshRegistry fresh;
  std::string token;
  {
    Lock lock{"foo"};
    CHECK(lock.owns_lock());
    CHECK(static_cast<bool>(lock));
    CHECK(lock.key() == "foo");
    token = lock.token();
    CHECK(default_cache()->get("foo") == token);
  }
  CHECK_FALSE(default_cache()->get("foo").has_value());
  Lock again{"foo"};
  CHECK(again.token() != token);
}

TEST_CASE("the owner token names host, pid, since and expiry, and a random part") {
  test::FreshRegistry fresh;
  auto before = std::chrono::system_clock::now();
  Lock lock{"foo", {.ttl = 30s}};
  auto owner = cachelock::LockOwner::parse(lock.token());
  REQUIRE(owner.has_value());
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  CHECK(owner->host == host);
  CHECK(owner->pid == ::getpid());
  CHECK(owner->since >= before - 50ms);  // coarse clock: a tick's lag is allowed
  CHECK(owner->since <= std::chrono::system_clock::now());
  REQUIRE(owner->expires.has_value());
  CHECK(*owner->expires - owner->since == 30s);
  Lock other{"bar"};
  CHECK(other.token() != lock.token());
  CHECK(other.token().substr(other.token().rfind(':') + 1).size() == 16);
}

TEST_CASE("tokens made in one millisecond carry each lock's own expiry") {
  test::FreshRegistry fresh;
  // Tokens made close together share their SINCE_MS: a change of ttl
  // between two locks must still show in each token.
  for (int round = 0; round < 100; ++round) {
    Lock a{"a", {.ttl = 10s}};
    Lock b{"b", {.ttl = 20s}};
    Lock c{"c", {.ttl = 10s}};
    auto ta = cachelock::LockOwner::parse(a.token()), tb = cachelock::LockOwner::parse(b.token()),
         tc = cachelock::LockOwner::parse(c.token());
    REQUIRE((ta && tb && tc && ta->expires && tb->expires && tc->expires));
    CHECK(*ta->expires - ta->since == 10s);
    CHECK(*tb->expires - tb->since == 20s);
    CHECK(*tc->expires - tc->since == 10s);
  }
}

TEST_CASE("LockOwner::parse reads only cachelock tokens") {
  auto owner = cachelock::LockOwner::parse("web-1:4242:1795747643001:0:0123456789abcdef");
  REQUIRE(owner.has_value());
  CHECK(owner->host == "web-1");
  CHECK(owner->pid == 4242);
  CHECK(owner->since == std::chrono::system_clock::time_point{1795747643001ms});
  CHECK_FALSE(owner->expires.has_value());  // 0: never expires
  for (const char* other : {"1", "", "a:b:c:d:e", "h:1:2:3:0123456789abcdeg", ":1:2:3:0123456789abcdef",
                            "h:1:2:3:0123456789abcde", "h:x:2:3:0123456789abcdef"}) {
    CAPTURE(other);
    CHECK_FALSE(cachelock::LockOwner::parse(other).has_value());
  }
}

TEST_CASE("extend stores the new expiry in the token") {
  test::FreshRegistry fresh;
  Lock lock{"job", {.ttl = 1s}};
  auto first = cachelock::LockOwner::parse(lock.token());
  std::this_thread::sleep_for(50ms);
  REQUIRE(lock.extend(10s));
  auto second = cachelock::LockOwner::parse(lock.token());
  REQUIRE(first.has_value());
  REQUIRE(second.has_value());
  CHECK(second->since == first->since);
  CHECK(*second->expires - *first->expires > 9s);
  CHECK(default_cache()->get("job") == lock.token());
}

TEST_CASE("renew keeps a lock held past many ttls, and stops at release") {
  test::FreshRegistry fresh;
  Lock lock{"job", {.ttl = test::slow(300ms), .renew = true}};
  auto first_token = lock.token();
  for (int i = 0; i < 10; ++i) {  // five times the ttl
    std::this_thread::sleep_for(test::slow(150ms));
    CHECK_THROWS_AS(Lock("job"), LockError);
  }
  CHECK_FALSE(lock.lost());
  CHECK(lock.token() != first_token);  // renewals stored new expiries
  CHECK(holds_token(*default_cache(), "job", lock));
  CHECK(lock.release());
  CHECK_FALSE(default_cache()->get("job").has_value());
  std::this_thread::sleep_for(test::slow(200ms));  // a renewal due now must not resurrect it
  CHECK_FALSE(default_cache()->get("job").has_value());
}

TEST_CASE("renew reports a lost lock and calls on_lost") {
  test::FreshRegistry fresh;
  std::promise<void> told;
  Lock lock{"job", {.ttl = test::slow(300ms), .renew = true, .on_lost = [&] { told.set_value(); }}};
  default_cache()->set("job", "someone else");  // as if it had expired and been taken
  auto told_future = told.get_future();
  REQUIRE(told_future.wait_for(test::slow(2s)) == std::future_status::ready);
  CHECK(lock.lost());
  CHECK_FALSE(lock.release());
  CHECK(default_cache()->get("job") == "someone else");  // untouched
}

namespace {
// A cache whose compare operations can be made to fail like a dead server.
class FlakyCache : public test::MapCache {
 public:
  std::atomic<bool> down{false};
  std::atomic<int> refused{0};

 protected:
  bool replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                          cachelock::Timeout timeout) override {
    if (down) {
      ++refused;
      throw cachelock::CacheError("server unreachable");
    }
    return MapCache::replace_if_equals_(key, expected, value, timeout);
  }
};
}  // namespace

TEST_CASE("renew rides out a short outage and gives up after a whole ttl of them") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<FlakyCache>();
  std::atomic<bool> lost{false};
  Lock lock{"job", {.cache = cache, .ttl = test::slow(600ms), .renew = true, .on_lost = [&] { lost = true; }}};
  cache->down = true;
  // Covers the first renewal (at a third of the ttl) and its retries, but
  // ends before two thirds of the ttl, when renewal would give up.
  std::this_thread::sleep_for(test::slow(300ms));
  cache->down = false;
  CHECK(cache->refused.load() > 0);
  std::this_thread::sleep_for(test::slow(700ms));
  CHECK_FALSE(lock.lost());
  CHECK(holds_token(*cache, "job", lock));
  cache->down = true;
  std::this_thread::sleep_for(test::slow(900ms));  // longer than the ttl
  CHECK(lost.load());
  CHECK(lock.lost());
}

namespace {
// A cache whose renewals can be made to hang, as on a server gone silent
// while its connection stays up.
class HangingCache : public test::MapCache {
 public:
  std::atomic<bool> hang{false};

 protected:
  bool replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                          cachelock::Timeout timeout) override {
    for (int i = 0; hang && i < 400; ++i) std::this_thread::sleep_for(10ms);
    return MapCache::replace_if_equals_(key, expected, value, timeout);
  }
};

// A cache whose compare-and-swap throws what is not a std::exception.
class OddlyThrowingCache : public test::MapCache {
 protected:
  bool replace_if_equals_(std::string_view, std::string_view, std::string_view, cachelock::Timeout) override {
    throw 42;
  }
};
}  // namespace

TEST_CASE("a renewal that throws a non-standard exception gives the lock up, not the process") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<OddlyThrowingCache>();
  std::atomic<bool> lost{false};
  Lock lock{"job", {.cache = cache, .ttl = test::slow(300ms), .renew = true, .on_lost = [&] { lost = true; }}};
  CHECK(test::eventually([&] { return lost.load(); }, test::slow(2s)));
  CHECK(lock.lost());
}

TEST_CASE("a child of fork() reads a lock's token while the parent's renewal held it") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<HangingCache>();
  cache->hang = true;  // the renewal at a third of the ttl hangs, holding the hold's mutex
  Lock lock{"job", {.cache = cache, .ttl = test::slow(600ms), .renew = true}};
  auto token = lock.token();
  std::this_thread::sleep_for(test::slow(300ms));  // the renewal is under way
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::alarm(5);  // a deadlock ends the child by SIGALRM
    ::_exit(lock.token() == token ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  cache->hang = false;
}

TEST_CASE("renew gives a lock up two thirds into its ttl even while a renewal hangs") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<HangingCache>();
  auto ttl = test::slow(900ms);
  std::atomic<std::int64_t> lost_after_ms{-1};
  auto taken = std::chrono::steady_clock::now();
  cache->hang = true;  // the first renewal, at a third of the ttl, hangs for 4 s
  Lock lock{"job", {.cache = cache,
                    .ttl = ttl,
                    .renew = true,
                    .on_lost = [&] {
                      lost_after_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - taken)
                                          .count();
                    }}};
  // Told while the last third of the ttl is still left, not when the hung
  // call returns: the holder must stop before anyone else can take the key.
  REQUIRE(test::eventually([&] { return lost_after_ms.load() >= 0; }, ttl));
  CHECK(lost_after_ms.load() >= (ttl * 2 / 3).count());
  CHECK(lock.lost());
  // The hung renewal now succeeds: the key stays the holder's while it stops
  // (nobody may take it before the last third of the ttl has passed).
  cache->hang = false;
  std::this_thread::sleep_for(test::slow(100ms));
  CHECK(cache->get("job") == lock.token());
  CHECK_FALSE(lock.release());
  CHECK_FALSE(cache->get("job"));
}

TEST_CASE("extend on a given-up lock leaves release to remove the token a late renewal stored") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<HangingCache>();
  auto ttl = test::slow(900ms);
  std::atomic<bool> told{false};
  cache->hang = true;  // the first renewal hangs past the give-up point
  Lock lock{"job", {.cache = cache, .ttl = ttl, .renew = true, .on_lost = [&] { told = true; }}};
  REQUIRE(test::eventually([&] { return told.load(); }, ttl));
  cache->hang = false;  // the hung renewal stores our token once more
  REQUIRE(test::eventually([&] { return cache->get("job") == lock.token(); }, ttl));
  CHECK_FALSE(lock.extend());
  CHECK_FALSE(lock.owns_lock());
  CHECK_FALSE(lock.release());
  CHECK_FALSE(cache->get("job"));  // not left to block the key for a whole ttl
}

TEST_CASE("a lock expires after its ttl and lets a new owner in") {
  test::FreshRegistry fresh;
  Lock first{"job", {.ttl = 100ms}};
  CHECK_THROWS_AS(Lock("job"), LockError);
  std::this_thread::sleep_for(200ms);
  Lock second{"job"};
  CHECK(second.owns_lock());
}

TEST_CASE("every lock expires: the default ttl is the alias's TIMEOUT") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<cachelock::MemoryCache>(cachelock::CacheOptions{.timeout = 100ms});
  cachelock::CacheRegistry::global().add("short", cache);
  Lock first{"job", {.alias = "short"}};
  std::this_thread::sleep_for(200ms);
  Lock second{"job", {.alias = "short"}};
  CHECK(second.owns_lock());
}

TEST_CASE("an expired owner's release does not delete the new owner's lock") {
  test::FreshRegistry fresh;
  Lock late{"job", {.ttl = 100ms}};
  std::this_thread::sleep_for(200ms);
  Lock next{"job"};
  CHECK_FALSE(late.release());
  CHECK_FALSE(late.owns_lock());
  CHECK(default_cache()->get("job") == next.token());
  CHECK_THROWS_AS(Lock("job"), LockError);
}

TEST_CASE("extend keeps a lock past its first ttl") {
  test::FreshRegistry fresh;
  Lock lock{"job", {.ttl = test::slow(200ms)}};
  for (int i = 0; i < 6; ++i) {  // three times the ttl in all
    std::this_thread::sleep_for(test::slow(100ms));
    REQUIRE(lock.extend());
    CHECK_THROWS_AS(Lock("job"), LockError);
  }
  CHECK(lock.extend(1s));
  std::this_thread::sleep_for(300ms);
  CHECK_THROWS_AS(Lock("job"), LockError);  // the 1 s given to extend() holds
  CHECK(lock.release());
}

TEST_CASE("extend reports a lost lock") {
  test::FreshRegistry fresh;
  Lock lock{"job", {.ttl = 100ms}};
  std::this_thread::sleep_for(200ms);
  CHECK_FALSE(lock.extend());
  CHECK_FALSE(lock.owns_lock());
  CHECK_FALSE(default_cache()->get("job").has_value());  // extend did not resurrect it
}

TEST_CASE("wait acquires once the holder releases") {
  test::FreshRegistry fresh;
  auto holder = std::make_unique<Lock>("job");
  auto released = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(150ms);
    holder.reset();
  });
  auto start = std::chrono::steady_clock::now();
  Lock waiter{"job", {.wait = 5s}};
  auto waited = std::chrono::steady_clock::now() - start;
  released.get();
  CHECK(waiter.owns_lock());
  CHECK(waited >= 100ms);
  CHECK(waited < test::slow(2s));
}

TEST_CASE("wait polls a cache that cannot watch keys until the holder releases") {
  auto cache = std::make_shared<test::MapCache>();
  auto holder = std::make_unique<Lock>("job", LockOptions{.cache = cache});
  int gets_before = cache->gets;
  auto released = std::async(std::launch::async, [&] {
    // Released once the waiter has polled a few times (the fallback add is
    // a get, then a set).
    CHECK(test::eventually([&] { return cache->gets - gets_before >= 3; }));
    holder.reset();
  });
  Lock waiter{"job", {.cache = cache, .wait = 30s}};
  released.get();
  CHECK(waiter.owns_lock());
}

namespace {
// A get/set/erase cache that can also watch its keys: every erase wakes the
// threads in wait_until_absent_().
class WatchingCache : public test::MapCache {
 public:
  std::atomic<int> waits{0};

 protected:
  bool erase_(std::string_view key) override {
    bool erased = MapCache::erase_(key);
    {
      std::lock_guard lock{watch_mutex_};
      ++erasures_;
    }
    erased_.notify_all();
    return erased;
  }
  cachelock::WaitResult wait_until_absent_(std::string_view key,
                                           std::chrono::steady_clock::time_point deadline) override {
    std::unique_lock lock{watch_mutex_};
    for (;;) {
      auto seen = erasures_;
      lock.unlock();
      bool present = get_(key).has_value();
      lock.lock();
      if (!present) return cachelock::WaitResult::absent;
      ++waits;  // counted once the key was seen held: the release comes after
      if (!erased_.wait_until(lock, deadline, [&] { return erasures_ != seen; })) {
        return cachelock::WaitResult::timed_out;
      }
    }
  }

 private:
  std::mutex watch_mutex_;
  std::condition_variable erased_;
  long erasures_ = 0;  // guarded by watch_mutex_
};
}  // namespace

TEST_CASE("a waiting Lock sleeps in the cache's wait_until_absent and takes the key when woken") {
  auto cache = std::make_shared<WatchingCache>();
  auto holder = std::make_unique<Lock>("job", LockOptions{.cache = cache});
  int gets_at_release = 0;
  auto released = std::async(std::launch::async, [&] {
    CHECK(test::eventually([&] { return cache->waits > 0; }));
    gets_at_release = cache->gets;
    holder.reset();
  });
  Lock waiter{"job", {.cache = cache, .wait = 30s}};
  released.get();
  CHECK(waiter.owns_lock());
  CHECK(cache->waits >= 1);
  // The release's get, the watcher's look after the erase, the add's get: no polling.
  CHECK(cache->gets - gets_at_release <= 3);
}

TEST_CASE("8 threads x 2,000 waiting Locks on one key lose no update") {
  // Each thread makes its own Lock each time and waits: on MemoryCache the
  // waiters sleep until the key is freed and are woken then.
  auto cache = std::make_shared<cachelock::MemoryCache>();
  constexpr int threads = 8, rounds = 2'000;
  long counter = 0;  // not atomic: the lock is what protects it
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < rounds; ++i) {
        Lock lock{"counter", {.cache = cache, .ttl = 60s, .wait = 60s}};
        auto seen = counter;
        if (i % 64 == 0) std::this_thread::yield();
        counter = seen + 1;
      }
    });
  }
  for (auto& worker : workers) worker.join();
  CHECK(counter == long{threads} * rounds);
}

TEST_CASE("wait gives up with LockError after its deadline") {
  test::FreshRegistry fresh;
  Lock holder{"job"};
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(Lock("job", {.wait = 300ms}),
                       "lock 'job' on alias 'default' is still held after waiting 300 ms", LockError);
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 300ms);
  CHECK(waited < test::slow(2s));
}

TEST_CASE("a waiting Lock rides out backend failures and takes the key when the backend is back") {
  auto cache = std::make_shared<test::FlakyCache>();
  cache->down = true;
  auto back = std::async(std::launch::async, [&] {
    CHECK(test::eventually([&] { return cache->failures >= 5; }));
    cache->down = false;
  });
  Lock waiter{"job", {.cache = cache, .wait = test::slow(30s)}};
  back.get();
  CHECK(waiter.owns_lock());
  CHECK(cache->get("job") == waiter.token());
}

TEST_CASE("a waiting Lock whose backend stays down throws its last CacheError at the deadline") {
  auto cache = std::make_shared<test::FlakyCache>();
  cache->down = true;
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(Lock("job", {.cache = cache, .wait = 300ms}), "flaky: the server is down",
                       cachelock::CacheError);
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 300ms);
  CHECK(waited < test::slow(2s));
  CHECK(cache->failures > 2);  // it kept trying
  // Without a wait a failure is reported at once, after one attempt.
  cache->adds = 0;
  start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(Lock("job", {.cache = cache}), cachelock::CacheError);
  Lock deferred{"job", std::defer_lock, {.cache = cache}};
  CHECK_THROWS_AS(deferred.try_acquire(), cachelock::CacheError);
  CHECK(cache->adds == 2);
  CHECK(std::chrono::steady_clock::now() - start < test::slow(200ms));
}

TEST_CASE("a failed acquire takes back the token its lost reply stored") {
  auto cache = std::make_shared<test::FlakyCache>();
  cache->lose_reply = true;  // the add is stored, but its reply never comes
  CHECK_THROWS_WITH_AS(Lock("job", {.cache = cache}), "flaky: the reply was lost", cachelock::CacheError);
  // Not left holding the key for a whole ttl with nobody to release it.
  CHECK_FALSE(cache->get("job"));
  Lock next{"job", {.cache = cache}};
  CHECK(next.owns_lock());
}

TEST_CASE("a waiting Lock that last saw the key held reports LockError, not an earlier failure") {
  auto cache = std::make_shared<test::FlakyCache>();
  Lock holder{"job", {.cache = cache}};
  cache->down = true;
  auto back = std::async(std::launch::async, [&] {
    CHECK(test::eventually([&] { return cache->failures >= 3; }));
    cache->down = false;
  });
  CHECK_THROWS_WITH_AS(Lock("job", {.cache = cache, .wait = test::slow(500ms)}),
                       fmt::format("lock 'job' is still held after waiting {} ms", test::slow(500ms).count()).c_str(),
                       LockError);
  back.get();
  CHECK(cache->get("job") == holder.token());
}

TEST_CASE("a waiting Lock whose add reply was lost finds its own token and keeps the key") {
  auto cache = std::make_shared<test::FlakyCache>();
  cache->lose_reply = true;
  auto start = std::chrono::steady_clock::now();
  Lock waiter{"job", {.cache = cache, .wait = test::slow(5s)}};
  CHECK(waiter.owns_lock());
  CHECK(cache->get("job") == waiter.token());
  CHECK(cache->adds == 2);  // no waiting for its own token to expire
  CHECK(std::chrono::steady_clock::now() - start < test::slow(1s));
}

TEST_CASE("a waiting Lock does not retry a bad key") {
  auto cache = std::make_shared<test::FlakyCache>();
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(Lock("two words", {.cache = cache, .wait = 5s}), cachelock::InvalidKeyError);
  CHECK(std::chrono::steady_clock::now() - start < test::slow(1s));
  CHECK(cache->adds == 0);
}

TEST_CASE("a renewing lock needs a ttl of at least 3 x its cache's operation_timeout") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<test::FlakyCache>();
  cache->bound = 1000ms;
  CHECK_THROWS_WITH_AS(Lock("job", {.cache = cache, .ttl = 2999ms, .renew = true}),
                       "lock 'job': a renewing lock needs a ttl of at least 3000 ms (3 x 1000 ms, the "
                       "longest one operation of this cache may take), got 2999 ms",
                       cachelock::ConfigError);
  CHECK_FALSE(cache->get("job").has_value());  // refused before anything was stored
  CHECK(cache->adds == 0);
  Lock plain{"plain", {.cache = cache, .ttl = 100ms}};  // without renew: any ttl
  CHECK(plain.owns_lock());
  {
    Lock renewing{"job", {.cache = cache, .ttl = 3000ms, .renew = true}};
    CHECK(renewing.owns_lock());
    // An extend that would leave the renewal too short a ttl is refused, and the lock kept.
    CHECK_THROWS_AS(renewing.extend(1s), cachelock::ConfigError);
    CHECK(renewing.owns_lock());
    CHECK(renewing.extend(4s));
  }
  // The alias's TIMEOUT as the ttl, named with the alias.
  auto short_timeout = std::make_shared<test::FlakyCache>(cachelock::CacheOptions{.timeout = 2s});
  short_timeout->bound = 1000ms;
  cachelock::CacheRegistry::global().add("short", short_timeout);
  CHECK_THROWS_WITH_AS(Lock("job", {.alias = "short", .renew = true}),
                       "lock 'job' on alias 'short': a renewing lock needs a ttl of at least 3000 ms (3 x "
                       "1000 ms, the longest one operation of this cache may take), got 2000 ms",
                       cachelock::ConfigError);
  Lock not_renewing{"job", {.alias = "short"}};
  CHECK(not_renewing.owns_lock());
}

TEST_CASE("messages quote a long key by its first 64 bytes and its length") {
  test::FreshRegistry fresh;
  std::string key(1'000'000, 'k');
  std::string shown = "':1:" + std::string(61, 'k') + "'... (1000003 bytes)";
  CHECK_THROWS_WITH_AS(Lock{key}, ("key " + shown + " is 1000003 bytes long; keys may have at most 250 bytes").c_str(),
                       cachelock::InvalidKeyError);
  std::string spaced = std::string(100, 'k') + " ";
  CHECK_THROWS_WITH_AS(Lock{spaced},
                       ("key ':1:" + std::string(61, 'k') +
                        "'... (104 bytes) contains a space at byte 103; keys may not contain spaces or control "
                        "characters")
                           .c_str(),
                       cachelock::InvalidKeyError);
  CHECK_THROWS_WITH_AS(Lock(key, {.ttl = 0ms}),
                       ("lock '" + std::string(64, 'k') + "'... (1000000 bytes): ttl must be positive, got 0 ms").c_str(),
                       cachelock::ConfigError);
  auto cache = std::make_shared<cachelock::MemoryCache>();
  std::string long_ok(200, 'k');
  Lock holder{long_ok, {.cache = cache}};
  CHECK_THROWS_WITH_AS(Lock(long_ok, {.cache = cache}),
                       ("lock '" + std::string(64, 'k') + "'... (200 bytes) is already held").c_str(), LockError);
}

TEST_CASE("deferred locks, try_acquire and misuse") {
  test::FreshRegistry fresh;
  Lock lock{"job", std::defer_lock};
  CHECK_FALSE(lock.owns_lock());
  CHECK_FALSE(default_cache()->get("job").has_value());
  CHECK_FALSE(lock.release());
  CHECK_FALSE(lock.extend());
  CHECK(lock.try_acquire());
  CHECK_THROWS_WITH_AS(lock.acquire(), "lock 'job' is already owned by this guard", LockError);
  Lock other{"job", std::defer_lock};
  CHECK_FALSE(other.try_acquire());
  CHECK_THROWS_AS(other.acquire(), LockError);
  CHECK(lock.release());
  CHECK(other.try_acquire());
  CHECK_FALSE(lock.try_acquire());
}

TEST_CASE("a moved lock is released once, by its new owner") {
  test::FreshRegistry fresh;
  Lock target{"other", std::defer_lock};
  {
    Lock source{"job"};
    target = std::move(source);
    CHECK_FALSE(source.owns_lock());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  }
  CHECK(target.owns_lock());
  CHECK(default_cache()->get("job") == target.token());
  Lock moved{std::move(target)};
  CHECK(moved.release());
  CHECK_FALSE(default_cache()->get("job").has_value());
}

TEST_CASE("lock options are checked") {
  test::FreshRegistry fresh;
  CHECK_THROWS_WITH_AS(Lock("job", {.ttl = 0ms}), "lock 'job': ttl must be positive, got 0 ms",
                       cachelock::ConfigError);
  CHECK_THROWS_WITH_AS(Lock("job", {.alias = "nope"}),
                       "unknown cache alias 'nope' (known: 'default')", cachelock::ConfigError);
}

TEST_CASE("bad keys are refused before anything is stored") {
  test::FreshRegistry fresh;
  CHECK_THROWS_WITH_AS(Lock("two words"),
                       "key ':1:two words' contains a space at byte 6; keys may not contain spaces "
                       "or control characters",
                       cachelock::InvalidKeyError);
  CHECK_THROWS_WITH_AS(Lock(""), "empty key; a key needs at least one character",
                       cachelock::InvalidKeyError);
  CHECK(std::dynamic_pointer_cast<cachelock::MemoryCache>(default_cache())->size() == 0);
}

TEST_CASE("a cache given in the options overrides the alias") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<cachelock::MemoryCache>();
  Lock lock{"job", {.cache = cache}};
  CHECK(cache->get("job") == lock.token());
  CHECK_FALSE(default_cache()->get("job").has_value());
  CHECK_THROWS_WITH_AS(Lock("job", {.cache = cache}), "lock 'job' is already held", LockError);
}

TEST_CASE("a custom cache with only get, set and erase works") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<test::MapCache>();
  cachelock::CacheRegistry::global().add("mine", cache);
  {
    Lock lock{"job", {.alias = "mine"}};
    CHECK(cache->get("job") == lock.token());
    CHECK_THROWS_WITH_AS(Lock("job", {.alias = "mine"}), "lock 'job' on alias 'mine' is already held",
                         LockError);
    CHECK(lock.extend(test::slow(500ms)));
  }
  CHECK_FALSE(cache->get("job").has_value());
  // The non-atomic fallback took the get-then-set path.
  CHECK(cache->sets.load() >= 2);
  CHECK(cache->erases.load() == 1);
  Lock expiring{"job", {.alias = "mine", .ttl = 50ms}};
  std::this_thread::sleep_for(100ms);
  Lock next{"job", {.alias = "mine"}};
  CHECK_FALSE(expiring.release());
  CHECK(cache->get("job") == next.token());
}

TEST_CASE("a dummy alias always grants the lock, as Django's DummyCache") {
  test::FreshRegistry fresh;
  cachelock::CacheRegistry::global().add("off", std::make_shared<cachelock::DummyCache>());
  Lock a{"job", {.alias = "off"}};
  Lock b{"job", {.alias = "off"}};
  CHECK(a.owns_lock());
  CHECK(b.owns_lock());
  CHECK(b.release());
}

TEST_CASE("a child process does not release its parent's lock") {
  test::FreshRegistry fresh;
  auto cache = std::make_shared<test::MapCache>();
  auto lock = std::make_unique<Lock>("job", cachelock::LockOptions{.cache = cache});
  auto erases_before = cache->erases.load();
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child's copy of the guard must not touch the (shared, in real
    // backends) lock: report through the exit code how many erases it made.
    bool released = lock->release();
    lock.reset();
    ::_exit((released ? 10 : 0) + (cache->erases.load() - erases_before));
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(lock->release());  // the parent still owns it
}

// Not built under ThreadSanitizer, which cannot start threads in the child
// of a threaded process; the plain and AddressSanitizer runs cover it.
#if !defined(__SANITIZE_THREAD__)
TEST_CASE("renewal works in a child of fork(), apart from the parent's") {
  test::FreshRegistry fresh;
  auto dir = std::string{"/tmp/cachelock-fork-renew-"} + std::to_string(::getpid());
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = dir});
  Lock parent_lock{"parent", {.cache = cache, .ttl = test::slow(300ms), .renew = true}};
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int code = 0;
    try {
      Lock child_lock{"child", {.cache = cache, .ttl = test::slow(300ms), .renew = true}};
      std::this_thread::sleep_for(test::slow(1000ms));  // three ttls: only renewal keeps it
      Lock intruder{"child", std::defer_lock, {.cache = cache}};
      code = intruder.try_acquire() ? 3 : 0;
      if (child_lock.lost() || !child_lock.release()) code = 4;
    } catch (...) {
      code = 5;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_FALSE(parent_lock.lost());
  CHECK(holds_token(*cache, "parent", parent_lock));
  CHECK(parent_lock.release());
  std::filesystem::remove_all(dir);
}
#endif
