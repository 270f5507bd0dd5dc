// Helpers shared by the Lock suites (test_lock*.cpp).
#pragma once

#include <memory>
#include <string>

#include <cachelock/cachelock.hpp>

namespace test {

/// The global registry's default cache.
inline std::shared_ptr<cachelock::Cache> default_cache() { return cachelock::CacheRegistry::global().get(); }

/// Whether `key` holds `lock`'s current token. Read between two equal reads
/// of the token: a renewal stores a new one under the lock's mutex, which
/// token() takes too, so one in between shows as two different reads.
inline bool holds_token(cachelock::Cache& cache, const std::string& key, const cachelock::Lock& lock) {
  for (;;) {
    auto before = lock.token();
    auto stored = cache.get(key);
    if (lock.token() == before) return stored == before;
  }
}

}  // namespace test
