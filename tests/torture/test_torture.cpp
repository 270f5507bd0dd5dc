// The torture driver: runs checker processes against each backend, injects
// faults, then checks the logs: no two critical sections overlap, and the
// counter equals the number of sections (no lost update).
//
// $CACHELOCK_TORTURE_SECONDS sets how long each run lasts (default 2);
// scripts/torture --long sets it high. Each case prints one line of figures.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <cachelock/cachelock.hpp>
#include <cachelock/once.hpp>

#include "../process.hpp"
#include "../support.hpp"
#include "torture_support.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "../fake_memcached.hpp"
#include "../memcached_server.hpp"
#endif

using namespace std::chrono_literals;
namespace fs = std::filesystem;

using namespace torture;

TEST_CASE("torture: a section that outlives its ttl; fork() while holding") {
  Run run{"ttl"};
  auto cache = std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = run.dir + "/locks"});
  outlived_ttl(cache, 300ms, 600ms);
  fork_while_holding(cache);
#if CACHELOCK_HAS_MEMCACHED
  test::MemcachedProcess server;
  auto memcached = std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{.servers = {server.server()}});
  outlived_ttl(memcached, 1000ms, 3500ms);  // memcached keeps it up to two seconds longer
  fork_while_holding(memcached);
#endif
}

TEST_CASE("torture: memory, 1 process x 8 threads") { plain_run("memory, 1 process x 8 threads", "memory", "", 1, 8); }

TEST_CASE("torture: file, 4 processes x 2 threads") { plain_run("file, 4 processes x 2 threads", "file", "", 4, 2); }

TEST_CASE("torture: file, a holder killed mid-section") {
  killed_holder("file, holder killed (ttl 1 s)", "file", "", 1000);
}

// `cachelock run` holds the lock for a shell PROGRAM whose grandchildren (two
// checkers in --write-sections mode) write the sections. The first holder is
// SIGKILLed, or its lock is released by force; the next holder's PROGRAM
// then writes too. No section of the first may overlap one of the next.
TEST_CASE("torture: cli, a PROGRAM's grandchildren write; cachelock SIGKILLed or its lock released by force") {
  const char* cli = std::getenv("CACHELOCK_CLI");
  if (cli == nullptr || *cli == '\0') {
    MESSAGE("skipped: built without the command-line tool (-Dcli=false)");
    return;
  }
  Run run{"cli"};
  auto settings = run.dir + "/settings.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: file\n    LOCATION: " << run.dir << "/locks\n";
  auto sections = run.dir + "/sections";
  auto holder = [&](const std::string& tag, std::vector<std::string> run_options, double seconds) {
    std::vector<std::string> args{cli, "--settings", settings, "run", "job"};
    args.insert(args.end(), run_options.begin(), run_options.end());
    auto writer = "\"$0\" --write-sections " + tag + " --history " + sections + " --seconds " +
                  std::to_string(seconds) + " & ";
    for (std::string part : {"--", "sh", "-c"}) args.push_back(part);
    args.push_back(writer + writer + "wait");
    args.push_back(checker_path());
    return args;
  };
  struct Section {
    std::string tag;
    long long start, end;
  };
  auto read_sections = [&] {
    std::vector<Section> all;
    std::ifstream in{sections};
    for (Section s; in >> s.tag >> s.start >> s.end;) all.push_back(s);
    return all;
  };
  auto written_by = [&](const std::string& tag) {
    auto all = read_sections();
    return std::count_if(all.begin(), all.end(), [&](const Section& s) { return s.tag == tag; });
  };

  // 1. cachelock SIGKILLed: its lock frees at its ttl (1 s), and the next
  // holder, waiting for it, then starts.
  test::Process killed{holder("killed", {"--ttl", "1"}, 30)};
  REQUIRE(test::eventually([&] { return written_by("killed") >= 20; }, test::slow(10s)));
  killed.signal(SIGKILL);
  CHECK(killed.wait() == 128 + SIGKILL);
  CHECK(test::run(holder("after-kill", {"--wait", "30"}, 1)).code == 0);

  // 2. The lock released by force: the holder notices at its next renewal
  // (ttl 3 s: within a second), stops its PROGRAM's group and exits 79; the
  // next holder starts after that.
  test::Process broken{holder("broken", {"--ttl", "3"}, 30)};
  REQUIRE(test::eventually([&] { return written_by("broken") >= 20; }, test::slow(10s)));
  CHECK(test::run({cli, "--settings", settings, "release", "job", "--force"}).code == 0);
  CHECK(broken.wait() == 79);
  CHECK(test::run(holder("after-release", {}, 1)).code == 0);

  // A holder's own writers run side by side; sections of different holders never may.
  auto all = read_sections();
  std::sort(all.begin(), all.end(), [](const Section& a, const Section& b) { return a.start < b.start; });
  std::map<std::string, long long> latest_end;
  long overlaps = 0;
  for (const auto& s : all) {
    for (const auto& [tag, end] : latest_end) overlaps += tag != s.tag && end > s.start;
    latest_end[s.tag] = std::max(latest_end[s.tag], s.end);
  }
  std::map<std::string, long> counts;
  for (const auto& s : all) ++counts[s.tag];
  std::printf("torture: %-42s sections %6zu  overlaps %ld  (killed %ld, after-kill %ld, broken %ld, after-release %ld)"
              "  faults: cachelock SIGKILLed; lock released by force\n",
              "cli, PROGRAM's grandchildren write", all.size(), overlaps, counts["killed"], counts["after-kill"],
              counts["broken"], counts["after-release"]);
  std::fflush(stdout);
  CHECK(counts["after-kill"] > 0);
  CHECK(counts["after-release"] > 0);
  CHECK(overlaps == 0);
}

