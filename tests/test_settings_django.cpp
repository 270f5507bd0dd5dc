// A Django project's CACHES pasted as it is: aliases cachelock does not
// serve (a database, a backend of the project's own) load and fail
// only when used; KEY_FUNCTION names a key function registered in code;
// TIMEOUT 0 or less loads, as in Django, and locks on it need a ttl.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <string>

#include <cachelock/cachelock.hpp>

#include "support.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "memcached_server.hpp"
#endif

using namespace std::chrono_literals;
using cachelock::CacheRegistry;
using cachelock::ConfigError;

namespace {

// Aliases a Django project may have beside the ones it locks with.
constexpr const char* unserved_aliases = R"(
  sessions:
    BACKEND: django.core.cache.backends.db.DatabaseCache
    LOCATION: my_session_table
    KEY_PREFIX: my site
    OPTIONS:
      MAX_ENTRY: 10
  pages:
    BACKEND: django_elasticache.memcached.ElastiCache
    LOCATION: [10.0.0.1:11211, 10.0.0.2:11211]
  table:
    BACKEND: django.core.cache.backends.db.DatabaseCache
    LOCATION: my_cache_table
    TIMEOUT: soon
  own:
    BACKEND: myproject.cache.ShardedCache
)";

const std::string table_reason = "it does not keep locks in a database table";
const std::string only_served =
    "it serves only memory, file, django-file, memcached, redis or dummy, or Django's locmem.LocMemCache, "
    "filebased.FileBasedCache, memcached.PyMemcacheCache, memcached.PyLibMCCache, memcached.MemcachedCache, "
    "redis.RedisCache, django_redis.cache.RedisCache or dummy.DummyCache";

std::string unserved_message(const std::string& where, const std::string& alias, const std::string& backend,
                             const std::string& why) {
  return where + ": CACHES." + alias + ".BACKEND: alias '" + alias + "' cannot be used: BACKEND '" + backend +
         "' is not served by cachelock: " + why;
}

// The message every use of the four aliases above throws, when they follow
// a `default` alias of `default_lines` lines after "CACHES:".
std::vector<std::pair<std::string, std::string>> unserved_messages(int default_lines) {
  // Lines of unserved_aliases count from its first, empty one.
  auto line = [&](int n) { return "<django>:" + std::to_string(default_lines + 2 + n) + ":14"; };
  return {
      {"sessions", unserved_message(line(2), "sessions", "django.core.cache.backends.db.DatabaseCache", table_reason)},
      {"pages", unserved_message(line(8), "pages", "django_elasticache.memcached.ElastiCache", only_served)},
      {"table", unserved_message(line(11), "table", "django.core.cache.backends.db.DatabaseCache", table_reason)},
      {"own", unserved_message(line(15), "own", "myproject.cache.ShardedCache", only_served)},
  };
}

std::string message_of(const std::function<void()>& use) {
  try {
    use();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no ConfigError)";
}

}  // namespace

TEST_CASE("django settings: aliases cachelock does not serve load, and fail when used, saying why") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  registry.load_yaml(std::string{"CACHES:\n  default:\n    BACKEND: memory\n"} + unserved_aliases, "<django>");
  CHECK(registry.aliases() == std::vector<std::string>{"default", "own", "pages", "sessions", "table"});
  CHECK_FALSE(registry.unavailable("default").has_value());

  for (const auto& [alias, expected] : unserved_messages(2)) {
    CAPTURE(alias);
    CHECK(registry.contains(alias));
    CHECK(registry.unavailable(alias) == expected);
    CHECK(message_of([&] { registry.get(alias); }) == expected);
    CHECK(message_of([&] { cachelock::Lock lock{"job", {.alias = alias}}; }) == expected);
    CHECK(message_of([&] { cachelock::once("job", {.alias = alias}, [] {})(); }) == expected);
    cachelock::Mutex mutex{"job", {.alias = alias}};
    CHECK(message_of([&] { (void)mutex.try_lock(); }) == expected);
    // Still so on the next use: nothing was built, nothing is cached.
    CHECK(message_of([&] { registry.get(alias); }) == expected);
  }
  // The served alias works all along.
  cachelock::Lock lock{"job"};
  CHECK(lock.owns_lock());
  CHECK_THROWS_AS(cachelock::Lock("job"), cachelock::LockError);
  CHECK_THROWS_WITH_AS(registry.unavailable("nope"), "unknown cache alias 'nope' (known: 'default', 'own', 'pages', "
                                                     "'sessions', 'table')",
                       ConfigError);
}

