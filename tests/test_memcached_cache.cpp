// MemcachedCache: the conformance suite on a real memcached (text protocol,
// binary protocol, two servers), then what only this backend does: LOCATION
// parsing, the expiry mapping, failures (dead, silent, late, restarted
// servers), the pool of handles, and fork().
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <libmemcached/memcached.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <cachelock/once.hpp>

#include "cache_conformance.hpp"
#include "fake_memcached.hpp"
#include "memcached_server.hpp"

using namespace std::chrono_literals;
using cachelock::CacheError;
using cachelock::ConfigError;
using cachelock::MemcachedCache;
using cachelock::MemcachedOptions;
using cachelock::MemcachedServer;
using Clock = std::chrono::steady_clock;

namespace {

test::MemcachedProcess& second_memcached() {
  static test::MemcachedProcess server;
  return server;
}

std::shared_ptr<MemcachedCache> cache_on(std::vector<MemcachedServer> servers, bool binary = false,
                                         cachelock::CacheOptions options = {}) {
  return std::make_shared<MemcachedCache>(MemcachedOptions{.servers = std::move(servers), .binary = binary},
                                          std::move(options));
}

// memcached's clock ticks once a second, so MemcachedCache sends a ttl as
// its whole seconds plus one: an entry given 1 s lives between 1 and 2 s.
// 3 s is surely past it, with a second to spare.
struct TextBackend {
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return cache_on({test::shared_memcached().server()}, false, std::move(options));
  }
  static constexpr auto short_ttl = 1s;
  static constexpr auto expired_after = 3s;
};

struct BinaryBackend {
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return cache_on({test::shared_memcached().server()}, true, std::move(options));
  }
  static constexpr auto short_ttl = 1s;
  static constexpr auto expired_after = 3s;
};

struct TwoServersBackend {
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return cache_on({test::shared_memcached().server(), second_memcached().server()}, false,
                    std::move(options));
  }
  static constexpr auto short_ttl = 1s;
  static constexpr auto expired_after = 3s;
};

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

// The message of the CacheError that `f` throws (fails the test if none).
template <class F>
std::string cache_error_of(F&& f) {
  try {
    f();
  } catch (const CacheError& e) {
    return e.what();
  }
  FAIL("no CacheError was thrown");
  return {};
}

std::vector<std::string> words_of(const std::string& line) {
  std::vector<std::string> words;
  std::size_t at = 0;
  while (at < line.size()) {
    auto space = std::min(line.find(' ', at), line.size());
    words.push_back(line.substr(at, space - at));
    at = space + 1;
  }
  return words;
}

// One key answered as memcached answers it (get/gets, add, set, cas, delete,
// touch), the script of a FakeMemcached in either protocol. The `late_at`-th
// command with verb `late_verb` is answered after `delay`, when the client
// has given up on it; then `after_late` changes the value (someone else
// writes meanwhile, say). `before_cas` runs before every `cas` is answered,
// as another client writing between our `gets` and our `cas`.
class ScriptedKey {
 public:
  using Value = std::optional<std::string>;
  explicit ScriptedKey(Value value) : value_{std::move(value)} {}

  std::string late_verb;
  int late_at = 1;
  std::chrono::milliseconds delay{450};
  std::function<void(Value&)> after_late;
  std::function<void(Value&)> before_cas;

  std::optional<std::string> operator()(const std::string& command, const std::string& data) {
    auto words = words_of(command);
    const auto& verb = words.at(0);
    bool late = false;
    {
      std::lock_guard lock{mutex_};
      late = ++seen_[verb] == late_at && verb == late_verb;
    }
    if (late) std::this_thread::sleep_for(delay);
    std::lock_guard lock{mutex_};
    auto reply = answer(words, data);
    if (late && after_late) {
      after_late(value_);
      ++cas_;
    }
    return reply;
  }

  int seen(const std::string& verb) const {
    std::lock_guard lock{mutex_};
    auto it = seen_.find(verb);
    return it == seen_.end() ? 0 : it->second;
  }
  Value value() const {
    std::lock_guard lock{mutex_};
    return value_;
  }

 private:
  std::string answer(const std::vector<std::string>& words, const std::string& data) {
    const auto& verb = words.at(0);
    const auto& key = words.at(1);
    auto store = [&](const std::string& exptime) {
      if (exptime == "2592001") {  // 1970-01-31: already expired
        value_.reset();
      } else {
        value_ = data;
      }
      ++cas_;
      return std::string{"STORED\r\n"};
    };
    if (verb == "get" || verb == "gets") {
      if (!value_) return "END\r\n";
      return "VALUE " + key + " 0 " + std::to_string(value_->size()) + " " + std::to_string(cas_) + "\r\n" +
             *value_ + "\r\nEND\r\n";
    }
    if (verb == "set") return store(words.at(3));
    if (verb == "add") return value_ ? "NOT_STORED\r\n" : store(words.at(3));
    if (verb == "cas") {
      if (before_cas) {
        before_cas(value_);
        ++cas_;
      }
      if (!value_) return "NOT_FOUND\r\n";
      if (std::stoull(words.at(5)) != cas_) return "EXISTS\r\n";
      return store(words.at(3));
    }
    if (verb == "delete") {
      if (!value_) return "NOT_FOUND\r\n";
      value_.reset();
      return "DELETED\r\n";
    }
    if (verb == "touch") return value_ ? "TOUCHED\r\n" : "NOT_FOUND\r\n";
    return "ERROR\r\n";
  }

  mutable std::mutex mutex_;
  Value value_;
  std::uint64_t cas_ = 77;
  std::map<std::string, int> seen_;
};

// The script of a FakeMemcached that passes every command on to a real
// memcached (in the text protocol, on a connection of its own) and answers
// with the real server's reply: a real server with a hook between our
// `gets` and our `cas`. If `intrude` is set, before the next `cas` another
// client stores that value under the key.
class Relay {
 public:
  explicit Relay(const test::MemcachedProcess& server)
      : server_{server}, fd_{test::connect_loopback(server.port())} {
    if (fd_ < 0) throw std::runtime_error("relay: cannot connect to memcached at " + server.location());
  }
  ~Relay() { ::close(fd_); }
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  std::optional<std::string> intrude;  // used on the FakeMemcached's thread only, while it is idle

  std::optional<std::string> operator()(const std::string& command, const std::string& data) {
    auto words = words_of(command);
    const auto& verb = words.at(0);
    if (verb == "cas" && intrude) {
      auto stored = server_.command("set " + words.at(1) + " 0 0 " + std::to_string(intrude->size()) + "\r\n" +
                                    *intrude + "\r\n");
      if (stored != "STORED\r\n") throw std::runtime_error("relay: the intruding set failed: " + stored);
      intrude.reset();
    }
    std::string request = command + "\r\n";
    for (const char* storage : {"set", "add", "replace", "cas", "append", "prepend"}) {
      if (verb == storage) request += data + "\r\n";
    }
    if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
      throw std::runtime_error("relay: cannot send to memcached");
    }
    const bool until_end = verb == "get" || verb == "gets";
    std::string reply;
    while (!(until_end ? reply.ends_with("END\r\n") || reply.starts_with("ERROR") ||
                             reply.starts_with("CLIENT_ERROR") || reply.starts_with("SERVER_ERROR")
                       : reply.ends_with("\r\n"))) {
      char buffer[4096];
      auto n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) throw std::runtime_error("relay: memcached closed the connection");
      reply.append(buffer, static_cast<std::size_t>(n));
    }
    return reply;
  }

 private:
  const test::MemcachedProcess& server_;
  int fd_;
};

}  // namespace

