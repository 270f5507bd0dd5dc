// cachelock on memcached aliases: evictions and check, servers that are not
// memcached or lack CAS, restarts, ttls too short to renew, lost locks.
#include <doctest/doctest.h>

#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include <cachelock/cachelock.hpp>

#include "cli_support.hpp"
#include "support.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "fake_memcached.hpp"
#include "fake_scripts.hpp"
#include "memcached_server.hpp"
#endif

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test::Process;
using test::Sandbox;

#if CACHELOCK_HAS_MEMCACHED
namespace {

// A settings file in the sandbox whose default alias is the memcached at
// `location` (one server, or a YAML list of them), with `options` as OPTIONS.
std::string memcached_settings(const Sandbox& box, const std::string& name, const std::string& location,
                               const std::string& options = "") {
  auto path = box.dir + "/" + name + ".yaml";
  std::ofstream{path} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " << location << "\n"
                      << (options.empty() ? "" : "    OPTIONS: " + options + "\n");
  return path;
}

}  // namespace

TEST_CASE("cli: a memcached short of memory evicts held locks, and check warns about it") {
  Sandbox box;
  // -I: memcached refuses an item limit above half the memory, 1 MB by default.
  test::MemcachedProcess server{std::vector<std::string>{"-m", "1", "-I", "512k"}};
  auto settings = memcached_settings(box, "small", server.location());
  auto cache = std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{.servers = {server.server()}});
  auto quiet = box.run({"--settings", settings, "check"});
  CHECK(quiet.code == 0);
  CHECK(quiet.out.find("has evicted") == std::string::npos);
  CHECK(quiet.out.find("\n  memcached " + server.location() + ": evictions on\n  warning: memcached " +
                       server.location() +
                       " may evict: held locks can be lost before their ttl; run lock servers with -M\n") !=
        std::string::npos);

  cachelock::Lock held{"job", {.cache = cache, .ttl = 600s}};
  // Other traffic, entries of every size near a lock's, far more than 1 MB of it.
  for (int i = 0; i < 100'000; ++i) cache->set("filler-" + std::to_string(i), std::string(20 + i % 100, 'x'));
  long evictions = 0;
  for (const auto& s : cache->stats()) evictions += std::atol(s.values.at("evictions").c_str());
  CHECK(evictions > 0);
  // The hazard, shown: the held lock was evicted, and a second owner gets it.
  cachelock::Lock second{"job", std::defer_lock, {.cache = cache}};
  bool taken_twice = second.try_acquire();
  CHECK(taken_twice);
  MESSAGE("memcached -m 1 evicted " << evictions << " items; the held lock "
                                    << std::string{taken_twice ? "was evicted and taken by a second owner" : "survived"});

  auto warned = box.run({"--settings", settings, "check"});
  CHECK(warned.code == 0);
  CHECK(warned.out.find("warning: memcached " + server.location() + " has evicted ") != std::string::npos);
}

TEST_CASE("cli: check says whether each memcached may evict, and names a dead one of several") {
  Sandbox box;
  test::MemcachedProcess evicting;
  test::MemcachedProcess locks_only{{"-M"}};
  auto settings = memcached_settings(box, "two", "[" + evicting.location() + ", " + locks_only.location() + "]",
                                     "{connect_timeout: 0.5, timeout: 0.5}");
  auto both = box.run({"--settings", settings, "check"});
  CHECK(both.code == 0);
  CHECK(both.out.find("\n  memcached " + evicting.location() + ": evictions on\n  warning: memcached " +
                      evicting.location() + " may evict: ") != std::string::npos);
  CHECK(both.out.find("\n  memcached " + locks_only.location() + ": evictions off (-M)\n") != std::string::npos);
  CHECK(both.out.find("warning: memcached " + locks_only.location()) == std::string::npos);

  // One server down: check fails, naming it (and not the live one).
  auto dead = locks_only.location();
  locks_only.stop();
  auto failed = box.run({"--settings", settings, "check"});
  CHECK(failed.code == 69);
  auto at = failed.out.find("failed: ");
  REQUIRE(at != std::string::npos);
  auto failure = failed.out.substr(at);
  CHECK(failure.find("memcached " + dead + ": ") != std::string::npos);
  CHECK(failure.find(evicting.location()) == std::string::npos);
}

