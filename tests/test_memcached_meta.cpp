// The meta-protocol path of MemcachedCache (the lock operations on
// connections of our own): its round trips on a real memcached, a restart
// that could make a CAS id match another owner's entry, servers without the
// meta protocol, and replies that are wrong, cut or hostile from a scripted
// server. The conformance suite runs both paths (test_memcached_cache.cpp).
#include "memcached_tests.hpp"

namespace {

// What a real memcached has counted so far of each kind of command.
struct Counts {
  long long sets, gets, deletes;
  static Counts of(const test::MemcachedProcess& server) {
    return {server.stat("cmd_set"), server.stat("cmd_get"),
            server.stat("delete_hits") + server.stat("delete_misses")};
  }
  long long total() const { return sets + gets + deletes; }
};

// A scripted server that speaks the meta protocol (the fake answers
// `version` as memcached 1.6.99): every command is answered by `reply`
// (nullopt: the default below, a store that honours ME, C and returns CAS
// ids, as memcached does).
struct MetaFake {
  using Script = std::function<std::optional<std::string>(const std::string& command)>;
  explicit MetaFake(Script script = {}) : script_{std::move(script)} {}

  /// The next command that starts with this is carried out, and then the
  /// connection is closed without its reply (a server or network that dies
  /// between the two).
  std::string drop_reply_to;

  std::optional<std::string> operator()(const std::string& command, const std::string& data) {
    auto reply = answer(command, data);
    std::lock_guard lock{mutex_};
    if (drop_reply_to.empty() || !command.starts_with(drop_reply_to)) return reply;
    drop_reply_to.clear();
    return std::string{test::FakeMemcached::hang_up};
  }

 private:
  std::optional<std::string> answer(const std::string& command, const std::string& data) {
    auto words = words_of(command);
    if (script_) {
      if (auto reply = script_(command)) return reply;
    }
    std::lock_guard lock{mutex_};
    auto flag = [&](char letter) -> std::optional<std::string> {
      for (std::size_t i = 2; i < words.size(); ++i) {
        if (!words[i].empty() && words[i][0] == letter) return words[i].substr(1);
      }
      return std::nullopt;
    };
    auto& key = words.at(1);
    auto found = entries_.find(key);
    if (words[0] == "ms") {
      auto mode = flag('M');
      auto cas = flag('C');
      if (mode == "E" && found != entries_.end()) return std::string{"NS\r\n"};
      if (cas && found == entries_.end()) return std::string{"NF\r\n"};
      if (cas && std::to_string(found->second.second) != *cas) return std::string{"EX\r\n"};
      entries_[key] = {data, ++cas_};
      return "HD c" + std::to_string(cas_) + "\r\n";
    }
    if (words[0] == "mg") {
      if (found == entries_.end()) return std::string{"EN\r\n"};
      return "VA " + std::to_string(found->second.first.size()) + " c" + std::to_string(found->second.second) +
             "\r\n" + found->second.first + "\r\n";
    }
    if (words[0] == "md") {
      if (found == entries_.end()) return std::string{"NF\r\n"};
      if (auto cas = flag('C'); cas && std::to_string(found->second.second) != *cas) return std::string{"EX\r\n"};
      entries_.erase(found);
      return std::string{"HD\r\n"};
    }
    return std::string{"ERROR\r\n"};
  }

  Script script_;
  std::mutex mutex_;
  std::map<std::string, std::pair<std::string, std::uint64_t>> entries_;
  std::uint64_t cas_ = 0;
};

}  // namespace

TEST_CASE("meta: a lock cycle is 2 round trips and an extend 1; without meta, 3 and 2") {
  test::MemcachedProcess server;  // its own: nothing else is counted
  for (bool binary : {false, true}) {
    for (bool meta : {true, false}) {
      CAPTURE(binary);
      CAPTURE(meta);
      auto cache = cache_on({server.server()}, binary, {.key_prefix = test::unique("trips")}, meta);
      { cachelock::Lock warm{"warm", {.cache = cache}}; }  // the first add per server checks CAS ids
      auto before = Counts::of(server);
      {
        cachelock::Lock lock{"job", {.cache = cache, .ttl = 60s}};
        auto held = Counts::of(server);
        CHECK(held.total() - before.total() == 1);  // the add
        CHECK(lock.extend());
        auto extended = Counts::of(server);
        CHECK(extended.total() - held.total() == (meta ? 1 : 2));  // cas, after a gets without meta
        CHECK(extended.gets == held.gets + (meta ? 0 : 1));
        before.sets += extended.sets - held.sets;  // count the cycle alone below
        before.gets += extended.gets - held.gets;
      }
      auto after = Counts::of(server);
      CHECK(after.total() - before.total() == (meta ? 2 : 3));
      CHECK(after.gets == before.gets + (meta ? 0 : 1));
    }
  }
}