TYPE_TO_STRING(TextBackend);
TYPE_TO_STRING(BinaryBackend);
TYPE_TO_STRING(TwoServersBackend);
CACHELOCK_CONFORMANCE(TextBackend, BinaryBackend, TwoServersBackend);

TEST_CASE("memcached: the fixture runs a real memcached") {
  auto& server = test::shared_memcached();
  REQUIRE(server.running());
  CHECK(server.stats().at("pid") == std::to_string(server.pid()));
  CHECK(server.command("version\r\n").starts_with("VERSION 1."));
}

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
  MemcachedCache cache{{.servers = {fake.server()}}};
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
  MemcachedCache cache{{.servers = {fake.server()}}, {.timeout = 300s}};
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

TEST_CASE("memcached: values are stored with flags 0, which Django's clients read as bytes") {
  auto& server = test::shared_memcached();
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("flags")});
  cache->set("k", "token");
  auto item = server.raw_get(cache->make_key("k"));
  REQUIRE(item.has_value());
  CHECK(item->value == "token");
  CHECK(item->flags == 0);
}

TEST_CASE("memcached: release stores an already expired entry, in both protocols") {
  auto& server = test::shared_memcached();
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    auto cache = cache_on({server.server()}, binary, {.key_prefix = test::unique("release")});
    auto stored = cache->make_key("job");
    CHECK(cache->add("job", "owner-token", 60s));
    CHECK(server.raw_get(stored).has_value());
    auto hits_before = server.stat("get_hits");
    CHECK(cache->erase_if_equals("job", "owner-token"));
    // A plain `get` on the server misses, and the key can be taken again.
    CHECK_FALSE(server.raw_get(stored).has_value());
    CHECK(server.stat("get_hits") == hits_before + 1);  // the `gets` before the `cas` only
    CHECK_FALSE(cache->get("job").has_value());
    CHECK(cache->add("job", "next-owner", 60s));
    CHECK(server.raw_get(stored)->value == "next-owner");

    // Same for a lock: held, released, free.
    {
      cachelock::Lock lock{"report", {.cache = cache, .ttl = 60s}};
      CHECK(server.raw_get(cache->make_key("report"))->value == lock.token());
    }
    CHECK_FALSE(server.raw_get(cache->make_key("report")).has_value());
    cachelock::Lock again{"report", {.cache = cache}};
    CHECK(again.owns_lock());
  }
}

TEST_CASE("memcached: a negative expiration means 'never' in libmemcached's binary protocol") {
  // Why release does not send -1 (Django's value for "expire now"):
  // libmemcached puts the expiration in an unsigned 32-bit field, and
  // 0xffffffff is a time far in the future.
  auto& server = test::shared_memcached();
  memcached_st* raw = memcached_create(nullptr);
  REQUIRE(raw != nullptr);
  memcached_server_add(raw, "127.0.0.1", static_cast<in_port_t>(server.port()));
  memcached_behavior_set(raw, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
  auto key = test::unique("negative");
  REQUIRE(memcached_set(raw, key.data(), key.size(), "v", 1, static_cast<time_t>(-1), 0) == MEMCACHED_SUCCESS);
  CHECK(server.raw_get(key).has_value());  // still there: "expired" was read as "never"
  REQUIRE(memcached_set(raw, key.data(), key.size(), "v", 1, static_cast<time_t>(2592001), 0) ==
          MEMCACHED_SUCCESS);
  CHECK_FALSE(server.raw_get(key).has_value());  // an absolute time in the past: gone
  memcached_free(raw);
}

TEST_CASE("memcached: invalid keys are refused before any traffic") {
  test::FakeMemcached fake{[](const std::string&) -> std::optional<std::string> { return "ERROR\r\n"; }};
  MemcachedCache cache{{.servers = {fake.server()}}};
  // A dead port too: InvalidKeyError, not CacheError, so nothing was tried.
  MemcachedCache dead{{.servers = {{"127.0.0.1", static_cast<std::uint16_t>(test::free_loopback_port())}}}};
  for (auto* c : {&cache, &dead}) {
    CHECK_THROWS_WITH_AS(c->add("two words", "v"),
                         "key ':1:two words' contains a space at byte 6; keys may not contain spaces or "
                         "control characters",
                         cachelock::InvalidKeyError);
    CHECK_THROWS_AS(c->get(std::string(300, 'k')), cachelock::InvalidKeyError);
    CHECK_THROWS_AS(c->erase_if_equals("x\r\nflush_all", "v"), cachelock::InvalidKeyError);
    CHECK_THROWS_AS(c->incr("tab\t"), cachelock::InvalidKeyError);
    CHECK_THROWS_AS(cachelock::Lock("bad key", {.cache = std::shared_ptr<cachelock::Cache>(c, [](auto*) {})}),
                    cachelock::InvalidKeyError);
  }
  CHECK(fake.connections() == 0);
  CHECK(fake.commands() == 0);
}

TEST_CASE("memcached: decr stops at zero; incr on text names the server and the key") {
  auto& server = test::shared_memcached();
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    auto cache = cache_on({server.server()}, binary, {.key_prefix = "incr"});
    cache->set("n", "5");
    CHECK(cache->incr("n", -10) == 0);
    CHECK(cache->incr("n", std::numeric_limits<std::int64_t>::max()) == std::numeric_limits<std::int64_t>::max());
    CHECK(cache->incr("n", std::numeric_limits<std::int64_t>::min()) == 0);
    cache->set("text", "abc");
    auto message = cache_error_of([&] { cache->incr("text"); });
    auto head = "memcached " + server.location() + ": incr 'incr:1:text' failed: ";
    CHECK(message.starts_with(head));
    if (!binary) {
      CHECK(message == head + "CLIENT ERROR: cannot increment or decrement non-numeric value");
    }
    CHECK(cache->get("text") == "abc");  // and the connection still works
    // memcached counts in 64 unsigned bits: past INT64_MAX the server has the
    // result, we cannot return it.
    cache->set("big", "9223372036854775807");
    CHECK(cache_error_of([&] { cache->incr("big"); }) ==
          "memcached " + server.location() +
              ": incr 'incr:1:big' failed: the result 9223372036854775808 does not fit a 64-bit signed integer");
    CHECK(cache->get("big") == "9223372036854775808");
  }
}

TEST_CASE("memcached: a dead server fails each call at once, naming it; locks fail closed") {
  auto port = test::free_loopback_port();  // nothing listens there
  auto location = "127.0.0.1:" + std::to_string(port);
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {{"127.0.0.1", static_cast<std::uint16_t>(port)}},
                       .connect_timeout = 500ms,
                       .timeout = 500ms});
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->add("job", "v"),
                       ("memcached " + location + ": add ':1:job' failed: CONNECTION FAILURE(Connection refused)")
                           .c_str(),
                       CacheError);
  CHECK(elapsed_ms(start) < 1000);

  // Later calls fail too (the server is skipped until retry_timeout), each
  // naming the operation, key and server.
  for (auto op : {"get", "set", "delete", "gets", "incr", "touch"}) {
    CAPTURE(op);
    start = Clock::now();
    auto message = cache_error_of([&] {
      if (op == std::string_view{"get"}) cache->get("job");
      if (op == std::string_view{"set"}) cache->set("job", "v");
      if (op == std::string_view{"delete"}) cache->erase("job");
      if (op == std::string_view{"gets"}) cache->erase_if_equals("job", "v");
      if (op == std::string_view{"incr"}) cache->incr("job");
      if (op == std::string_view{"touch"}) cache->touch("job");
    });
    CHECK(message.starts_with("memcached " + location + ": " + op + " ':1:job' failed: "));
    CHECK(elapsed_ms(start) < 1000);
  }
  CHECK_THROWS_WITH_AS(cache->clear(), doctest::Contains(("memcached " + location + ": flush_all failed: ").c_str()),
                       CacheError);

  // A lock on it throws CacheError and is not held.
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
  cachelock::Lock later{"job", std::defer_lock, {.cache = cache}};
  CHECK_THROWS_AS(later.try_acquire(), CacheError);
  CHECK_FALSE(later.owns_lock());
  cachelock::Mutex mutex{"job", {.cache = cache}};
  CHECK_THROWS_AS(mutex.try_lock(), CacheError);
  CHECK_THROWS_AS(mutex.try_lock_for(200ms), CacheError);
  auto ran = false;
  auto once = cachelock::once("job", {.cache = cache}, [&] { ran = true; });
  CHECK_THROWS_AS(once(), CacheError);
  CHECK_FALSE(ran);
}

