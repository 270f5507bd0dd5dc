// Mutex: the std::mutex interface, and mutual exclusion under many threads.
// These run in the "concurrency" suite, which also runs under ThreadSanitizer.
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <latch>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "process.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::Mutex;

TEST_CASE("Mutex works with std::unique_lock and std::try_to_lock") {
  test::FreshRegistry fresh;
  Mutex m{"report"};
  {
    std::unique_lock guard{m, std::try_to_lock};
    CHECK(guard.owns_lock());
    Mutex other{"report"};
    std::unique_lock refused{other, std::try_to_lock};
    CHECK_FALSE(refused.owns_lock());
  }
  Mutex other{"report"};
  std::unique_lock taken{other, std::try_to_lock};
  CHECK(taken.owns_lock());
}

TEST_CASE("Mutex works with std::scoped_lock on several keys") {
  test::FreshRegistry fresh;
  Mutex a{"a"}, b{"b"};
  {
    std::scoped_lock both{a, b};
    CHECK(cachelock::CacheRegistry::global().get()->get("a").has_value());
    CHECK(cachelock::CacheRegistry::global().get()->get("b").has_value());
  }
  CHECK_FALSE(cachelock::CacheRegistry::global().get()->get("a").has_value());
  CHECK_FALSE(cachelock::CacheRegistry::global().get()->get("b").has_value());
}

TEST_CASE("Mutex::try_lock_for retries until its deadline") {
  test::FreshRegistry fresh;
  Mutex holder{"job"};
  holder.lock();
  Mutex waiter{"job"};
  auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(waiter.try_lock_for(200ms));
  CHECK(std::chrono::steady_clock::now() - start >= 200ms);

  // Released once the waiter has started waiting: it must retry to succeed.
  std::latch waiting{1};
  auto release = std::async(std::launch::async, [&] {
    waiting.wait();
    std::this_thread::sleep_for(test::slow(100ms));
    holder.unlock();
  });
  waiting.count_down();
  CHECK(waiter.try_lock_for(test::slow(5s)));
  release.get();
  CHECK_FALSE(holder.try_lock_until(std::chrono::system_clock::now() + 50ms));
  waiter.unlock();
  CHECK(holder.try_lock());
  holder.unlock();
}

TEST_CASE("Mutex::lock blocks until the other owner releases") {
  test::FreshRegistry fresh;
  Mutex holder{"job"};
  holder.lock();
  std::atomic<bool> acquired{false};
  std::latch started{1};
  std::thread waiter{[&] {
    Mutex m{"job"};
    started.count_down();
    m.lock();
    acquired = true;
    m.unlock();
  }};
  // The waiter is in lock() (or about to be): it has a window to take the
  // key wrongly before the holder lets go.
  started.wait();
  std::this_thread::sleep_for(test::slow(100ms));
  CHECK_FALSE(acquired.load());
  holder.unlock();
  waiter.join();
  CHECK(acquired.load());
}

TEST_CASE("Mutex::extend keeps the key and reports a loss") {
  test::FreshRegistry fresh;
  Mutex m{"job", {.ttl = test::slow(200ms)}};
  m.lock();
  std::this_thread::sleep_for(test::slow(100ms));
  CHECK(m.extend());
  std::this_thread::sleep_for(test::slow(100ms));
  CHECK_FALSE(Mutex("job").try_lock());
  std::this_thread::sleep_for(test::slow(300ms));
  CHECK_FALSE(m.extend());
  m.unlock();
}

TEST_CASE("Mutex surfaces backend errors and stays usable") {
  test::FreshRegistry fresh;
  Mutex bad{"two words"};
  CHECK_THROWS_AS(bad.lock(), cachelock::InvalidKeyError);
  CHECK_THROWS_AS(bad.try_lock(), cachelock::InvalidKeyError);
  Mutex unknown{"job", {.alias = "missing"}};
  CHECK_THROWS_AS(unknown.lock(), cachelock::ConfigError);
  CHECK_THROWS_AS(unknown.try_lock_for(10ms), cachelock::ConfigError);  // local mutex not left locked
}

TEST_CASE("Mutex::try_lock_for rides out backend failures; lock and try_lock report the first") {
  auto cache = std::make_shared<test::FlakyCache>();
  Mutex m{"job", {.cache = cache}};
  cache->down = true;
  CHECK_THROWS_WITH_AS(m.try_lock(), "flaky: the server is down", cachelock::CacheError);
  CHECK_THROWS_WITH_AS(m.lock(), "flaky: the server is down", cachelock::CacheError);
  CHECK(cache->adds == 2);  // one attempt each
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(m.try_lock_for(200ms), "flaky: the server is down", cachelock::CacheError);
  CHECK(std::chrono::steady_clock::now() - start >= 200ms);
  auto back = std::async(std::launch::async, [&] {
    CHECK(test::eventually([&] { return cache->failures >= 8; }));
    cache->down = false;
  });
  CHECK(m.try_lock_until(std::chrono::system_clock::now() + test::slow(30s)));
  back.get();
  CHECK(cache->get("job").has_value());
  m.unlock();
  CHECK_FALSE(cache->get("job").has_value());
}

TEST_CASE("8 threads x 20,000 increments under one shared Mutex lose no update") {
  test::FreshRegistry fresh;
  constexpr int threads = 8;
  constexpr int iterations = 20'000;
  Mutex m{"counter"};
  long counter = 0;  // deliberately not atomic: only the Mutex protects it
  std::atomic<int> inside{0}, overlaps{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < iterations; ++i) {
        std::lock_guard guard{m};
        if (inside.fetch_add(1) != 0) ++overlaps;
        counter = counter + 1;
        inside.fetch_sub(1);
      }
    });
  }
  for (auto& thread : pool) thread.join();
  CHECK(counter == long{threads} * iterations);
  CHECK(overlaps.load() == 0);
}

TEST_CASE("8 threads with their own Mutex on one key lose no update") {
  // Each thread has its own Mutex object, so exclusion comes only from the
  // cache's atomic add, as it does between processes.
  test::FreshRegistry fresh;
  constexpr int threads = 8;
  constexpr int iterations = 2'000;
  long counter = 0;
  std::atomic<int> inside{0}, overlaps{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      Mutex m{"counter"};
      for (int i = 0; i < iterations; ++i) {
        std::lock_guard guard{m};
        if (inside.fetch_add(1) != 0) ++overlaps;
        counter = counter + 1;
        inside.fetch_sub(1);
      }
    });
  }
  for (auto& thread : pool) thread.join();
  CHECK(counter == long{threads} * iterations);
  CHECK(overlaps.load() == 0);
}

TEST_CASE("threads on distinct keys all get their locks") {
  test::FreshRegistry fresh;
  constexpr int threads = 8;
  std::vector<std::thread> pool;
  std::atomic<int> taken{0};
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 1'000; ++i) {
        cachelock::Lock lock{"key-" + std::to_string(t) + "-" + std::to_string(i % 10)};
        ++taken;
      }
    });
  }
  for (auto& thread : pool) thread.join();
  CHECK(taken.load() == threads * 1'000);
}
