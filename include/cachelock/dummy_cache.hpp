// A cache that stores nothing, the counterpart of Django's DummyCache.
#pragma once

#include <cachelock/export.hpp>

#include "cachelock/cache.hpp"

namespace cachelock {

/// Stores nothing: `add` always succeeds and `get` always misses, exactly as
/// Django's DummyCache. A lock on a dummy alias is therefore always acquired
/// and excludes nobody. Use it to switch locking off (tests, local runs),
/// never where exclusion matters.
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API DummyCache final : public Cache {
 public:
  using Cache::Cache;

 protected:
  std::optional<std::string> get_(std::string_view key) override;
  void set_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool erase_(std::string_view key) override;
  bool add_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool touch_(std::string_view key, Timeout timeout) override;
  std::optional<std::int64_t> incr_(std::string_view key, std::int64_t delta) override;
  bool erase_if_equals_(std::string_view key, std::string_view expected) override;
  bool replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                          Timeout timeout) override;
  void clear_() override;
};

}  // namespace cachelock
