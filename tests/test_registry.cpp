// CacheRegistry in code: the built-in default, aliases, factories.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "support.hpp"

using cachelock::CacheRegistry;
using cachelock::ConfigError;

namespace {
// Made before main, so destroyed after the global registry was first used:
// a lock taken and a fork made during static destruction must still find
// the registry (its fork handlers lock its mutex). ASan reports a use after
// free if the registry has gone; a failure here ends the program with 3.
struct AfterMain {
  ~AfterMain() {
    if (!used) return;
    try {
      cachelock::Lock lock{"after-main"};
      pid_t child = fork();
      if (child == 0) _exit(0);
      int status = 0;
      if (child < 0 || waitpid(child, &status, 0) != child || status != 0) _exit(3);
    } catch (...) {
      _exit(3);
    }
  }
  bool used = false;
} after_main;
}  // namespace

TEST_CASE("the global registry outlives static destruction") {
  CacheRegistry::global().get();
  after_main.used = true;  // checked as the program ends
}

TEST_CASE("a new registry holds one memory alias named default") {
  CacheRegistry registry;
  CHECK(registry.aliases() == std::vector<std::string>{"default"});
  CHECK(registry.default_alias() == "default");
  auto cache = registry.get();
  REQUIRE(cache != nullptr);
  CHECK(std::dynamic_pointer_cast<cachelock::MemoryCache>(cache) != nullptr);
  CHECK(cache->options().timeout == cachelock::Timeout{std::chrono::seconds{300}});
  CHECK(registry.get("default") == cache);
  CHECK(registry.get() == cache);  // built once
}

TEST_CASE("aliases are added, replaced and listed") {
  CacheRegistry registry;
  auto a = std::make_shared<cachelock::MemoryCache>();
  auto b = std::make_shared<cachelock::MemoryCache>();
  registry.add("locks", a);
  CHECK(registry.get("locks") == a);
  CHECK(registry.contains("locks"));
  CHECK_FALSE(registry.contains("nope"));
  registry.add("locks", b);
  CHECK(registry.get("locks") == b);
  registry.add("zeta", a);
  CHECK(registry.aliases() == std::vector<std::string>{"default", "locks", "zeta"});
  registry.remove("zeta");
  CHECK_FALSE(registry.contains("zeta"));
}

TEST_CASE("an unknown alias is a ConfigError listing the known ones") {
  CacheRegistry registry;
  registry.add("locks", std::make_shared<cachelock::MemoryCache>());
  CHECK_THROWS_WITH_AS(registry.get("lokcs"), "unknown cache alias 'lokcs' (known: 'default', 'locks')",
                       ConfigError);
  CHECK_THROWS_WITH_AS(registry.set_default_alias("lokcs"),
                       "cannot make 'lokcs' the default alias: unknown cache alias (known: "
                       "'default', 'locks')",
                       ConfigError);
  CHECK_THROWS_WITH_AS(registry.remove("lokcs"),
                       "unknown cache alias 'lokcs' (known: 'default', 'locks')", ConfigError);
  // A huge alias is quoted by its start and its length, not whole.
  std::string huge(1'000'000, 'a');
  for (auto attempt : {+[](CacheRegistry& r, const std::string& a) { r.get(a); },
                       +[](CacheRegistry& r, const std::string& a) { r.remove(a); },
                       +[](CacheRegistry& r, const std::string& a) { r.set_default_alias(a); }}) {
    try {
      attempt(registry, huge);
      FAIL("an unknown alias was accepted");
    } catch (const ConfigError& e) {
      CHECK(std::string_view{e.what()}.size() < 200);
      CHECK(std::string_view{e.what()}.find("(1000000 bytes)") != std::string_view::npos);
    }
  }
  CHECK_THROWS_WITH_AS(registry.add("", std::make_shared<cachelock::MemoryCache>()),
                       "cache alias names must not be empty", ConfigError);
  CHECK_THROWS_WITH_AS(registry.add("x", std::shared_ptr<cachelock::Cache>{}),
                       "alias 'x': the cache is null", ConfigError);
}

TEST_CASE("the default alias can be changed and is protected") {
  CacheRegistry registry;
  auto locks = std::make_shared<cachelock::MemoryCache>();
  registry.add("locks", locks);
  registry.set_default_alias("locks");
  CHECK(registry.default_alias() == "locks");
  CHECK(registry.get() == locks);
  CHECK_THROWS_WITH_AS(registry.remove("locks"),
                       "cannot remove alias 'locks': it is the default alias; set another default "
                       "first",
                       ConfigError);
  registry.remove("default");  // no longer the default, so it may go
  CHECK(registry.aliases() == std::vector<std::string>{"locks"});
  registry.reset();
  CHECK(registry.default_alias() == "default");
  CHECK(registry.aliases() == std::vector<std::string>{"default"});
}

TEST_CASE("a factory builds its cache once, on first use, even under contention") {
  CacheRegistry registry;
  std::atomic<int> built{0};
  registry.add("lazy", [&]() -> std::shared_ptr<cachelock::Cache> {
    ++built;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
    return std::make_shared<cachelock::MemoryCache>();
  });
  CHECK(built.load() == 0);
  std::vector<std::shared_ptr<cachelock::Cache>> seen(8);
  std::vector<std::thread> pool;
  for (int t = 0; t < 8; ++t) pool.emplace_back([&, t] { seen[t] = registry.get("lazy"); });
  for (auto& thread : pool) thread.join();
  CHECK(built.load() == 1);
  for (const auto& cache : seen) CHECK(cache == seen[0]);
  // Adding another alias keeps the built cache.
  registry.add("other", std::make_shared<cachelock::MemoryCache>());
  CHECK(registry.get("lazy") == seen[0]);
  CHECK(built.load() == 1);
}

TEST_CASE("a factory that throws is asked again next time") {
  CacheRegistry registry;
  int attempts = 0;
  registry.add("flaky", [&]() -> std::shared_ptr<cachelock::Cache> {
    if (++attempts == 1) throw cachelock::CacheError("server unreachable");
    return std::make_shared<cachelock::MemoryCache>();
  });
  CHECK_THROWS_WITH_AS(registry.get("flaky"), "server unreachable", cachelock::CacheError);
  CHECK(registry.get("flaky") != nullptr);
  CHECK(attempts == 2);
  registry.add("empty", [] { return std::shared_ptr<cachelock::Cache>{}; });
  CHECK_THROWS_WITH_AS(registry.get("empty"), "alias 'empty': its cache factory returned no cache", ConfigError);
}

TEST_CASE("a cache handed out keeps working after its alias is replaced") {
  CacheRegistry registry;
  auto old_cache = registry.get();
  old_cache->set("k", "v");
  registry.reset();
  CHECK(registry.get() != old_cache);
  CHECK(old_cache->get("k") == "v");
  CHECK_FALSE(registry.get()->get("k").has_value());
}

TEST_CASE("readers and writers of one registry can race safely") {
  CacheRegistry registry;
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  std::atomic<long> reads{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        auto cache = registry.get("default");
        CHECK(cache != nullptr);
        ++reads;
      }
    });
  }
  // Keep writing until the readers have overlapped many writes, however the
  // threads happen to be scheduled.
  for (int i = 0; i < 200 || reads.load() < 2'000; ++i) {
    registry.add("default", std::make_shared<cachelock::MemoryCache>());
    registry.add("x" + std::to_string(i % 5), std::make_shared<cachelock::MemoryCache>());
  }
  stop = true;
  for (auto& reader : readers) reader.join();
  CHECK(reads.load() >= 2'000);
}
