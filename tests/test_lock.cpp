// Lock: the scoped guard on the global registry's default alias: tokens,
// expiry, extend, keys and options, custom and dummy caches, fork.
#include <doctest/doctest.h>

#include <unistd.h>

#include <memory>
#include <thread>

#include "lock_support.hpp"
#include "process.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

using cachelock::Lock;
using cachelock::LockError;
using test::default_cache;

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
  // The child's copy of the guard must not touch the (shared, in real
  // backends) lock: it reports through its exit code how many erases it made.
  CHECK(test::exit_code_in_child([&] {
          bool released = lock->release();
          lock.reset();
          return (released ? 10 : 0) + (cache->erases.load() - erases_before);
        }) == 0);
  CHECK(lock->release());  // the parent still owns it
}