#if CACHELOCK_HAS_MEMCACHED
// Each memcached case runs with the lock operations in the meta protocol
// (backend "memcached", the default) and without ("memcached-libmemcached").
constexpr const char* memcached_paths[] = {"memcached", "memcached-libmemcached"};

TEST_CASE("torture: memcached, 4 processes x 2 threads") {
  for (auto* path : memcached_paths) {
    test::MemcachedProcess server;
    plain_run((std::string{path} + ", 4 processes x 2 threads").c_str(), path, server.location(), 4, 2);
  }
}

TEST_CASE("torture: memcached, binary protocol and three servers, with and without meta") {
  test::MemcachedProcess a, b, c;
  auto three = a.location() + "," + b.location() + "," + c.location();
  for (std::string path : {"memcached-binary", "memcached-binary-libmemcached"}) {
    plain_run((path + ", 4 processes x 2 threads").c_str(), path, a.location(), 4, 2);
  }
  for (std::string path : memcached_paths) {
    // One key, which the placement puts on one of the three: every process must look for it there.
    plain_run((path + ", three servers, 4 processes x 2 threads").c_str(), path, three, 4, 2);
  }
}

TEST_CASE("torture: memcached, a holder killed mid-section") {
  for (auto* path : memcached_paths) {
    test::MemcachedProcess server;
    killed_holder((std::string{path} + ", holder killed (ttl 2 s)").c_str(), path, server.location(), 2000);
  }
}

TEST_CASE("torture: memcached killed mid-run, then restarted") {
  for (auto* path : memcached_paths) {
    test::MemcachedProcess server;
    outage(
        (std::string{path} + ", killed, down 1.5 s, restarted").c_str(), "server killed, then restarted empty", path,
        server.location(),
        [&] {
          // SIGKILL, as a crash: on SIGTERM memcached 1.6 goes on serving its
          // connected clients for a while before it exits.
          ::kill(server.pid(), SIGKILL);
          server.stop();  // reaps it
        },
        [&] { server.start(); });
  }
}

TEST_CASE("torture: cachelock run --wait waiters across a memcached restart all run, none overlap") {
  const char* cli = std::getenv("CACHELOCK_CLI");
  if (cli == nullptr) {
    MESSAGE("skipped: CACHELOCK_CLI is not set (cachelock built with -Dcli=false)");
    return;
  }
  test::MemcachedProcess server;
  Run run{"wait-restart"};
  auto settings = run.dir + "/settings.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " << server.location()
                          << "\n    OPTIONS: {connect_timeout: 0.2, timeout: 0.2}\n";
  // Each waiter runs one section of 50-100 ms under the lock, logged to history 0.
  auto waiter = [&] {
    return std::make_unique<test::Process>(std::vector<std::string>{
        cli, "--settings", settings, "run", "job", "--wait", "60", "--", checker_path(), "--section", "--counter",
        run.counter(), "--history", run.history(0), "--max-hold-us", "100000"});
  };
  constexpr int before_crash = 6, during_outage = 4;
  std::vector<std::unique_ptr<test::Process>> waiters;
  for (int i = 0; i < before_crash; ++i) waiters.push_back(waiter());
  std::this_thread::sleep_for(300ms);
  ::kill(server.pid(), SIGKILL);  // as a crash
  server.stop();
  auto at_crash = run.verdict(1).sections;
  for (int i = 0; i < during_outage; ++i) waiters.push_back(waiter());
  // Down longer than any section: one under way at the crash ends before
  // the restart, so the lock the restart forgets protects nothing any more.
  std::this_thread::sleep_for(1700ms);
  server.start();
  int failed = 0;
  for (auto& w : waiters) {
    if (w->wait() != 0) {
      ++failed;
      MESSAGE("a waiter failed: " << w->err());
    }
  }
  auto v = run.verdict(1);
  Figures figures;
  figures.sections = v.sections;
  report("memcached restart under run --wait waiters", v, figures, "server killed, down 1.7 s, restarted", 200);
  CHECK(at_crash < before_crash);  // some were still waiting when it died
  CHECK(failed == 0);              // every waiter ran: none gave up at the outage
  CHECK(v.sections == before_crash + during_outage);
  CHECK(v.overlaps == 0);
  CHECK(v.lost_updates() == 0);
}

