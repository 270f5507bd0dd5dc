// Settings files: the example configurations, every field, aliases, reloads
// and ${VAR} expansion (test_settings_errors.cpp has the malformed ones).
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <cachelock/once.hpp>

#include "settings_support.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::CacheRegistry;
using cachelock::ConfigError;
using test::config_file;

namespace {

template <class T>
bool is(const std::shared_ptr<cachelock::Cache>& cache) {
  return std::dynamic_pointer_cast<T>(cache) != nullptr;
}

// Sets an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  ScopedEnv(std::string n, const char* value) : name{std::move(n)} {
    if (value) {
      ::setenv(name.c_str(), value, 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
};

}  // namespace

TEST_CASE("config/cachelock.yaml: a memory default, a file alias and a dummy alias") {
  CacheRegistry registry;
  registry.load_file(config_file("cachelock.yaml"));
  CHECK(registry.aliases() == std::vector<std::string>{"default", "host", "off"});
  CHECK(registry.default_alias() == "default");
  CHECK(is<cachelock::MemoryCache>(registry.get()));
  CHECK(registry.get()->options().timeout == cachelock::Timeout{300s});
  CHECK(is<cachelock::DummyCache>(registry.get("off")));
  auto host = std::dynamic_pointer_cast<cachelock::FileCache>(registry.get("host"));
  REQUIRE(host != nullptr);
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  CHECK(host->file_options().directory ==
        std::string{runtime && *runtime ? runtime : "/tmp"} + "/cachelock-example");
  CHECK(host->options().timeout == cachelock::Timeout{60s});
}

#if CACHELOCK_HAS_MEMCACHED
TEST_CASE("config/memcached.yaml: a memcached default alias, from the environment") {
  CacheRegistry registry;
  SUBCASE("fallbacks") {
    ScopedEnv host{"MEMCACHED_HOST", nullptr}, port{"MEMCACHED_PORT", nullptr};
    registry.load_file(config_file("memcached.yaml"));
    auto locks = std::dynamic_pointer_cast<cachelock::MemcachedCache>(registry.get());
    REQUIRE(locks != nullptr);
    CHECK(registry.default_alias() == "locks");
    CHECK(locks->options().timeout == cachelock::Timeout{60s});
    CHECK(locks->options().key_prefix == "billing");
    CHECK(locks->options().version == 1);
    CHECK(locks->make_key("job") == "billing:1:job");
    const auto& m = locks->memcached_options();
    REQUIRE(m.servers.size() == 1);
    CHECK(m.servers[0].to_string() == "127.0.0.1:11211");
    CHECK_FALSE(m.binary);
    CHECK(m.tcp_nodelay);
    CHECK(m.connect_timeout == 500ms);
    CHECK(m.timeout == 500ms);
    CHECK(m.retry_timeout == 2s);
    CHECK(m.server_failure_limit == 2);
    CHECK(m.distribution == cachelock::MemcachedDistribution::modula);
    CHECK(m.pool_size == 8);
    CHECK(is<cachelock::MemoryCache>(registry.get("default")));
  }
  SUBCASE("variables set") {
    ScopedEnv host{"MEMCACHED_HOST", "cache.internal"}, port{"MEMCACHED_PORT", "11311"};
    registry.load_file(config_file("memcached.yaml"));
    auto locks = std::dynamic_pointer_cast<cachelock::MemcachedCache>(registry.get());
    REQUIRE(locks != nullptr);
    REQUIRE(locks->memcached_options().servers.size() == 1);
    CHECK(locks->memcached_options().servers[0].to_string() == "cache.internal:11311");
  }
}

TEST_CASE("config/django-migration.yaml: a pasted Django CACHES with four aliases") {
  CacheRegistry registry;
  registry.load_file(config_file("django-migration.yaml"));
  CHECK(registry.aliases() == std::vector<std::string>{"default", "local", "nocache", "sessions"});
  auto shop = std::dynamic_pointer_cast<cachelock::MemcachedCache>(registry.get("default"));
  REQUIRE(shop != nullptr);
  CHECK(shop->options().key_prefix == "shop");
  CHECK(shop->options().timeout == cachelock::Timeout{600s});
  CHECK(shop->memcached_options().servers.size() == 2);
  auto sessions = std::dynamic_pointer_cast<cachelock::MemcachedCache>(registry.get("sessions"));
  REQUIRE(sessions != nullptr);
  CHECK(sessions->options().version == 2);
  CHECK(sessions->options().timeout == cachelock::Timeout{300s});  // absent: Django's 300 s
  CHECK(sessions->memcached_options().binary);
  REQUIRE(sessions->memcached_options().servers.size() == 2);
  CHECK(sessions->memcached_options().servers[1].to_string() == "10.0.0.6:11211");
  CHECK(is<cachelock::MemoryCache>(registry.get("local")));
  CHECK(is<cachelock::DummyCache>(registry.get("nocache")));
}
#else
TEST_CASE("a memcached alias in a build without memcached says so") {
  CacheRegistry registry;
  CHECK_THROWS_WITH_AS(registry.load_file(config_file("memcached.yaml")),
                       doctest::Contains("CACHES.locks.BACKEND: the memcached backend is not built in"),
                       ConfigError);
}
#endif

TEST_CASE("BACKEND takes Django's dotted paths and short names") {
  struct Case {
    const char* backend;
    bool memory;
  };
  const Case cases[] = {
      {"memory", true},
      {"django.core.cache.backends.locmem.LocMemCache", true},
      {"dummy", false},
      {"django.core.cache.backends.dummy.DummyCache", false},
  };
  for (const char* backend : {"file"}) {
    CAPTURE(backend);
    CacheRegistry registry;
    registry.load_yaml(std::string{"CACHES:\n  default:\n    BACKEND: "} + backend +
                       "\n    LOCATION: /tmp/cachelock-settings-test\n    OPTIONS: {MAX_ENTRIES: 50}\n");
    auto file = std::dynamic_pointer_cast<cachelock::FileCache>(registry.get());
    REQUIRE(file != nullptr);
    CHECK(file->file_options().directory == "/tmp/cachelock-settings-test");
    CHECK(file->options().max_entries == 50);
  }
  for (const auto& c : cases) {
    CAPTURE(c.backend);
    CacheRegistry registry;
    registry.load_yaml(std::string{"CACHES:\n  default:\n    BACKEND: "} + c.backend + "\n");
    CHECK(is<cachelock::MemoryCache>(registry.get()) == c.memory);
    CHECK(is<cachelock::DummyCache>(registry.get()) == !c.memory);
  }
#if CACHELOCK_HAS_MEMCACHED
  for (const char* backend : {"memcached", "django.core.cache.backends.memcached.PyMemcacheCache",
                              "django.core.cache.backends.memcached.PyLibMCCache",
                              "django.core.cache.backends.memcached.MemcachedCache"}) {
    CAPTURE(backend);
    CacheRegistry registry;
    registry.load_yaml(std::string{"CACHES:\n  default:\n    BACKEND: "} + backend +
                       "\n    LOCATION: 127.0.0.1:11211\n");
    CHECK(is<cachelock::MemcachedCache>(registry.get()));
  }
#endif
}

TEST_CASE("TIMEOUT, KEY_PREFIX and VERSION reach the cache") {
  CacheRegistry registry;
  registry.load_yaml(R"(
CACHES:
  default:
    BACKEND: memory
  never:
    BACKEND: memory
    TIMEOUT: null
  tilde:
    BACKEND: memory
    TIMEOUT: ~
  half:
    BACKEND: memory
    TIMEOUT: 0.5
    KEY_PREFIX: app
    VERSION: 3
  numeric-prefix:
    BACKEND: memory
    KEY_PREFIX: 42
    VERSION: -1
)");
  CHECK(registry.get()->options().timeout == cachelock::Timeout{300s});
  CHECK(registry.get()->make_key("k") == ":1:k");
  CHECK(registry.get("never")->options().timeout.is_never());
  CHECK(registry.get("tilde")->options().timeout.is_never());
  CHECK(registry.get("half")->options().timeout == cachelock::Timeout{500ms});
  CHECK(registry.get("half")->make_key("k") == "app:3:k");
  CHECK(registry.get("numeric-prefix")->make_key("k") == "42:-1:k");
}

TEST_CASE("a lock on an alias with TIMEOUT null never expires; with a TIMEOUT it does") {
  test::FreshRegistry fresh;
  CacheRegistry::global().load_yaml(R"(
CACHES:
  default:
    BACKEND: memory
    TIMEOUT: 0.1
  forever:
    BACKEND: memory
    TIMEOUT: null
)");
  cachelock::Lock expiring{"job"};
  cachelock::Lock kept{"job", {.alias = "forever"}};
  std::this_thread::sleep_for(250ms);
  CHECK_NOTHROW(cachelock::Lock("job"));
  CHECK_THROWS_AS(cachelock::Lock("job", {.alias = "forever"}), cachelock::LockError);
}

TEST_CASE("memory OPTIONS: MAX_ENTRIES and CULL_FREQUENCY") {
  CacheRegistry registry;
  registry.load_yaml(R"(
CACHES:
  default:
    BACKEND: memory
    OPTIONS:
      MAX_ENTRIES: 10
      CULL_FREQUENCY: 0
)");
  auto cache = std::dynamic_pointer_cast<cachelock::MemoryCache>(registry.get());
  REQUIRE(cache != nullptr);
  CHECK(cache->options().max_entries == 10);
  CHECK(cache->options().cull_frequency == 0);
  for (int i = 0; i < 11; ++i) cache->set("k" + std::to_string(i), "v");
  CHECK(cache->size() == 1);  // culled to nothing at the 11th, as Django does with 0
}

TEST_CASE("DEFAULT_CACHELOCK_ALIAS picks the default alias, else 'default'") {
  CacheRegistry registry;
  registry.load_yaml(R"(
DEFAULT_CACHELOCK_ALIAS: locks
CACHES:
  locks:
    BACKEND: memory
  other:
    BACKEND: dummy
)");
  CHECK(registry.default_alias() == "locks");
  CHECK(registry.get() == registry.get("locks"));
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: dummy\n  locks:\n    BACKEND: memory\n");
  CHECK(registry.default_alias() == "default");
  CHECK(is<cachelock::DummyCache>(registry.get()));
}

TEST_CASE("Lock and once use the alias as configured when they run") {
  test::FreshRegistry fresh;
  auto& registry = CacheRegistry::global();
  const char* settings = "CACHES:\n  default:\n    BACKEND: memory\n  x:\n    BACKEND: memory\n";
  registry.load_yaml(settings);
  auto first = registry.get("x");
  std::shared_ptr<cachelock::Cache> second, seen;
  auto job = cachelock::once("job", {.alias = "x"}, [&] {
    // Which cache holds the key while the function runs?
    for (const auto& cache : {first, second}) {
      if (cache && cache->get("job")) seen = cache;
    }
  });
  cachelock::Lock lock{"k", std::defer_lock, {.alias = "x"}};
  CHECK(job());
  CHECK(seen == first);
  CHECK(lock.try_acquire());
  CHECK(first->get("k") == lock.token());
  CHECK(lock.release());

  registry.load_yaml(settings);  // same text, new caches
  second = registry.get("x");
  REQUIRE(second != first);
  CHECK(job());
  CHECK(seen == second);
  CHECK(lock.try_acquire());
  CHECK(second->get("k") == lock.token());
  CHECK_FALSE(first->get("k").has_value());
}

TEST_CASE("a failed load leaves the configuration as it was") {
  CacheRegistry registry;
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n  locks:\n    BACKEND: memory\n");
  auto locks = registry.get("locks");
  CHECK_THROWS_AS(registry.load_yaml("CACHES:\n  default:\n    BACKEND: nope\n"), ConfigError);
  CHECK(registry.get("locks") == locks);
  CHECK(registry.aliases() == std::vector<std::string>{"default", "locks"});
}

TEST_CASE("caches handed out keep working after a reload") {
  CacheRegistry registry;
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n");
  auto old_cache = registry.get();
  old_cache->set("k", "v");
  registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n");
  CHECK(registry.get() != old_cache);
  CHECK(old_cache->get("k") == "v");
}

TEST_CASE("${VAR} and ${VAR:-fallback} read the environment") {
  ScopedEnv prefix{"CACHELOCK_TEST_PREFIX", "fromenv"};
  ScopedEnv timeout{"CACHELOCK_TEST_TIMEOUT", "45"};
  ScopedEnv empty{"CACHELOCK_TEST_EMPTY", ""};
  ScopedEnv unset{"CACHELOCK_TEST_UNSET", nullptr};
  CacheRegistry registry;
  registry.load_yaml(R"(
CACHES:
  default:
    BACKEND: memory
    KEY_PREFIX: ${CACHELOCK_TEST_PREFIX}-x
    TIMEOUT: ${CACHELOCK_TEST_TIMEOUT:-10}
  b:
    BACKEND: memory
    KEY_PREFIX: ${CACHELOCK_TEST_UNSET:-fallback}
    TIMEOUT: ${CACHELOCK_TEST_UNSET:-10}
  c:
    BACKEND: memory
    KEY_PREFIX: ${CACHELOCK_TEST_EMPTY:-was-empty}$${literal}
)");
  CHECK(registry.get()->options().key_prefix == "fromenv-x");
  CHECK(registry.get()->options().timeout == cachelock::Timeout{45s});
  CHECK(registry.get("b")->options().key_prefix == "fallback");
  CHECK(registry.get("b")->options().timeout == cachelock::Timeout{10s});
  CHECK(registry.get("c")->options().key_prefix == "was-empty${literal}");
}

