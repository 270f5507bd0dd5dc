#include "key_functions.hpp"

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "text.hpp"

namespace cachelock::detail {

void KeyFunctions::add(std::string name, KeyFunction function) {
  if (name.empty()) throw ConfigError("key function names must not be empty");
  if (!function) throw ConfigError(fmt::format("key function {}: the function is empty", quote(name)));
  std::lock_guard lock{mutex_};
  functions_.insert_or_assign(std::move(name), std::move(function));
}

KeyFunction KeyFunctions::find(std::string_view name) const {
  std::lock_guard lock{mutex_};
  auto it = functions_.find(name);
  return it == functions_.end() ? KeyFunction{} : it->second;
}

std::string KeyFunctions::names() const {
  std::lock_guard lock{mutex_};
  if (functions_.empty()) return "none";
  return join_names(functions_, ", ", [](const auto& entry) { return quote(entry.first); });
}

CacheRegistry::Factory with_key_function(std::string name, std::string unregistered,
                                         std::shared_ptr<const KeyFunctions> functions, CacheOptions cache,
                                         const std::function<CacheRegistry::Factory(CacheOptions)>& build) {
  // The cache is made with a key function that calls the one found at the
  // alias's first use: the backend's factory has its options by then.
  auto found = std::make_shared<KeyFunction>();
  cache.key_function = [found](std::string_view key, std::string_view prefix, int version) {
    return (*found)(key, prefix, version);
  };
  auto make = build(std::move(cache));
  // The registry calls a factory once at a time, and again only if it threw:
  // `found` is set before any cache reads it.
  return [found, make = std::move(make), name = std::move(name), unregistered = std::move(unregistered),
          functions = std::move(functions)] {
    auto function = functions->find(name);
    if (!function) {
      throw ConfigError(fmt::format("{} (registered: {}); register it with CacheRegistry::add_key_function "
                                    "before the alias is used",
                                    unregistered, functions->names()));
    }
    *found = std::move(function);
    return make();
  };
}

}  // namespace cachelock::detail
