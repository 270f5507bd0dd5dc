// Lock with wait: waiting for a holder (polling or woken by the cache),
// deadlines, and backend failures while waiting.
#include <doctest/doctest.h>

#include <condition_variable>
#include <future>
#include <memory>
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

