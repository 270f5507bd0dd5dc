// A user's own cache with only get_, set_ and erase_: the conformance cases
// its non-atomic fallbacks can pass, with stored keys and with user keys.
#include <doctest/doctest.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "cache_conformance.hpp"

using namespace std::chrono_literals;

namespace {

using Store = test::MapCache::Store;

// A cache on stored keys: every instance shares one map, as clients of one
// server do, so only the key function keeps prefixes and versions apart.
struct StoredKeysBackend {
  static constexpr const char* name = "custom-stored-keys";
  static std::shared_ptr<Store> server() {
    static auto store = std::make_shared<Store>();
    return store;
  }
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    return std::make_shared<test::MapCache>(std::move(options), server());
  }
  static constexpr auto short_ttl = 200ms;
  static constexpr auto expired_after = 400ms;
};

// A cache whose hooks receive user keys (HookKeys::user).
class UserKeysMapCache : public test::MapCache {
 public:
  UserKeysMapCache(cachelock::CacheOptions options, std::shared_ptr<Store> store)
      : MapCache{std::move(options), HookKeys::user, std::move(store)} {}
};

// Caches on user keys made with the same prefix and version share a map,
// as clients of one server share the stored keys those make. The table
// owns the maps: entries outlive the caches that wrote them, as a server's do.
struct UserKeysBackend {
  static constexpr const char* name = "custom-user-keys";
  static std::shared_ptr<Store> store_for(const cachelock::CacheOptions& options) {
    static std::mutex mutex;
    static std::map<std::pair<std::string, int>, std::shared_ptr<Store>> stores;
    std::lock_guard lock{mutex};
    auto& store = stores[{options.key_prefix, options.version}];
    if (!store) store = std::make_shared<Store>();
    return store;
  }
  static std::shared_ptr<cachelock::Cache> make(cachelock::CacheOptions options) {
    auto store = store_for(options);
    return std::make_shared<UserKeysMapCache>(std::move(options), std::move(store));
  }
  static constexpr auto short_ttl = 200ms;
  static constexpr auto expired_after = 400ms;
};

// Whether `store` holds `key`, and how many keys it holds.
bool holds(Store& store, std::string_view key) {
  std::lock_guard lock{store.mutex};
  return store.entries.contains(key);
}
std::size_t size_of(Store& store) {
  std::lock_guard lock{store.mutex};
  return store.entries.size();
}

}  // namespace

TYPE_TO_STRING(StoredKeysBackend);
TYPE_TO_STRING(UserKeysBackend);
CACHELOCK_CONFORMANCE_GET_SET_ERASE(StoredKeysBackend, UserKeysBackend);

TEST_CASE("custom: hooks receive the keys the backend asked for") {
  const cachelock::CacheOptions options{.key_prefix = test::unique("app"), .version = 3};
  auto stored = StoredKeysBackend::make(options);
  stored->set("job", "v");
  CHECK(holds(*StoredKeysBackend::server(), options.key_prefix + ":3:job"));
  CHECK_FALSE(holds(*StoredKeysBackend::server(), "job"));

  auto user = UserKeysBackend::make(options);
  user->set("job", "v");
  CHECK(holds(*UserKeysBackend::store_for(options), "job"));
  CHECK(size_of(*UserKeysBackend::store_for(options)) == 1);
}

TEST_CASE_TEMPLATE("custom: clear, which a get/set/erase cache cannot do, is refused", B,
                   StoredKeysBackend, UserKeysBackend) {
  auto cache = test::fresh<B>();
  cache->set("k", "v");
  CHECK_THROWS_WITH_AS(
      cache->clear(),
      "clear failed: this cache cannot remove all its entries (its backend does not implement clear_())",
      cachelock::CacheError);
  CHECK(cache->get("k") == "v");
}

TEST_CASE_TEMPLATE("custom: the incr fallback refuses a value that is not an integer", B,
                   StoredKeysBackend, UserKeysBackend) {
  const auto prefix = test::unique("app");
  auto cache = B::make({.key_prefix = prefix, .version = 3});
  cache->set("text", "seven");
  CHECK_THROWS_WITH_AS(cache->incr("text"),
                       ("incr '" + prefix + ":3:text' failed: the stored value is not an integer").c_str(),
                       cachelock::CacheError);
  CHECK(cache->get("text") == "seven");
}

TEST_CASE_TEMPLATE("custom: the incr fallback writes back with the cache's TIMEOUT", B,
                   StoredKeysBackend, UserKeysBackend) {
  // get_() cannot tell how long an entry had left, so its lifetime is not
  // kept, unlike on the built-in backends: a counter set never to expire
  // now lives TIMEOUT.
  auto cache = test::fresh<B>({.timeout = B::short_ttl});
  cache->set("n", "1", cachelock::Timeout::never());
  CHECK(cache->incr("n") == 2);
  std::this_thread::sleep_for(B::expired_after);
  CHECK_FALSE(cache->get("n").has_value());
}
