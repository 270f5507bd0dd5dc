// The torture cases on Redis: checker processes on one key of a real
// redis-server while its holder is SIGKILLed, the server is killed and
// restarted, or stopped with SIGSTOP; no two sections may overlap.
#include <doctest/doctest.h>

#include "../redis_server.hpp"
#include "torture_support.hpp"

using namespace torture;

namespace {

// 3 checkers x 2 threads on `server`; after 1 s `stop` cuts it off for 1.5 s,
// then `resume` brings it back. Sections stop during the outage (acquires
// fail within their timeout, never a false "acquired"), resume after it, and
// none overlaps another.
template <class Stop, class Resume>
void outage(const char* name, std::string_view faults, test::RedisProcess& server, Stop stop, Resume resume) {
  constexpr long timeout_ms = 300;
  Run run{"redis-outage"};
  std::vector<std::unique_ptr<test::Process>> checkers;
  for (int p = 0; p < 3; ++p) {
    checkers.push_back(std::make_unique<test::Process>(run.args(
        p, "redis", server.location(), 2, seconds_per_run() + 4, {"--timeout-ms", std::to_string(timeout_ms)})));
  }
  std::this_thread::sleep_for(1s);
  stop();
  auto before = run.verdict(3).sections;
  std::this_thread::sleep_for(1500ms);
  auto during = run.verdict(3).sections;
  resume();
  auto figures = total(checkers);
  auto v = run.verdict(3);
  report(name, v, figures, faults, timeout_ms);
  CHECK(before > 0);
  CHECK(during - before <= 6);      // at most the sections under way when it stopped
  CHECK(v.sections > during);       // sections resumed after it
  CHECK(figures.cache_errors > 0);  // acquires failed meanwhile
  CHECK(v.overlaps == 0);
  CHECK(v.lost_updates() == 0);
  CHECK(figures.max_call_us < (2 * timeout_ms + 500) * 1000);
}

}  // namespace

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
      "redis, killed, down 1.5 s, restarted", "server killed, then restarted empty", server,
      [&] {
        ::kill(server.pid(), SIGKILL);  // as a crash
        server.stop();                  // reaps it
      },
      [&] { server.start(); });
}

TEST_CASE("torture: redis stopped with SIGSTOP mid-run, then resumed") {
  test::RedisProcess server;
  outage(
      "redis, stopped 1.5 s (SIGSTOP), resumed", "server stopped, then resumed with its keys", server,
      [&] { ::kill(server.pid(), SIGSTOP); }, [&] { ::kill(server.pid(), SIGCONT); });
}
