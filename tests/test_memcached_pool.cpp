// MemcachedCache's pool of handles: bounded waits, many threads, restarts
// of the server, and fork() (a child opens its own connections).
#include <latch>

#include "memcached_tests.hpp"

TEST_CASE("memcached: waiting for a free connection is bounded by the timeout") {
  // One connection; a slow server keeps it busy for a compare-and-delete
  // (gets, then cas: 2 x 400 ms) while a second call waits for it.
  std::latch holding{1};  // the holder's gets reached the server: it has the connection
  std::atomic<bool> told{false};
  test::FakeMemcached slow{[&](const std::string& command) -> std::optional<std::string> {
    if (command == "gets :1:job") {
      if (!told.exchange(true)) holding.count_down();
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
      MemcachedOptions{.servers = {slow.server()}, .timeout = 500ms, .pool_size = 1, .meta_protocol = false});
  std::atomic<bool> released{false};
  std::thread holder{[&] { released = cache->erase_if_equals("job", "token"); }};
  holding.wait();
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache->get("other"),
                       ("memcached " + slow.server().to_string() +
                        ": get ':1:other' failed: no free connection within 500 ms (all 1 in use)")
                           .c_str(),
                       CacheError);
  auto waited = elapsed_ms(start);
  CHECK(waited >= 450);
  CHECK(waited < 500 + test::slow(200ms).count());  // the timeout, and some slack
  holder.join();
  CHECK(released.load());
  CHECK_FALSE(cache->get("other").has_value());  // the connection is free again
}

TEST_CASE("memcached: 16 threads share a pool of 4 connections") {
  // A server of its own: it counts connections, and no other case's may open one.
  test::MemcachedProcess server;
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {server.server()}, .timeout = 5000ms, .pool_size = 4},
      cachelock::CacheOptions{.key_prefix = test::unique("pool")});
  // memcached counts a connection when a worker thread takes it up, which
  // may come after a later connection's stats: the start-up check's own
  // connection was seen counted late. Settled once two reads in a row differ
  // by just the second read's own connection.
  auto connections_before = server.stat("total_connections");
  for (int i = 0; i < 50; ++i) {
    auto again = server.stat("total_connections");
    bool settled = again == connections_before + 1;
    connections_before = again;
    if (settled) break;
  }
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

TEST_CASE("memcached: a release after the server restarted says the lock was gone, and reconnects") {
  // The pooled connection died with the old server. Its first use after the
  // restart must not fail the call ("SERVER HAS FAILED"): the lock is gone,
  // and release() says so by returning false.
  for (auto [binary, meta] : {std::pair{false, true}, {true, true}, {false, false}, {true, false}}) {
    CAPTURE(binary);
    CAPTURE(meta);
    test::MemcachedProcess server;
    auto cache = cache_on({server.server()}, binary, {.key_prefix = test::unique("restart-release")}, meta);
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
  // (The libmemcached path's operations; test_memcached_meta.cpp has the meta path's.)
  test::MemcachedProcess server;
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("restart-ops")}, false);
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