TEST_CASE("memcached: after server_failure_limit refused connections a server is skipped") {
  auto port = static_cast<std::uint16_t>(test::free_loopback_port());
  auto head = "memcached 127.0.0.1:" + std::to_string(port) + ": get ':1:k' failed: ";
  for (unsigned limit : {1u, 3u}) {
    CAPTURE(limit);
    MemcachedCache cache{
        {.servers = {{"127.0.0.1", port}}, .retry_timeout = 60s, .server_failure_limit = limit, .pool_size = 1}};
    for (unsigned i = 0; i < limit; ++i) {
      // (libmemcached's text for a refused `get` does not carry the errno, unlike `add`'s)
      CHECK(cache_error_of([&] { cache.get("k"); }) == head + "CONNECTION FAILURE");
    }
    for (int i = 0; i < 3; ++i) {
      CHECK(cache_error_of([&] { cache.get("k"); }) ==
            head + "SERVER HAS FAILED AND IS DISABLED UNTIL TIMED RETRY");
    }
  }
}

// A loopback port whose listener never accepts and whose queue is full: the
// kernel drops new SYNs, so a connect gets no answer (as to a host that is
// down), rather than a refusal.
class UnansweredPort {
 public:
  UnansweredPort() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(listener_, 0) == 0);
    REQUIRE(::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
    // Fill the queue until a connect is left unanswered.
    for (int i = 0; i < 16; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      fillers_.push_back(fd);
      ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 100) == 0) return;
    }
    FAIL("the listen queue never filled");
  }
  ~UnansweredPort() {
    for (int fd : fillers_) ::close(fd);
    ::close(listener_);
  }
  UnansweredPort(const UnansweredPort&) = delete;
  UnansweredPort& operator=(const UnansweredPort&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::vector<int> fillers_;
};

TEST_CASE("memcached: a server that does not answer connects costs connect_timeout once, then is skipped") {
  UnansweredPort down;
  auto location = "127.0.0.1:" + std::to_string(down.port());
  MemcachedCache cache{{.servers = {{"127.0.0.1", down.port()}},
                        .connect_timeout = 300ms,
                        .timeout = 300ms,
                        .retry_timeout = 1500ms}};
  // The first call waits for the connect once (not once for the handshake
  // and again for the call).
  auto start = Clock::now();
  CHECK(cache_error_of([&] { cache.add("job", "v"); }) ==
        "memcached " + location + ": add ':1:job' failed: no answer to a connect within connect_timeout (300 ms)");
  auto took = elapsed_ms(start);
  CHECK(took >= 250);
  CHECK(took < 550);

  // Until retry_timeout has passed, calls from many threads fail at once,
  // naming the server, the call and why.
  std::vector<std::thread> threads;
  std::vector<std::string> messages(8);
  start = Clock::now();
  for (std::size_t t = 0; t < messages.size(); ++t) {
    threads.emplace_back([&, t] { messages[t] = cache_error_of([&] { cache.get("k" + std::to_string(t)); }); });
  }
  for (auto& thread : threads) thread.join();
  CHECK(elapsed_ms(start) < 250);
  for (std::size_t t = 0; t < messages.size(); ++t) {
    CAPTURE(messages[t]);
    CHECK(messages[t].starts_with("memcached " + location + ": get ':1:k" + std::to_string(t) + "' failed: skipped for "));
    CHECK(messages[t].ends_with(" ms: it did not answer a connect within connect_timeout (300 ms)"));
  }

  // After it, the server is tried again: 8 threads arriving together wait for
  // one connect, not for 8 in turn.
  std::this_thread::sleep_for(1600ms);
  threads.clear();
  start = Clock::now();
  for (std::size_t t = 0; t < messages.size(); ++t) {
    threads.emplace_back([&, t] { messages[t] = cache_error_of([&] { cache.get("k"); }); });
  }
  for (auto& thread : threads) thread.join();
  took = elapsed_ms(start);
  CHECK(took >= 250);
  CHECK(took < 550);
  for (const auto& message : messages) {
    CAPTURE(message);
    CHECK(message.starts_with("memcached " + location + ": get ':1:k' failed: "));
    CHECK(message.ends_with("connect within connect_timeout (300 ms)"));
  }
}

TEST_CASE("memcached: a silent server fails the call within the timeout") {
  test::FakeMemcached silent{[](const std::string&) -> std::optional<std::string> { return std::nullopt; }};
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {silent.server()}, .connect_timeout = 300ms, .timeout = 300ms});
  auto location = silent.server().to_string();
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->add("job", "v"),
                       ("memcached " + location + ": add ':1:job' failed: A TIMEOUT OCCURRED, time out").c_str(),
                       CacheError);
  auto took = elapsed_ms(start);
  CHECK(took >= 250);
  CHECK(took < 600 + 300);  // connect_timeout + timeout, and some slack

  start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->get("job"),
                       ("memcached " + location + ": get ':1:job' failed: A TIMEOUT OCCURRED, time out").c_str(),
                       CacheError);
  CHECK(elapsed_ms(start) < 900);
  start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->erase_if_equals("job", "v"),
                       doctest::Contains(("memcached " + location + ": gets ':1:job' failed: ").c_str()),
                       CacheError);
  CHECK(elapsed_ms(start) < 900);
  start = Clock::now();
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
  CHECK(elapsed_ms(start) < 900);
  cachelock::Lock lock{"job", std::defer_lock, {.cache = cache}};
  CHECK_THROWS_AS(lock.acquire(), CacheError);
  CHECK_FALSE(lock.owns_lock());
}