TEST_CASE("meta: after a restart, a release never removes another owner's entry that has our CAS id") {
  // memcached counts CAS ids from 1 again after a restart. A release that
  // trusted the id our add got could delete the entry of the next owner
  // when that entry got the same id. The id is trusted only on a connection
  // opened before the add and still open: a restart closes it.
  test::MemcachedProcess server;
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("restart-cas")});
  auto stored = cache->make_key("job");
  CHECK(cache->add("job", "our-token", 60s));
  auto ours = words_of(server.command("mg " + stored + " c\r\n"));
  REQUIRE(ours.size() == 2);
  REQUIRE(ours[1].starts_with("c"));
  auto our_cas = std::stoull(ours[1].substr(1));
  server.stop();
  server.start();
  // Another owner's entry, given the same CAS id as ours.
  std::string theirs;
  for (std::uint64_t i = 0; i < our_cas + 5 && theirs != ours[1]; ++i) {
    server.command("md " + stored + "\r\n");
    auto reply = words_of(server.command("ms " + stored + " 11 T60 ME c\r\ntheir-token\r\n"));
    REQUIRE(reply.size() == 2);
    theirs = reply[1];
  }
  REQUIRE(theirs == ours[1]);
  CHECK_FALSE(cache->erase_if_equals("job", "our-token"));
  auto left = server.raw_get(stored);
  REQUIRE(left.has_value());
  CHECK(left->value == "their-token");
  CHECK_FALSE(cache->replace_if_equals("job", "our-token", "our-token-2"));
  left = server.raw_get(stored);
  REQUIRE(left.has_value());
  CHECK(left->value == "their-token");
}

TEST_CASE("meta: a release or extend whose CAS id went stale compares the value, in one round trip more") {
  auto& server = test::shared_memcached();
  auto cache = cache_on({server.server()}, false, {.key_prefix = test::unique("stale-cas")});
  auto stored = cache->make_key("job");
  CHECK(cache->add("job", "our-token", 60s));
  // Someone rewrites the same value (its CAS id changes): still our value.
  CHECK(server.command("ms " + stored + " 9 T60\r\nour-token\r\n") == "HD\r\n");
  CHECK(cache->replace_if_equals("job", "our-token", "our-token-2", 60s));
  CHECK(server.raw_get(stored)->value == "our-token-2");
  CHECK(server.command("ms " + stored + " 11 T60\r\nour-token-2\r\n") == "HD\r\n");
  CHECK(cache->erase_if_equals("job", "our-token-2"));
  CHECK_FALSE(server.raw_get(stored).has_value());
  // Another owner's value under the key: left alone.
  CHECK(cache->add("job", "our-token", 60s));
  CHECK(server.command("ms " + stored + " 11 T60\r\ntheir-token\r\n") == "HD\r\n");
  CHECK_FALSE(cache->erase_if_equals("job", "our-token"));
  CHECK_FALSE(cache->replace_if_equals("job", "our-token", "x", 60s));
  CHECK(server.raw_get(stored)->value == "their-token");
}