#if CACHELOCK_HAS_MEMCACHED
TEST_CASE("django settings: with database and other aliases beside it, a memcached alias locks on a real server") {
  test::FreshRegistry fresh;
  auto& server = test::shared_memcached();
  server.flush();
  auto& registry = CacheRegistry::global();
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: django.core.cache.backends.memcached.PyMemcacheCache\n"
                     "    LOCATION: " + server.location() + "\n" + unserved_aliases,
                     "<django>");
  auto key = test::unique("django-mixed");
  {
    cachelock::Lock lock{key, {.ttl = 30s}};
    CHECK(server.command("get :1:" + key + "\r\n", true).find(lock.token()) != std::string::npos);
    CHECK_THROWS_AS(cachelock::Lock(key, {.ttl = 30s}), cachelock::LockError);
  }
  CHECK(server.command("get :1:" + key + "\r\n", true) == "END\r\n");
  for (const auto& [alias, expected] : unserved_messages(3)) {
    CHECK(message_of([&] { cachelock::Lock lock{key, {.alias = alias}}; }) == expected);
  }
}
#endif

TEST_CASE("django settings: an unserved default alias loads; a lock without an alias names the way out") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  const std::string hint =
      "; it is the default alias: name a served one with DEFAULT_CACHELOCK_ALIAS, or give the lock an alias";
  std::string expected, name;
  SUBCASE("the alias named default") {
    registry.load_yaml("CACHES:\n  default:\n    BACKEND: myproject.cache.ShardedCache\n"
                       "  locks:\n    BACKEND: memory\n",
                       "<django>");
    name = "default";
    expected = unserved_message("<django>:3:14", name, "myproject.cache.ShardedCache", only_served);
  }
  SUBCASE("DEFAULT_CACHELOCK_ALIAS") {
    registry.load_yaml("DEFAULT_CACHELOCK_ALIAS: table\nCACHES:\n  locks:\n    BACKEND: memory\n"
                       "  table:\n    BACKEND: django.core.cache.backends.db.DatabaseCache\n",
                       "<django>");
    name = "table";
    expected = unserved_message("<django>:6:14", name, "django.core.cache.backends.db.DatabaseCache", table_reason);
  }
  CHECK(registry.default_alias() == name);
  CHECK(message_of([] { cachelock::Lock lock{"job"}; }) == expected + hint);
  CHECK(message_of([] { cachelock::once("job", [] {})(); }) == expected + hint);
  CHECK(message_of([&] { registry.get(); }) == expected + hint);
  // Named, it is the plain error; another alias works.
  CHECK(message_of([&] { registry.get(name); }) == expected);
  cachelock::Lock lock{"job", {.alias = "locks"}};
  CHECK(lock.owns_lock());
  registry.set_default_alias("locks");
  CHECK(cachelock::Lock("other").owns_lock());
}