TEST_CASE("memcached: a reply that comes after the timeout is never taken for a later call's") {
  // In each case one command is answered, but after the client gave up on it,
  // and the key then moves on. The client must not read that late reply as
  // the answer to its next command: it would think it holds a lock the
  // server refused, release or extend a lock that is now someone else's, or
  // read an old value. So after such a failure the connection is closed and
  // the next call opens a new one.
  struct Case {
    const char* name;
    ScriptedKey::Value initial;
    const char* late_verb;
    std::function<void(ScriptedKey::Value&)> after_late;
    std::function<void(MemcachedCache&)> times_out;
    std::function<void(MemcachedCache&, const ScriptedKey&)> then;
  };
  auto taken_by_other = [](ScriptedKey::Value& value) { value = "other"; };
  const Case cases[] = {
      {"add answered late: the key is taken", std::nullopt, "add", nullptr,
       [](MemcachedCache& cache) { cache.add("job", "v"); },
       [](MemcachedCache& cache, const ScriptedKey& key) {
         CHECK_FALSE(cache.add("job", "w"));
         CHECK(cache.get("job") == "v");
         CHECK(key.seen("add") == 2);
       }},
      {"get answered late: the value changed since", "token", "gets", taken_by_other,
       [](MemcachedCache& cache) { cache.get("job"); },
       [](MemcachedCache& cache, const ScriptedKey&) { CHECK(cache.get("job") == "other"); }},
      {"release, its gets answered late: the lock is someone else's now", "token", "gets", taken_by_other,
       [](MemcachedCache& cache) { cache.erase_if_equals("job", "token"); },
       [](MemcachedCache& cache, const ScriptedKey& key) {
         CHECK_FALSE(cache.erase_if_equals("job", "token"));
         CHECK(key.seen("cas") == 0);
         CHECK(key.value() == "other");
       }},
      {"extend, its gets answered late: the lock is someone else's now", "token", "gets", taken_by_other,
       [](MemcachedCache& cache) { cache.replace_if_equals("job", "token", "token-2"); },
       [](MemcachedCache& cache, const ScriptedKey& key) {
         CHECK_FALSE(cache.replace_if_equals("job", "token", "token-2"));
         CHECK(key.seen("cas") == 0);
         CHECK(key.value() == "other");
       }},
      {"extend, its cas answered late: the lock is still held", "token", "cas", nullptr,
       [](MemcachedCache& cache) { cache.replace_if_equals("job", "token", "token-2"); },
       [](MemcachedCache& cache, const ScriptedKey&) {
         CHECK_FALSE(cache.add("job", "intruder"));
         CHECK(cache.get("job") == "token-2");
       }},
      {"release, its cas answered late: the key is free", "token", "cas", nullptr,
       [](MemcachedCache& cache) { cache.erase_if_equals("job", "token"); },
       [](MemcachedCache& cache, const ScriptedKey& key) {
         CHECK_FALSE(cache.replace_if_equals("job", "token", "token-2"));
         CHECK(key.seen("cas") == 1);
         CHECK_FALSE(cache.get("job").has_value());
       }},
  };
  for (bool binary : {false, true}) {
    for (const auto& c : cases) {
      CAPTURE(binary);
      CAPTURE(c.name);
      ScriptedKey key{c.initial};
      key.late_verb = c.late_verb;
      key.after_late = c.after_late;
      test::FakeMemcached late{[&](const std::string& command, const std::string& data) { return key(command, data); }};
      MemcachedCache cache{{.servers = {late.server()}, .binary = binary, .timeout = 300ms, .pool_size = 1}};
      auto start = Clock::now();
      CHECK_THROWS_WITH_AS(c.times_out(cache), doctest::Contains("A TIMEOUT OCCURRED"), CacheError);
      // Closing the connection adds no wait to the failed call.
      CHECK(elapsed_ms(start) < 300 + test::slow(200ms).count());
      std::this_thread::sleep_for(300ms);  // the late reply has been sent by now
      c.then(cache, key);
      CHECK(late.connections() == 2);  // the first was closed after the timeout
    }
  }
}

TEST_CASE("memcached: a server that answers one command twice never shifts the answers of later calls") {
  // memcached answers a storage command line it cannot read with ERROR, and
  // then reads the data block as another command: a second ERROR.
  // libmemcached reads the first and keeps the connection (ERROR is not a
  // fatal code to it), so each later call would read the answer meant for
  // the call before: an `add` on a held key "succeeds" with the STORED that
  // answered an `add` on a free one.
  test::FakeMemcached confused{[](const std::string& command) -> std::optional<std::string> {
    if (command.starts_with("gets")) return "VALUE " + command.substr(5) + " 0 5 77\r\ntoken\r\nEND\r\n";
    if (command.starts_with("cas")) return "ERROR\r\nERROR\r\n";
    if (command.starts_with("add :1:free")) return "STORED\r\n";
    if (command.starts_with("add")) return "NOT_STORED\r\n";
    return "ERROR\r\n";
  }};
  MemcachedCache cache{{.servers = {confused.server()}, .pool_size = 1}};
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache.replace_if_equals("job", "token", "token-2"),
                       ("memcached " + confused.server().to_string() + ": cas ':1:job' failed: ERROR was returned by server").c_str(),
                       CacheError);
  CHECK(elapsed_ms(start) < test::slow(200ms).count());  // closing the connection waits for nothing
  CHECK(cache.add("free", "v"));
  CHECK_FALSE(cache.add("held", "v"));
  CHECK(confused.connections() == 2);
  CHECK(confused.quits() == 1);  // the first connection was closed (with "quit")
}

TEST_CASE("memcached: after a failure the server answered in full, the connection stays open") {
  // A CLIENT_ERROR is a whole answer: nothing is left to read.
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    ScriptedKey key{"not a number"};
    test::FakeMemcached fake{[&](const std::string& command, const std::string& data) -> std::optional<std::string> {
      if (command.starts_with("incr")) return "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
      return key(command, data);
    }};
    MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .pool_size = 1}};
    CHECK_THROWS_AS(cache.incr("job"), CacheError);
    CHECK(cache.get("job") == "not a number");
    // (In the binary protocol libmemcached reads an error status it does not
    // know, as memcached's "non-numeric value", as a read failure and
    // reconnects by itself.)
    if (!binary) {
      CHECK(fake.connections() == 1);
      CHECK(fake.quits() == 0);
    }
  }
}

TEST_CASE("memcached: waiting for a free connection is bounded by the timeout") {
  // One connection; a slow server keeps it busy for a compare-and-delete
  // (gets, then cas: 2 x 400 ms) while a second call waits for it.
  test::FakeMemcached slow{[](const std::string& command) -> std::optional<std::string> {
    if (command == "gets :1:job") {
      std::this_thread::sleep_for(400ms);
      return "VALUE :1:job 0 5 77\r\ntoken\r\nEND\r\n";
    }
    if (command.starts_with("cas ")) {
      std::this_thread::sleep_for(400ms);
      return "STORED\r\n";
    }
    return "END\r\n";
  }};
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {slow.server()}, .timeout = 500ms, .pool_size = 1});
  std::atomic<bool> released{false};
  std::thread holder{[&] { released = cache->erase_if_equals("job", "token"); }};
  std::this_thread::sleep_for(100ms);
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->get("other"),
                       ("memcached " + slow.server().to_string() +
                        ": get ':1:other' failed: no free connection within 500 ms (all 1 in use)")
                           .c_str(),
                       CacheError);
  auto waited = elapsed_ms(start);
  CHECK(waited >= 450);
  CHECK(waited < 700);
  holder.join();
  CHECK(released.load());
  CHECK_FALSE(cache->get("other").has_value());  // the connection is free again
}

TEST_CASE("memcached: 16 threads share a pool of 4 connections") {
  auto& server = test::shared_memcached();
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {server.server()}, .timeout = 5000ms, .pool_size = 4},
      cachelock::CacheOptions{.key_prefix = test::unique("pool")});
  auto connections_before = server.stat("total_connections");
  constexpr int threads = 16;
  constexpr int cycles = 100;
  constexpr int keys = 4;
  std::atomic<int> inside[keys] = {};
  std::atomic<int> overlaps{0}, errors{0}, taken{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto key = "job-" + std::to_string(t % keys);
      for (int i = 0; i < cycles; ++i) {
        try {
          cachelock::Lock lock{key, {.cache = cache, .ttl = 30s, .wait = 20s}};
          if (inside[t % keys]++ != 0) ++overlaps;
          ++taken;
          std::this_thread::yield();
          --inside[t % keys];
        } catch (const std::exception&) {
          ++errors;
        }
      }
    });
  }
  for (auto& thread : pool) thread.join();
  CHECK(errors.load() == 0);
  CHECK(overlaps.load() == 0);
  CHECK(taken.load() == threads * cycles);
  // At most pool_size connections were opened, and one handshake (the +1
  // is stat()'s own).
  auto opened = server.stat("total_connections") - connections_before - 1;
  CHECK(opened >= 2);
  CHECK(opened <= 4 + 1);
}

