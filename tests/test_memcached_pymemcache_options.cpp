// Django's PyMemcacheCache settings as pasted: its documented examples,
// pymemcache's OPTIONS, and `cachelock check`'s warning about a placement
// Django cannot share. (Placement itself: test_memcached_rendezvous.cpp.)
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "memcached_server.hpp"
#include "process.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::CacheRegistry;
using cachelock::Lock;
using cachelock::MemcachedCache;

TEST_CASE("pymemcache options: Django's documented PyMemcacheCache examples load unchanged") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  auto options = [&](const std::string& alias) {
    return std::dynamic_pointer_cast<MemcachedCache>(registry.get(alias))->memcached_options();
  };
  // The CACHES examples of Django 3.2's cache documentation, in YAML.
  registry.load_yaml(R"(
CACHES:
  default:
    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache
    LOCATION: 127.0.0.1:11211
  socket:
    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache
    LOCATION: unix:/tmp/memcached.sock
  several:
    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache
    LOCATION: ['172.19.26.240:11211', '172.19.26.242:11212', '172.19.26.244:11213']
  tuned:
    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache
    LOCATION: 127.0.0.1:11211
    OPTIONS:
      no_delay: true
      ignore_exc: true
      max_pool_size: 4
      use_pooling: true
)");
  for (const auto* alias : {"default", "socket", "several", "tuned"}) {
    CAPTURE(alias);
    CHECK(options(alias).distribution == cachelock::MemcachedDistribution::rendezvous);
  }
  CHECK(options("several").servers.size() == 3);
  CHECK(options("tuned").pool_size == 4);
  CHECK(options("tuned").tcp_nodelay);
}

TEST_CASE("pymemcache options: pymemcache's OPTIONS are each mapped or accepted, and checked") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  registry.load_yaml(R"(
CACHES:
  default:
    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache
    LOCATION: 127.0.0.1:11211
    OPTIONS: {use_pooling: true, max_pool_size: 6, retry_attempts: 3, retry_timeout: 1.5, dead_timeout: 60,
              connect_timeout: 0.5, timeout: 0.25, no_delay: false, ignore_exc: false}
  plain:
    BACKEND: memcached
    LOCATION: ['127.0.0.1:11211', '127.0.0.1:11212']
  chosen:
    BACKEND: memcached
    LOCATION: ['127.0.0.1:11211', '127.0.0.1:11212']
    OPTIONS: {distribution: rendezvous}
)");
  auto options = [&](const std::string& alias) {
    return std::dynamic_pointer_cast<MemcachedCache>(registry.get(alias))->memcached_options();
  };
  auto tuned = options("default");
  CHECK(tuned.pool_size == 6);
  CHECK(tuned.retry_timeout == 1500ms);
  CHECK(tuned.connect_timeout == 500ms);
  CHECK(tuned.timeout == 250ms);
  CHECK_FALSE(tuned.tcp_nodelay);
  CHECK(options("plain").distribution == cachelock::MemcachedDistribution::modula);  // the short name keeps its default
  CHECK(options("chosen").distribution == cachelock::MemcachedDistribution::rendezvous);

  auto load = [&](const std::string& option) {
    registry.load_yaml("CACHES:\n"
                       "  default:\n"
                       "    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                       "    LOCATION: 127.0.0.1:11211\n"
                       "    OPTIONS: {" + option + "}\n",
                       "s.yaml");
  };
  CHECK_THROWS_WITH_AS(load("retry_attempts: -1"),
                       "s.yaml:5:31: CACHES.default.OPTIONS.retry_attempts: expected an integer from 0 to 1000000, "
                       "got \"-1\"",
                       cachelock::ConfigError);
  CHECK_THROWS_WITH_AS(load("dead_timeout: -2"),
                       "s.yaml:5:29: CACHES.default.OPTIONS.dead_timeout: expected a number of seconds, 0 or more, "
                       "got \"-2\"",
                       cachelock::ConfigError);
  CHECK_THROWS_WITH_AS(load("use_pooling: often"),
                       "s.yaml:5:28: CACHES.default.OPTIONS.use_pooling: expected true or false, got \"often\"",
                       cachelock::ConfigError);
}

TEST_CASE("pymemcache options: ignore_exc does not make a dead server's keys free: the lock fails closed") {
  test::MemcachedProcess server;
  auto location = server.location();
  server.stop();
  test::FreshRegistry fresh;
  CacheRegistry::global().load_yaml("CACHES:\n"
                                    "  default:\n"
                                    "    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                                    "    LOCATION: " + location + "\n"
                                    "    OPTIONS: {ignore_exc: true, connect_timeout: 0.2, timeout: 0.2}\n");
  CHECK_THROWS_AS(Lock{"job"}, cachelock::CacheError);
}

TEST_CASE("pymemcache options: check warns when distribution cannot place keys as the Django client does") {
  const char* cli = std::getenv("CACHELOCK_CLI");
  if (!cli || !*cli) {
    MESSAGE("CACHELOCK_CLI is not set (built without the command line): the check case is skipped");
    return;
  }
  test::MemcachedProcess a, b;
  auto servers = "['" + a.location() + "', '" + b.location() + "']";
  auto path = "/tmp/cachelock-rendezvous-check-" + std::to_string(::getpid()) + ".yaml";
  std::ofstream{path} << "CACHES:\n"
                         "  default:\n"
                         "    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                         "    LOCATION: " << servers << "\n"
                         "  ketama:\n"
                         "    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                         "    LOCATION: " << servers << "\n"
                         "    OPTIONS: {distribution: ketama}\n"
                         "  pylibmc:\n"
                         "    BACKEND: django.core.cache.backends.memcached.PyLibMCCache\n"
                         "    LOCATION: " << servers << "\n"
                         "    OPTIONS: {distribution: rendezvous}\n"
                         "  python_memcached:\n"
                         "    BACKEND: django.core.cache.backends.memcached.MemcachedCache\n"
                         "    LOCATION: " << servers << "\n";
  test::Process check{{cli, "--settings", path, "check"}};
  int status = check.wait();
  std::filesystem::remove(path);
  auto out = check.out();
  INFO("cachelock check exited " << status << ":\n" << out << check.err());
  CHECK(out.find("warning: distribution ketama does not place keys as Django's PyMemcacheCache does (pymemcache's "
                 "rendezvous hashing; remove distribution): Django and cachelock would look for one lock on "
                 "different servers") != std::string::npos);
  CHECK(out.find("warning: distribution rendezvous does not place keys as Django's PyLibMCCache does "
                 "(libmemcached's modula or ketama; remove distribution)") != std::string::npos);
  CHECK(out.find("warning: Django's MemcachedCache (python-memcached) places keys on several servers by its own "
                 "hashing, which cachelock does not reproduce") != std::string::npos);
  // The default alias places keys as Django does: no such warning for it.
  auto ketama_at = out.find("\nketama: ");
  REQUIRE(ketama_at != std::string::npos);
  CHECK(out.substr(0, ketama_at).find("does not place keys") == std::string::npos);
}
