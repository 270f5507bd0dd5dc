// Django's PyLibMCCache pasted in: OPTIONS.behaviors and LOCATION weights
// are taken as pylibmc takes them, so that on several servers each key lands
// where pylibmc puts it, and Django and cachelock contend for the same locks.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "django_peer.hpp"
#include "memcached_server.hpp"
#include "support.hpp"

using cachelock::CacheRegistry;
using cachelock::ConfigError;
using cachelock::Lock;
using cachelock::LockError;
using cachelock::MemcachedCache;
using cachelock::MemcachedOptions;

namespace {

constexpr std::string_view pylibmc_backend = "django.core.cache.backends.memcached.PyLibMCCache";

// Three servers, started once for this program.
struct Servers {
  test::MemcachedProcess& a = test::shared_memcached();
  test::MemcachedProcess& b = test::second_memcached();
  test::MemcachedProcess c;

  std::vector<const test::MemcachedProcess*> all() const { return {&a, &b, &c}; }
  void flush() const {
    for (const auto* server : all()) server->flush();
  }
};

Servers& servers() {
  static Servers three;
  return three;
}

// The keys of the placement tests: 1,000 ASCII, 100 not.
std::vector<std::string> placement_keys() {
  std::vector<std::string> keys;
  for (int i = 0; i < 1000; ++i) keys.push_back(fmt::format("report:{}:{}", i, i * 7919 % 1009));
  for (int i = 0; i < 100; ++i) keys.push_back(fmt::format("clé-{}-ü€", i));
  return keys;
}

// The stored keys that `server` holds, among `stored`: one multi-key get.
std::vector<bool> held_by(const test::MemcachedProcess& server, const std::vector<std::string>& stored) {
  std::string command = "get";
  for (const auto& key : stored) command += " " + key;
  auto reply = server.command(command + "\r\n", true);
  std::map<std::string, bool> found;
  std::size_t at = 0;
  while (reply.compare(at, 6, "VALUE ") == 0) {
    auto line_end = reply.find("\r\n", at);
    std::string header = reply.substr(at + 6, line_end - at - 6);  // "key flags bytes"
    auto first = header.find(' ');
    auto bytes = std::stoul(header.substr(header.rfind(' ') + 1));
    found[header.substr(0, first)] = true;
    at = line_end + 2 + bytes + 2;
  }
  REQUIRE(reply.substr(at) == "END\r\n");
  std::vector<bool> out;
  for (const auto& key : stored) out.push_back(found.contains(key));
  return out;
}

// For each stored key, the index of the one server that holds it.
std::vector<int> holders(const std::vector<std::string>& stored) {
  auto all = servers().all();
  std::vector<std::vector<bool>> held;
  for (const auto* server : all) held.push_back(held_by(*server, stored));
  std::vector<int> out;
  for (std::size_t k = 0; k < stored.size(); ++k) {
    int holder = -1;
    for (std::size_t s = 0; s < all.size(); ++s) {
      if (!held[s][k]) continue;
      INFO("key " << stored[k] << " is on two servers");
      REQUIRE(holder == -1);
      holder = static_cast<int>(s);
    }
    INFO("key " << stored[k] << " is on no server");
    REQUIRE(holder != -1);
    out.push_back(holder);
  }
  return out;
}

// A settings file with one PyLibMCCache alias; LOCATION and OPTIONS are
// JSON, which YAML reads as they are.
std::string settings(std::string_view locations_json, std::string_view options_json, std::string_view prefix) {
  return fmt::format("CACHES:\n  default:\n    BACKEND: {}\n    LOCATION: {}\n    KEY_PREFIX: {}\n    OPTIONS: {}\n",
                     pylibmc_backend, locations_json, prefix, options_json);
}

struct Placement {
  std::vector<int> theirs, ours;
  int differing() const {
    int n = 0;
    for (std::size_t i = 0; i < ours.size(); ++i) n += ours[i] != theirs[i];
    return n;
  }
};

// Where Django (PyLibMCCache, so pylibmc) puts each key with `options`, and
// where cachelock puts it when given the same alias in a settings file.
// `locations` are LOCATION's entries in order (a weight may follow a port).
Placement place(const std::vector<std::string>& locations, const std::string& options) {
  auto prefix = test::unique("pl");
  std::string joined, json = "[";
  for (const auto& l : locations) {
    joined += (joined.empty() ? "" : ",") + l;
    json += (json.size() > 1 ? ", \"" : "\"") + l + "\"";
  }
  json += "]";
  test::Django django{"PyLibMCCache", joined, prefix, 1, options};
  CacheRegistry registry;
  registry.load_yaml(settings(json, options, prefix));
  auto ours = registry.get("default");

  auto keys = placement_keys();
  std::vector<std::string> stored;
  for (const auto& key : keys) stored.push_back(ours->make_key(key));
  Placement result;
  servers().flush();
  std::vector<std::string> command{"set"};
  command.insert(command.end(), keys.begin(), keys.end());
  REQUIRE(django(command) == R"({"result": null})");
  result.theirs = holders(stored);
  servers().flush();
  for (const auto& key : keys) ours->set(key, "ours");
  result.ours = holders(stored);
  return result;
}

std::vector<std::string> plain_locations() {
  std::vector<std::string> out;
  for (const auto* server : servers().all()) out.push_back(server->location());
  return out;
}

std::vector<std::string> weighted_locations() {
  auto out = plain_locations();
  out[0] += ":1";
  out[1] += ":3";
  out[2] += ":6";
  return out;
}

// pylibmc's hash names but hsieh, which Debian's libmemcached is built
// without (pylibmc fails on it as we do: see the settings case below).
const char* const hashes[] = {"default", "md5",    "crc",     "fnv1_64", "fnv1a_64",
                              "fnv1_32", "fnv1a_32", "murmur", "jenkins"};

void check_same(const std::vector<std::string>& locations, const std::string& options, bool spread = true) {
  CAPTURE(options);
  auto placed = place(locations, options);
  CHECK(placed.differing() == 0);
  if (spread) {  // every server has keys, so the comparison means something
    for (int s = 0; s < 3; ++s) CHECK(std::ranges::count(placed.ours, s) > 0);
  }
}

}  // namespace