TEST_CASE("memcached: each key lives on one server; a dead server's keys fail, the others' work") {
  auto& a = test::shared_memcached();
  test::MemcachedProcess b;
  auto cache = cache_on({a.server(), b.server()}, false, {.key_prefix = test::unique("two")});
  std::set<int> used;
  std::vector<std::pair<std::string, int>> placement;
  for (int i = 0; i < 20; ++i) {
    auto key = "key-" + std::to_string(i);
    cache->set(key, "v");
    auto stored = cache->make_key(key);
    bool on_a = a.raw_get(stored).has_value();
    bool on_b = b.raw_get(stored).has_value();
    CHECK(on_a != on_b);  // exactly one copy
    placement.emplace_back(key, on_a ? 0 : 1);
    used.insert(on_a ? 0 : 1);
  }
  CHECK(used.size() == 2);

  // No failover: with b stopped, b's keys fail (naming b) rather than move
  // to a, where a second owner could take a lock that is held on b.
  b.stop();
  for (const auto& [key, where] : placement) {
    CAPTURE(key);
    if (where == 0) {
      CHECK(cache->get(key) == "v");
      CHECK_FALSE(cache->add(key, "w"));
    } else {
      CHECK_THROWS_WITH_AS(cache->add(key, "w"),
                           doctest::Contains(("memcached " + b.location() + ": add '" +
                                              cache->make_key(key) + "' failed: ")
                                                 .c_str()),
                           CacheError);
      CHECK_FALSE(a.raw_get(cache->make_key(key)).has_value());
    }
  }
}

TEST_CASE("memcached: after a restart the cache reconnects") {
  test::MemcachedProcess server;
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {server.server()}, .retry_timeout = 1000ms},
      cachelock::CacheOptions{.key_prefix = "restart"});
  cache->set("k", "v");
  server.stop();
  CHECK_THROWS_AS(cache->get("k"), CacheError);
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
  server.start();
  // The server was marked failed for retry_timeout (whole seconds).
  auto until = Clock::now() + 5s;
  bool back = false;
  while (!back && Clock::now() < until) {
    try {
      back = !cache->get("k").has_value();  // a restarted memcached is empty
    } catch (const CacheError&) {
      std::this_thread::sleep_for(100ms);
    }
  }
  CHECK(back);
  cachelock::Lock lock{"job", {.cache = cache}};
  CHECK(lock.owns_lock());
}

TEST_CASE("memcached: a forked child opens its own connections and leaves the parent's alone") {
  auto& server = test::shared_memcached();
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("fork")});
  cache->set("parent", "0");  // the parent's connection is open now
  auto connections_before = server.stat("total_connections");

  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Interleaved with the parent's calls: a shared socket would mix replies.
    int bad = 0;
    for (int i = 0; i < 300; ++i) {
      try {
        auto value = "child-" + std::to_string(i);
        cache->set("child", value);
        if (cache->get("child") != value) ++bad;
      } catch (...) {
        ++bad;
      }
    }
    cache.reset();  // must not send "quit" on the parent's sockets
    ::_exit(bad == 0 ? 0 : 1);
  }
  int bad = 0;
  for (int i = 0; i < 300; ++i) {
    auto value = std::to_string(i);
    cache->set("parent", value);
    if (cache->get("parent") != value) ++bad;
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(bad == 0);
  CHECK(cache->get("child") == "child-299");
  // The parent's connection survived the child's exit: the next call works
  // on it, without reconnecting.
  auto connections_after_child = server.stat("total_connections");
  CHECK(connections_after_child >= connections_before + 2);  // stat() + the child's own
  cache->set("parent", "after");
  CHECK(cache->get("parent") == "after");
  CHECK(server.stat("total_connections") == connections_after_child + 1);  // this stat() only
}

TEST_CASE("memcached: a unix socket LOCATION works, and errors name the socket") {
  char directory[] = "/tmp/cachelock-socket-XXXXXX";
  REQUIRE(::mkdtemp(directory) != nullptr);
  auto path = std::string{directory} + "/memcached.sock";
  {
    test::MemcachedProcess server{{}, path};
    for (bool binary : {false, true}) {
      CAPTURE(binary);
      auto cache = std::make_shared<MemcachedCache>(
          MemcachedOptions{.servers = {MemcachedServer::parse("unix:" + path)}, .binary = binary});
      cachelock::Lock lock{"job", {.cache = cache}};
      CHECK(server.raw_get(":1:job")->value == lock.token());
      CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), cachelock::LockError);
      CHECK(lock.release());
      CHECK_FALSE(server.raw_get(":1:job").has_value());
    }
    auto cache = std::make_shared<MemcachedCache>(MemcachedOptions{.servers = {MemcachedServer::parse(path)}});
    CHECK_FALSE(cache->get("job").has_value());
    server.stop();
    CHECK_THROWS_WITH_AS(cache->add("job", "v"),
                         doctest::Contains(("memcached unix:" + path + ": add ':1:job' failed: ").c_str()),
                         CacheError);
  }
  std::remove(path.c_str());
  ::rmdir(directory);
}

TEST_CASE("memcached: a server that requires SASL refuses bad credentials with CacheError") {
  // memcached -S with a SASL configuration that knows no user: the client
  // sends its credentials (binary protocol only), the server refuses them.
  char directory[] = "/tmp/cachelock-sasl-XXXXXX";
  REQUIRE(::mkdtemp(directory) != nullptr);
  auto conf = std::string{directory} + "/memcached.conf";
  {
    std::FILE* file = std::fopen(conf.c_str(), "w");
    REQUIRE(file != nullptr);
    std::fprintf(file, "mech_list: plain\nsasldb_path: %s/none.db\n", directory);
    std::fclose(file);
  }
  ::setenv("SASL_CONF_PATH", directory, 1);
  test::MemcachedProcess server{{"-S"}};
  ::unsetenv("SASL_CONF_PATH");
  auto location = server.location();
  auto cache = std::make_shared<MemcachedCache>(MemcachedOptions{
      .servers = {server.server()}, .binary = true, .username = "app", .password = "wrong"});
  CHECK_THROWS_WITH_AS(cache->add("job", "v"),
                       ("memcached " + location + ": add ':1:job' failed: AUTHENTICATION FAILURE").c_str(),
                       CacheError);
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
  // Without a username the server refuses every command. Writes, and so
  // locks, fail; but libmemcached 1.1.4 reports the refused `get` as a miss
  // (the README warns about this).
  auto anonymous = std::make_shared<MemcachedCache>(MemcachedOptions{.servers = {server.server()}, .binary = true});
  CHECK_THROWS_WITH_AS(anonymous->add("job", "v"),
                       ("memcached " + location + ": add ':1:job' failed: AUTHENTICATION FAILURE").c_str(),
                       CacheError);
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = anonymous}), CacheError);
  CHECK_FALSE(anonymous->get("job").has_value());
  std::remove(conf.c_str());
  ::rmdir(directory);
}

