// RedisCache: the conformance suite on a real redis-server (TCP and unix
// socket), then what only this backend stores: values as Django's clients
// store them, millisecond expiries, the scripts and their NOSCRIPT fallback.
#include "cache_conformance.hpp"
#include "redis_scripts.hpp"
#include "redis_server.hpp"

using namespace std::chrono_literals;
using cachelock::CacheError;
using cachelock::RedisCache;
using cachelock::RedisOptions;

namespace {

std::shared_ptr<RedisCache> redis_cache(const test::RedisProcess& server, cachelock::CacheOptions options = {},
                                        RedisOptions redis = {}) {
  redis.server = server.server();
  return std::make_shared<RedisCache>(std::move(redis), std::move(options));
}

// Redis keeps milliseconds: a 200 ms entry is surely gone 400 ms later.
struct TcpBackend {
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return redis_cache(test::shared_redis(), std::move(options));
  }
  static constexpr auto short_ttl = 200ms;
  static constexpr auto expired_after = 400ms;
};

struct SocketBackend {
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return redis_cache(test::socket_redis(), std::move(options));
  }
  static constexpr auto short_ttl = 200ms;
  static constexpr auto expired_after = 400ms;
};

}  // namespace

TYPE_TO_STRING(TcpBackend);
TYPE_TO_STRING(SocketBackend);
CACHELOCK_CONFORMANCE(TcpBackend, SocketBackend);

TEST_CASE("redis: the fixtures run a real redis-server, on TCP and on a unix socket, without persistence") {
  auto& tcp = test::shared_redis();
  CHECK(tcp.command({"PING"}).text == "PONG");
  CHECK(tcp.command({"CONFIG", "GET", "save"}).items.at(1).empty());
  CHECK(tcp.command({"CONFIG", "GET", "appendonly"}).items.at(1) == "no");
  CHECK(test::socket_redis().command({"PING"}).text == "PONG");
  CHECK(test::socket_redis().location().starts_with("unix:///tmp/"));
}

TEST_CASE("redis: values are stored as Django's clients store them: ints as digits, the rest pickled") {
  auto& server = test::shared_redis();
  auto cache = redis_cache(server, {.key_prefix = test::unique("values")});
  cache->set("n", "42");
  CHECK(server.raw_get(cache->make_key("n")) == "42");
  cache->set("minus", "-7");
  CHECK(server.raw_get(cache->make_key("minus")) == "-7");
  // Not Python's str(int): pickled as a str, so Django reads "007", not 7.
  for (std::string text : {"007", "+5", "-0", " 1", "99999999999999999999"}) {
    cache->set("s", text);
    CHECK(server.raw_get(cache->make_key("s")) != text);
    CHECK(cache->get("s") == text);
  }
  // pickle.dumps("abc", 4): PROTO 4, SHORT_BINUNICODE, MEMOIZE, STOP.
  cache->set("t", "abc");
  CHECK(server.raw_get(cache->make_key("t")) == std::string{"\x80\x04\x95\x07\x00\x00\x00\x00\x00\x00\x00\x8c\x03"
                                                            "abc\x94.",
                                                            18});
  // A value neither digits nor a pickle (redis-py's Lock token) reads as its bytes.
  server.command({"SET", cache->make_key("raw"), "a1b2c3"});
  CHECK(cache->get("raw") == "a1b2c3");
}

TEST_CASE("redis: a ttl is stored in milliseconds, at least as long as asked; never has no expiry") {
  auto& server = test::shared_redis();
  auto cache = redis_cache(server, {.key_prefix = test::unique("ttl")});
  REQUIRE(cache->add("k", "v", 1500ms));
  auto left = server.pttl(cache->make_key("k"));
  CHECK(left > 1400);
  CHECK(left <= 1500);
  cache->set("forever", "v", cachelock::Timeout::never());
  CHECK(server.pttl(cache->make_key("forever")) == -1);
  CHECK(cache->touch("forever", 2s));
  CHECK(server.pttl(cache->make_key("forever")) > 1900);
  CHECK(cache->touch("forever", cachelock::Timeout::never()));
  CHECK(server.pttl(cache->make_key("forever")) == -1);
  CHECK(cache->touch("forever", cachelock::Timeout::never()));  // present, already without expiry
  CHECK_FALSE(cache->touch("absent", cachelock::Timeout::never()));
  REQUIRE(cache->add("lock", "me", 1s));
  CHECK(cache->replace_if_equals("lock", "me", "me", 5s));
  CHECK(server.pttl(cache->make_key("lock")) > 4900);
  CHECK(cache->replace_if_equals("lock", "me", "me", cachelock::Timeout::never()));
  CHECK(server.pttl(cache->make_key("lock")) == -1);
  CHECK(cache->replace_if_equals("lock", "me", "me", 0s));  // already expired: removed
  CHECK(server.pttl(cache->make_key("lock")) == -2);
}