TEST_CASE("meta: a call whose write was carried out but whose reply was lost is made again, and done once") {
  // The connection closes after the server did what was asked: the call is
  // made again on a new connection, where the CAS id is not trusted, so it
  // reads the value and must know its own.
  MetaFake store;
  test::FakeMemcached fake{[&](const std::string& command, const std::string& data) { return store(command, data); }};
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {fake.server()}, .connect_timeout = 300ms, .timeout = 300ms});
  CHECK_FALSE(cache->get("warm").has_value());  // the connection has served a call: a close is a retry
  store.drop_reply_to = "ms";
  CHECK(cache->add("job", "token", 60s));  // stored by the first attempt, found by the retry
  CHECK(cache->get("job") == "token");
  store.drop_reply_to = "ms";
  CHECK(cache->replace_if_equals("job", "token", "token-2", 60s));  // an extend: still ours
  CHECK(cache->get("job") == "token-2");
  CHECK(cache->erase_if_equals("job", "token-2"));
  CHECK_FALSE(cache->get("job").has_value());
  // A release whose delete was carried out reads nothing on its retry: it
  // reports the key gone, and nothing is left held.
  CHECK(cache->add("job", "token", 60s));
  store.drop_reply_to = "md";
  CHECK_FALSE(cache->erase_if_equals("job", "token"));
  CHECK_FALSE(cache->get("job").has_value());
}

TEST_CASE("meta: a server older than 1.6.10 is asked add, gets and cas, on connections of our own") {
  std::atomic<int> probes{0};
  std::mutex mutex;
  std::map<std::string, std::string> stored;
  using Reply = std::optional<std::string>;
  test::FakeMemcached old_server{[&](const std::string& command, const std::string& data) -> Reply {
    auto words = words_of(command);
    std::lock_guard lock{mutex};
    if (words[0] == "version") {
      ++probes;
      return std::string{"VERSION 1.6.9\r\n"};  // answers mn, but writes ms otherwise
    }
    if (words[0] == "add") return stored.emplace(words[1], data).second ? "STORED\r\n" : "NOT_STORED\r\n";
    if (words[0] == "gets") {
      auto at = stored.find(words[1]);
      if (at == stored.end()) return std::string{"END\r\n"};
      return "VALUE " + words[1] + " 0 " + std::to_string(at->second.size()) + " 7\r\n" + at->second + "\r\nEND\r\n";
    }
    if (words[0] == "cas") {
      if (!stored.contains(words[1])) return std::string{"NOT_FOUND\r\n"};
      if (words.size() != 6 || words[5] != "7") return std::string{"EXISTS\r\n"};  // the id gets sent
      stored.erase(words[1]);  // stored already expired: a release
      return std::string{"STORED\r\n"};
    }
    return std::string{"ERROR\r\n"};
  }};
  old_server.script_version = true;
  MemcachedCache cache{{.servers = {old_server.server()}, .connect_timeout = 300ms, .timeout = 300ms}};
  for (int i = 0; i < 3; ++i) {
    CHECK(cache.add("job", "token"));
    CHECK(cache.erase_if_equals("job", "token"));
  }
  CHECK(probes.load() == 1);  // asked once per connection, not at every call
}

TEST_CASE("meta: a server older than 1.6.10 that sends wrong replies fails the call, never aborts") {
  // libmemcached 1.1.4 aborts the process on an assertion when a text
  // `add`, `set` or `cas` is answered with END or a VALUE block. The lock
  // operations never reach it: to an older server they are sent by
  // cachelock's own connections too, and read by its parser.
  using test::FakeMemcached;
  const std::vector<std::pair<std::string, std::string>> replies = {
      {"END", "END\r\n"},
      {"a VALUE block", "VALUE :1:job 0 1 9\r\nx\r\nEND\r\n"},
      {"a value for another key", "VALUE :1:other 0 1 9\r\nx\r\nEND\r\n"},
      {"a value without END", "VALUE :1:job 0 1 9\r\nx\r\n"},
      {"a value longer than it said", "VALUE :1:job 0 1 9\r\nxyz\r\nEND\r\n"},
      {"a malformed value line", "VALUE :1:job zero 1\r\nx\r\nEND\r\n"},
      {"a CAS id that is no number", "VALUE :1:job 0 1 abc\r\nx\r\nEND\r\n"},
      {"HTTP", "HTTP/1.1 400 Bad Request\r\n\r\n"},
      {"garbage bytes", std::string{"\x80\x01\x00\xff\r\n", 6}},
      {"a line cut short, then a close", std::string{"STOR"} + std::string{FakeMemcached::hang_up}},
      {"two replies", "STORED\r\nSTORED\r\n"},
      {"SERVER_ERROR", "SERVER_ERROR out of memory\r\n"},
      {"a silent close", std::string{FakeMemcached::hang_up}},
  };
  for (const auto& [what, reply] : replies) {
    CAPTURE(what);
    FakeMemcached old_server{[&](const std::string& command) -> std::optional<std::string> {
      if (command == "version") return std::string{"VERSION 1.5.22\r\n"};
      return reply;
    }};
    old_server.script_version = true;
    auto cache = std::make_shared<MemcachedCache>(
        MemcachedOptions{.servers = {old_server.server()}, .connect_timeout = 300ms, .timeout = 300ms});
    // An acquire answered wrongly fails (a lock is never taken on a reply
    // that is not STORED).
    CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
    CHECK_THROWS_AS(cache->add("job", "token"), CacheError);
    // To the others some of these replies are answers (END: a miss); any
    // other is a CacheError, and none reads as a release or extend done.
    for (auto& call : std::vector<std::function<bool()>>{
             [&] { return cache->get("job") == "token"; },
             [&] { return cache->erase_if_equals("job", "token"); },
             [&] { return cache->replace_if_equals("job", "token", "token-2"); }}) {
      bool done = false;
      CHECK_NOTHROW([&] {
        try {
          done = call();
        } catch (const CacheError&) {
        }
      }());
      CHECK_FALSE(done);
    }
  }
}

