// MemcachedCache: the conformance suite on a real memcached (text protocol,
// binary protocol, three servers; each with and without the meta protocol;
// and a server older than 1.6.10),
// then what only this backend stores and
// reports: flags, expirations, keys, counters, sockets, SASL, clear, stats.
// The other test_memcached_*.cpp files cover options, failures, peers that
// are not memcached, CAS, and the pool with fork().
#include "cache_conformance.hpp"
#include "memcached_tests.hpp"

namespace {

// memcached's clock ticks once a second, so MemcachedCache sends a ttl as
// its whole seconds plus one: an entry given 1 s lives between 1 and 2 s.
// 3 s is surely past it, with a second to spare. Each case runs with the
// lock operations in the meta protocol (the default) and without.
template <bool Binary, int Servers, bool Meta>
struct Backend {
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    std::vector<MemcachedServer> servers{test::shared_memcached().server()};
    if (Servers == 3) {
      servers.push_back(second_memcached().server());
      servers.push_back(test::third_memcached().server());
    }
    return cache_on(std::move(servers), Binary, std::move(options), Meta);
  }
  static constexpr auto short_ttl = 1s;
  static constexpr auto expired_after = 3s;
};

// A memcached that says it is 1.5.22 (a relay to the real one): the lock
// operations then go over cachelock's own connections in the classic text
// protocol (add, gets, cas), the others through libmemcached.
struct OlderServerBackend {
  static const test::FakeMemcached& server() {
    static Relay relay{test::shared_memcached()};
    using Reply = std::optional<std::string>;
    static test::FakeMemcached older{[](const std::string& command, const std::string& data) -> Reply {
      if (command == "version") return std::string{"VERSION 1.5.22\r\n"};
      return relay(command, data);
    }};
    static const bool scripted = older.script_version.exchange(true);
    (void)scripted;
    return older;
  }
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return cache_on({server().server()}, false, std::move(options));
  }
  static constexpr auto short_ttl = 1s;
  static constexpr auto expired_after = 3s;
};

using TextBackend = Backend<false, 1, true>;
using BinaryBackend = Backend<true, 1, true>;
using ThreeServersBackend = Backend<false, 3, true>;
using TextWithoutMeta = Backend<false, 1, false>;
using BinaryWithoutMeta = Backend<true, 1, false>;
using ThreeServersWithoutMeta = Backend<false, 3, false>;

}  // namespace

TYPE_TO_STRING(TextBackend);
TYPE_TO_STRING(BinaryBackend);
TYPE_TO_STRING(ThreeServersBackend);
TYPE_TO_STRING(TextWithoutMeta);
TYPE_TO_STRING(BinaryWithoutMeta);
TYPE_TO_STRING(ThreeServersWithoutMeta);
TYPE_TO_STRING(OlderServerBackend);
CACHELOCK_CONFORMANCE(TextBackend, BinaryBackend, ThreeServersBackend, TextWithoutMeta, BinaryWithoutMeta,
                      ThreeServersWithoutMeta, OlderServerBackend);

TEST_CASE("memcached: the fixture runs a real memcached") {
  auto& server = test::shared_memcached();
  REQUIRE(server.running());
  CHECK(server.stats().at("pid") == std::to_string(server.pid()));
  CHECK(server.command("version\r\n").starts_with("VERSION 1."));
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

TEST_CASE("memcached: release removes the entry, in both protocols, with and without the meta protocol") {
  auto& server = test::shared_memcached();
  for (auto [binary, meta] : {std::pair{false, true}, {true, true}, {false, false}, {true, false}}) {
    CAPTURE(binary);
    CAPTURE(meta);
    auto cache = cache_on({server.server()}, binary, {.key_prefix = test::unique("release")}, meta);
    auto stored = cache->make_key("job");
    CHECK(cache->add("job", "owner-token", 60s));
    CHECK(server.raw_get(stored).has_value());
    auto hits_before = server.stat("get_hits");
    CHECK(cache->erase_if_equals("job", "owner-token"));
    // A plain `get` on the server misses, and the key can be taken again.
    CHECK_FALSE(server.raw_get(stored).has_value());
    // Without meta, the `gets` before the `cas` (which stores an already
    // expired entry); with it, `md` with our add's CAS id reads nothing.
    CHECK(server.stat("get_hits") == hits_before + (meta ? 0 : 1));
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