TEST_CASE("memcached: clear flushes every server, as Django's clear()") {
  auto& a = test::shared_memcached();
  auto& b = second_memcached();
  auto writer = cache_on({a.server(), b.server()}, true, {.key_prefix = "clear"});
  for (int i = 0; i < 10; ++i) writer->set("k" + std::to_string(i), "v");
  writer->clear();
  for (int i = 0; i < 10; ++i) {
    CHECK_FALSE(a.raw_get(writer->make_key("k" + std::to_string(i))).has_value());
    CHECK_FALSE(b.raw_get(writer->make_key("k" + std::to_string(i))).has_value());
  }
}

TEST_CASE("memcached: release and extend fail, and change nothing, when someone wrote between gets and cas") {
  // The heart of owner-safe release and extend: `gets` finds our token, but
  // another client writes before our `cas`, which the server then refuses.
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    ScriptedKey key{"token"};
    key.before_cas = [](ScriptedKey::Value& value) { value = "intruder"; };
    test::FakeMemcached fake{[&](const std::string& command, const std::string& data) { return key(command, data); }};
    MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .pool_size = 1}};
    CHECK_FALSE(cache.erase_if_equals("job", "token"));
    CHECK(key.value() == "intruder");
    key.before_cas = nullptr;
    cache.set("job", "token");
    key.before_cas = [](ScriptedKey::Value& value) { value = "intruder"; };
    CHECK_FALSE(cache.replace_if_equals("job", "token", "token-2"));
    CHECK(key.value() == "intruder");
    CHECK(key.seen("cas") == 2);     // both got as far as the cas
    CHECK(fake.connections() == 1);  // a refused cas is an answer: the connection stays
  }
}

TEST_CASE("memcached: a real server refuses our cas after another client wrote; the lock is then lost") {
  auto& server = test::shared_memcached();
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    Relay relay{server};
    test::FakeMemcached proxy{[&](const std::string& command, const std::string& data) { return relay(command, data); }};
    auto cache = cache_on({proxy.server()}, binary, {.key_prefix = test::unique("intrude")});
    // Through the relay, without an intruder: release and extend work.
    {
      cachelock::Lock lock{"job", {.cache = cache, .ttl = 60s}};
      CHECK(server.raw_get(cache->make_key("job"))->value == lock.token());
      CHECK(lock.extend());
      CHECK(server.raw_get(cache->make_key("job"))->value == lock.token());
      CHECK(lock.release());
      CHECK_FALSE(server.raw_get(cache->make_key("job")).has_value());
    }
    // Another client writes between the gets and the cas of the release...
    cachelock::Lock released{"job", {.cache = cache, .ttl = 60s}};
    relay.intrude = "intruder";
    CHECK_FALSE(released.release());
    CHECK(server.raw_get(cache->make_key("job"))->value == "intruder");
    // ...and of the extend.
    cachelock::Lock extended{"report", {.cache = cache, .ttl = 60s}};
    relay.intrude = "intruder";
    CHECK_FALSE(extended.extend());
    CHECK_FALSE(extended.owns_lock());
    CHECK(server.raw_get(cache->make_key("report"))->value == "intruder");
  }
}

TEST_CASE("memcached: a server without CAS ids (memcached -C) makes release and extend fail, never overwrite") {
  // With CAS disabled the server returns CAS id 0, and a binary `cas` with
  // id 0 is an unconditional set: a release would overwrite whatever another
  // client stored since the `gets`.
  test::MemcachedProcess server{{"-C"}};
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    auto cache = cache_on({server.server()}, binary, {.key_prefix = test::unique("nocas")});
    cache->set("job", "token");
    auto head = "memcached " + server.location() + ": gets '" + cache->make_key("job") + "' failed: ";
    CHECK(cache_error_of([&] { cache->erase_if_equals("job", "token"); }) ==
          head + "the server sent no CAS id (is it running with -C, CAS disabled?)");
    CHECK_THROWS_AS(cache->replace_if_equals("job", "token", "token-2"), CacheError);
    CHECK(server.raw_get(cache->make_key("job"))->value == "token");
    CHECK_THROWS_AS(cachelock::Lock("report", {.cache = cache}).release(), CacheError);
    CHECK(cache->get("job") == "token");  // the connection still works
  }
}

TEST_CASE("memcached: a 1 s lock is still held 0.9 s later, whatever the phase of the server's clock") {
  // memcached's clock ticks once a second, and an entry expires at a tick:
  // sent as N seconds it lives between N-1 and N. Locks taken at phases
  // spread over the server's second, some just before a tick, are read back
  // 0.9 s later.
  auto& server = test::shared_memcached();
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("lifetime")});
  constexpr int trials = 20;
  std::atomic<int> lost{0}, late{0}, errors{0};
  std::vector<std::thread> threads;
  std::mt19937 random{std::random_device{}()};
  for (int i = 0; i < trials; ++i) {
    auto phase = i * 50ms + std::chrono::milliseconds{std::uniform_int_distribution<>{0, 49}(random)};
    threads.emplace_back([&, i, phase] {
      try {
        std::this_thread::sleep_for(phase);
        auto key = "job-" + std::to_string(i);
        auto before = Clock::now();  // the write comes after this
        cachelock::Lock lock{key, {.cache = cache, .ttl = 1s}};
        std::this_thread::sleep_until(before + 900ms);
        auto stored = server.raw_get(cache->make_key(key));
        // Read less than 1 s after the write, a lock that lives at least its
        // ttl is surely there; a trial that ran late (a loaded machine) proves
        // nothing either way.
        if (Clock::now() - before >= 1s) {
          ++late;
        } else if (!stored || stored->value != lock.token()) {
          ++lost;
        }
      } catch (const std::exception& e) {
        MESSAGE("trial " << i << ": " << e.what());
        ++errors;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(errors.load() == 0);
  CHECK(lost.load() == 0);
  CHECK(late.load() <= trials / 4);
}

TEST_CASE("memcached: a forked child's copies of a Lock and Mutexes leave the parent's locks held") {
  auto& server = test::shared_memcached();
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("forklock")});
  cachelock::LockOptions options{.cache = cache, .ttl = 60s};
  auto lock = std::make_unique<cachelock::Lock>("job", options);
  auto destroyed = std::make_unique<cachelock::Mutex>("queue", options);
  auto unlocked = std::make_unique<cachelock::Mutex>("report", options);
  destroyed->lock();
  unlocked->lock();
  const auto token = lock->token();
  auto stored = [&](const char* key) { return server.raw_get(cache->make_key(key)); };
  const auto queue_token = stored("queue").value().value;
  const auto report_token = stored("report").value().value;

  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child's copies: release() says it owns nothing, and neither it,
    // the destructors nor unlock() touch the parent's entries. Reported
    // through the exit status.
    int status = 0;
    try {
      if (lock->release()) status |= 1;
      lock.reset();
      destroyed.reset();
      unlocked->unlock();
      unlocked.reset();
      if (cache->get("job") != token) status |= 2;  // through the child's own connection
      if (cache->get("queue") != queue_token) status |= 4;
      if (cache->get("report") != report_token) status |= 8;
    } catch (...) {
      status |= 16;
    }
    ::_exit(status);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(stored("job").value().value == token);
  CHECK(stored("queue").value().value == queue_token);
  CHECK(stored("report").value().value == report_token);
  CHECK(lock->release());
  destroyed->unlock();
  unlocked->unlock();
  CHECK_FALSE(stored("job").has_value());
  CHECK_FALSE(stored("queue").has_value());
  CHECK_FALSE(stored("report").has_value());
}

TEST_CASE("memcached: an acquire on a server without CAS ids (memcached -C) fails, and leaves no entry") {
  // Such a lock could be neither released nor extended safely: refuse it
  // when it is taken, before anything runs under it.
  test::MemcachedProcess server{{"-C"}};
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    auto cache = cache_on({server.server()}, binary, {.key_prefix = test::unique("nocas-acquire")});
    auto stored = cache->make_key("job");
    CHECK(cache_error_of([&] { cachelock::Lock("job", {.cache = cache, .ttl = 60s}); }) ==
          "memcached " + server.location() + ": add '" + stored +
              "' failed: the server runs without CAS (memcached -C), so its locks could not be released or "
              "extended safely; the entry just added was removed");
    CHECK_FALSE(server.raw_get(stored).has_value());
    // Every later acquire too, not only the first of the process.
    CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
    CHECK_THROWS_AS(cache->add("other", "v"), CacheError);
    CHECK_FALSE(server.raw_get(cache->make_key("other")).has_value());
  }
  // A server with CAS ids is asked once per process, not at every acquire.
  auto& normal = test::shared_memcached();
  auto cache = cache_on({normal.server()}, false, {.key_prefix = test::unique("cas-once")});
  { cachelock::Lock first{"a", {.cache = cache}}; }
  auto gets_before = normal.stat("cmd_get");
  for (int i = 0; i < 5; ++i) cachelock::Lock lock{"b" + std::to_string(i), {.cache = cache}};
  CHECK(normal.stat("cmd_get") == gets_before + 5);  // the release's gets only
}