TEST_CASE("meta: a wrong, cut or hostile reply fails the call, never aborts, and the next call starts afresh") {
  // Each reply is what the server sends to every lock operation's first
  // command. A real memcached never sends them; a foreign
  // server, a broken proxy or an attacker on the path could.
  using test::FakeMemcached;
  const std::vector<std::pair<std::string, std::string>> replies = {
      {"END to everything", "END\r\n"},
      {"a text-protocol value", "VALUE k 0 1\r\nx\r\nEND\r\n"},
      {"STORED", "STORED\r\n"},
      {"HTTP", "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"},
      {"garbage bytes", std::string{"\x80\x01\x00\xff\r\n", 6}},
      {"a line cut short, then a close", std::string{"HD c1"} + std::string{FakeMemcached::hang_up}},
      {"a value cut short, then a close", std::string{"VA 5 c1\r\nab"} + std::string{FakeMemcached::hang_up}},
      {"a value longer than it said", "VA 1 c1\r\nabc\r\n"},
      {"a huge value length", "VA 99999999999999999999999 c1\r\n"},
      {"a value over the limit (64 MiB)", "VA 67108865 c1\r\n"},
      {"a CAS id that overflows", "HD c18446744073709551616\r\n"},
      {"a CAS id that is no number", "HD cabc\r\n"},
      {"two CAS ids", "HD c1 c2\r\n"},
      {"a malformed flag", "HD  c1\r\n"},
      {"two replies for one request", "HD c1\r\nHD c2\r\n"},
      {"a line with no end", std::string(2000, 'H')},
      {"CLIENT_ERROR", "CLIENT_ERROR bad data chunk\r\n"},
      {"SERVER_ERROR", "SERVER_ERROR out of memory storing object\r\n"},
      {"ERROR", "ERROR\r\n"},
      {"a silent close", std::string{FakeMemcached::hang_up}},
  };
  for (const auto& [what, reply] : replies) {
    CAPTURE(what);
    std::atomic<bool> hostile{true};
    MetaFake store{[&](const std::string&) -> std::optional<std::string> {
      if (hostile) return reply;
      return std::nullopt;
    }};
    FakeMemcached fake{[&](const std::string& command, const std::string& data) { return store(command, data); }};
    auto cache = std::make_shared<MemcachedCache>(
        MemcachedOptions{.servers = {fake.server()}, .connect_timeout = 300ms, .timeout = 300ms},
        cachelock::CacheOptions{});
    CHECK_THROWS_AS(cache->add("job", "token"), CacheError);
    CHECK_THROWS_AS(cache->get("job"), CacheError);
    CHECK_THROWS_AS(cache->erase_if_equals("job", "token"), CacheError);
    CHECK_THROWS_AS(cache->replace_if_equals("job", "token", "token-2"), CacheError);
    CHECK_THROWS_AS(cachelock::Lock("job", {.cache = cache}), CacheError);
    // Whatever the bad reply left on the connection is never read as the
    // answer to a later call.
    hostile = false;
    CHECK(cache->add("job", "token"));
    CHECK(cache->get("job") == "token");
    CHECK_FALSE(cache->add("job", "other"));
    CHECK(cache->erase_if_equals("job", "token"));
  }
}

