// MemcachedCache's compare operations (gets + cas): what happens when
// someone writes between them, and on a server without CAS ids (-C).
#include "memcached_tests.hpp"

TEST_CASE("memcached: release and extend fail, and change nothing, when someone wrote between gets and cas") {
  // The heart of owner-safe release and extend: `gets` finds our token, but
  // another client writes before our `cas`, which the server then refuses.
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    ScriptedKey key{"token"};
    key.before_cas = [](ScriptedKey::Value& value) { value = "intruder"; };
    test::FakeMemcached fake{[&](const std::string& command, const std::string& data) { return key(command, data); }};
    MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .pool_size = 1, .meta_protocol = false}};
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
    // The libmemcached path's `gets` + `cas` (the meta path has no gap between them).
    auto cache = cache_on({proxy.server()}, binary, {.key_prefix = test::unique("intrude")}, false);
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
    // The lock operations' own connections read the value first (it was
    // not added by us), and find no CAS id.
    CHECK(cache_error_of([&] { cache->erase_if_equals("job", "token"); }) ==
          "memcached " + server.location() + ": delete '" + cache->make_key("job") +
              "' failed: the server sent no CAS id (is it running with -C, CAS disabled?)");
    CHECK_THROWS_AS(cache->replace_if_equals("job", "token", "token-2"), CacheError);
    CHECK(server.raw_get(cache->make_key("job"))->value == "token");
    CHECK_THROWS_AS(cachelock::Lock("report", {.cache = cache}).release(), CacheError);
    CHECK(cache->get("job") == "token");  // the connection still works
  }
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
  // On the libmemcached path, a server with CAS ids is asked once per
  // process, not at every acquire. (The meta path's add returns the id.)
  auto& normal = test::shared_memcached();
  auto cache = cache_on({normal.server()}, false, {.key_prefix = test::unique("cas-once")}, false);
  { cachelock::Lock first{"a", {.cache = cache}}; }
  auto gets_before = normal.stat("cmd_get");
  for (int i = 0; i < 5; ++i) cachelock::Lock lock{"b" + std::to_string(i), {.cache = cache}};
  CHECK(normal.stat("cmd_get") == gets_before + 5);  // the release's gets only
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
    MemcachedCache cache{{.servers = {fake.server()}, .binary = binary, .connect_timeout = 300ms, .timeout = 300ms, .meta_protocol = false}};
    CHECK(cache_error_of([&] { cache.add("job", "our-token"); }) ==
          "memcached " + fake.server().to_string() +
              ": add ':1:job' failed: the server runs without CAS (memcached -C), so its locks could not be "
              "released or extended safely; the entry now under the key is another client's, left alone");
    CHECK(deletes == 0);
  }
}
