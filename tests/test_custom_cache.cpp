// A user's own cache with only get_, set_ and erase_: the conformance cases
// its non-atomic fallbacks can pass, with stored keys and with user keys.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cache_conformance.hpp"

using namespace std::chrono_literals;

namespace {

using Store = test::MapCache::Store;

// A cache on stored keys: every instance shares one map, as clients of one
// server do, so only the key function keeps prefixes and versions apart.
struct StoredKeysBackend {
  static constexpr const char* name = "custom, stored keys";
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

// A cache on user keys (HookKeys::user), as a backend that no other program
// reads may ask for: caches made with the same prefix and version share a
// map, as two MemoryCache handles on one cache would.
class UserKeysMapCache : public test::MapCache {
 public:
  UserKeysMapCache(cachelock::CacheOptions options, std::shared_ptr<Store> store)
      : MapCache{std::move(options), HookKeys::user, std::move(store)} {}
};

struct UserKeysBackend {
  static constexpr const char* name = "custom, user keys";
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

// The keys held in `store`.
std::vector<std::string> keys_in(Store& store) {
  std::lock_guard lock{store.mutex};
  std::vector<std::string> keys;
  for (const auto& entry : store.entries) keys.push_back(entry.first);
  return keys;
}

}  // namespace

TYPE_TO_STRING(StoredKeysBackend);
TYPE_TO_STRING(UserKeysBackend);
CACHELOCK_CONFORMANCE_ONE_CLIENT(StoredKeysBackend, UserKeysBackend);

TEST_CASE("custom: hooks receive the keys the backend asked for") {
  const cachelock::CacheOptions options{.key_prefix = test::unique("app"), .version = 3};
  StoredKeysBackend::make(options)->set("job", "v");
  auto stored = keys_in(*StoredKeysBackend::server());
  CHECK(std::count(stored.begin(), stored.end(), options.key_prefix + ":3:job") == 1);

  UserKeysBackend::make(options)->set("job", "v");
  CHECK(keys_in(*UserKeysBackend::store_for(options)) == std::vector<std::string>{"job"});
}

TEST_CASE("custom: the fallbacks' errors name the stored key, whichever keys the hooks get") {
  // incr falls back to a get, then a set; a value that is not an integer is
  // refused, named as memcached names it, and left as it was.
  for (auto make : {&StoredKeysBackend::make, &UserKeysBackend::make}) {
    auto cache = make({.key_prefix = "app", .version = 3});
    cache->set("text", "seven");
    CHECK_THROWS_WITH_AS(cache->incr("text"), "incr 'app:3:text': the stored value is not an integer",
                         cachelock::CacheError);
    CHECK(cache->get("text") == "seven");
    CHECK_THROWS_WITH_AS(cache->clear(), "clear: this cache cannot remove all its entries",
                         cachelock::CacheError);
    CHECK(cache->get("text") == "seven");
    CHECK(cache->erase("text"));
  }
}