TEST_CASE("django settings: typos stay errors, in served and unserved aliases alike") {
  CacheRegistry registry;
  struct Case {
    const char* yaml;
    const char* message;
  };
  const Case cases[] = {
      {"CACHES:\n  default:\n    BACKEND: memory\n  sessions:\n    BACKEND: django.core.cache.backends.db.DatabaseCache\n"
       "    LOCATON: my_cache_table\n",
       "<s>:6:5: CACHES.sessions.LOCATON: unknown cache setting; known: BACKEND, LOCATION, TIMEOUT, KEY_PREFIX, "
       "VERSION, KEY_FUNCTION, OPTIONS"},
      {"CACHES:\n  default:\n    BACKEND: memory\n    OPTIONS:\n      MAX_ENTRY: 10\n",
       "<s>:5:7: CACHES.default.OPTIONS.MAX_ENTRY: unknown memory option; known: MAX_ENTRIES, CULL_FREQUENCY"},
      // Not a Python path: a misspelt short name.
      {"CACHES:\n  default:\n    BACKEND: memcache\n",
       "<s>:3:14: CACHES.default.BACKEND: unknown BACKEND 'memcache'; expected memory, file, django-file, memcached, redis "
       "or dummy, or Django's locmem.LocMemCache, filebased.FileBasedCache, memcached.PyMemcacheCache, "
       "memcached.PyLibMCCache, memcached.MemcachedCache, redis.RedisCache, django_redis.cache.RedisCache or "
       "dummy.DummyCache"},
      // Django has no such backend: Django itself would not load it.
      {"CACHES:\n  default:\n    BACKEND: django.core.cache.backends.memcached.PyMemcachCache\n",
       "<s>:3:14: CACHES.default.BACKEND: unknown BACKEND 'django.core.cache.backends.memcached.PyMemcachCache'; "
       "expected memory, file, django-file, memcached, redis or dummy, or Django's locmem.LocMemCache, "
       "filebased.FileBasedCache, memcached.PyMemcacheCache, memcached.PyLibMCCache, memcached.MemcachedCache, "
       "redis.RedisCache, django_redis.cache.RedisCache or dummy.DummyCache"},
      {"CACHES:\n  default:\n    BACKEND: my project.Cache\n",
       "<s>:3:14: CACHES.default.BACKEND: unknown BACKEND 'my project.Cache'; expected memory, file, django-file, "
       "memcached, redis or dummy, or Django's locmem.LocMemCache, filebased.FileBasedCache, "
       "memcached.PyMemcacheCache, memcached.PyLibMCCache, memcached.MemcachedCache, redis.RedisCache, "
       "django_redis.cache.RedisCache or dummy.DummyCache"},
      {"CACHES:\n  default:\n    BACKEND: memory\n    KEY_FUNCTION: [a, b]\n",
       "<s>:4:19: CACHES.default.KEY_FUNCTION: expected a string, got a list"},
      {"CACHES:\n  default:\n    BACKEND: memory\n    KEY_FUNCTION: ''\n",
       "<s>:4:19: CACHES.default.KEY_FUNCTION: expected the name of a registered key function, or null, "
       "got \"\""},
      {"CACHES:\n  default:\n    BACKEND: memory\n    TIMEOUT: 0.0001\n",
       "<s>:4:14: CACHES.default.TIMEOUT: must be at least 0.001 seconds (a millisecond, the finest ttl a lock "
       "keeps), got 0.0001"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.yaml);
    CHECK_THROWS_WITH_AS(registry.load_yaml(c.yaml, "<s>"), c.message, ConfigError);
  }
}

TEST_CASE("django settings: KEY_FUNCTION makes the stored keys with a function registered in code") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n    KEY_PREFIX: site\n    VERSION: 3\n"
                     "    KEY_FUNCTION: myproject.cache.lower_key\n",
                     "<django>");
  const std::string unregistered =
      "<django>:6:19: CACHES.default.KEY_FUNCTION: 'myproject.cache.lower_key' is not a registered key function "
      "(registered: {}); register it with CacheRegistry::add_key_function before the alias is used";
  auto with = [&](const std::string& names) {
    auto at = unregistered.find("{}");
    return unregistered.substr(0, at) + names + unregistered.substr(at + 2);
  };
  CHECK(message_of([&] { registry.get(); }) == with("none"));
  CHECK(message_of([] { cachelock::Lock lock{"Job"}; }) == with("none"));
  registry.add_key_function("myproject.cache.other", [](auto key, auto, int) { return std::string{key}; });
  CHECK(message_of([&] { registry.get(); }) == with("'myproject.cache.other'"));

  // Registered after the settings were loaded: found at the alias's first use.
  registry.add_key_function("myproject.cache.lower_key",
                            [](std::string_view key, std::string_view prefix, int version) {
                              std::string out = std::string{prefix} + "/" + std::to_string(version) + "/";
                              for (unsigned char c : key) out += static_cast<char>(std::tolower(c));
                              return out;
                            });
  auto cache = registry.get();
  CHECK(cache->make_key("Job") == "site/3/job");
  // Two user keys, one stored key: one lock, as Django would see it.
  cachelock::Lock lock{"Job"};
  CHECK_THROWS_AS(cachelock::Lock("JOB"), cachelock::LockError);
  CHECK(cache->get("job") == lock.token());
  CHECK(cachelock::Lock("other").owns_lock());
}