TEST_CASE("cli: check says which protocol the lock operations speak to each memcached") {
  Sandbox box;
  test::MemcachedProcess real;
  for (const auto& [options, says] : std::vector<std::pair<std::string, std::string>>{
           {"", "lock operations in the meta protocol\n"},
           {"{meta_protocol: false}", "lock operations through libmemcached (meta_protocol: false)\n"},
           {"{binary: true}", "lock operations in the meta protocol\n"},
       }) {
    CAPTURE(options);
    auto checked = box.run({"--settings", memcached_settings(box, "real", real.location(), options), "check"});
    CHECK(checked.code == 0);
    CHECK(checked.out.find("\n  memcached " + real.location() + ": version 1.") != std::string::npos);
    CHECK(checked.out.find(", " + says) != std::string::npos);
  }

  // A server that speaks only the binary protocol, to a binary alias.
  {
    test::MemcachedProcess binary_only{{"-B", "binary"}};
    auto checked =
        box.run({"--settings", memcached_settings(box, "binary", binary_only.location(), "{binary: true}"), "check"});
    CAPTURE(checked.out);
    CHECK(checked.code == 0);
    CHECK(checked.out.find("\n  memcached " + binary_only.location() +
                           ": version 1.") != std::string::npos);
    CHECK(checked.out.find(", lock operations through libmemcached (the server closes text connections)\n") !=
          std::string::npos);
  }

  // A server that says it is older (a relay to the real one): classic commands.
  {
    const std::string version = "1.5.22";
    test::Relay relay{real};
    test::FakeMemcached older{[&](const std::string& command, const std::string& data) -> std::optional<std::string> {
      if (command == "version") return "VERSION " + version + "\r\n";
      if (command == "stats" || command == "stats ") {  // libmemcached sends the latter
        auto stats = real.command("stats\r\n", true);
        auto at = stats.find("STAT version ");
        auto end = stats.find("\r\n", at);
        return stats.replace(at, end - at, "STAT version " + version);
      }
      if (command.starts_with("stats")) return real.command(command + "\r\n", true);
      return relay(command, data);
    }};
    older.script_version = true;
    auto settings = memcached_settings(box, "older", older.server().to_string());
    auto checked = box.run({"--settings", settings, "check"});
    CAPTURE(checked.out);
    CAPTURE(checked.err);
    CHECK(checked.code == 0);
    CHECK(checked.out.find("\n  memcached " + older.server().to_string() + ": version " + version +
                           ", lock operations in classic commands (add, gets, cas)\n") != std::string::npos);
  }
}

TEST_CASE("cli: a full memcached run with -M refuses new locks instead of evicting held ones") {
  Sandbox box;
  test::MemcachedProcess server{std::vector<std::string>{"-M", "-m", "1", "-I", "512k"}};
  auto settings = memcached_settings(box, "full", server.location());
  auto cache = std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{.servers = {server.server()}});
  cachelock::Lock held{"job", {.cache = cache, .ttl = 600s}};
  int refused = 0;
  for (int i = 0; i < 100'000; ++i) {
    try {
      cache->set("filler-" + std::to_string(i), std::string(20 + i % 100, 'x'));
    } catch (const cachelock::CacheError&) {
      ++refused;
    }
  }
  CHECK(refused > 0);
  CHECK(server.raw_get(cache->make_key("job"))->value == held.token());  // not evicted
  auto marker = box.dir + "/ran";
  auto full = box.run({"--settings", settings, "run", "other", "--", "touch", marker});
  CHECK(full.code == 69);  // fails closed
  CHECK_FALSE(std::filesystem::exists(marker));
}

TEST_CASE("cli: a memcached without CAS (-C) is refused before PROGRAM starts") {
  Sandbox box;
  test::MemcachedProcess server{{"-C"}};
  auto settings = memcached_settings(box, "nocas", server.location());
  auto marker = box.dir + "/ran";
  auto refused = box.run({"--settings", settings, "run", "job", "--", "touch", marker});
  CHECK(refused.code == 69);
  CHECK(refused.err.find("runs without CAS (memcached -C)") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(marker));
  CHECK_FALSE(server.raw_get(":1:job").has_value());  // nothing left to block the key
}

TEST_CASE("cli: status and release --force fail against a server that is not memcached") {
  Sandbox box;
  // An HTTP server on the memcached port: its answers must never read as "free".
  test::FakeMemcached http{[](const std::string&) -> std::optional<std::string> {
    return std::string{test::FakeMemcached::raw} +
           "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" +
           std::string{test::FakeMemcached::hang_up};
  }};
  http.script_version = true;
  auto settings = memcached_settings(box, "http", http.server().to_string(), "{connect_timeout: 0.5, timeout: 0.5}");
  for (auto args : {std::vector<std::string>{"status", "fk"}, std::vector<std::string>{"release", "fk", "--force"},
                    std::vector<std::string>{"run", "fk", "--", "true"}}) {
    CAPTURE(args.front());
    std::vector<std::string> full = box.args({"--settings", settings});
    full.insert(full.end(), args.begin(), args.end());
    auto result = test::run(full, box.env);
    CHECK(result.code == 69);
    CHECK(result.out.find("free") == std::string::npos);
    CHECK(result.err.find("the server does not speak memcached's protocol") != std::string::npos);
  }
}

