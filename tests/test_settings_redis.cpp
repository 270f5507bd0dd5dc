// The Redis example settings (config/redis.yaml) in every build: they load
// into a RedisCache where hiredis is built in, and say that it is not where
// it is not.
#include <doctest/doctest.h>

#include <cachelock/cachelock.hpp>

#include "settings_support.hpp"

using cachelock::CacheRegistry;
using cachelock::ConfigError;
using test::config_file;

#if CACHELOCK_HAS_REDIS
TEST_CASE("config/redis.yaml loads a django-redis alias, without connecting") {
  CacheRegistry registry;
  registry.load_file(config_file("redis.yaml"));
  CHECK(registry.default_alias() == "locks");
  auto locks = std::dynamic_pointer_cast<cachelock::RedisCache>(registry.get("locks"));
  REQUIRE(locks != nullptr);
  CHECK(locks->options().key_prefix == "billing");
  CHECK(locks->redis_options().server.to_string() == "127.0.0.1:6379");
  CHECK(locks->redis_options().connect_timeout == std::chrono::milliseconds{500});
  CHECK(locks->redis_options().timeout == std::chrono::milliseconds{500});
  CHECK(locks->redis_options().pool_size == 8);
  CHECK(locks->min_renewing_ttl() == std::chrono::seconds{3});
}
#else
TEST_CASE("a Redis alias in a build without hiredis says so") {
  CacheRegistry registry;
  CHECK_THROWS_WITH_AS(registry.load_file(config_file("redis.yaml")),
                       doctest::Contains("CACHES.locks.BACKEND: the redis backend is not built in"), ConfigError);
}
#endif