TEST_CASE("meta: a server that answers END to everything fails each call, never aborts") {
  // libmemcached aborts the process on an assertion for such a server
  // (text protocol, a storage command answered END); the lock operations
  // never reach it: the `version` before them is answered wrongly.
  test::FakeMemcached end_to_all{[](const std::string&) { return std::string{"END\r\n"}; }};
  end_to_all.script_version = true;
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {end_to_all.server()}, .connect_timeout = 300ms, .timeout = 300ms});
  auto message = cache_error_of([&] { cachelock::Lock("job", {.cache = cache}); });
  CHECK(message == "memcached " + end_to_all.server().to_string() +
                       ": add ':1:job' failed: the server does not speak memcached's protocol: its reply to "
                       "'version' is not memcached's: 'END\\r\\n'");
  CHECK_THROWS_AS(cache->get("job"), CacheError);
}

TEST_CASE("meta: a silent server fails a call within the timeout, and its late reply is never read") {
  using test::FakeMemcached;
  std::atomic<int> late{1};
  MetaFake store{[&](const std::string& command) -> std::optional<std::string> {
    if (command.starts_with("ms") && late.exchange(0) == 1) {
      std::this_thread::sleep_for(600ms);
      return std::string{"HD c99\r\n"};  // the add "succeeded", too late
    }
    return std::nullopt;
  }};
  FakeMemcached fake{[&](const std::string& command, const std::string& data) { return store(command, data); }};
  MemcachedCache cache{{.servers = {fake.server()}, .connect_timeout = 300ms, .timeout = 300ms}};
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS(cache.add("job", "token"), doctest::Contains("no complete reply within 300 ms"), CacheError);
  CHECK(elapsed_ms(start) < test::slow(900ms).count());
  std::this_thread::sleep_for(400ms);  // the late reply arrives
  CHECK(cache.add("job", "other"));    // on a new connection: the fake's own answer
  CHECK(cache.get("job") == "other");
}

TEST_CASE("meta: the meta_protocol option turns the meta path off") {
  auto& server = test::shared_memcached();
  auto off = cache_on({server.server()}, false, {.key_prefix = test::unique("meta-off")}, false);
  CHECK_FALSE(off->memcached_options().meta_protocol);
  CHECK(cache_on({server.server()})->memcached_options().meta_protocol);
  auto before = server.stat("cmd_get");
  { cachelock::Lock lock{"job", {.cache = off}}; }
  CHECK(server.stat("cmd_get") >= before + 1);  // gets + cas: the libmemcached path
}

TEST_CASE("meta: a dead or unreachable server fails a lock call within its timeouts, and frees its pool place") {
  // Refused: at once, and every later call tries again.
  test::MemcachedProcess server;
  auto cache = std::make_shared<MemcachedCache>(
      MemcachedOptions{.servers = {server.server()}, .connect_timeout = 300ms, .timeout = 300ms, .pool_size = 1},
      cachelock::CacheOptions{.key_prefix = test::unique("dead")});
  server.stop();
  for (int i = 0; i < 3; ++i) {
    auto start = Clock::now();
    CHECK(cache_error_of([&] { cachelock::Lock("job", {.cache = cache}); }) ==
          "memcached " + server.location() + ": add '" + cache->make_key("job") +
              "' failed: cannot connect: Connection refused");
    CHECK(elapsed_ms(start) < test::slow(300ms).count());
  }
  // No failed connect kept its place in the pool of one: the next call
  // connects, rather than waiting for a free connection.
  server.start();
  { cachelock::Lock lock{"job", {.cache = cache}}; }

  // Unanswered: connect_timeout once, then skipped for retry_timeout.
  UnansweredPort down;
  auto location = "127.0.0.1:" + std::to_string(down.port());
  MemcachedCache silent{{.servers = {{"127.0.0.1", down.port()}},
                         .connect_timeout = 300ms,
                         .timeout = 300ms,
                         .retry_timeout = 1500ms}};
  auto start = Clock::now();
  CHECK(cache_error_of([&] { silent.add("job", "v"); }) ==
        "memcached " + location + ": add ':1:job' failed: no answer to a connect within connect_timeout (300 ms)");
  CHECK(elapsed_ms(start) < test::slow(600ms).count());
  start = Clock::now();
  CHECK_THROWS_WITH_AS(silent.erase_if_equals("job", "v"), doctest::Contains("skipped for"), CacheError);
  CHECK(elapsed_ms(start) < test::slow(100ms).count());
}

