// The torture cases on Redis: checker processes on one key of a real
// redis-server while its holder is SIGKILLed, the server is killed and
// restarted, or stopped with SIGSTOP; no two sections may overlap.
#include <doctest/doctest.h>

#include "../redis_server.hpp"
#include "torture_support.hpp"

using namespace torture;

TEST_CASE("torture: redis, 4 processes x 2 threads") {
  test::RedisProcess server;
  plain_run("redis, 4 processes x 2 threads", "redis", server.location(), 4, 2);
}

TEST_CASE("torture: redis, a holder killed mid-section") {
  test::RedisProcess server;
  killed_holder("redis, holder killed (ttl 1 s)", "redis", server.location(), 1000);
}

TEST_CASE("torture: redis, a section that outlives its ttl; fork() while holding") {
  test::RedisProcess server;
  auto cache = std::make_shared<cachelock::RedisCache>(cachelock::RedisOptions{.server = server.server()});
  outlived_ttl(cache, 300ms, 600ms);  // Redis keeps milliseconds
  fork_while_holding(cache);
}

TEST_CASE("torture: redis killed mid-run, then restarted") {
  test::RedisProcess server;
  outage(
      "redis, killed, down 1.5 s, restarted", "server killed, then restarted empty", "redis", server.location(),
      [&] {
        ::kill(server.pid(), SIGKILL);  // as a crash
        server.stop();                  // reaps it
      },
      [&] { server.start(); });
}

TEST_CASE("torture: redis stopped with SIGSTOP mid-run, then resumed") {
  test::RedisProcess server;
  outage(
      "redis, stopped 1.5 s (SIGSTOP), resumed", "server stopped, then resumed with its keys", "redis",
      server.location(),
      [&] { ::kill(server.pid(), SIGSTOP); }, [&] { ::kill(server.pid(), SIGCONT); });
}
