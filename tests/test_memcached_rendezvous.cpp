// PyMemcacheCache's placement against the real client: on several real
// memcached servers, every key goes where Django's pymemcache HashClient
// puts it, and Django and cachelock exclude each other on every server.
// (pymemcache's OPTIONS and `check`: test_memcached_pymemcache_options.cpp.)
//
// Django runs as tests/django_peer.py (see django_peer.hpp).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "django_peer.hpp"
#include "memcached_server.hpp"
#include "support.hpp"

using cachelock::CacheRegistry;
using cachelock::Lock;
using cachelock::LockError;
using cachelock::MemcachedCache;

namespace {

// The strings of the JSON list in django_peer.py's one-line answer
// {"result": [...]}: node names and booleans have no quotes or escapes.
std::vector<std::string> result_list(const std::string& json) {
  auto open = json.find('[');
  auto close = json.rfind(']');
  REQUIRE(open != std::string::npos);
  REQUIRE(close != std::string::npos);
  std::vector<std::string> items;
  std::string body = json.substr(open + 1, close - open - 1);
  for (std::size_t at = 0; at < body.size();) {
    auto end = body.find(", ", at);
    if (end == std::string::npos) end = body.size();
    auto item = body.substr(at, end - at);
    if (item.size() >= 2 && item.front() == '"') item = item.substr(1, item.size() - 2);
    items.push_back(item);
    at = end + 2;
  }
  return items;
}

// Django's PyMemcacheCache alias with LOCATION given as JSON (a list or a
// string, passed to Django as it is) and KEY_PREFIX `prefix`.
test::Django pymemcache(const std::string& location_json, const std::string& prefix) {
  return {"PyMemcacheCache", location_json, prefix, 1};
}

// `command` with `keys` as its arguments.
std::vector<std::string> with(std::string command, const std::vector<std::string>& keys) {
  std::vector<std::string> argv{std::move(command)};
  argv.insert(argv.end(), keys.begin(), keys.end());
  return argv;
}

// django_peer.py's answer to add_each for `count` keys that all gave `result`.
std::string all(int count, const char* result) {
  std::string items;
  for (int i = 0; i < count; ++i) items += (i ? ", " : "") + std::string{result};
  return "{\"result\": [" + items + "]}";
}

bool ipv6_loopback() {
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 address{};
  address.sin6_family = AF_INET6;
  address.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}

// The servers of one test: 127.0.0.1, localhost (where it resolves), [::1] (where the host has
// it) and a unix socket, each named in LOCATION as Django users write them.
struct Servers {
  test::MemcachedProcess v4;
  test::MemcachedProcess by_name;
  std::unique_ptr<test::MemcachedProcess> v6;
  std::string socket_path = "/tmp/cachelock-rendezvous-" + std::to_string(::getpid()) + ".sock";
  test::MemcachedProcess socket{{}, socket_path};

  Servers() {
    if (ipv6_loopback()) {
      v6 = std::make_unique<test::MemcachedProcess>(std::vector<std::string>{"-l", "[::1]"});
    } else {
      MESSAGE("no IPv6 loopback (::1) on this host: the [::1]:port node is left out");
    }
  }