TEST_CASE("torture: a restarted memcached has forgotten the lock, and extend says so") {
  test::MemcachedProcess server;
  auto cache = std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{.servers = {server.server()}});
  cachelock::Lock held{"job", {.cache = cache, .ttl = 30s}};
  ::kill(server.pid(), SIGKILL);
  server.stop();
  CHECK_THROWS_AS(held.extend(), cachelock::CacheError);  // down: the holder cannot tell
  server.start();
  // The first call after the restart may still meet the dead connection.
  std::optional<bool> extended;
  for (int attempt = 0; attempt < 3 && !extended; ++attempt) {
    try {
      extended = held.extend();
    } catch (const cachelock::CacheError&) {
    }
  }
  REQUIRE(extended.has_value());
  CHECK_FALSE(*extended);  // up again, empty: the lock is gone, and the holder is told
  CHECK_FALSE(held.owns_lock());
  cachelock::Lock next{"job", {.cache = cache}};  // anyone may take it now
  CHECK(next.owns_lock());
}

TEST_CASE("torture: a memcached that accepts and never answers fails every call within its timeout") {
  test::FakeMemcached silent{[](const std::string&) { return std::optional<std::string>{}; }};
  Run run{"silent"};
  constexpr long timeout_ms = 300;
  std::vector<std::unique_ptr<test::Process>> checkers;
  checkers.push_back(std::make_unique<test::Process>(run.args(0, "memcached", silent.server().to_string(), 2,
                                                             seconds_per_run(),
                                                             {"--timeout-ms", std::to_string(timeout_ms)})));
  auto figures = total(checkers);
  auto v = run.verdict(1);
  report("memcached silent server", v, figures, "a server that never answers", timeout_ms);
  CHECK(v.sections == 0);  // nothing ever counted as acquired
  CHECK(figures.cache_errors > 0);
  CHECK(figures.cache_errors == figures.calls);
  // Each call: one connect (immediate on loopback) plus one wait for a reply.
  CHECK(figures.max_call_us < (2 * timeout_ms + 200) * 1000);
}

TEST_CASE("torture: bad keys are refused before anything reaches the server") {
  test::FakeMemcached fake{[](const std::string&) { return std::optional<std::string>{"ERROR\r\n"}; }};
  cachelock::MemcachedCache cache{{.servers = {fake.server()}}};
  const std::string bad[] = {"has space", "x\r\nflush_all", std::string{"nul\0byte", 8}, std::string(251, 'k')};
  for (const auto& key : bad) {
    CAPTURE(key);
    CHECK_THROWS_AS(cachelock::Lock(key, {.cache = std::shared_ptr<cachelock::Cache>(&cache, [](auto*) {})}),
                    cachelock::InvalidKeyError);
    auto job = cachelock::once("job-{0}", {.cache = std::shared_ptr<cachelock::Cache>(&cache, [](auto*) {})},
                               [](const std::string&) {});
    CHECK_THROWS_AS(job(key), cachelock::InvalidKeyError);
  }
  CHECK(fake.connections() == 0);
  CHECK(fake.commands() == 0);

  test::MemcachedProcess server;
  cachelock::MemcachedCache real{{.servers = {server.server()}}};
  for (int i = 0; i < 20; ++i) real.set("keep-" + std::to_string(i), "v");
  CHECK_THROWS_AS(real.add("x\r\nflush_all", "v"), cachelock::InvalidKeyError);
  CHECK_THROWS_AS(real.set("x\r\nflush_all\r\n", "v"), cachelock::InvalidKeyError);
  for (int i = 0; i < 20; ++i) CHECK(real.get("keep-" + std::to_string(i)) == "v");
}
#endif
