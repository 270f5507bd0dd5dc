// Lock: the scoped guard, on the global registry's default alias.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::Lock;
using cachelock::LockError;

namespace {
std::shared_ptr<cachelock::Cache> default_cache() { return cachelock::CacheRegistry::global().get(); }
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

TEST_CASE("the owner token names host, pid, time and a random part") {
  test::FreshRegistry fresh;
  Lock lock{"foo"};
  const auto& token = lock.token();
  auto pid = ":" + std::to_string(::getpid()) + ":";
  CHECK(token.find(pid) != std::string::npos);
  auto last = token.rfind(':');
  REQUIRE(last != std::string::npos);
  CHECK(token.size() - last - 1 == 16);
  auto since = std::stoll(token.substr(token.rfind(':', last - 1) + 1));
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  CHECK(since <= now);
  CHECK(since > now - 60'000);
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
  Lock lock{"job", {.ttl = 200ms}};
  for (int i = 0; i < 6; ++i) {  // 600 ms in all, three times the ttl
    std::this_thread::sleep_for(100ms);
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
  CHECK(waited < 2s);
}

TEST_CASE("wait gives up with LockError after its deadline") {
  test::FreshRegistry fresh;
  Lock holder{"job"};
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(Lock("job", {.wait = 300ms}),
                       "lock 'job' on alias 'default' is still held after waiting 300 ms", LockError);
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 300ms);
  CHECK(waited < 2s);
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
    CHECK(lock.extend(50ms));
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
