// Interoperability with django-redis and redis-py's Lock on one Redis: a lock
// taken by one side is seen by the other, both ways, with KEY_PREFIX and VERSION.
//
// Django runs in a child process: tests/redis_peer.py. Debian 12's Django is
// 3.2, without the built-in RedisCache; its key and value format for these
// operations is django-redis's, which is what these tests check.
#include <doctest/doctest.h>

#include <cachelock/lock.hpp>
#include <cachelock/registry.hpp>

#include "python_peer.hpp"
#include "redis_server.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::Lock;
using cachelock::LockError;
using cachelock::RedisCache;

namespace {

// One django-redis process on the alias {LOCATION, KEY_PREFIX, VERSION}.
struct DjangoRedis {
  std::string location;
  std::string key_prefix;
  int version;

  // The JSON line the peer printed for `command`.
  std::string operator()(std::vector<std::string> command) const {
    std::vector<std::string> argv{test::env_or_fail("CACHELOCK_PYTHON"), test::env_or_fail("CACHELOCK_REDIS_PEER"),
                                  location, key_prefix, std::to_string(version)};
    argv.insert(argv.end(), command.begin(), command.end());
    auto result = test::run_peer(argv);
    INFO("redis_peer.py " << command.at(0) << " exited " << result.status << ", stderr:\n" << result.err);
    REQUIRE(result.status == 0);
    return result.out;
  }
};

// The "token" of a `lock` result: {"result": true, "token": "..."}.
std::string token_of(const std::string& json) {
  auto at = json.find(R"("token": ")");
  REQUIRE(at != std::string::npos);
  at += 10;
  return json.substr(at, json.find('"', at) - at);
}

}  // namespace

TEST_CASE("django-redis: the peer makes the same keys as we do") {
  auto& server = test::shared_redis();
  DjangoRedis django{server.location(), "billing", 3};
  RedisCache ours{{.server = server.server()}, {.key_prefix = "billing", .version = 3}};
  CHECK(django({"make_key", "nightly-report"}) == R"({"result": ")" + ours.make_key("nightly-report") + R"("})");
  CHECK(ours.make_key("nightly-report") == "billing:3:nightly-report");
}

TEST_CASE("django-redis: django-redis, redis-py's Lock and cachelock exclude each other on the same key") {
  auto& server = test::shared_redis();
  for (auto location : {server.location(), test::socket_redis().location()}) {
    CAPTURE(location);
    test::FreshRegistry fresh;
    auto prefix = test::unique("djr");
    auto cache = std::make_shared<RedisCache>(
        cachelock::RedisOptions{.server = location == server.location() ? server.server()
                                                                         : test::socket_redis().server()},
        cachelock::CacheOptions{.key_prefix = prefix, .version = 2});
    cachelock::CacheRegistry::global().add("default", cache);
    DjangoRedis django{location, prefix, 2};

    // (1) django-redis takes the key with add(); our Lock is refused.
    CHECK(django({"add", "key", "1"}) == R"({"result": true})");
    CHECK(cache->get("key") == "1");  // an int: its digits
    CHECK_THROWS_WITH_AS(Lock{"key"}, "lock 'key' on alias 'default' is already held", LockError);
    CHECK(django({"delete", "key"}) == R"({"result": true})");

    {
      // (2) We hold the key: django-redis cannot add it, reads our token as
      // a str, and redis-py's Lock cannot take it.
      Lock lock{"key"};
      CHECK(django({"add", "key", "1"}) == R"({"result": false})");
      CHECK(django({"get", "key"}) == R"({"result": ")" + lock.token() + R"(", "type": "str"})");
      CHECK(django({"try_lock", "key"}) == R"({"result": false})");
      CHECK(lock.release());
    }
    // ... and after our release both get it.
    CHECK(django({"try_lock", "key"}) == R"({"result": true})");
    CHECK(django({"add", "key", "1"}) == R"({"result": true})");
    CHECK(django({"delete", "key"}) == R"({"result": true})");

    // (3) redis-py's Lock holds the key: ours is refused; after its release we get it.
    auto held = django({"lock", "key"});
    REQUIRE(held.starts_with(R"({"result": true)"));
    CHECK(cache->get("key") == token_of(held));
    CHECK_THROWS_AS(Lock{"key"}, LockError);
    CHECK(django({"unlock", "key", token_of(held)}) == R"({"result": null})");
    Lock ours{"key"};
    CHECK(ours.release());
  }
}

TEST_CASE("django-redis: Django's values read as held by someone else, never as our token") {
  auto& server = test::shared_redis();
  test::FreshRegistry fresh;
  auto prefix = test::unique("djv");
  auto cache = std::make_shared<RedisCache>(cachelock::RedisOptions{.server = server.server()},
                                            cachelock::CacheOptions{.key_prefix = prefix});
  DjangoRedis django{server.location(), prefix, 1};
  CHECK(django({"add", "n", "7"}) == R"({"result": true})");
  CHECK(cache->incr("n", 5) == 12);  // Django's ints are ours to count too
  CHECK(django({"get", "n"}) == R"({"result": 12, "type": "int"})");
  Lock lock{"other", {.cache = cache}};
  CHECK_FALSE(cache->erase_if_equals("n", lock.token()));
  CHECK(cache->get("n") == "12");
  // Neither an int nor a pickled str of Django's parses as an owner token.
  CHECK_FALSE(cachelock::LockOwner::parse(*cache->get("n")).has_value());
  CHECK(django({"set", "s", "report running"}) == R"({"result": true})");
  CHECK(cache->get("s") == "report running");
  CHECK_FALSE(cachelock::LockOwner::parse(*cache->get("s")).has_value());
  CHECK(cachelock::LockOwner::parse(*cache->get("other")).has_value());
  CHECK_THROWS_AS(Lock("s", {.cache = cache}), LockError);

  // What `cachelock release --force` does: compare with what get() showed.
  // A str Django pickled (at its own protocol) and redis-py's raw token are
  // removed by what they read as, and only by that.
  CHECK_FALSE(cache->erase_if_equals("s", "report done"));
  CHECK(cache->erase_if_equals("s", "report running"));
  CHECK(django({"get", "s"}) == R"({"result": null, "type": "NoneType"})");
  auto held = django({"lock", "pylock"});
  REQUIRE(held.starts_with(R"({"result": true)"));
  CHECK(cache->erase_if_equals("pylock", *cache->get("pylock")));
  CHECK(django({"try_lock", "pylock"}) == R"({"result": true})");
}
