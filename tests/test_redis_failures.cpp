// RedisCache when things go wrong: a dead server, a stopped one (SIGSTOP), a
// reply that comes too late, a restart, and a fork() with pooled connections.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cachelock/errors.hpp>
#include <cachelock/lock.hpp>

#include "redis_server.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::CacheError;
using cachelock::RedisCache;
using cachelock::RedisOptions;
using Clock = std::chrono::steady_clock;

namespace {

std::shared_ptr<RedisCache> cache_on(const test::RedisProcess& server, RedisOptions redis = {},
                                     std::string prefix = test::unique("fail")) {
  redis.server = server.server();
  return std::make_shared<RedisCache>(std::move(redis), cachelock::CacheOptions{.key_prefix = std::move(prefix)});
}

// Resumes a server stopped with SIGSTOP when the test ends, whatever happens.
struct Resume {
  pid_t pid;
  ~Resume() { ::kill(pid, SIGCONT); }
};

}  // namespace

TEST_CASE("redis: a dead server fails each call at once, naming it; locks fail closed") {
  auto port = test::free_loopback_port();  // nothing listens there
  RedisCache dead{{.server = {.host = "127.0.0.1", .port = static_cast<std::uint16_t>(port)}}};
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(dead.add("job", "me", 10s),
                       ("redis 127.0.0.1:" + std::to_string(port) + ": set ':1:job' failed: cannot connect: "
                        "Connection refused").c_str(),
                       CacheError);
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = std::shared_ptr<cachelock::Cache>(&dead, [](auto*) {})}),
                  CacheError);
  CHECK(test::elapsed_ms(start) < 500);
}

TEST_CASE("redis: a stopped server (SIGSTOP) fails each call within connect_timeout + timeout") {
  test::RedisProcess server;
  auto cache = cache_on(server, {.connect_timeout = 200ms, .timeout = 300ms, .pool_size = 2});
  cache->set("k", "v");  // a pooled connection, opened before the stop
  ::kill(server.pid(), SIGSTOP);
  Resume resume{server.pid()};
  for (int call = 0; call < 3; ++call) {
    auto start = Clock::now();
    CHECK_THROWS_WITH_AS(cache->add("job", "me", 10s), doctest::Contains("set '"), CacheError);
    auto took = test::elapsed_ms(start);
    CHECK(took >= 250);
    CHECK(took < test::slow(900ms).count());
  }
  CHECK(cache->operation_timeout() == 500ms);
}

TEST_CASE("redis: a reply that comes after the timeout is never taken for a later call's") {
  test::RedisProcess server;
  auto cache = cache_on(server, {.timeout = 200ms, .pool_size = 1});
  REQUIRE(cache->add("held", "other", 60s));
  // The server stops between our SET NX and its answer: the answer ("nil",
  // refused) arrives after the timeout. Read as the reply to the next SET NX
  // on a free key, it would say "refused"; read as the reply to a GET it would
  // say "absent".
  ::kill(server.pid(), SIGSTOP);
  {
    Resume resume{server.pid()};
    std::thread wake{[&] {
      std::this_thread::sleep_for(400ms);
      ::kill(server.pid(), SIGCONT);
    }};
    CHECK_THROWS_WITH_AS(cache->add("held", "me", 60s), doctest::Contains("no reply within timeout (200 ms)"),
                         CacheError);
    wake.join();
  }
  std::this_thread::sleep_for(100ms);  // the late "nil" is on the old socket by now
  CHECK(cache->add("free", "me", 60s));
  CHECK(cache->get("held") == "other");
  CHECK(cache->get("free") == "me");
}

TEST_CASE("redis: after a restart without persistence locks are gone, and the cache reconnects") {
  test::RedisProcess server;
  auto cache = cache_on(server);
  REQUIRE(cache->add("job", "me", 60s));
  server.stop();
  CHECK_THROWS_AS(cache->get("job"), CacheError);  // the pooled connection is closed
  server.start();
  CHECK_FALSE(cache->get("job").has_value());  // nothing was saved: the lock was freed
  CHECK(cache->add("job", "next", 60s));
  CHECK(cache->erase_if_equals("job", "next"));  // the scripts are loaded again with EVAL
}