TEST_CASE("pylibmc: default behaviors, ketama and ketama_weighted place 1,100 keys as pylibmc does") {
  check_same(plain_locations(), "{}");
  check_same(plain_locations(), R"({"binary": true})");
  check_same(plain_locations(), R"({"behaviors": {"ketama": true}})");
  check_same(plain_locations(), R"({"binary": true, "behaviors": {"ketama": 1}})");
  check_same(weighted_locations(), R"({"behaviors": {"ketama_weighted": true}})");
  check_same(weighted_locations(), R"({"behaviors": {"distribution": "consistent weighted"}})");
  // ketama_weighted sets md5 after pylibmc set the hash given: the order of
  // pylibmc's table, kept here, decides.
  check_same(weighted_locations(), R"({"behaviors": {"hash": "fnv1a_32", "ketama_weighted": true}})");
  check_same(plain_locations(), R"({"behaviors": {"ketama": true, "distribution": "modula"}})");
}

TEST_CASE("pylibmc: every hash pylibmc accepts places keys as pylibmc does") {
  for (const char* hash : hashes) {
    check_same(plain_locations(), fmt::format(R"({{"behaviors": {{"hash": "{}"}}}})", hash));
    check_same(plain_locations(), fmt::format(R"({{"behaviors": {{"ketama": true, "hash": "{}"}}}})", hash));
    check_same(plain_locations(), fmt::format(R"({{"behaviors": {{"ketama": true, "ketama_hash": "{}"}}}})", hash));
  }
}

TEST_CASE("pylibmc: the other distributions and sorted hosts place keys as pylibmc does") {
  for (const char* distribution : {"consistent", "consistent ketama", "consistent ketama spy", "virtual bucket"}) {
    check_same(plain_locations(), fmt::format(R"({{"behaviors": {{"distribution": "{}"}}}})", distribution),
               false);
  }
  auto reversed = plain_locations();
  std::ranges::reverse(reversed);
  check_same(reversed, R"({"behaviors": {"_sort_hosts": true, "hash": "crc"}})");
  check_same(reversed, R"({"behaviors": {"_sort_hosts": true, "ketama": true}})");
}

TEST_CASE("pylibmc: Django's PyLibMCCache and cachelock exclude each other on three servers") {
  test::FreshRegistry fresh;
  auto prefix = test::unique("contend");
  auto locations = weighted_locations();
  const std::string options = R"({"behaviors": {"ketama_weighted": true, "hash": "md5"}})";
  std::string joined, json = "[";
  for (const auto& l : locations) {
    joined += (joined.empty() ? "" : ",") + l;
    json += (json.size() > 1 ? ", \"" : "\"") + l + "\"";
  }
  CacheRegistry::global().load_yaml(settings(json + "]", options, prefix));
  test::Django django{"PyLibMCCache", joined, prefix, 1, options};
  auto cache = CacheRegistry::global().get("default");
  // Keys that land on each of the three servers, two each.
  std::vector<std::string> keys;
  std::vector<int> on(3, 0);
  servers().flush();
  for (int i = 0; keys.size() < 6 && i < 1000; ++i) {
    auto key = "job-" + std::to_string(i);
    cache->set(key, "probe");
    int holder = holders({cache->make_key(key)}).front();
    cache->erase(key);
    if (on[static_cast<std::size_t>(holder)] < 2) {
      ++on[static_cast<std::size_t>(holder)];
      keys.push_back(key);
    }
  }
  REQUIRE(keys.size() == 6);

  // Django adds first: our lock is refused.
  for (const auto& key : keys) {
    CAPTURE(key);
    CHECK(django({"add", key, "1"}) == R"({"result": true})");
    CHECK_THROWS_WITH_AS(Lock{key}, fmt::format("lock '{}' on alias 'default' is already held", key).c_str(),
                         LockError);
    CHECK(django({"delete", key}) == R"({"result": true})");
  }
  // We hold the locks: Django's add is refused.
  std::vector<std::unique_ptr<Lock>> held;
  for (const auto& key : keys) held.push_back(std::make_unique<Lock>(key));
  for (const auto& key : keys) {
    CAPTURE(key);
    CHECK(django({"add", key, "1"}) == R"({"result": false})");
  }
}

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
      "_io_bytes_watermark: 10, _io_key_prefetch: 1, _noreply: true, dead_timeout: 5, pickle_protocol: 2, "
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
}
