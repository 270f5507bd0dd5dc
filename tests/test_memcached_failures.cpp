// MemcachedCache when servers fail: dead, unreachable, silent, late or
// doubled replies. Every call fails within its bound, naming the server, and
// a late reply is never taken for a later call's.
#include <cachelock/once.hpp>

#include "memcached_tests.hpp"

TEST_CASE("memcached: a dead server fails each call at once, naming it; locks fail closed") {
  auto port = test::free_loopback_port();  // nothing listens there
  auto location = "127.0.0.1:" + std::to_string(port);
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {{"127.0.0.1", static_cast<std::uint16_t>(port)}},
                       .connect_timeout = 500ms,
                       .timeout = 500ms,
                       .meta_protocol = false});
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->add("job", "v"),
                       ("memcached " + location + ": add ':1:job' failed: CONNECTION FAILURE(Connection refused)")
                           .c_str(),
                       CacheError);
  CHECK(elapsed_ms(start) < test::slow(1000ms).count());

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
    CHECK(elapsed_ms(start) < test::slow(1000ms).count());
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
        {.servers = {{"127.0.0.1", port}}, .retry_timeout = 60s, .server_failure_limit = limit, .pool_size = 1,
         .meta_protocol = false}};
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

TEST_CASE("memcached: a server that does not answer connects costs connect_timeout once, then is skipped") {
  UnansweredPort down;
  auto location = "127.0.0.1:" + std::to_string(down.port());
  MemcachedCache cache{{.servers = {{"127.0.0.1", down.port()}},
                        .connect_timeout = 300ms,
                        .timeout = 300ms,
                        .retry_timeout = 1500ms,
                        .meta_protocol = false}};
  // The first call waits for the connect once (not once for the handshake
  // and again for the call).
  auto start = Clock::now();
  CHECK(cache_error_of([&] { cache.add("job", "v"); }) ==
        "memcached " + location + ": add ':1:job' failed: no answer to a connect within connect_timeout (300 ms)");
  auto took = elapsed_ms(start);
  CHECK(took >= 250);
  CHECK(took < 300 + test::slow(250ms).count());  // connect_timeout, and some slack

  // Until retry_timeout has passed, calls from many threads fail at once,
  // naming the server, the call and why.
  std::vector<std::thread> threads;
  std::vector<std::string> messages(8);
  start = Clock::now();
  for (std::size_t t = 0; t < messages.size(); ++t) {
    threads.emplace_back([&, t] { messages[t] = cache_error_of([&] { cache.get("k" + std::to_string(t)); }); });
  }
  for (auto& thread : threads) thread.join();
  CHECK(elapsed_ms(start) < test::slow(250ms).count());
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
  CHECK(took < 300 + test::slow(250ms).count());  // connect_timeout, and some slack
  for (const auto& message : messages) {
    CAPTURE(message);
    CHECK(message.starts_with("memcached " + location + ": get ':1:k' failed: "));
    CHECK(message.ends_with("connect within connect_timeout (300 ms)"));
  }
}

TEST_CASE("memcached: a silent server fails the call within the timeout") {
  test::FakeMemcached silent{[](const std::string&) -> std::optional<std::string> { return std::nullopt; }};
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {silent.server()}, .connect_timeout = 300ms, .timeout = 300ms, .meta_protocol = false});
  auto location = silent.server().to_string();
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->add("job", "v"),
                       ("memcached " + location + ": add ':1:job' failed: A TIMEOUT OCCURRED, time out").c_str(),
                       CacheError);
  auto took = elapsed_ms(start);
  CHECK(took >= 250);
  CHECK(took < 600 + test::slow(300ms).count());  // connect_timeout + timeout, and some slack

  start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->get("job"),
                       ("memcached " + location + ": get ':1:job' failed: A TIMEOUT OCCURRED, time out").c_str(),
                       CacheError);
  CHECK(elapsed_ms(start) < test::slow(900ms).count());
  start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->erase_if_equals("job", "v"),
                       doctest::Contains(("memcached " + location + ": gets ':1:job' failed: ").c_str()),
                       CacheError);
  CHECK(elapsed_ms(start) < test::slow(900ms).count());
  start = Clock::now();
  CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
  CHECK(elapsed_ms(start) < test::slow(900ms).count());
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
      MemcachedCache cache{{.servers = {late.server()}, .binary = binary, .timeout = 300ms, .pool_size = 1, .meta_protocol = false}};
      auto start = Clock::now();
      CHECK_THROWS_WITH_AS(c.times_out(cache), doctest::Contains("A TIMEOUT OCCURRED"), CacheError);
      // Closing the connection adds no wait to the failed call.
      CHECK(elapsed_ms(start) < 300 + test::slow(200ms).count());
      REQUIRE(test::eventually([&] { return key.late_answers() == 1; }, test::slow(5s)));
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
  MemcachedCache cache{{.servers = {confused.server()}, .pool_size = 1, .meta_protocol = false}};
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
    MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .pool_size = 1, .meta_protocol = false}};
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
