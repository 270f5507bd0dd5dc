// PyLibMCCache's OPTIONS in a settings file: Django's documented example,
// and what becomes of each pylibmc behavior (applied, mapped to cachelock's
// options, ignored or refused), with the whole messages of the refusals.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include <fmt/format.h>

#include "cachelock/cachelock.hpp"

using cachelock::CacheRegistry;
using cachelock::ConfigError;
using cachelock::MemcachedCache;
using cachelock::MemcachedOptions;

namespace {

constexpr std::string_view pylibmc_backend = "django.core.cache.backends.memcached.PyLibMCCache";

}  // namespace

TEST_CASE("pylibmc: Django's documented PyLibMCCache example loads unchanged") {
  // From Django 3.2's cache documentation, in YAML. SASL credentials go to
  // libmemcached as pylibmc gives them (binary protocol only).
  CacheRegistry registry;
  registry.load_yaml(R"(
CACHES:
  default:
    BACKEND: django.core.cache.backends.memcached.PyLibMCCache
    LOCATION: 127.0.0.1:11211
    OPTIONS:
      binary: true
      username: user
      password: pass
      behaviors:
        ketama: true
)");
  auto cache = std::dynamic_pointer_cast<MemcachedCache>(registry.get("default"));
  REQUIRE(cache);
  const auto& o = cache->memcached_options();
  CHECK(o.binary);
  CHECK(o.username == "user");
  CHECK(o.password == "pass");
  CHECK(o.behaviors == std::map<std::string, std::int64_t>{{"ketama", 1}});
}

namespace {

std::string behaviors_yaml(std::string_view behaviors, std::string_view backend = pylibmc_backend,
                           std::string_view location = "127.0.0.1:11211") {
  return fmt::format("CACHES:\n  default:\n    BACKEND: {}\n    LOCATION: {}\n    OPTIONS:\n      behaviors: {}\n",
                     backend, location, behaviors);
}

MemcachedOptions loaded(std::string_view yaml) {
  CacheRegistry registry;
  registry.load_yaml(yaml, "s.yaml");
  return std::dynamic_pointer_cast<MemcachedCache>(registry.get("default"))->memcached_options();
}

}  // namespace