TEST_CASE("redis: an already expired add stores nothing, as django-redis's") {
  auto& server = test::shared_redis();
  auto cache = redis_cache(server, {.key_prefix = test::unique("expired")});
  CHECK(cache->add("k", "v", 0s));
  CHECK_FALSE(server.raw_get(cache->make_key("k")).has_value());
  cache->set("k", "v");
  CHECK_FALSE(cache->add("k", "w", 0s));
  CHECK(cache->get("k") == "v");
}

TEST_CASE("redis: each script's digest is the one the server computes") {
  auto& server = test::shared_redis();
  for (const auto* script : {&cachelock::detail::redis::release, &cachelock::detail::redis::replace,
                             &cachelock::detail::redis::persist, &cachelock::detail::redis::increment}) {
    CHECK(server.command({"SCRIPT", "LOAD", std::string{script->text}}).text == script->sha1);
  }
}

TEST_CASE("redis: after SCRIPT FLUSH a release falls back to EVAL once, then EVALSHA works again") {
  auto& server = test::shared_redis();
  auto cache = redis_cache(server, {.key_prefix = test::unique("noscript")});
  auto noscript = [&] {
    auto line = server.info("errorstat_NOSCRIPT", "errorstats");  // "count=N"
    return line.empty() ? 0 : std::stoi(line.substr(6));
  };
  server.command({"SCRIPT", "FLUSH"});
  const int before = noscript();
  REQUIRE(cache->add("k", "mine", 10s));
  CHECK(cache->erase_if_equals("k", "mine"));
  CHECK(noscript() == before + 1);
  REQUIRE(cache->add("k", "mine", 10s));
  CHECK_FALSE(cache->erase_if_equals("k", "theirs"));
  CHECK(cache->erase_if_equals("k", "mine"));
  CHECK(noscript() == before + 1);  // loaded by the EVAL
  CHECK_FALSE(cache->get("k").has_value());
}

TEST_CASE("redis: errors name the server, the operation and the key; the connection survives an error reply") {
  test::RedisProcess server;  // its own: the connections it counts are this test's
  auto connections = [&] { return std::stoll(server.info("total_connections_received", "stats")); };
  auto before = connections();  // each look opens a connection of its own
  auto cache = redis_cache(server, {.key_prefix = "errs"}, {.pool_size = 1});
  server.command({"LPUSH", "errs:1:list", "x"});
  CHECK_THROWS_WITH_AS(cache->get("list"),
                       ("redis 127.0.0.1:" + std::to_string(server.port()) +
                        ": get 'errs:1:list' failed: WRONGTYPE Operation against a key holding the wrong kind of value")
                           .c_str(),
                       CacheError);
  cache->set("k", "v");
  CHECK(cache->get("k") == "v");
  for (int i = 0; i < 20; ++i) {
    CHECK_THROWS_AS(cache->get("list"), CacheError);
    CHECK(cache->get("k") == "v");
  }
  // The LPUSH's connection, this look's, and the cache's one: an error reply
  // does not cost the cache its connection.
  CHECK(connections() - before == 3);
}

TEST_CASE("redis: with a pool of one, threads take turns on one connection") {
  auto& server = test::shared_redis();
  auto cache = redis_cache(server, {.key_prefix = test::unique("pool")}, {.pool_size = 1});
  cache->set("n", "0");
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) cache->incr("n");
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(cache->get("n") == "800");
}