  // LOCATION entries, in order, and the server each one is.
  std::vector<std::string> locations() const {
    std::vector<std::string> out{v4.location(), test::loopback_name() + ":" + std::to_string(by_name.port())};
    if (v6) out.push_back("[::1]:" + std::to_string(v6->port()));
    out.push_back(socket.location());
    return out;
  }
  std::vector<const test::MemcachedProcess*> processes() const {
    std::vector<const test::MemcachedProcess*> out{&v4, &by_name};
    if (v6) out.push_back(v6.get());
    out.push_back(&socket);
    return out;
  }
  // pymemcache's node names for locations(), in the same order.
  std::vector<std::string> nodes() const {
    std::vector<std::string> out{v4.location(), test::loopback_name() + ":" + std::to_string(by_name.port())};
    if (v6) out.push_back("::1:" + std::to_string(v6->port()));
    out.push_back(socket_path);
    return out;
  }
};

std::string join(const std::vector<std::string>& items, const std::string& separator, const std::string& quote = "") {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + quote + item + quote;
  return out;
}

// The server (its position in `servers`) that holds each key, asking each
// one directly: exactly one must.
std::vector<int> holders(const std::vector<const test::MemcachedProcess*>& servers, const std::string& prefix,
                         const std::vector<std::string>& keys) {
  std::vector<std::shared_ptr<MemcachedCache>> alone;
  for (const auto* server : servers) alone.push_back(test::cache_on({server->server()}, false, {.key_prefix = prefix}));
  std::vector<int> out;
  for (const auto& key : keys) {
    int holder = -1;
    for (std::size_t i = 0; i < alone.size(); ++i) {
      if (!alone[i]->get(key)) continue;
      INFO("key " << key << " is on more than one server");
      REQUIRE(holder == -1);
      holder = static_cast<int>(i);
    }
    INFO("key " << key << " is on no server");
    REQUIRE(holder >= 0);
    out.push_back(holder);
  }
  return out;
}

// How many of our locks on `keys` (default alias) were granted, each
// released at once; those are named.
int granted(const std::vector<std::string>& keys) {
  int count = 0;
  for (const auto& key : keys) {
    try {
      Lock lock{key};
      ++count;
      MESSAGE("our lock on " << key << " was granted while Django held it");
    } catch (const LockError&) {
    }
  }
  return count;
}

std::vector<std::string> test_keys() {
  std::vector<std::string> keys;
  for (int i = 0; i < 1000; ++i) keys.push_back(i % 2 ? "job-" + std::to_string(i) : "report:" + std::to_string(i * 7919));
  // Two-, three- and four-byte UTF-8, and characters whose low 8 bits are
  // ASCII or zero (pymemcache's murmur3 keeps only those).
  const char* stems[] = {"é", "ключ", "日本語", "🔒", "Ā-Ȁ", "façade", "Straße", "χ²", "ℕ", "😀😀"};
  for (int i = 0; i < 100; ++i) keys.push_back(std::string{stems[i % 10]} + "-" + std::to_string(i));
  return keys;
}

}  // namespace

TEST_CASE("rendezvous: PyMemcacheCache keys land where pymemcache's HashClient puts them, for every LOCATION form") {
  Servers servers;
  auto keys = test_keys();
  auto locations = servers.locations();
  auto nodes = servers.nodes();
  struct Form {
    const char* name;
    std::string yaml;  // LOCATION in the settings file
    std::string json;  // LOCATION as Django is given it
  };
  const Form forms[] = {
      {"list", "[" + join(locations, ", ", "\"") + "]", "[" + join(locations, ", ", "\"") + "]"},
      {"';' string", "\"" + join(locations, ";") + "\"", "\"" + join(locations, ";") + "\""},
      {"',' string", "\"" + join(locations, ",") + "\"", "\"" + join(locations, ",") + "\""},
  };
  for (const auto& form : forms) {
    CAPTURE(form.name);
    test::FreshRegistry fresh;
    auto prefix = test::unique("rdv");
    auto& registry = CacheRegistry::global();
    registry.load_yaml("CACHES:\n"
                       "  default:\n"
                       "    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                       "    LOCATION: " + form.yaml + "\n"
                       "    KEY_PREFIX: " + prefix + "\n");
    // pymemcache's choice, from the client Django builds from LOCATION.
    auto django = pymemcache(form.json, prefix);
    auto picked = result_list(django(with("nodes", keys)));
    REQUIRE(picked.size() == keys.size());
    std::vector<int> theirs;
    for (const auto& node : picked) {
      auto at = std::find(nodes.begin(), nodes.end(), node);
      INFO("pymemcache picked node " << node << "; ours are " << join(nodes, ", "));
      REQUIRE(at != nodes.end());
      theirs.push_back(static_cast<int>(at - nodes.begin()));
    }
    // Ours: where each key is once written through the alias.
    auto cache = registry.get("default");
    for (const auto& key : keys) cache->set(key, "ours");
    auto ours = holders(servers.processes(), prefix, keys);
    int differ = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (ours[i] != theirs[i] && ++differ <= 5) {
        MESSAGE("key " << keys[i] << ": ours on " << nodes[ours[i]] << ", pymemcache's on " << nodes[theirs[i]]);
      }
    }
    CHECK(differ == 0);
    // Every server has its share, so the comparison means something.
    for (std::size_t s = 0; s < nodes.size(); ++s) {
      CAPTURE(nodes[s]);
      CHECK(std::count(ours.begin(), ours.end(), static_cast<int>(s)) > static_cast<long>(keys.size() / nodes.size() / 2));
    }
  }
}