TEST_CASE("pylibmc: behaviors that are applied, mapped, ignored or refused") {
  using namespace std::chrono_literals;
  // Set on libmemcached as given, with pylibmc's names for hashes.
  auto applied = loaded(behaviors_yaml(
      "{hash: murmur, ketama_hash: 3, distribution: consistent ketama spy, tcp_keepalive: true, "
      "send_timeout: 300000, receive_timeout: 400000, _sort_hosts: 1, _hash_with_prefix_key: false, "
      "_socket_send_size: 65536, _socket_recv_size: 65536}"));
  CHECK(applied.behaviors == std::map<std::string, std::int64_t>{{"hash", 8},
                                                                 {"ketama_hash", 3},
                                                                 {"distribution", 4},
                                                                 {"tcp_keepalive", 1},
                                                                 {"send_timeout", 300000},
                                                                 {"receive_timeout", 400000},
                                                                 {"_sort_hosts", 1},
                                                                 {"_hash_with_prefix_key", 0},
                                                                 {"_socket_send_size", 65536},
                                                                 {"_socket_recv_size", 65536}});
  // Into cachelock's own options, in pylibmc's units.
  auto mapped = loaded(behaviors_yaml(
      "{tcp_nodelay: false, connect_timeout: 250, _poll_timeout: 1500, _retry_timeout: 3, failure_limit: 4}"));
  CHECK(mapped.behaviors.empty());
  CHECK_FALSE(mapped.tcp_nodelay);
  CHECK(mapped.connect_timeout == 250ms);
  CHECK(mapped.timeout == 1500ms);
  CHECK(mapped.retry_timeout == 3s);
  CHECK(mapped.server_failure_limit == 4);
  // Accepted with no effect on locks; refused ones that are off load too.
  auto ignored = loaded(behaviors_yaml(
      "{no_block: true, cas: false, buffer_requests: true, verify_keys: true, _io_msg_watermark: 10, "
      "_io_bytes_watermark: 10, _io_key_prefetch: 1, _noreply: true, dead_timeout: 5, pickle_protocol: -1, "
      "auto_eject: false, remove_failed: 0, num_replicas: 0}"));
  CHECK(ignored.behaviors.empty());
  // Weights after the port, as pylibmc reads them.
  auto weighted = loaded(behaviors_yaml("{ketama_weighted: true}", pylibmc_backend,
                                        "['cache-a:11211:2', '[::1]:11212:7', 'cache-b', '/run/mc.sock']"));
  REQUIRE(weighted.servers.size() == 4);
  CHECK(weighted.servers[0].weight == 2);
  CHECK(weighted.servers[1].host == "::1");
  CHECK(weighted.servers[1].port == 11212);
  CHECK(weighted.servers[1].weight == 7);
  CHECK(weighted.servers[2].weight == 1);
  CHECK(weighted.servers[3].weight == 1);

  struct Bad {
    std::string yaml;
    const char* message;
  };
  const Bad bad[] = {
      {behaviors_yaml("{auto_eject: true}"),
       "s.yaml:6:19: CACHES.default.OPTIONS.behaviors.auto_eject: refused: libmemcached would take a failing "
       "server out and hand its keys to the others, where a lock held on it could be taken a second time"},
      {behaviors_yaml("{remove_failed: 1}"),
       "s.yaml:6:19: CACHES.default.OPTIONS.behaviors.remove_failed: refused: libmemcached would take a failing "
       "server out and hand its keys to the others, where a lock held on it could be taken a second time"},
      {behaviors_yaml("{num_replicas: 2}"),
       "s.yaml:6:19: CACHES.default.OPTIONS.behaviors.num_replicas: refused: libmemcached would write a lock to "
       "several servers one after another and read another copy when a server fails, so two owners could "
       "each hold one"},
      {behaviors_yaml("{distribution: random}"),
       "s.yaml:6:19: CACHES.default.OPTIONS.behaviors.distribution: refused: 'random' puts each call on a "
       "server drawn at random, so two processes would look for one lock in different places"},
      {behaviors_yaml("{namespace: app}"),
       "s.yaml:6:19: CACHES.default.OPTIONS.behaviors.namespace: refused: pylibmc fails on it ('bad key "
       "provided'); KEY_PREFIX prefixes keys as Django does"},
      {behaviors_yaml("{ketamma: true}"),
       "s.yaml:6:19: CACHES.default.OPTIONS.behaviors.ketamma: unknown pylibmc behavior; known: no_block, "
       "tcp_nodelay, tcp_keepalive, hash, ketama_hash, ketama, ketama_weighted, distribution, cas, "
       "buffer_requests, verify_keys, connect_timeout, send_timeout, receive_timeout, num_replicas, "
       "auto_eject, retry_timeout, remove_failed, failure_limit, _io_msg_watermark, _io_bytes_watermark, "
       "_io_key_prefetch, _hash_with_prefix_key, _noreply, _sort_hosts, _poll_timeout, _socket_send_size, "
       "_socket_recv_size, dead_timeout, pickle_protocol, namespace"},
      {behaviors_yaml("{hash: sha1}"),
       "s.yaml:6:25: CACHES.default.OPTIONS.behaviors.hash: expected one of pylibmc's hashes: default, md5, "
       "crc, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins, got \"sha1\""},
      {behaviors_yaml("{distribution: consistent max}"),
       "s.yaml:6:33: CACHES.default.OPTIONS.behaviors.distribution: expected one of pylibmc's distributions: "
       "modula, consistent, consistent ketama, consistent ketama spy, consistent weighted, virtual bucket, "
       "random, got \"consistent max\""},
      {behaviors_yaml("{ketama: maybe}"),
       "s.yaml:6:27: CACHES.default.OPTIONS.behaviors.ketama: expected true, false or an integer from 0 to "
       "2147483647, got \"maybe\""},
      {behaviors_yaml("{connect_timeout: 0}"),
       "s.yaml:6:7: CACHES.default.OPTIONS: memcached options: connect_timeout must be positive, got 0 ms"},
      {behaviors_yaml("{ketama: true}", "django.core.cache.backends.memcached.PyMemcacheCache"),
       "s.yaml:6:7: CACHES.default.OPTIONS.behaviors: pylibmc's option: only PyLibMCCache (or the short name "
       "memcached) takes it"},
      {behaviors_yaml("{}", pylibmc_backend, "cache:11211:0"),
       "s.yaml:4:15: CACHES.default.LOCATION: memcached location 'cache:11211:0': weight '0' is not a number "
       "from 1 to 65535"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.yaml);
    CacheRegistry registry;
    CHECK_THROWS_WITH_AS(registry.load_yaml(b.yaml, "s.yaml"), b.message, ConfigError);
  }
}

