// Helpers shared by the test suites.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <cachelock/cachelock.hpp>

namespace test {

using namespace std::chrono_literals;

/// `d` stretched by $CACHELOCK_TEST_SLOWDOWN (scripts/test sets it for the
/// sanitizer runs, which make code several times slower), for tests whose
/// margins are timing: ttls, sleeps and deadlines scale together.
template <class Rep, class Period>
std::chrono::milliseconds slow(std::chrono::duration<Rep, Period> d) {
  static const double factor = [] {
    const char* text = std::getenv("CACHELOCK_TEST_SLOWDOWN");
    double value = text ? std::atof(text) : 1.0;
    return value >= 1.0 ? value : 1.0;
  }();
  return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double, std::milli>(d) * factor);
}

/// Milliseconds since `since`, on the steady clock.
inline long long elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
}

/// A key nobody else in this process has used: "stem-N".
inline std::string unique(std::string_view stem) {
  static std::atomic<int> next{0};
  return std::string{stem} + "-" + std::to_string(next.fetch_add(1));
}

/// Puts the global registry back to the built-in default on entry and exit,
/// so each test starts from the same state (as spdlog's tests do).
struct FreshRegistry {
  FreshRegistry() { cachelock::CacheRegistry::global().reset(); }
  ~FreshRegistry() { cachelock::CacheRegistry::global().reset(); }
  FreshRegistry(const FreshRegistry&) = delete;
  FreshRegistry& operator=(const FreshRegistry&) = delete;
};

/// Calls `cache`'s protected wait_until_absent(), as a waiting Lock does, so
/// the suites can test it on its own: a pointer to a protected member,
/// formed inside a subclass, may be applied to any Cache.
inline cachelock::WaitResult wait_until_absent(cachelock::Cache& cache, std::string_view key,
                                               std::chrono::steady_clock::time_point deadline) {
  struct Access : cachelock::Cache {
    static auto wait() { return &Access::wait_until_absent; }
  };
  return (cache.*Access::wait())(key, deadline);
}

/// A user's own cache with only the three required operations, on a map
/// (its Store), with stored keys unless a subclass asks for user keys.
/// Counts the calls so tests can see which path a lock took.
class MapCache : public cachelock::Cache {
 public:
  /// The entries, by the key the hooks receive. Caches given one Store share
  /// their entries, as clients of one server do.
  struct Store {
    std::mutex mutex;
    std::map<std::string, std::pair<std::string, std::chrono::steady_clock::time_point>, std::less<>>
        entries;
  };

  explicit MapCache(cachelock::CacheOptions options = {},
                    std::shared_ptr<Store> store = std::make_shared<Store>())
      : MapCache{std::move(options), HookKeys::stored, std::move(store)} {}

  std::atomic<int> gets{0}, sets{0}, erases{0};

 protected:
  /// Protected, as Cache's is: a backend picks user keys by subclassing.
  MapCache(cachelock::CacheOptions options, HookKeys hook_keys, std::shared_ptr<Store> store)
      : Cache{std::move(options), hook_keys}, store_{std::move(store)} {}

  std::optional<std::string> get_(std::string_view key) override {
    ++gets;
    std::lock_guard lock{store_->mutex};
    auto it = store_->entries.find(key);
    if (it == store_->entries.end()) return std::nullopt;
    if (it->second.second <= std::chrono::steady_clock::now()) {
      store_->entries.erase(it);
      return std::nullopt;
    }
    return it->second.first;
  }
  void set_(std::string_view key, std::string_view value, cachelock::Timeout timeout) override {
    ++sets;
    std::lock_guard lock{store_->mutex};
    auto expires = timeout.is_never() ? std::chrono::steady_clock::time_point::max()
                                      : std::chrono::steady_clock::now() + timeout.duration();
    store_->entries.insert_or_assign(std::string{key}, std::pair{std::string{value}, expires});
  }
  bool erase_(std::string_view key) override {
    ++erases;
    std::lock_guard lock{store_->mutex};
    auto it = store_->entries.find(key);
    if (it == store_->entries.end()) return false;
    bool live = it->second.second > std::chrono::steady_clock::now();
    store_->entries.erase(it);
    return live;  // an expired entry was not present
  }

 private:
  std::shared_ptr<Store> store_;
};

/// A MapCache that fails like a server that went away: while `down` is set
/// every operation throws CacheError ("flaky: the server is down"). With
/// `lose_reply` the next add stores its value and then throws, as an add
/// whose reply the network lost. `bound` is what operation_timeout() says.
class FlakyCache : public MapCache {
 public:
  using MapCache::MapCache;

  std::atomic<bool> down{false}, lose_reply{false};
  std::atomic<int> failures{0}, adds{0};
  std::chrono::milliseconds bound{0};

  std::chrono::milliseconds operation_timeout() const noexcept override { return bound; }

 protected:
  void fail_if_down() {
    if (down) {
      ++failures;
      throw cachelock::CacheError("flaky: the server is down");
    }
  }
  std::optional<std::string> get_(std::string_view key) override {
    fail_if_down();
    return MapCache::get_(key);
  }
  void set_(std::string_view key, std::string_view value, cachelock::Timeout timeout) override {
    fail_if_down();
    MapCache::set_(key, value, timeout);
  }
  bool erase_(std::string_view key) override {
    fail_if_down();
    return MapCache::erase_(key);
  }
  bool add_(std::string_view key, std::string_view value, cachelock::Timeout timeout) override {
    ++adds;
    fail_if_down();
    bool added = MapCache::add_(key, value, timeout);
    if (added && lose_reply.exchange(false)) {
      ++failures;
      throw cachelock::CacheError("flaky: the reply was lost");
    }
    return added;
  }
};

}  // namespace test