TEST_CASE("memcached: a release after the server restarted says the lock was gone, and reconnects") {
  // The pooled connection died with the old server. Its first use after the
  // restart must not fail the call ("SERVER HAS FAILED"): the lock is gone,
  // and release() says so by returning false.
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    test::MemcachedProcess server;
    auto cache = cache_on({server.server()}, binary, {.key_prefix = test::unique("restart-release")});
    cachelock::Lock lock{"job", {.cache = cache, .ttl = 60s}};
    cachelock::Lock extended{"report", {.cache = cache, .ttl = 60s}};
    server.stop();
    server.start();
    CHECK_FALSE(lock.release());
    CHECK_FALSE(lock.owns_lock());
    CHECK_FALSE(extended.extend());
    // And the next acquire works at once, on the restarted server.
    cachelock::Lock again{"job", {.cache = cache, .ttl = 60s}};
    CHECK(server.raw_get(cache->make_key("job"))->value == again.token());
  }
  // A read or an add, the first operation after a restart, reconnects. A
  // write that cannot be made twice safely fails (whether the server got it
  // cannot be told), and the next call reconnects.
  test::MemcachedProcess server;
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("restart-ops")});
  for (auto op : {"get", "add", "set", "delete", "touch", "incr", "gets"}) {
    CAPTURE(op);
    cache->set("k", "v");
    server.stop();
    server.start();
    std::string_view o{op};
    if (o == "get") CHECK_FALSE(cache->get("k").has_value());
    if (o == "add") CHECK(cache->add("k", "w"));
    if (o == "set") CHECK_THROWS_AS(cache->set("k", "w"), CacheError);
    if (o == "delete") CHECK_THROWS_AS(cache->erase("k"), CacheError);
    if (o == "touch") CHECK_THROWS_AS(cache->touch("k"), CacheError);
    if (o == "incr") CHECK_THROWS_AS(cache->incr("k"), CacheError);
    if (o == "gets") CHECK_FALSE(cache->erase_if_equals("k", "v"));
    if (o != "add") CHECK_FALSE(cache->get("k").has_value());  // the next call reconnects
  }
}

TEST_CASE("memcached: stats reads a group, and a failure names the dead server of several") {
  auto& live = test::shared_memcached();
  test::MemcachedProcess no_evictions{{"-M"}};
  auto cache = cache_on({live.server(), no_evictions.server()});
  auto settings = cache->stats("settings");
  REQUIRE(settings.size() == 2);
  CHECK(settings[0].server == live.location());
  CHECK(settings[0].values.at("evictions") == "on");
  CHECK(settings[1].server == no_evictions.location());
  CHECK(settings[1].values.at("evictions") == "off");
  auto counters = cache->stats();
  REQUIRE(counters.size() == 2);
  CHECK(counters[1].values.at("pid") == std::to_string(no_evictions.pid()));

  auto dead_location = no_evictions.location();
  no_evictions.stop();
  for (std::string group : {"", "settings"}) {
    CAPTURE(group);
    auto message = cache_error_of([&] { cache->stats(group); });
    CHECK(message.starts_with("memcached " + dead_location + ": stats" + (group.empty() ? "" : " " + group) +
                              " failed: "));
    CHECK(message.find(live.location()) == std::string::npos);
  }
}

TEST_CASE("memcached: a server that answers wrongly never aborts the process; every lock operation fails closed") {
  // libmemcached trusts its peer: a text-protocol `add` answered with END
  // hit an assertion and aborted the process. Each case runs in a child
  // process, so an abort shows as a failed case, not a dead test program.
  // The server answers every command (`version` included) with one wrong
  // reply; every operation must end in a CacheError: never a crash, a hang,
  // a lock taken, or a key reported free.
  using test::FakeMemcached;
  const std::pair<std::string, std::string> replies[] = {
      {"END", "END\r\n"},
      {"garbage", "xyzzy plugh\r\n"},
      {"binary garbage", std::string{FakeMemcached::raw} + std::string{"\x81\x0b\x00\x00\xff\xff", 6}},
      {"a truncated line", "STOR"},
      {"a truncated line, then a close", std::string{"VERS"} + std::string{FakeMemcached::hang_up}},
      {"an HTTP response", std::string{FakeMemcached::raw} +
                               "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
      {"a value for the wrong key", "VALUE :1:other 0 5 3\r\nhello\r\nEND\r\n"},
      {"a silent close", std::string{FakeMemcached::hang_up}},
  };
  const char* const operations[] = {"add", "gets", "cas", "delete", "touch", "get"};
  for (bool binary : {false, true}) {
    for (const auto& [name, reply] : replies) {
      FakeMemcached fake{[&reply = reply](const std::string&) -> std::optional<std::string> { return reply; }};
      fake.script_version = true;
      for (std::string op : operations) {
        CAPTURE(binary);
        CAPTURE(name);
        CAPTURE(op);
        std::fflush(nullptr);
        pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
          ::alarm(10);  // a hang is a failure too
          // 0: CacheError; 1: no error (a result taken from a wrong reply); 2: another exception.
          int status = 1;
          try {
            auto cache = std::make_shared<MemcachedCache>(
                MemcachedOptions{.servers = {fake.server()}, .binary = binary, .connect_timeout = 300ms,
                                 .timeout = 300ms});
            if (op == "add") cachelock::Lock lock{"job", {.cache = cache}};
            if (op == "gets") (void)cache->erase_if_equals("job", "token");
            if (op == "cas") (void)cache->replace_if_equals("job", "token", "token-2");
            if (op == "delete") (void)cache->erase("job");
            if (op == "touch") (void)cache->touch("job");
            if (op == "get") (void)cache->get("job");
          } catch (const CacheError&) {
            status = 0;
          } catch (...) {
            status = 2;
          }
          ::_exit(status);
        }
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        CHECK_FALSE(WIFSIGNALED(status));
        if (WIFSIGNALED(status)) MESSAGE("the child died of signal " << WTERMSIG(status));
        CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
      }
    }
  }
}

