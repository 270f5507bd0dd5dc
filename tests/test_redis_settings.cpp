// The Redis backend's settings: every LOCATION form Django's RedisCache and
// django-redis take, their OPTIONS, and the errors for the rest.
#include <doctest/doctest.h>

#include <cachelock/errors.hpp>
#include <cachelock/registry.hpp>

#include "redis_server.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::CacheRegistry;
using cachelock::ConfigError;
using cachelock::RedisCache;
using cachelock::RedisServer;

namespace {

// The Redis options an alias loads with.
cachelock::RedisOptions options_of(std::string_view backend, std::string_view location, std::string_view options = {}) {
  CacheRegistry registry;
  std::string yaml = "CACHES:\n  default:\n    BACKEND: " + std::string{backend} + "\n    LOCATION: " +
                     std::string{location} + "\n";
  if (!options.empty()) yaml += "    OPTIONS: " + std::string{options} + "\n";
  registry.load_yaml(yaml, "<redis>");
  auto cache = std::dynamic_pointer_cast<RedisCache>(registry.get("default"));
  REQUIRE(cache);
  return cache->redis_options();
}

std::string error_of(std::string_view backend, std::string_view location, std::string_view options = {}) {
  try {
    options_of(backend, location, options);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

constexpr std::string_view django = "django.core.cache.backends.redis.RedisCache";
constexpr std::string_view django_redis = "django_redis.cache.RedisCache";

}  // namespace

TEST_CASE("redis: RedisServer::parse reads the LOCATION URLs both Django clients take") {
  auto plain = RedisServer::parse("redis://cache.internal");
  CHECK(plain.host == "cache.internal");
  CHECK(plain.port == 6379);
  CHECK(plain.db == 0);
  CHECK(plain.password.empty());
  CHECK(plain.to_string() == "cache.internal:6379");

  auto full = RedisServer::parse("redis://app:p%40ss@10.0.0.5:6380/3");
  CHECK(full.host == "10.0.0.5");
  CHECK(full.port == 6380);
  CHECK(full.db == 3);
  CHECK(full.username == "app");
  CHECK(full.password == "p@ss");

  auto password_only = RedisServer::parse("redis://:secret@localhost:1/");
  CHECK(password_only.username.empty());
  CHECK(password_only.password == "secret");
  CHECK(password_only.db == 0);

  auto v6 = RedisServer::parse("redis://[::1]:7000?db=2");
  CHECK(v6.host == "::1");
  CHECK(v6.port == 7000);
  CHECK(v6.db == 2);
  CHECK(v6.to_string() == "[::1]:7000");

  // As in redis-py, ?db=N wins over the path's database.
  CHECK(RedisServer::parse("redis://cache/1?db=2").db == 2);

  auto socket = RedisServer::parse("unix:///run/redis/redis.sock?db=5");
  CHECK(socket.is_socket());
  CHECK(socket.socket_path == "/run/redis/redis.sock");
  CHECK(socket.db == 5);
  CHECK(socket.to_string() == "unix:/run/redis/redis.sock");

  auto socket_auth = RedisServer::parse("unix://:pw@/tmp/r.sock");
  CHECK(socket_auth.socket_path == "/tmp/r.sock");
  CHECK(socket_auth.password == "pw");

  struct Bad {
    std::string_view location;
    std::string_view why;
    std::string_view shown = {};  // the location as the message shows it, if not as it is
  };
  const Bad bad[] = {
      {"127.0.0.1:6379", "expected a URL: redis://[[user]:password@]host[:port][/db] or unix://[:password@]/path?db=N"},
      {"rediss://cache:6380", "TLS (rediss://) is not supported yet"},
      {"redis+sentinel://s1:26379/mymaster", "Redis Sentinel and Cluster are not supported yet"},
      {"redis-cluster://c1:7000", "Redis Sentinel and Cluster are not supported yet"},
      {"http://cache", "unknown scheme 'http': expected redis:// or unix://"},
      {"redis://", "no host: expected redis://host[:port][/db]"},
      {"redis://cache:0", "port '0' is not a number from 1 to 65535"},
      {"redis://cache:65536", "port '65536' is not a number from 1 to 65535"},
      {"redis://cache:x", "port 'x' is not a number from 1 to 65535"},
      {"redis://cache/one", "database 'one' is not a number, 0 or more"},
      {"redis://cache?db=-1", "database '-1' is not a number, 0 or more"},
      {"redis://cache?timeout=1", "unknown parameter 'timeout=1': only db=N is taken (put the others in OPTIONS)"},
      {"redis://s3cret@cache", "a user needs a password: redis://user:password@host, or redis://:password@host",
       "redis://:***@cache"},
      {"redis://:p%4@cache", "a '%' is not followed by two hex digits (a %XX escape)", "redis://:***@cache"},
      {"redis://[::1:6379", "an IPv6 address needs its closing ']'"},
      {"unix://relative.sock", "the socket path must be absolute: unix:///run/redis.sock"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.location);
    // The password is never shown.
    auto shown = b.shown.empty() ? std::string{b.location} : std::string{b.shown};
    CHECK_THROWS_WITH_AS(RedisServer::parse(b.location), ("redis location '" + shown + "': " + std::string{b.why}).c_str(),
                         ConfigError);
  }
}

TEST_CASE("redis: every BACKEND name loads, and several LOCATIONs are a primary and replicas") {
  for (auto backend : {std::string_view{"redis"}, django, django_redis}) {
    CAPTURE(backend);
    auto one = options_of(backend, "redis://127.0.0.1:6390/1");
    CHECK(one.server.port == 6390);
    CHECK(one.server.db == 1);
    CHECK(one.replicas.empty());
    auto listed = options_of(backend, "[redis://primary:6379, redis://replica:6379/0]");
    CHECK(listed.server.host == "primary");
    REQUIRE(listed.replicas.size() == 1);
    CHECK(listed.replicas[0].host == "replica");
    auto joined = options_of(backend, "redis://primary;redis://r1,redis://r2");
    CHECK(joined.server.host == "primary");
    CHECK(joined.replicas.size() == 2);
  }
}

TEST_CASE("redis: django-redis's OPTIONS and Django's, each for its own BACKEND") {
  auto upper = options_of(django_redis, "redis://h",
                          "{PASSWORD: pw, SOCKET_CONNECT_TIMEOUT: 0.25, SOCKET_TIMEOUT: 2, "
                          "CONNECTION_POOL_KWARGS: {max_connections: 3}, CLIENT_CLASS: django_redis.client.DefaultClient, "
                          "PARSER_CLASS: redis.connection.HiredisParser, PICKLE_VERSION: -1, IGNORE_EXCEPTIONS: false}");
  CHECK(upper.server.password == "pw");
  CHECK(upper.server.db == 0);
  CHECK(upper.connect_timeout == 250ms);
  CHECK(upper.timeout == 2s);
  CHECK(upper.pool_size == 3);

  auto lower = options_of(django, "redis://h",
                          "{password: pw, username: app, db: 2, socket_connect_timeout: 1.5, socket_timeout: 0.5, "
                          "max_connections: 9, parser_class: redis.connection.PythonParser, "
                          "serializer: django.core.cache.backends.redis.RedisSerializer}");
  CHECK(lower.server.username == "app");
  CHECK(lower.server.db == 2);
  CHECK(lower.connect_timeout == 1500ms);
  CHECK(lower.timeout == 500ms);
  CHECK(lower.pool_size == 9);

  auto either = options_of("redis", "redis://h", "{DB: 1, socket_timeout: 3}");
  CHECK(either.server.db == 1);
  CHECK(either.timeout == 3s);

  // As redis-py's from_url(): what LOCATION names wins over OPTIONS, so that
  // both sides use one database.
  auto named = options_of(django, "redis://:urlpw@h/1", "{db: 2, password: optpw}");
  CHECK(named.server.db == 1);
  CHECK(named.server.password == "urlpw");
  CHECK(options_of(django, "redis://h?db=3", "{db: 2}").server.db == 3);
  CHECK(options_of(django, "redis://h/", "{db: 2}").server.db == 2);
  CHECK(options_of(django_redis, "redis://:urlpw@h", "{PASSWORD: optpw}").server.password == "urlpw");
  // A LOCATION with a password and no user keeps the user OPTIONS give.
  auto user = options_of(django, "redis://:urlpw@h", "{username: app, password: optpw}");
  CHECK(user.server.username == "app");
  CHECK(user.server.password == "urlpw");
}

TEST_CASE("redis: a socket path no unix socket address can hold is refused") {
  // hiredis would cut it short, and connect to another socket.
  std::string long_path = "/tmp/" + std::string(120, 's') + ".sock";
  CHECK_THROWS_WITH_AS(RedisCache::check({.server = {.socket_path = long_path}}),
                       doctest::Contains("is not one a unix socket address can hold (at most 107 bytes, no NUL)"),
                       ConfigError);
  CHECK_THROWS_AS(RedisCache::check({.server = {.socket_path = std::string{"/tmp/a\0b", 8}}}), ConfigError);
  CHECK_NOTHROW(RedisCache::check({.server = {.socket_path = "/tmp/" + std::string(90, 's')}}));
}

TEST_CASE("redis: a LOCATION's password never appears in an error") {
  CHECK(error_of("redis", "'redis://app:Sup3rS3cret@cache.internal:70000/0'") ==
        "<redis>:4:15: CACHES.default.LOCATION: redis location 'redis://app:***@cache.internal:70000/0': port "
        "'70000' is not a number from 1 to 65535");
}

TEST_CASE("redis: django-redis's DB option, which django-redis does not read, is refused") {
  CHECK(error_of(django_redis, "redis://h/0", "{DB: 3}") ==
        "<redis>:5:15: CACHES.default.OPTIONS.DB: django-redis does not read OPTIONS.DB: give the database in "
        "LOCATION (redis://host:port/N), where django-redis takes it from");
}

TEST_CASE("redis: bad LOCATIONs and OPTIONS are ConfigErrors naming the setting") {
  CHECK(error_of("redis", "rediss://h") ==
        "<redis>:4:15: CACHES.default.LOCATION: redis location 'rediss://h': TLS (rediss://) is not supported yet");
  CHECK(error_of("redis", "[redis://h, 'h:6379']") ==
        "<redis>:4:27: CACHES.default.LOCATION[1]: redis location 'h:6379': expected a URL: "
        "redis://[[user]:password@]host[:port][/db] or unix://[:password@]/path?db=N");
  CHECK(error_of("redis", "null") ==
        "<redis>:4:5: CACHES.default.LOCATION: the redis backend needs LOCATION: "
        "redis://[[user]:password@]host[:port][/db], unix://[:password@]/path?db=N, or a list of them");
  CHECK(error_of(django_redis, "redis://h", "{password: pw}") ==
        "<redis>:5:15: CACHES.default.OPTIONS.password: unknown redis option; known: PASSWORD, "
        "SOCKET_CONNECT_TIMEOUT, SOCKET_TIMEOUT, CONNECTION_POOL_KWARGS, PARSER_CLASS, PICKLE_VERSION, "
        "CLIENT_CLASS, SERIALIZER, COMPRESSOR, IGNORE_EXCEPTIONS");
  CHECK(error_of(django, "redis://h", "{PASSWORD: pw}") ==
        "<redis>:5:15: CACHES.default.OPTIONS.PASSWORD: unknown redis option; known: db, password, username, "
        "socket_connect_timeout, socket_timeout, max_connections, parser_class, serializer");
  CHECK(error_of(django, "redis://h", "{pool_class: my.Pool}") ==
        "<redis>:5:15: CACHES.default.OPTIONS.pool_class: not supported: a pool class of its own cannot be "
        "reproduced here; cachelock pools its own connections (max_connections sets how many)");
  CHECK(error_of(django_redis, "redis://h", "{IGNORE_EXCEPTIONS: true}") ==
        "<redis>:5:34: CACHES.default.OPTIONS.IGNORE_EXCEPTIONS: not supported: it turns server errors into "
        "misses, and a lock must fail closed when its server fails");
  CHECK(error_of(django_redis, "redis://h", "{CLIENT_CLASS: django_redis.client.SentinelClient}") ==
        "<redis>:5:29: CACHES.default.OPTIONS.CLIENT_CLASS: not supported yet: only "
        "django_redis.client.DefaultClient (Sentinel, Herd and sharded clients place or store keys their own way)");
  CHECK(error_of(django_redis, "redis://h", "{SERIALIZER: django_redis.serializers.json.JSONSerializer}") ==
        "<redis>:5:27: CACHES.default.OPTIONS.SERIALIZER: not supported: Django would not read our owner token; "
        "only the default PickleSerializer");
  CHECK(error_of(django, "redis://h", "{serializer: myapp.JSONSerializer}") ==
        "<redis>:5:27: CACHES.default.OPTIONS.serializer: not supported: Django would not read our owner token; "
        "only the default RedisSerializer");
  CHECK(error_of(django_redis, "redis://h", "{CONNECTION_POOL_KWARGS: {retry_on_timeout: true}}") ==
        "<redis>:5:40: CACHES.default.OPTIONS.CONNECTION_POOL_KWARGS.retry_on_timeout: unknown connection pool "
        "option; known: max_connections");
  CHECK(error_of(django_redis, "redis://h", "{SOCKET_TIMEOUT: 0}") ==
        "<redis>:5:31: CACHES.default.OPTIONS.SOCKET_TIMEOUT: expected a number of seconds greater than 0, got \"0\"");
  CHECK(error_of(django, "redis://h", "{max_connections: 0}") ==
        "<redis>:5:32: CACHES.default.OPTIONS.max_connections: expected an integer from 1 to 100000, got \"0\"");
}

TEST_CASE("redis: AUTH with a password or a user, and SELECT, on every new connection") {
  test::RedisProcess secured{{"--requirepass", "s3cret", "--user", "app", "on", ">apppw", "~*", "+@all"}};
  const std::string host = "redis://127.0.0.1:" + std::to_string(secured.port());
  RedisCache with_password{options_of("redis", "redis://:s3cret@127.0.0.1:" + std::to_string(secured.port()) + "/2")};
  with_password.set("k", "v");
  // Stored in database 2, not 0.
  CHECK(secured.get_in_db(0, ":1:k", "s3cret").is_nil());
  CHECK(secured.get_in_db(2, ":1:k", "s3cret").text.find("v") != std::string::npos);
  RedisCache with_user{options_of("redis", "redis://app:apppw@127.0.0.1:" + std::to_string(secured.port()) + "/2")};
  CHECK(with_user.get("k") == "v");
  RedisCache without{options_of("redis", host)};
  CHECK_THROWS_WITH_AS(without.get("k"), doctest::Contains("get ':1:k' failed: NOAUTH Authentication required"),
                       cachelock::CacheError);
  RedisCache wrong{options_of("redis", "redis://:nope@127.0.0.1:" + std::to_string(secured.port()))};
  CHECK_THROWS_WITH_AS(wrong.get("k"), doctest::Contains("get ':1:k' failed: AUTH: WRONGPASS"), cachelock::CacheError);
  RedisCache far{options_of("redis", "redis://:s3cret@127.0.0.1:" + std::to_string(secured.port()) + "/99999")};
  CHECK_THROWS_WITH_AS(far.get("k"), doctest::Contains("get ':1:k' failed: SELECT: ERR DB index is out of range"),
                       cachelock::CacheError);
}