TEST_CASE("cli: run against a server that answers END to everything exits 69, never aborts") {
  // libmemcached aborts the process (exit 134) on such a reply to a text
  // `add`; the lock operations are read by cachelock's own parser, whatever
  // version the server claims (meta protocol from 1.6.10, else classic).
  Sandbox box;
  for (bool old_server : {false, true}) {
    CAPTURE(old_server);
    test::FakeMemcached end_to_all{[&](const std::string& command) -> std::optional<std::string> {
      if (command == "version" && old_server) return std::string{"VERSION 1.5.22\r\n"};
      return std::string{"END\r\n"};
    }};
    end_to_all.script_version = true;
    auto settings = memcached_settings(box, old_server ? "old" : "end", end_to_all.server().to_string(),
                                       "{connect_timeout: 0.5, timeout: 0.5}");
    auto marker = box.dir + "/ran";
    auto result = box.run({"--settings", settings, "run", "fk", "--", "touch", marker});
    CHECK(result.code == 69);
    CHECK_FALSE(std::filesystem::exists(marker));
    CHECK(result.err.find("add ':1:fk' failed") != std::string::npos);
  }
}

TEST_CASE("cli: run --wait rides out a memcached restart, and a dead server ends it with 69 at the deadline") {
  Sandbox box;
  test::MemcachedProcess server;
  auto settings =
      memcached_settings(box, "restart", server.location(), "{connect_timeout: 0.2, timeout: 0.2, retry_timeout: 0}");
  server.stop();
  auto start = std::chrono::steady_clock::now();
  auto dead = box.run({"--settings", settings, "run", "job", "--wait", "1", "--", "true"});
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(dead.code == 69);
  CHECK(dead.err.find("cachelock: memcached " + server.location() + ": add ':1:job' failed") == 0);
  CHECK(waited >= 1s);  // it kept trying until its deadline
  // A waiter started while the server is down runs once it is back.
  auto ran = box.dir + "/ran";
  Process waiter{box.args({"--settings", settings, "run", "job", "--wait", "60", "--", "touch", ran}), box.env};
  std::this_thread::sleep_for(test::slow(1500ms));
  CHECK_FALSE(fs::exists(ran));
  server.start();
  CHECK(waiter.wait() == 0);
  CHECK(fs::exists(ran));
}

TEST_CASE("cli: run refuses a ttl too short to renew on its memcached alias: 64 for --ttl, 78 for TIMEOUT") {
  Sandbox box;
  // Nothing listens there: the ttl is refused before anything is sent.
  auto settings = memcached_settings(box, "slow", "127.0.0.1:" + std::to_string(test::free_loopback_port()),
                                     "{connect_timeout: 1, timeout: 1.5}");
  auto refused = box.run({"--settings", settings, "run", "job", "--ttl", "7", "--", "true"});
  CHECK(refused.code == 64);
  CHECK(refused.err ==
        "cachelock: alias 'default' needs a ttl of at least 7.5 s for run, which renews its lock (3 x the longest "
        "one operation may take: connect_timeout + timeout); --ttl is 7 s\n");
  // From the settings, the same ttl is a settings error.
  std::ofstream{settings, std::ios::app} << "    TIMEOUT: 7\n";
  auto from_settings = box.run({"--settings", settings, "run", "job", "--", "true"});
  CHECK(from_settings.code == 78);
  CHECK(from_settings.err ==
        "cachelock: alias 'default' needs a ttl of at least 7.5 s for run, which renews its lock (3 x the longest "
        "one operation may take: connect_timeout + timeout); its TIMEOUT is 7 s\n");
}

TEST_CASE("cli: a lost lock on memcached says whether the server was unreachable or forgot it") {
  Sandbox box;
  test::MemcachedProcess server;
  auto settings = memcached_settings(box, "memcached", server.location(), "{connect_timeout: 0.2, timeout: 0.2}");
  // The program marks its start: the server is stopped only then, once
  // acquiring (whose first add on a server is followed by a gets) is over.
  auto holder = [&](const std::string& key) {
    return box.args({"--settings", settings, "run", key, "--ttl", "3", "--", "sh", "-c",
                     "touch " + box.dir + "/started-" + key + "; exec sleep 30"});
  };
  auto held = [&](const std::string& key) {
    return [&box, key] { return fs::exists(box.dir + "/started-" + key); };
  };

  // Unreachable: the renewals time out until a third of the ttl is left.
  Process stalled{holder("job"), box.env};
  REQUIRE(test::eventually(held("job")));
  ::kill(server.pid(), SIGSTOP);
  bool ended = test::eventually([&] { return stalled.ended(); }, test::slow(5s));
  ::kill(server.pid(), SIGCONT);
  REQUIRE(ended);
  CHECK(stalled.wait() == 79);
  CHECK(stalled.err().rfind("cachelock: lost the lock on 'job' (alias default): its backend is unreachable (memcached " +
                                server.location() + ": ",
                            0) == 0);

  // Restarted, empty: the key is gone before its expiry. (Another key: the
  // first is held until its ttl.)
  Process forgotten{holder("other"), box.env};
  REQUIRE(test::eventually(held("other")));
  ::kill(server.pid(), SIGKILL);  // a crash, not a clean shutdown
  server.stop();
  server.start();
  CHECK(forgotten.wait() == 79);
  CHECK(forgotten.err().rfind("cachelock: lost the lock on 'other' (alias default): it was gone before its expiry: "
                              "released by force, evicted, or its server restarted; ",
                              0) == 0);
}
#endif
