// MemcachedCache: LOCATION parsing, the options it refuses, and how Django's
// timeouts become memcached expirations.
#include "memcached_tests.hpp"

TEST_CASE("memcached: MemcachedServer::parse reads Django's LOCATION forms") {
  struct Good {
    const char* location;
    const char* host;
    std::uint16_t port;
    const char* canonical;
  };
  const Good good[] = {
      {"127.0.0.1:11211", "127.0.0.1", 11211, "127.0.0.1:11211"},
      {"cache.internal", "cache.internal", 11211, "cache.internal:11211"},
      {"cache.internal:1", "cache.internal", 1, "cache.internal:1"},
      {"localhost:65535", "localhost", 65535, "localhost:65535"},
      {"[::1]:11212", "::1", 11212, "[::1]:11212"},
      {"[fe80::1%eth0]", "fe80::1%eth0", 11211, "[fe80::1%eth0]:11211"},
      {"unix:/run/memcached/memcached.sock", "/run/memcached/memcached.sock", 0,
       "unix:/run/memcached/memcached.sock"},
      {"/tmp/memcached.sock", "/tmp/memcached.sock", 0, "unix:/tmp/memcached.sock"},
  };
  for (const auto& g : good) {
    CAPTURE(g.location);
    auto server = MemcachedServer::parse(g.location);
    CHECK(server.host == g.host);
    CHECK(server.port == g.port);
    CHECK(server.is_socket() == (g.port == 0));
    CHECK(server.to_string() == g.canonical);
    auto again = MemcachedServer::parse(server.to_string());
    CHECK(again.host == server.host);
    CHECK(again.port == server.port);
  }

  struct Bad {
    const char* location;
    const char* message;
  };
  const Bad bad[] = {
      {"", "empty memcached location; expected 'host', 'host:port', '[v6]:port', 'unix:/path' or '/path'"},
      {"cache:99999", "memcached location 'cache:99999': port '99999' is not a number from 1 to 65535"},
      {"cache:0", "memcached location 'cache:0': port '0' is not a number from 1 to 65535"},
      {"cache:", "memcached location 'cache:': port '' is not a number from 1 to 65535"},
      {"cache:http", "memcached location 'cache:http': port 'http' is not a number from 1 to 65535"},
      {"cache:-1", "memcached location 'cache:-1': port '-1' is not a number from 1 to 65535"},
      {"cache:112 11", "memcached location 'cache:112 11': port '112 11' is not a number from 1 to 65535"},
      {"[::1]:0", "memcached location '[::1]:0': port '0' is not a number from 1 to 65535"},
      {"[::1", "memcached location '[::1': no ']' after the IPv6 address"},
      {"[::1]11211", "memcached location '[::1]11211': expected ':port' after ']', got '11211'"},
      {"[]:11211", "memcached location '[]:11211': empty host"},
      {":11211", "memcached location ':11211': empty host"},
      {"unix:", "memcached location 'unix:': no socket path after 'unix:'"},
      {"::1", "memcached location '::1': an IPv6 address needs brackets, as in '[::1]:11211'"},
      {" cache:11211", "memcached location ' cache:11211': the host contains a space"},
      {"ca\tche", "memcached location 'ca\\tche': the host contains control character \\x09"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.location);
    CHECK_THROWS_WITH_AS(MemcachedServer::parse(b.location), b.message, ConfigError);
  }
}

TEST_CASE("memcached: bad options are refused when the cache is made") {
  const MemcachedServer server{"127.0.0.1", 11211};
  struct Bad {
    MemcachedOptions options;
    const char* message;
  };
  const Bad bad[] = {
      {{}, "memcached options: no servers; give at least one in LOCATION"},
      {{.servers = {server, {"", 11211}}}, "memcached options: server 2 has an empty host"},
      {{.servers = {server}, .pool_size = 0}, "memcached options: pool_size must be at least 1"},
      {{.servers = {server}, .connect_timeout = 0ms},
       "memcached options: connect_timeout must be positive, got 0 ms"},
      {{.servers = {server}, .timeout = -5ms}, "memcached options: timeout must be positive, got -5 ms"},
      {{.servers = {server}, .timeout = 24h * 30},
       "memcached options: timeout must be at most 2147483 ms, got 2592000000 ms"},
      {{.servers = {server}, .retry_timeout = -1ms},
       "memcached options: retry_timeout must not be negative, got -1 ms"},
      {{.servers = {server}, .username = "app", .password = "secret"},
       "memcached options: username 'app' needs the binary protocol (binary: true); SASL has no text "
       "protocol"},
      {{.servers = {server}, .binary = true, .password = "secret"},
       "memcached options: password given without username"},
      // libmemcached keeps it in 32 bits; a larger limit would never skip a server anyway.
      {{.servers = {server}, .server_failure_limit = 1001},
       "memcached options: server_failure_limit must be at most 1000, got 1001"},
      {{.servers = {server}, .server_failure_limit = 4294967295u},
       "memcached options: server_failure_limit must be at most 1000, got 4294967295"},
      // libmemcached takes hosts as C strings of fewer than 1025 bytes.
      {{.servers = {server, {std::string{"cache\0evil", 10}, 11211}}},
       "memcached options: server 2 has a NUL byte in its host 'cache\\0evil'"},
      {{.servers = {{std::string(1025, 'h'), 11211}}},
       "memcached options: server 1 has a host of 1025 bytes; at most 1024 are allowed"},
      {{.servers = {{"/tmp/" + std::string(1020, 's'), 0}}},
       "memcached options: server 1 has a host of 1025 bytes; at most 1024 are allowed"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.message);
    CHECK_THROWS_WITH_AS(MemcachedCache{b.options}, b.message, ConfigError);
    CHECK_THROWS_WITH_AS(MemcachedCache::check(b.options), b.message, ConfigError);
  }
  CHECK_THROWS_WITH_AS(MemcachedCache({.servers = {server}}, {.timeout = cachelock::Timeout::standard()}),
                       "cache options: timeout must be a duration or never, not standard()", ConfigError);
  // The limits themselves are fine, for check() and for libmemcached.
  for (const auto& good : {MemcachedOptions{.servers = {server}, .server_failure_limit = 1000},
                           MemcachedOptions{.servers = {{std::string(1024, 'h'), 11211}}}}) {
    CHECK_NOTHROW(MemcachedCache::check(good));
    CHECK_NOTHROW(MemcachedCache{good});
  }
  MemcachedCache fine{{.servers = {server}, .binary = true, .pool_size = 3, .username = "app"}};
  CHECK(fine.memcached_options().pool_size == 3);
  CHECK(fine.memcached_options().username == "app");
  CHECK(fine.memcached_options().servers.at(0).to_string() == "127.0.0.1:11211");
}