TEST_CASE("memcached: a read answered with garbage or another key's value fails, never reads as a miss") {
  // Past the handshake, libmemcached reports a `get` answered with garbage
  // as "not found" (keeping the read failure as the handle's last error),
  // and a `gets` answered for another key as the end of the reply: a key
  // that is held would read as free.
  using test::FakeMemcached;
  const std::pair<std::string, std::string> replies[] = {
      {"garbage", "xyzzy plugh\r\n"},
      {"an HTTP response", std::string{FakeMemcached::raw} + "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"},
      {"a value for the wrong key", "VALUE :1:other 0 5 3\r\nhello\r\nEND\r\n"},
  };
  for (bool binary : {false, true}) {
    for (const auto& [name, reply] : replies) {
      CAPTURE(binary);
      CAPTURE(name);
      FakeMemcached fake{[&reply = reply](const std::string&) -> std::optional<std::string> { return reply; }};
      MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .connect_timeout = 300ms, .timeout = 300ms}};
      // gets: what release and extend read first.
      CHECK_THROWS_AS(cache.erase_if_equals("job", "token"), CacheError);
      CHECK_THROWS_AS(cache.replace_if_equals("job", "token", "token-2"), CacheError);
      if (name != "a value for the wrong key") {
        // (memcached_get() cannot tell which key a value was for.)
        CHECK_THROWS_AS(cache.get("job"), CacheError);
      }
    }
  }
}

TEST_CASE("memcached: a call whose connection closed after the server carried it out is not made twice") {
  // The server carries out the command, then closes the connection before
  // its reply (a warm restart, a proxy, a reset after delivery). A retry
  // would count an incr twice, or find our own add's entry and report the
  // key as held by another owner.
  using test::FakeMemcached;
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    std::mutex mutex;
    std::map<std::string, std::string> stored;  // guarded by mutex
    std::int64_t counter = 0;                   // guarded by mutex
    std::atomic<bool> hang_up_after{false};     // the next command is carried out, then the connection closed
    FakeMemcached fake{[&](const std::string& command, const std::string& data) -> std::optional<std::string> {
      std::lock_guard lock{mutex};
      std::istringstream words{command};
      std::string verb, key;
      words >> verb >> key;
      std::string reply;
      if (verb == "add") {
        reply = stored.emplace(key, data).second ? "STORED\r\n" : "NOT_STORED\r\n";
      } else if (verb == "gets") {
        auto at = stored.find(key);
        reply = at == stored.end() ? "END\r\n"
                                   : "VALUE " + key + " 0 " + std::to_string(at->second.size()) + " 7\r\n" +
                                         at->second + "\r\nEND\r\n";
      } else if (verb == "delete") {
        reply = stored.erase(key) ? "DELETED\r\n" : "NOT_FOUND\r\n";
      } else if (verb == "incr") {
        reply = std::to_string(++counter) + "\r\n";
      } else {
        reply = "ERROR\r\n";
      }
      if (hang_up_after.exchange(false)) return std::string{FakeMemcached::hang_up};
      return reply;
    }};
    MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .connect_timeout = 300ms, .timeout = 300ms}};
    CHECK(cache.add("warm", "connection"));  // a connection that served a call

    hang_up_after = true;
    CHECK(cache.add("job", "our-token"));  // stored by the first attempt: ours
    CHECK(cache.get("job") == "our-token");
    CHECK_FALSE(cache.add("job", "another-token"));  // held, as before

    hang_up_after = true;
    CHECK_THROWS_AS(cache.erase("job"), CacheError);  // deleted, but the reply was lost: not "false"
    CHECK_FALSE(cache.get("job").has_value());

    CHECK(cache.incr("count", 1) == 1);
    hang_up_after = true;
    CHECK_THROWS_AS(cache.incr("count", 1), CacheError);
    CHECK(cache.incr("count", 1) == 3);  // two increments for two calls before, not three
    {
      std::lock_guard lock{mutex};
      CHECK(counter == 3);
    }
  }
}

TEST_CASE("memcached: the handshake calls a slow or busy memcached so, and accepts any VERSION line") {
  using test::FakeMemcached;
  // A healthy server: add stores, gets answers with a CAS id.
  auto healthy = [](const std::string& command) -> std::optional<std::string> {
    if (command.starts_with("add ")) return "STORED\r\n";
    if (command.starts_with("gets ")) return "VALUE " + command.substr(5) + " 0 1 7\r\nx\r\nEND\r\n";
    return "ERROR\r\n";
  };
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    FakeMemcached slow{[&](const std::string& command) -> std::optional<std::string> {
      if (command == "version") {
        std::this_thread::sleep_for(500ms);
        return "VERSION 1.6.99\r\n";
      }
      return healthy(command);
    }};
    slow.script_version = true;
    MemcachedCache on_slow{{.servers = {slow.server()}, .binary = binary, .connect_timeout = 300ms, .timeout = 300ms}};
    CHECK(cache_error_of([&] { on_slow.add("k", "v"); }) ==
          "memcached " + slow.server().to_string() + ": add ':1:k' failed: no complete reply to 'version' within 300 ms");

    // memcached at its connection limit (-c) says so, in either protocol, and hangs up.
    FakeMemcached busy{[](const std::string&) -> std::optional<std::string> {
      return std::string{FakeMemcached::raw} + "ERROR Too many open connections\r\n" +
             std::string{FakeMemcached::hang_up};
    }};
    busy.script_version = true;
    MemcachedCache on_busy{{.servers = {busy.server()}, .binary = binary, .connect_timeout = 300ms, .timeout = 300ms}};
    CHECK(cache_error_of([&] { on_busy.add("k", "v"); }) ==
          "memcached " + busy.server().to_string() +
              ": add ':1:k' failed: the server is at its connection limit: 'ERROR Too many open connections'");
  }
  // mcrouter speaks memcached's text protocol; its version is no number.
  FakeMemcached mcrouter{[&](const std::string& command) -> std::optional<std::string> {
    if (command == "version") return "VERSION mcrouter 0.41.0 mcrouter\r\n";
    return healthy(command);
  }};
  mcrouter.script_version = true;
  MemcachedCache on_mcrouter{{.servers = {mcrouter.server()}, .connect_timeout = 300ms, .timeout = 300ms}};
  CHECK(on_mcrouter.add("k", "x"));
}

TEST_CASE("memcached: an acquire on a server without CAS ids leaves another client's entry alone") {
  // Between our add and the gets that finds no CAS id, our entry can be
  // removed and another client's stored: deleting then would free a key
  // that client holds.
  using test::FakeMemcached;
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    std::atomic<int> deletes{0};
    FakeMemcached fake{[&](const std::string& command) -> std::optional<std::string> {
      if (command.starts_with("add ")) return "STORED\r\n";
      // No CAS id (0), and a value that is not the one just added.
      if (command.starts_with("gets ")) return "VALUE " + command.substr(5) + " 0 5 0\r\nother\r\nEND\r\n";
      if (command.starts_with("delete ")) {
        ++deletes;
        return "DELETED\r\n";
      }
      return "ERROR\r\n";
    }};
    MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .connect_timeout = 300ms, .timeout = 300ms}};
    CHECK(cache_error_of([&] { cache.add("job", "our-token"); }) ==
          "memcached " + fake.server().to_string() +
              ": add ':1:job' failed: the server runs without CAS (memcached -C), so its locks could not be "
              "released or extended safely; the entry now under the key is another client's, left alone");
    CHECK(deletes == 0);
  }
}
