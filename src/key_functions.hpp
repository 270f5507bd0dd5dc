// Key functions registered in code, which an alias's KEY_FUNCTION names
// (internal; CacheRegistry::add_key_function fronts it).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "cachelock/cache.hpp"
#include "cachelock/registry.hpp"

namespace cachelock::detail {

/// Django's own default key function: naming it is the same as naming none.
constexpr std::string_view django_default_key_function = "django.core.cache.backends.base.default_key_func";

/// The key functions of one registry, by name.
///
/// Thread safety: safe to share between threads.
class KeyFunctions {
 public:
  /// Adds or replaces `name`. Throws: ConfigError for an empty name or function.
  void add(std::string name, KeyFunction function);
  /// The function registered as `name`, or an empty one.
  KeyFunction find(std::string_view name) const;
  /// The registered names for a message: "'a', 'b'", or "none".
  std::string names() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, KeyFunction, std::less<>> functions_;
};

/// Gives `cache` the key function `name`, looked up in `functions` when the
/// alias is first used (so that code may register it after loading the
/// settings): returns the factory that looks it up, then builds the cache
/// with the factory that `build` (the backend) made from `cache`.
/// `unregistered` is the error for a name not registered then ("FILE:LINE:
/// COLUMN: PATH: 'x' is not a registered key function"); the registered
/// names are added to it.
CacheRegistry::Factory with_key_function(std::string name, std::string unregistered,
                                         std::shared_ptr<const KeyFunctions> functions, CacheOptions cache,
                                         const std::function<CacheRegistry::Factory(CacheOptions)>& build);

}  // namespace cachelock::detail