TEST_CASE("memcached: the cache connects on first use, not when made") {
  test::FakeMemcached fake{[](const std::string& command) -> std::optional<std::string> {
    if (command.starts_with("get")) return "END\r\n";
    return "ERROR\r\n";
  }};
  MemcachedCache cache{{.servers = {fake.server()}, .meta_protocol = false}};
  std::this_thread::sleep_for(50ms);
  CHECK(fake.connections() == 0);
  CHECK_FALSE(cache.get("k").has_value());
  CHECK(fake.connections() == 1);
  CHECK(fake.commands() == 1);
}

TEST_CASE("memcached: timeouts become expirations as in Django's memcached backends") {
  std::mutex mutex;
  std::vector<std::string> seen;
  test::FakeMemcached fake{[&](const std::string& command) -> std::optional<std::string> {
    // The `gets` after the first `add` (does the server send CAS ids?) finds nothing.
    if (command.starts_with("gets")) return "END\r\n";
    std::lock_guard lock{mutex};
    seen.push_back(command);
    return command.starts_with("touch") ? "TOUCHED\r\n" : "STORED\r\n";
  }};
  MemcachedCache cache{{.servers = {fake.server()}, .meta_protocol = false}, {.timeout = 300s}};
  auto sent = [&](auto&& write) {
    write();
    std::lock_guard lock{mutex};
    return seen.back();
  };
  using cachelock::Timeout;
  // A duration is whole seconds, rounded up, plus one: memcached's clock
  // ticks once a second, so N seconds may last only N-1.
  CHECK(sent([&] { cache.set("k", "v"); }) == "set :1:k 0 301 1");  // the cache's TIMEOUT
  CHECK(sent([&] { cache.set("k", "v", Timeout::never()); }) == "set :1:k 0 0 1");
  CHECK(sent([&] { cache.set("k", "v", 0s); }) == "set :1:k 0 2592001 1");  // 1970-01-31: past
  CHECK(sent([&] { cache.set("k", "v", -5s); }) == "set :1:k 0 2592001 1");
  CHECK(sent([&] { cache.set("k", "v", 1ms); }) == "set :1:k 0 2 1");
  CHECK(sent([&] { cache.set("k", "v", 1s); }) == "set :1:k 0 2 1");
  CHECK(sent([&] { cache.set("k", "v", 1500ms); }) == "set :1:k 0 3 1");
  CHECK(sent([&] { cache.add("k", "v", 2000ms); }) == "add :1:k 0 3 1");
  CHECK(sent([&] { cache.touch("k", 2000ms); }) == "touch :1:k 3");
  CHECK(sent([&] { cache.set("k", "v", 24h * 30 - 1s); }) == "set :1:k 0 2592000 1");  // the longest relative
  // Past 30 days memcached reads a Unix time: now + the (padded) duration.
  auto absolute_for = [&](cachelock::Timeout timeout) {
    auto before = std::time(nullptr);
    auto line = sent([&] { cache.set("k", "v", timeout); });
    auto after = std::time(nullptr);
    REQUIRE(line.starts_with("set :1:k 0 "));
    auto absolute = std::stoll(line.substr(11));
    return std::pair{absolute - after, absolute - before};  // the range the duration sent may have
  };
  auto [low, high] = absolute_for(24h * 30);
  CHECK(low <= 2592001);
  CHECK(high >= 2592001);
  std::tie(low, high) = absolute_for(24h * 30 + 1s);
  CHECK(low <= 2592002);
  CHECK(high >= 2592002);
  // 10 years: a Unix time before 2038, which the text protocol reads as a
  // signed 32-bit number.
  std::tie(low, high) = absolute_for(24h * 3653);
  CHECK(low <= 3653 * 86400 + 1);
  CHECK(high >= 3653 * 86400 + 1);
  CHECK(high + std::time(nullptr) <= std::numeric_limits<std::int32_t>::max());
  // Past 2038-01-19 (INT32_MAX) the server cannot hold the time: never
  // expires, which is at least as long. Never a time that wraps into the past.
  for (auto ttl : {std::chrono::milliseconds{24h * 36525}, std::chrono::milliseconds::max()}) {
    CHECK(sent([&] { cache.set("k", "v", ttl); }) == "set :1:k 0 0 1");
    CHECK(sent([&] { cache.add("k", "v", ttl); }) == "add :1:k 0 0 1");
    CHECK(sent([&] { cache.touch("k", ttl); }) == "touch :1:k 0");
  }
}