TEST_CASE("redis: after a restart, new connections AUTH and SELECT again: a lock stays in its database") {
  // Were SELECT skipped on a reconnect, the lock would land in database 0,
  // where a Django on database 2 would never see it.
  test::RedisProcess secured{{"--requirepass", "s3cret"}};
  RedisOptions redis{.server = secured.server()};
  redis.server.password = "s3cret";
  redis.server.db = 2;
  auto cache = std::make_shared<RedisCache>(std::move(redis));
  REQUIRE(cache->add("job", "before", 60s));
  REQUIRE(secured.get_in_db(2, ":1:job", "s3cret").text.find("before") != std::string::npos);
  secured.stop();
  secured.start();
  cachelock::Lock lock{"job", {.cache = cache, .ttl = 60s}};
  CHECK(secured.get_in_db(0, ":1:job", "s3cret").is_nil());
  CHECK(secured.get_in_db(2, ":1:job", "s3cret").text.find(lock.token()) != std::string::npos);
  CHECK(lock.release());
  CHECK(secured.get_in_db(2, ":1:job", "s3cret").is_nil());
}

TEST_CASE("redis: a connection the server closed while idle is not used: a release still frees the key") {
  // The server's idle timeout (as a restart, CLIENT KILL or a proxy's cut)
  // closes the pooled connection while a lock is held; the release must not
  // fail on it and leave the key blocked for its whole ttl.
  test::RedisProcess server;
  server.command({"CONFIG", "SET", "timeout", "1"});
  auto cache = cache_on(server, {.pool_size = 1});
  {
    cachelock::Lock lock{"idle", {.cache = cache, .ttl = 60s}};
    // Until the server has closed the idle connection: then the only client
    // left is the one that asks.
    auto deadline = Clock::now() + test::slow(std::chrono::milliseconds{5000});
    while (server.info("connected_clients", "clients") != "1" && Clock::now() < deadline) {
      std::this_thread::sleep_for(100ms);
    }
    REQUIRE(server.info("connected_clients", "clients") == "1");
    CHECK(lock.release());
  }
  CHECK_FALSE(server.raw_get(cache->make_key("idle")).has_value());
}

TEST_CASE("redis: a forked child opens its own connections; the parent's keep working") {
  auto& server = test::shared_redis();
  auto cache = cache_on(server, {.pool_size = 1});
  cache->set("parent", "p");
  cache->set("child", "c");
  // Parent and child read at the same time: on a shared socket each would
  // take some of the other's replies.
  pid_t child = ::fork();
  if (child == 0) {
    bool ok = true;
    for (int i = 0; i < 300 && ok; ++i) ok = cache->get("child") == "c";
    ::_exit(ok ? 0 : 1);
  }
  for (int i = 0; i < 300; ++i) REQUIRE(cache->get("parent") == "p");
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(cache->get("parent") == "p");
}

TEST_CASE("redis: when every pooled connection is busy, a call waits for one at most timeout more") {
  test::RedisProcess server;
  auto cache = cache_on(server, {.timeout = 300ms, .pool_size = 1});
  cache->set("k", "v");
  ::kill(server.pid(), SIGSTOP);
  Resume resume{server.pid()};
  std::thread busy{[&] { CHECK_THROWS_AS(cache->get("k"), CacheError); }};
  std::this_thread::sleep_for(50ms);
  // It waits while the other call waits for its reply; which of the two
  // timeouts ends it depends on who takes the freed connection first.
  auto start = Clock::now();
  CHECK_THROWS_AS(cache->get("k"), CacheError);
  CHECK(test::elapsed_ms(start) >= 250);
  CHECK(test::elapsed_ms(start) < test::slow(900ms).count());
  busy.join();
}

TEST_CASE("redis: a connection the server closed never raises SIGPIPE in the caller") {
  // hiredis writes with write(), not send(MSG_NOSIGNAL): a second write to a
  // connection the server closed would raise SIGPIPE, which ends a process
  // that does not ignore it. A value larger than the socket's send buffer
  // makes hiredis write more than once; the server closes the connection
  // as soon as it reads a bulk length over its limit.
  test::RedisProcess server;
  server.command({"CONFIG", "SET", "proto-max-bulk-len", "1048576"});
  auto cache = cache_on(server, {.pool_size = 1});
  cache->set("k", "v");  // the pooled connection
  CHECK_THROWS_AS(cache->set("big", std::string(32 << 20, 'x')), CacheError);
  cache->set("k", "w");  // a new connection
  CHECK(cache->get("k") == "w");
}