TEST_CASE("rendezvous: Django's PyMemcacheCache and cachelock exclude each other on three servers") {
  test::MemcachedProcess a, b;
  auto socket_path = "/tmp/cachelock-rendezvous-" + std::to_string(::getpid()) + "-c.sock";
  test::MemcachedProcess c{{}, socket_path};
  const std::vector<const test::MemcachedProcess*> servers{&a, &b, &c};
  auto location = join({a.location(), b.location(), c.location()}, ",");
  test::FreshRegistry fresh;
  auto prefix = test::unique("rdv-lock");
  CacheRegistry::global().load_yaml("CACHES:\n"
                                    "  default:\n"
                                    "    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                                    "    LOCATION: \"" + location + "\"\n"
                                    "    KEY_PREFIX: " + prefix + "\n");
  auto django = pymemcache("\"" + location + "\"", prefix);
  std::vector<std::string> first, second;
  for (int i = 0; i < 30; ++i) {
    first.push_back("django-" + std::to_string(i));
    second.push_back("ours-" + std::to_string(i));
  }

  // (1) Django takes every key with add(); each of our locks is refused.
  CHECK(django(with("add_each", first)) == all(30, "true"));
  auto where = holders(servers, prefix, first);
  for (int s = 0; s < 3; ++s) CHECK(std::count(where.begin(), where.end(), s) > 0);  // all three servers
  CHECK(granted(first) == 0);

  // (2) We hold every key; Django's add() fails on each, and succeeds once
  // we have released them.
  {
    std::list<Lock> held;
    for (const auto& key : second) held.emplace_back(key);
    CHECK(django(with("add_each", second)) == all(30, "false"));
  }
  CHECK(django(with("add_each", second)) == all(30, "true"));
}

TEST_CASE("rendezvous: config/django-migration.yaml shares its locks with Django, as its comments say") {
  test::MemcachedProcess a, b;
  test::FreshRegistry fresh;
  // The file reads its servers from these, as a deployment would set them.
  ::setenv("SHOP_MEMCACHED_1", a.location().c_str(), 1);
  ::setenv("SHOP_MEMCACHED_2", b.location().c_str(), 1);
  CacheRegistry::global().load_file(test::env_or_fail("CACHELOCK_CONFIG_DIR") + "/django-migration.yaml");
  ::unsetenv("SHOP_MEMCACHED_1");
  ::unsetenv("SHOP_MEMCACHED_2");
  // Its "default" alias as Django has it: the same LOCATION and KEY_PREFIX.
  auto django = pymemcache("[\"" + a.location() + "\", \"" + b.location() + "\"]", "shop");
  std::vector<std::string> theirs, ours;
  for (int i = 0; i < 25; ++i) {
    theirs.push_back(test::unique("migration-django"));
    ours.push_back(test::unique("migration-ours"));
  }
  CHECK(django(with("add_each", theirs)) == all(25, "true"));
  auto where = holders({&a, &b}, "shop", theirs);
  CHECK(std::count(where.begin(), where.end(), 0) > 0);
  CHECK(std::count(where.begin(), where.end(), 1) > 0);
  CHECK(granted(theirs) == 0);
  std::list<Lock> held;
  for (const auto& key : ours) held.emplace_back(key);
  CHECK(django(with("add_each", ours)) == all(25, "false"));
}