TEST_CASE("django settings: a key function's keys are checked as any stored key is") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  registry.add_key_function("keys.spaced", [](auto key, auto, int) { return "a " + std::string{key}; });
  registry.add_key_function("keys.long", [](auto key, auto, int) { return std::string(251, 'k') + std::string{key}; });
  registry.add_key_function("keys.empty", [](auto, auto, int) { return std::string{}; });
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n"
                     "  spaced:\n    BACKEND: memory\n    KEY_FUNCTION: keys.spaced\n"
                     "  long:\n    BACKEND: memory\n    KEY_FUNCTION: keys.long\n"
                     "  empty:\n    BACKEND: memory\n    KEY_FUNCTION: keys.empty\n"
                     "  django:\n    BACKEND: memory\n    KEY_PREFIX: p\n"
                     "    KEY_FUNCTION: django.core.cache.backends.base.default_key_func\n"
                     "  none:\n    BACKEND: memory\n    KEY_FUNCTION: null\n");
  CHECK_THROWS_WITH_AS(cachelock::Lock("job", {.alias = "spaced"}),
                       "key 'a job' contains a space at byte 1; keys may not contain spaces or control characters",
                       cachelock::InvalidKeyError);
  CHECK_THROWS_WITH_AS(cachelock::Lock("job", {.alias = "long"}),
                       ("key '" + std::string(64, 'k') + "'... (254 bytes) is 254 bytes long; keys may have at "
                                                         "most 250 bytes")
                           .c_str(),
                       cachelock::InvalidKeyError);
  CHECK_THROWS_WITH_AS(cachelock::Lock("job", {.alias = "empty"}), "the key function made an empty key of 'job'",
                       cachelock::InvalidKeyError);
  // Django's own default is no key function at all.
  CHECK(registry.get("django")->make_key("job") == "p:1:job");
  CHECK(registry.get("none")->make_key("job") == ":1:job");
}

#if CACHELOCK_HAS_MEMCACHED
TEST_CASE("django settings: memcached stores the key the key function made") {
  test::FreshRegistry fresh;
  auto& server = test::shared_memcached();
  auto& registry = CacheRegistry::global();
  registry.add_key_function("myproject.keys.tagged", [](auto key, auto prefix, int version) {
    return "tag-" + std::string{prefix} + "-" + std::to_string(version) + "-" + std::string{key};
  });
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " + server.location() +
                     "\n    KEY_PREFIX: app\n    KEY_FUNCTION: myproject.keys.tagged\n");
  auto key = test::unique("tagged");
  cachelock::Lock lock{key, {.ttl = 30s}};
  CHECK(server.command("get tag-app-1-" + key + "\r\n", true).find(lock.token()) != std::string::npos);
  CHECK(server.command("get app:1:" + key + "\r\n", true) == "END\r\n");
}
#endif

TEST_CASE("django settings: TIMEOUT 0 or less loads; a lock there needs a ttl of its own") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n    TIMEOUT: 0\n"
                     "  negative:\n    BACKEND: memory\n    TIMEOUT: -1\n",
                     "<django>");
  CHECK(registry.get()->options().timeout.is_expired());
  for (auto [alias, seconds] : {std::pair{"default", "0"}, {"negative", "-1"}}) {
    CAPTURE(alias);
    auto expected = [&](const std::string& key) {
      return "lock '" + key + "' on alias '" + alias + "': the cache's TIMEOUT is " + seconds +
             " s, which means expire at once (as in Django): a lock taken without a ttl would be free as soon "
             "as it is taken; give the lock a ttl";
    };
    CHECK(message_of([&] { cachelock::Lock lock{"job", {.alias = alias}}; }) == expected("job"));
    CHECK(message_of([&] { cachelock::once("run", {.alias = alias}, [] {})(); }) == expected("run"));
    cachelock::Mutex mutex{"m", {.alias = alias}};
    CHECK(message_of([&] { mutex.lock(); }) == expected("m"));

    // With a ttl, it is a lock like any other.
    {
      cachelock::Lock lock{"job", {.alias = alias, .ttl = 30s}};
      CHECK(lock.owns_lock());
      CHECK_THROWS_AS(cachelock::Lock("job", {.alias = alias, .ttl = 30s}), cachelock::LockError);
      CHECK(lock.extend());
      CHECK(registry.get(alias)->get("job") == lock.token());
    }
    bool ran = false;
    CHECK(cachelock::once("run", {.alias = alias, .ttl = 30s}, [&] { ran = true; })());
    CHECK(ran);
  }
}
