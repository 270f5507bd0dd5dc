// MemcachedCache against peers that are not memcached or answer wrongly,
// and connections closed after the server carried a call out: the process
// never aborts and every lock operation fails closed.
#include "memcached_tests.hpp"

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
    // The libmemcached path (test_memcached_meta.cpp has the meta path's retries).
    MemcachedCache cache{{.servers = {fake.server()},
                          .binary = binary,
                          .connect_timeout = 300ms,
                          .timeout = 300ms,
                          .meta_protocol = false}};
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
  // The same on both paths: the libmemcached handshake, and the `version`
  // that each new connection of the lock operations asks.
  for (auto [binary, meta] : {std::pair{false, true}, {true, true}, {false, false}, {true, false}}) {
    CAPTURE(binary);
    CAPTURE(meta);
    FakeMemcached slow{[&](const std::string& command) -> std::optional<std::string> {
      if (command == "version") {
        std::this_thread::sleep_for(500ms);
        return "VERSION 1.6.99\r\n";
      }
      return healthy(command);
    }};
    slow.script_version = true;
    MemcachedCache on_slow{{.servers = {slow.server()},
                            .binary = binary,
                            .connect_timeout = 300ms,
                            .timeout = 300ms,
                            .meta_protocol = meta}};
    CHECK(cache_error_of([&] { on_slow.add("k", "v"); }) ==
          "memcached " + slow.server().to_string() + ": add ':1:k' failed: no complete reply to 'version' within 300 ms");

    // memcached at its connection limit (-c) says so, in either protocol, and hangs up.
    FakeMemcached busy{[](const std::string&) -> std::optional<std::string> {
      return std::string{FakeMemcached::raw} + "ERROR Too many open connections\r\n" +
             std::string{FakeMemcached::hang_up};
    }};
    busy.script_version = true;
    MemcachedCache on_busy{{.servers = {busy.server()},
                            .binary = binary,
                            .connect_timeout = 300ms,
                            .timeout = 300ms,
                            .meta_protocol = meta}};
    CHECK(cache_error_of([&] { on_busy.add("k", "v"); }) ==
          "memcached " + busy.server().to_string() +
              ": add ':1:k' failed: the server is at its connection limit: 'ERROR Too many open connections'");
  }
  // mcrouter speaks memcached's text protocol; its version is no number, so
  // the lock operations use the classic commands (add, gets, cas).
  FakeMemcached mcrouter{[&](const std::string& command) -> std::optional<std::string> {
    if (command == "version") return "VERSION mcrouter 0.41.0 mcrouter\r\n";
    return healthy(command);
  }};
  mcrouter.script_version = true;
  MemcachedCache on_mcrouter{{.servers = {mcrouter.server()}, .connect_timeout = 300ms, .timeout = 300ms}};
  CHECK(on_mcrouter.add("k", "x"));
}
