// MemoryCache: the conformance suite, plus what only the memory backend does.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "cache_conformance.hpp"

using namespace std::chrono_literals;

namespace {

struct MemoryBackend {
  static constexpr const char* name = "memory";
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    // Two caches built with the same prefix must share entries, as two
    // clients of one server do; memory caches share them through this table.
    static std::mutex mutex;
    static std::map<std::pair<std::string, int>, std::weak_ptr<cachelock::Cache>> shared;
    std::lock_guard lock{mutex};
    auto& slot = shared[{options.key_prefix, options.version}];
    if (auto existing = slot.lock(); existing && existing->options().timeout == options.timeout) {
      return existing;
    }
    auto cache = std::make_shared<cachelock::MemoryCache>(std::move(options));
    slot = cache;
    return cache;
  }
  static constexpr auto short_ttl = 200ms;
  static constexpr auto expired_after = 400ms;
};

}  // namespace

TYPE_TO_STRING(MemoryBackend);
CACHELOCK_CONFORMANCE(MemoryBackend);

TEST_CASE("memory: two MemoryCache objects do not share entries") {
  cachelock::MemoryCache a, b;
  a.set("foo", "1");
  b.set("foo", "2");
  CHECK(a.get("foo") == "1");
  a.erase("foo");
  CHECK(b.get("foo") == "2");
}

