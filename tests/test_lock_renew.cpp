// Lock with renew: renewals keep a lock past its ttl, and outages, hung or
// failing renewals give it up in time; renewal across fork().
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "lock_support.hpp"
#include "process.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

using cachelock::Lock;
using cachelock::LockError;
using test::default_cache;
using test::holds_token;

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
  CHECK(test::exit_code_in_child([&] {
          ::alarm(5);  // a deadlock ends the child by SIGALRM
          return lock.token() == token ? 0 : 1;
        }) == 0);
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


// Not built under ThreadSanitizer, which cannot start threads in the child
// of a threaded process; the plain and AddressSanitizer runs cover it.
#if !defined(__SANITIZE_THREAD__)
TEST_CASE("renewal works in a child of fork(), apart from the parent's") {
  test::FreshRegistry fresh;
  auto dir = std::string{"/tmp/cachelock-fork-renew-"} + std::to_string(::getpid());
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = dir});
  Lock parent_lock{"parent", {.cache = cache, .ttl = test::slow(300ms), .renew = true}};
  CHECK(test::exit_code_in_child([&] {
          Lock child_lock{"child", {.cache = cache, .ttl = test::slow(300ms), .renew = true}};
          std::this_thread::sleep_for(test::slow(1000ms));  // three ttls: only renewal keeps it
          Lock intruder{"child", std::defer_lock, {.cache = cache}};
          int code = intruder.try_acquire() ? 3 : 0;
          if (child_lock.lost() || !child_lock.release()) code = 4;
          return code;
        }) == 0);
  CHECK_FALSE(parent_lock.lost());
  CHECK(holds_token(*cache, "parent", parent_lock));
  CHECK(parent_lock.release());
  std::filesystem::remove_all(dir);
}
#endif
