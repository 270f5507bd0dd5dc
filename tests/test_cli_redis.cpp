// cachelock on Redis aliases: run, status, release and check (the server's
// version, round trip, and the eviction warning), a dead server, a short ttl.
#include <doctest/doctest.h>

#include <fstream>

#include "cli_support.hpp"
#include "redis_server.hpp"
#include "support.hpp"

using test::Sandbox;

namespace {

// A settings file in the sandbox whose default alias is django-redis on `location`.
std::string redis_settings(const Sandbox& box, const std::string& name, const std::string& location,
                           const std::string& options = "") {
  auto path = box.dir + "/" + name + ".yaml";
  std::ofstream{path} << "CACHES:\n  default:\n    BACKEND: django_redis.cache.RedisCache\n    LOCATION: "
                      << location << "\n    TIMEOUT: 60\n"
                      << (options.empty() ? "" : "    OPTIONS: " + options + "\n");
  return path;
}

}  // namespace

TEST_CASE("cli redis: check reports the server's version and round trip, and warns when it may evict") {
  Sandbox box;
  test::RedisProcess server;
  auto settings = redis_settings(box, "redis", server.location());
  const auto where = "127.0.0.1:" + std::to_string(server.port());
  const auto version = server.info("redis_version", "server");
  REQUIRE_FALSE(version.empty());

  auto quiet = box.run({"--settings", settings, "check"});
  CHECK(quiet.code == 0);
  CHECK(quiet.out.find("default (default): redis " + where + " db 0, timeout 60 s, prefix '', version 1: ok, ") !=
        std::string::npos);
  CHECK(quiet.out.find(" ms\n  redis " + where + ": version " + version + "\n") != std::string::npos);
  CHECK(quiet.out.find("warning") == std::string::npos);

  server.command({"CONFIG", "SET", "maxmemory", "100mb"});
  for (std::string policy : {"allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random"}) {
    CAPTURE(policy);
    server.command({"CONFIG", "SET", "maxmemory-policy", policy});
    auto warned = box.run({"--settings", settings, "check"});
    CHECK(warned.code == 0);
    CHECK(warned.out.find("\n  warning: redis " + where + " may evict: maxmemory 104857600 with maxmemory-policy '" +
                          policy + "' can drop held locks before their ttl; set maxmemory-policy noeviction on a "
                          "lock server\n") != std::string::npos);
  }
  server.command({"CONFIG", "SET", "maxmemory-policy", "noeviction"});
  CHECK(box.run({"--settings", settings, "check"}).out.find("warning") == std::string::npos);
}

TEST_CASE("cli redis: run holds the key, status and a second run see it, release --force frees it") {
  Sandbox box;
  auto& server = test::shared_redis();
  auto settings = redis_settings(box, "redis", server.location());
  auto key = test::unique("cli-redis");
  test::Process holder{box.args({"--settings", settings, "run", key, "--", "sleep", "30"}), box.env};
  REQUIRE(test::eventually([&] { return box.run({"--settings", settings, "status", key}).code == 1; }));
  auto status = box.run({"--settings", settings, "status", key});
  CHECK(status.out.find(key + " is held by " + test::host_name()) == 0);
  auto second = box.run({"--settings", settings, "run", key, "--", "true"});
  CHECK(second.code == 75);
  auto released = box.run({"--settings", settings, "release", key, "--force"});
  CHECK(released.code == 0);
  CHECK(released.out.find("released " + key + ", held by " + test::host_name()) == 0);
  CHECK(box.run({"--settings", settings, "status", key}).code == 0);
  // The holder finds its lock gone at its next renewal: it stops and says so.
  holder.signal(SIGTERM);
  holder.wait();
  CHECK(box.run({"--settings", settings, "run", key, "--", "true"}).code == 0);
}

TEST_CASE("cli redis: a key Django holds (an int, as django-redis stores it) reads as held by someone else") {
  Sandbox box;
  auto& server = test::shared_redis();
  auto settings = redis_settings(box, "redis", server.location());
  auto key = test::unique("cli-django");
  server.command({"SET", ":1:" + key, "1", "EX", "60"});
  auto status = box.run({"--settings", settings, "status", key});
  CHECK(status.code == 1);
  CHECK(box.run({"--settings", settings, "run", key, "--", "true"}).code == 75);
  server.command({"DEL", ":1:" + key});
  CHECK(box.run({"--settings", settings, "run", key, "--", "true"}).code == 0);
}

TEST_CASE("cli redis: a dead server fails check and run with 69; a ttl too short to renew is refused") {
  Sandbox box;
  const auto port = std::to_string(test::free_loopback_port());
  auto dead = redis_settings(box, "dead", "redis://127.0.0.1:" + port);
  auto check = box.run({"--settings", dead, "check"});
  CHECK(check.code == 69);
  CHECK(check.out.find("failed: redis 127.0.0.1:" + port + ": set ':1:cachelock-check-") != std::string::npos);
  CHECK(check.out.find("failed: cannot connect: Connection refused") != std::string::npos);
  CHECK(box.run({"--settings", dead, "run", "job", "--", "true"}).code == 69);

  auto settings = redis_settings(box, "redis", test::shared_redis().location(), "{SOCKET_TIMEOUT: 2}");
  auto short_ttl = box.run({"--settings", settings, "run", "--ttl", "2", "job", "--", "true"});
  CHECK(short_ttl.code == 64);
  CHECK(short_ttl.err.find("9 s") != std::string::npos);  // 3 x (1 s to connect + 2 s for a reply)
}