TEST_CASE("meta: libmemcached aborts on a text add answered with END, which the lock path never sends it") {
  // Why the lock operations have connections of their own: with
  // meta_protocol: false, libmemcached 1.1.4 reads such a reply and aborts
  // the whole process (storage.cc, an assertion). Shown in a child process.
  test::FakeMemcached end_to_all{[](const std::string&) { return std::string{"END\r\n"}; }};
  for (bool meta : {false, true}) {
    CAPTURE(meta);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::signal(SIGABRT, SIG_DFL);  // the test runner's handler would report a crash of the parent's test
      MemcachedCache cache{{.servers = {end_to_all.server()}, .timeout = 300ms, .meta_protocol = meta}};
      try {
        cache.add("job", "v");
      } catch (const CacheError&) {
        ::_exit(69);
      }
      ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    if (meta) {
      CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 69));
    } else {
      CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT));
    }
  }
}

TEST_CASE("meta: lock_paths() says how the lock operations reach each server, as they find it") {
  using Path = cachelock::MemcachedLockPath;
  using Protocol = Path::Protocol;
  auto only_path = [](MemcachedOptions options) {
    auto paths = MemcachedCache{std::move(options)}.lock_paths();
    REQUIRE(paths.size() == 1);
    return paths.front();
  };
  auto& real = test::shared_memcached();
  auto meta = only_path({.servers = {real.server()}});
  CHECK(meta.server == real.location());
  CHECK(meta.protocol == Protocol::meta);
  CHECK(meta.reason.empty());
  CHECK(only_path({.servers = {real.server()}, .binary = true}).protocol == Protocol::meta);
  auto off = only_path({.servers = {real.server()}, .meta_protocol = false});
  CHECK(off.protocol == Protocol::libmemcached);
  CHECK(off.reason == "meta_protocol: false");
  // SASL is told from the options alone: nothing is asked.
  auto sasl = only_path({.servers = {real.server()}, .binary = true, .username = "u", .password = "p"});
  CHECK(sasl.protocol == Protocol::libmemcached);
  CHECK(sasl.reason == "SASL");

  // A server that closes text connections, to a binary alias: found out by
  // asking, as a first lock operation would.
  test::MemcachedProcess binary_only{{"-B", "binary"}};
  auto closes = only_path({.servers = {binary_only.server()}, .binary = true});
  CHECK(closes.protocol == Protocol::libmemcached);
  CHECK(closes.reason == "the server closes text connections");

  // A server that says it is 1.5.22 (a relay to the real one).
  Relay relay{real};
  test::FakeMemcached older{[&](const std::string& command, const std::string& data) -> std::optional<std::string> {
    if (command == "version") return std::string{"VERSION 1.5.22\r\n"};
    return relay(command, data);
  }};
  older.script_version = true;
  CHECK(only_path({.servers = {older.server()}}).protocol == Protocol::classic);

  // Several servers, each its own; a dead one fails the call, named.
  auto both = MemcachedCache{MemcachedOptions{.servers = {real.server(), older.server()}}}.lock_paths();
  REQUIRE(both.size() == 2);
  CHECK(both[0].protocol == (both[0].server == real.location() ? Protocol::meta : Protocol::classic));
  CHECK(both[1].protocol == (both[1].server == real.location() ? Protocol::meta : Protocol::classic));
  test::MemcachedProcess gone;
  auto dead = gone.server();
  gone.stop();
  const auto named = "memcached " + dead.to_string() + ": version";
  CHECK_THROWS_WITH_AS(MemcachedCache(MemcachedOptions{.servers = {dead}}).lock_paths(),
                       doctest::Contains(named.c_str()), CacheError);
}
