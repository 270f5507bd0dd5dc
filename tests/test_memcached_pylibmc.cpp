// Django's PyLibMCCache pasted in: OPTIONS.behaviors and LOCATION weights
// are taken as pylibmc takes them, so that on several servers each key lands
// where pylibmc puts it, and Django and cachelock contend for the same locks.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "django_peer.hpp"
#include "memcached_server.hpp"
#include "support.hpp"

using cachelock::CacheRegistry;
using cachelock::Lock;
using cachelock::LockError;

namespace {

constexpr std::string_view pylibmc_backend = "django.core.cache.backends.memcached.PyLibMCCache";

// Servers named as a pasted LOCATION may name them, started once for this
// program. pylibmc refuses to mix TCP servers and unix sockets in one
// client, so the sockets are a set of their own.
struct Servers {
  std::vector<const test::MemcachedProcess*> processes;
  std::vector<std::string> locations;  // LOCATION's entries, in order

  void flush() const {
    for (const auto* server : processes) server->flush();
  }
};

const Servers& tcp_servers() {
  static test::MemcachedProcess ipv6{{"-l", "::1"}};  // on 127.0.0.1 too, for the direct reads
  static const Servers servers{
      {&test::shared_memcached(), &test::second_memcached(), &ipv6},
      {test::shared_memcached().location(), fmt::format("{}:{}", test::loopback_name(), test::second_memcached().port()),
       fmt::format("[::1]:{}", ipv6.port())}};
  return servers;
}

struct SocketDirectory {
  std::filesystem::path path = std::filesystem::temp_directory_path() / test::unique("cachelock-pylibmc");
  SocketDirectory() { std::filesystem::create_directory(path); }
  ~SocketDirectory() { std::filesystem::remove_all(path); }
};

const Servers& socket_servers() {
  static SocketDirectory directory;  // made first, so removed last
  static test::MemcachedProcess first{{}, directory.path / "first.sock"};
  static test::MemcachedProcess second{{}, directory.path / "second.sock"};
  static const Servers servers{{&first, &second}, {first.location(), second.location()}};
  return servers;
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
std::vector<int> holders(const Servers& servers, const std::vector<std::string>& stored) {
  const auto& all = servers.processes;
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

// LOCATION as Django's peer takes it (a JSON list: an entry may start with
// `[`), and as a settings file gives it: a list, or one string separated by `;`.
struct Location {
  std::string peer, yaml;
};

Location location_of(const std::vector<std::string>& entries, bool as_string) {
  Location out;
  for (const auto& entry : entries) {
    out.peer += (out.peer.empty() ? "[\"" : "\", \"") + entry;
    out.yaml += (out.yaml.empty() ? "" : as_string ? ";" : "\", \"") + entry;
  }
  out.peer += "\"]";
  out.yaml = as_string ? "'" + out.yaml + "'" : "[\"" + out.yaml + "\"]";
  return out;
}

// Where Django (PyLibMCCache, so pylibmc) puts each key with `options`, and
// where cachelock puts it when given the same alias in a settings file.
// `entries` are LOCATION's, in order (a weight may follow a port).
Placement place(const Servers& servers, const std::vector<std::string>& entries, const std::string& options,
                bool as_string) {
  auto prefix = test::unique("pl");
  auto location = location_of(entries, as_string);
  test::Django django{"PyLibMCCache", location.peer, prefix, 1, options};
  CacheRegistry registry;
  registry.load_yaml(settings(location.yaml, options, prefix));
  auto ours = registry.get("default");

  auto keys = placement_keys();
  std::vector<std::string> stored;
  for (const auto& key : keys) stored.push_back(ours->make_key(key));
  Placement result;
  servers.flush();
  std::vector<std::string> command{"set"};
  command.insert(command.end(), keys.begin(), keys.end());
  REQUIRE(django(command) == R"({"result": null})");
  result.theirs = holders(servers, stored);
  servers.flush();
  for (const auto& key : keys) ours->set(key, "ours");
  result.ours = holders(servers, stored);
  return result;
}

std::vector<std::string> plain_locations() { return tcp_servers().locations; }

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

struct Case {
  const Servers& servers = tcp_servers();
  bool as_string = false;  // LOCATION as one string rather than a list
  bool spread = true;      // every server gets keys, so the comparison means something
};

void check_same(const std::vector<std::string>& entries, const std::string& options, Case c = {}) {
  CAPTURE(options);
  CAPTURE(c.as_string);
  auto placed = place(c.servers, entries, options, c.as_string);
  CHECK(placed.differing() == 0);
  if (c.spread) {
    for (int s = 0; s < static_cast<int>(c.servers.processes.size()); ++s) {
      CHECK(std::ranges::count(placed.ours, s) > 0);
    }
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
  // LOCATION as one string, and unix sockets (which pylibmc does not mix
  // with TCP servers).
  check_same(plain_locations(), "{}", {.as_string = true});
  check_same(weighted_locations(), R"({"behaviors": {"ketama_weighted": true}})", {.as_string = true});
  check_same(socket_servers().locations, "{}", {.servers = socket_servers()});
  check_same(socket_servers().locations, R"({"behaviors": {"ketama": true}})", {.servers = socket_servers()});
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
               {.spread = false});
  }
  auto reversed = plain_locations();
  std::ranges::reverse(reversed);
  check_same(reversed, R"({"behaviors": {"_sort_hosts": true, "hash": "crc"}})");
  check_same(reversed, R"({"behaviors": {"_sort_hosts": true, "ketama": true}})");
}

TEST_CASE("pylibmc: Django's PyLibMCCache and cachelock exclude each other on three servers") {
  test::FreshRegistry fresh;
  auto prefix = test::unique("contend");
  auto location = location_of(weighted_locations(), false);
  const std::string options = R"({"behaviors": {"ketama_weighted": true, "hash": "md5"}})";
  CacheRegistry::global().load_yaml(settings(location.yaml, options, prefix));
  test::Django django{"PyLibMCCache", location.peer, prefix, 1, options};
  auto cache = CacheRegistry::global().get("default");
  // Keys that land on each of the three servers, two each.
  std::vector<std::string> keys;
  std::vector<int> on(3, 0);
  tcp_servers().flush();
  for (int i = 0; keys.size() < 6 && i < 1000; ++i) {
    auto key = "job-" + std::to_string(i);
    cache->set(key, "probe");
    int holder = holders(tcp_servers(), {cache->make_key(key)}).front();
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