TEST_CASE("pylibmc: what libmemcached refuses fails when the settings load, as pylibmc fails") {
  CacheRegistry registry;
  CHECK_THROWS_WITH_AS(registry.load_yaml(behaviors_yaml("{hash: hsieh}"), "s.yaml"),
                       "s.yaml:6:7: CACHES.default.OPTIONS: memcached options: libmemcached refuses behavior "
                       "'hash' = 7: INVALID ARGUMENTS",
                       ConfigError);
}

TEST_CASE("pylibmc: MemcachedOptions::behaviors is checked when the cache is made") {
  auto made = [](std::map<std::string, std::int64_t> behaviors,
                 cachelock::MemcachedDistribution distribution = cachelock::MemcachedDistribution::modula) {
    return MemcachedCache{{.servers = {{"127.0.0.1", 11211}}, .distribution = distribution,
                           .behaviors = std::move(behaviors)}};
  };
  CHECK_NOTHROW(made({{"ketama", 1}, {"hash", 1}, {"cas", 0}}));
  CHECK_THROWS_WITH_AS(made({{"auto_eject", 1}}),
                       "memcached options: behavior 'auto_eject' refused: libmemcached would take a failing server "
                       "out and hand its keys to the others, where a lock held on it could be taken a second time",
                       ConfigError);
  CHECK_THROWS_WITH_AS(made({{"connect_timeout", 5}}),
                       "memcached options: behavior 'connect_timeout' has a field of its own: set connect_timeout "
                       "instead",
                       ConfigError);
  CHECK_THROWS_WITH_AS(made({{"ketamma", 1}}), doctest::Contains("unknown behavior 'ketamma'"), ConfigError);
  CHECK_THROWS_WITH_AS(made({{"send_timeout", -1}}),
                       "memcached options: behavior 'send_timeout' must be from 0 to 2147483647, got -1",
                       ConfigError);
  CHECK_THROWS_WITH_AS(made({{"ketama", 1}}, cachelock::MemcachedDistribution::ketama),
                       "memcached options: the distribution is given twice, as distribution and in behaviors; "
                       "give it once",
                       ConfigError);
  CHECK_THROWS_WITH_AS(made({{"hash", 1}}, cachelock::MemcachedDistribution::rendezvous),
                       "memcached options: behaviors place keys as libmemcached does (pylibmc's), rendezvous "
                       "distribution as pymemcache does: give one or the other",
                       ConfigError);
}

TEST_CASE("pylibmc: behaviors on an alias placed as pymemcache places keys are refused") {
  CacheRegistry registry;
  CHECK_THROWS_WITH_AS(registry.load_yaml("CACHES:\n  default:\n    BACKEND: memcached\n"
                                          "    LOCATION: 127.0.0.1:11211\n"
                                          "    OPTIONS: {distribution: rendezvous, behaviors: {hash: md5}}\n",
                                          "s.yaml"),
                       doctest::Contains("give one or the other"), ConfigError);
}