TEST_CASE("memory: expired entries are swept as the table grows") {
  cachelock::MemoryCache cache;
  constexpr auto ttl = 500ms;
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 10'000; ++i) cache.set("old-" + std::to_string(i), "v", ttl);
  // Under a sanitizer the inserts can outlast the ttl, and then growing the
  // table already sweeps some of them.
  if (std::chrono::steady_clock::now() - started < ttl) CHECK(cache.size() == 10'000);
  std::this_thread::sleep_until(started + ttl + 50ms);
  for (int i = 0; i < 10'000; ++i) cache.set("new-" + std::to_string(i), "v");
  // Every shard doubled at least once while the new keys went in, and each
  // doubling swept the expired old keys.
  CHECK(cache.size() < 12'000);
  CHECK(cache.size() >= 10'000);
}

TEST_CASE("memory: without max_entries nothing is evicted") {
  cachelock::MemoryCache cache;
  for (int i = 0; i < 5'000; ++i) CHECK(cache.add("lock-" + std::to_string(i), "v"));
  CHECK(cache.size() == 5'000);
  CHECK(cache.get("lock-0") == "v");
}

TEST_CASE("memory: max_entries culls as Django's LocMemCache does") {
  SUBCASE("cull_frequency 3 drops about a third when full") {
    cachelock::MemoryCache cache{{.max_entries = 300}};
    for (int i = 0; i < 1'000; ++i) cache.set("k-" + std::to_string(i), "v");
    CHECK(cache.size() <= 300);
    CHECK(cache.size() >= 150);
  }
  SUBCASE("cull_frequency 0 empties the cache when full") {
    cachelock::MemoryCache cache{{.max_entries = 10, .cull_frequency = 0}};
    for (int i = 0; i < 10; ++i) cache.set("k-" + std::to_string(i), "v");
    CHECK(cache.size() == 10);
    cache.set("one-more", "v");
    CHECK(cache.size() == 1);
    CHECK(cache.get("one-more") == "v");
  }
  SUBCASE("expired entries go first") {
    cachelock::MemoryCache cache{{.max_entries = 10}};
    for (int i = 0; i < 5; ++i) cache.set("short-" + std::to_string(i), "v", 20ms);
    for (int i = 0; i < 5; ++i) cache.set("long-" + std::to_string(i), "v");
    std::this_thread::sleep_for(50ms);
    cache.set("trigger", "v");
    for (int i = 0; i < 5; ++i) CHECK(cache.get("long-" + std::to_string(i)) == "v");
  }
}

TEST_CASE("memory: incr keeps the entry's lifetime and refuses overflow") {
  cachelock::MemoryCache cache;
  cache.set("n", "1", 100ms);
  CHECK(cache.incr("n") == 2);
  std::this_thread::sleep_for(200ms);
  CHECK_FALSE(cache.get("n").has_value());
  cache.set("max", std::to_string(INT64_MAX));
  CHECK_THROWS_WITH_AS(cache.incr("max"),
                       "incr ':1:max' failed: 9223372036854775807 + 1 overflows a 64-bit integer",
                       cachelock::CacheError);
}

TEST_CASE("memory: a cache whose default timeout is standard() is refused") {
  CHECK_THROWS_WITH_AS(cachelock::MemoryCache({.timeout = cachelock::Timeout::standard()}),
                       "cache options: timeout must be a duration or never, not standard()",
                       cachelock::ConfigError);
}

TEST_CASE("memory: keys may hold any byte above 0x20 but 0x7f") {
  cachelock::MemoryCache cache;
  const std::string fine[] = {"café-ü", "a:b/c.d", std::string(40, '~'), "\x80\xff", "k\x21"};
  for (const auto& key : fine) {
    CAPTURE(key);
    CHECK_NOTHROW(cache.set(key, "v"));
    CHECK(cache.get(key) == "v");
  }
  // Bad bytes at every position of keys of every length up to 40, so each
  // 8-byte lane (and the overlapping last one) is checked.
  for (std::size_t size = 1; size <= 40; ++size) {
    for (std::size_t at = 0; at < size; ++at) {
      for (char bad : {' ', '\0', '\x1f', '\x7f', '\n'}) {
        std::string key(size, 'k');
        key[at] = bad;
        CAPTURE(size);
        CAPTURE(at);
        CHECK_THROWS_WITH_AS(cache.set(key, "v"),
                             doctest::Contains((" at byte " + std::to_string(at + 3) + "; ").c_str()),  // after ":1:"
                             cachelock::InvalidKeyError);
      }
    }
    CHECK_NOTHROW(cache.set(std::string(size, 'k'), "v"));
  }
}

TEST_CASE("memory: a value grows, shrinks and grows again under one key") {
  cachelock::MemoryCache cache;
  // Each entry holds its key and value in one block sized for the first
  // value: a longer one moves the entry, a shorter one reuses the block.
  const std::string sizes[] = {"v", std::string(300, 'a'), "bb", std::string(5000, 'c'), ""};
  for (const auto& value : sizes) {
    cache.set("k", value, 60s);
    CHECK(cache.get("k") == value);
  }
  CHECK(cache.add("other", "1"));
  CHECK(cache.replace_if_equals("k", "", std::string(70, 'd'), 60s));
  CHECK(cache.get("k") == std::string(70, 'd'));
  CHECK(cache.incr("other", 1'000'000'000'000) == 1'000'000'000'001);  // grows the value
  CHECK(cache.get("other") == "1000000000001");
  CHECK(cache.size() == 2);
}

TEST_CASE("memory: many keys through table growth, then erase and clear") {
  cachelock::MemoryCache cache;
  constexpr int keys = 50'000;
  for (int i = 0; i < keys; ++i) REQUIRE(cache.add("key-" + std::to_string(i), std::to_string(i)));
  CHECK(cache.size() == keys);
  for (int i = 0; i < keys; i += 7) CHECK(cache.get("key-" + std::to_string(i)) == std::to_string(i));
  for (int i = 0; i < keys; i += 2) CHECK(cache.erase_if_equals("key-" + std::to_string(i), std::to_string(i)));
  CHECK(cache.size() == keys / 2);
  CHECK_FALSE(cache.get("key-0").has_value());
  CHECK(cache.get("key-1") == "1");
  cache.clear();
  CHECK(cache.size() == 0);
  CHECK(cache.add("key-1", "again"));
}

TEST_CASE("memory: wait_until_absent wakes on release, erase, clear and expiry") {
  using Clock = std::chrono::steady_clock;
  using cachelock::WaitResult;
  cachelock::MemoryCache cache;
  // Entries live 300 s and waits end at 20 s at the latest; the changes below
  // come within 150 ms. A wait that returns absent well before its deadline
  // was woken by the change (a missed wake-up would sleep the whole 20 s).
  const auto start = Clock::now();
  const auto far = start + 20s;
  auto woken_early = [&] { return Clock::now() - start < 10s; };
  // Runs `change` on another thread 50 ms from now.
  auto later = [](auto change) {
    return std::thread{[change] {
      std::this_thread::sleep_for(50ms);
      change();
    }};
  };

  CHECK(test::wait_until_absent(cache, "free", far) == WaitResult::absent);

  SUBCASE("a held key until its deadline: timed out, not before it") {
    cache.add("held", "t", 300s);
    CHECK(test::wait_until_absent(cache, "held", start + 100ms) == WaitResult::timed_out);
    CHECK(Clock::now() - start >= 100ms);
  }
  SUBCASE("released by erase_if_equals from another thread") {
    cache.add("held", "t", 300s);
    auto holder = later([&] { CHECK(cache.erase_if_equals("held", "t")); });
    CHECK(test::wait_until_absent(cache, "held", far) == WaitResult::absent);
    CHECK(woken_early());
    holder.join();
  }
  SUBCASE("erased, or the whole cache cleared") {
    cache.add("a", "t", 300s);
    cache.add("b", "t", 300s);
    auto other = later([&] {
      cache.erase("a");
      std::this_thread::sleep_for(50ms);
      cache.clear();
    });
    CHECK(test::wait_until_absent(cache, "a", far) == WaitResult::absent);
    CHECK(test::wait_until_absent(cache, "b", far) == WaitResult::absent);
    CHECK(woken_early());
    other.join();
  }
  SUBCASE("expired: woken at the entry's deadline, with nobody touching it") {
    cache.add("held", "t", 150ms);
    CHECK(test::wait_until_absent(cache, "held", far) == WaitResult::absent);
    CHECK(Clock::now() - start >= 150ms);
    CHECK(woken_early());
    CHECK(cache.add("held", "next", 60s));  // the expired entry is gone at once
  }
  SUBCASE("given an earlier expiry while waited for: by touch, set or replace_if_equals") {
    cache.add("held", "t", 300s);
    std::thread shorten;
    SUBCASE("touch") { shorten = later([&] { cache.touch("held", 100ms); }); }
    SUBCASE("set") { shorten = later([&] { cache.set("held", std::string(500, 'x'), 100ms); }); }
    SUBCASE("replace_if_equals (a Lock's extend)") {
      shorten = later([&] { CHECK(cache.replace_if_equals("held", "t", "u", 100ms)); });
    }
    CHECK(test::wait_until_absent(cache, "held", far) == WaitResult::absent);
    CHECK(Clock::now() - start >= 150ms);
    CHECK(woken_early());
    if (shorten.joinable()) shorten.join();
  }
  SUBCASE("keys that merely share the shard do not end the wait") {
    cache.add("held", "t", 300s);
    std::thread other{[&] {
      // 2,000 keys: about 30 of them land in the waited key's shard.
      for (int i = 0; i < 2'000; ++i) {
        cache.add("other-" + std::to_string(i), "t");
        cache.erase("other-" + std::to_string(i));
      }
    }};
    CHECK(test::wait_until_absent(cache, "held", start + 200ms) == WaitResult::timed_out);
    other.join();
  }
}

TEST_CASE("wait_until_absent: backends that cannot watch keys say so at once") {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  test::MapCache custom;
  CHECK(test::wait_until_absent(custom, "k", deadline) == cachelock::WaitResult::unsupported);
  cachelock::DummyCache dummy;
  CHECK(test::wait_until_absent(dummy, "k", deadline) == cachelock::WaitResult::unsupported);
  CHECK(std::chrono::steady_clock::now() < deadline - 5s);
}

TEST_CASE("memory: max_entries keeps its count through sweeps of expired entries") {
  // Expired entries swept as the table grows must leave the count: counted
  // twice, the cache would think itself full and cull live keys.
  cachelock::MemoryCache cache{{.max_entries = 8'000}};
  for (int i = 0; i < 5'000; ++i) cache.set("short-" + std::to_string(i), "v", 20ms);
  std::this_thread::sleep_for(60ms);
  for (int i = 0; i < 5'000; ++i) cache.set("long-" + std::to_string(i), "v");
  int missing = 0;
  for (int i = 0; i < 5'000; ++i) missing += !cache.get("long-" + std::to_string(i)).has_value();
  CHECK(missing == 0);
}

TEST_CASE("memory: a small max_entries is honoured") {
  for (std::size_t limit : {std::size_t{0}, std::size_t{1}, std::size_t{10}, std::size_t{100}}) {
    CAPTURE(limit);
    cachelock::MemoryCache cache{{.max_entries = limit}};
    for (int i = 0; i < 1'000; ++i) cache.set("k-" + std::to_string(i), "v");
    CHECK(cache.size() <= std::max<std::size_t>(limit, 1));  // 0 culls before every write, as Django's
    CHECK(cache.size() >= 1);
    CHECK(cache.get("k-999") == "v");  // the newest write is never culled
  }
}

TEST_CASE("memory: an entry is never gone before its timeout") {
  // Deadlines are read off the precise clock: whenever a read happens before
  // set time + timeout, the entry is there, however late the kernel tick.
  using Clock = std::chrono::steady_clock;
  cachelock::MemoryCache cache;
  // 20 reads that land inside the timeout; a slow machine misses some, so up
  // to 500 rounds are tried. A run where none landed checked nothing: fail.
  int checked = 0;
  int rounds = 0;
  for (; rounds < 500 && checked < 20; ++rounds) {
    auto set_at = Clock::now();
    cache.set("k", "v", 30ms);
    std::this_thread::sleep_until(set_at + 29ms);
    auto value = cache.get("k");
    if (Clock::now() < set_at + 30ms) {  // read in time
      CHECK(value == "v");
      ++checked;
    }
  }
  MESSAGE(checked << " of " << rounds << " reads landed inside the timeout");
  CHECK(checked > 0);
}
